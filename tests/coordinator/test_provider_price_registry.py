"""A Provider's own prices in the node registry: on every node of the Provider, at once, after
reconnects and offers updates, under any spelling of the model; and what the router decides at."""

from __future__ import annotations

from typing import cast

from coordinator.catalogue import Catalogue, CatalogueEntry
from coordinator.hub.nodes import LiveNode, NodeLink, NodeRegistry, PriceOverride
from coordinator.routing import Router
from protocol import Offer
from scheduler import MaxPrice, ProviderPreferences, RouteRequest, RoutingPreferences
from tests.protocol.peers import sample_hardware, sample_offer

MODEL = "org/Model-7B"
ALIAS = "model:7b"
OWN = PriceOverride(input_micro_usd_per_1m=20_000, output_micro_usd_per_1m=60_000)
NODE_PRICE = (50_000, 150_000)  # sample_offer's


class Changes:
    """A registry listener that counts offers changes per node."""

    def __init__(self) -> None:
        self.offers_changed: list[str] = []

    def node_added(self, node: LiveNode) -> None:
        pass

    def node_removed(self, node: LiveNode) -> None:
        pass

    def node_offers_changed(self, node: LiveNode) -> None:
        self.offers_changed.append(node.node_id)

    def node_heard(self, node: LiveNode) -> None:
        pass


def node(node_id: str, provider: str, *offers: Offer) -> LiveNode:
    return LiveNode(
        node_id=node_id,
        provider_account_id=provider,
        session_id="ses",
        agent_version="test",
        hardware=sample_hardware(),
        offers={o.model: o for o in offers},
        link=cast(NodeLink, object()),
    )


def prices(live: LiveNode, model: str = MODEL) -> tuple[int, int]:
    offer = live.offers[model]
    return offer.price_input_micro_usd_per_1m, offer.price_output_micro_usd_per_1m


def catalogue() -> Catalogue:
    return Catalogue(
        [
            CatalogueEntry.parse(
                {"id": MODEL, "name": MODEL, "aliases": [ALIAS], "context_length": 8192}
            )
        ]
    )


def test_an_own_price_reprices_every_live_node_of_the_provider_and_no_other() -> None:
    registry = NodeRegistry()
    changes = Changes()
    registry.listen(changes)
    mine = [node(f"nd_{i}", "acct_p", sample_offer(MODEL)) for i in range(2)]
    theirs = node("nd_other", "acct_q", sample_offer(MODEL))
    for live in (*mine, theirs):
        registry.add(live)
    version = registry.version

    registry.set_price_overrides("acct_p", {MODEL: OWN})
    for live in mine:
        assert prices(live) == (20_000, 60_000)
        assert live.announced[0].price_input_micro_usd_per_1m == NODE_PRICE[0]  # as sent
    assert prices(theirs) == NODE_PRICE
    assert sorted(changes.offers_changed) == ["nd_0", "nd_1"]
    assert registry.version > version
    assert registry.price_overrides("acct_p") == {MODEL: OWN}
    assert registry.summaries()[0].min_price_input_micro_usd_per_1m == 20_000

    changes.offers_changed.clear()
    registry.set_price_overrides("acct_p", {MODEL: OWN})  # the same again: nothing to do
    assert changes.offers_changed == []

    registry.set_price_overrides("acct_p", {})
    for live in mine:
        assert prices(live) == NODE_PRICE
    assert registry.price_overrides("acct_p") == {}


def test_an_own_price_holds_after_a_reconnect_and_an_offers_update() -> None:
    registry = NodeRegistry()
    registry.set_price_overrides("acct_p", {MODEL: OWN})
    first = node("nd_a", "acct_p", sample_offer(MODEL))
    registry.add(first)
    assert prices(first) == (20_000, 60_000)

    cheaper = sample_offer(MODEL).model_copy(
        update={"price_input_micro_usd_per_1m": 1, "max_concurrency": 3}
    )
    registry.set_offers(first, [cheaper, sample_offer("other/model")])
    assert prices(first) == (20_000, 60_000)
    assert first.offers[MODEL].max_concurrency == 3  # only the price is the Provider's
    assert prices(first, "other/model") == NODE_PRICE  # no own price for that one

    again = node("nd_a", "acct_p", sample_offer(MODEL))
    assert registry.add(again) is first
    assert prices(again) == (20_000, 60_000)


def test_an_own_price_is_keyed_by_network_id_whatever_the_node_calls_the_model() -> None:
    registry = NodeRegistry()
    registry.use_catalogue(catalogue())
    live = node("nd_a", "acct_p", sample_offer(ALIAS))
    registry.add(live)
    registry.use_price_overrides({"acct_p": {MODEL: OWN}})
    assert prices(live) == (20_000, 60_000)
    assert live.offers[MODEL].model == ALIAS  # jobs still name the node's own spelling
    assert live.offers[MODEL].context_length == 8192  # the catalogue's cap still applies

    registry.use_price_overrides({})
    assert prices(live) == NODE_PRICE


def test_the_router_decides_at_the_own_price_and_a_later_change_does_not_move_it() -> None:
    registry = NodeRegistry()
    router = Router(registry)
    registry.add(node("nd_a", "acct_p", sample_offer(MODEL)))
    request = RouteRequest(prompt_tokens=10, max_tokens=10, customer_account_id="acct_c")

    registry.set_price_overrides("acct_p", {MODEL: OWN})
    decision = router.decide(RoutingPreferences(MODEL), request)
    state = decision.candidates[0].state
    # Settlement charges the chosen candidate's state: the price in force when it was chosen.
    assert (state.price_input_micro_usd_per_1m, state.price_output_micro_usd_per_1m) == (
        20_000,
        60_000,
    )

    registry.set_price_overrides("acct_p", {})
    assert state.price_input_micro_usd_per_1m == 20_000
    later = router.decide(RoutingPreferences(MODEL), request).candidates[0].state
    assert later.price_input_micro_usd_per_1m == NODE_PRICE[0]


def test_a_customer_price_ceiling_sees_the_own_price() -> None:
    registry = NodeRegistry()
    router = Router(registry)
    registry.add(node("nd_a", "acct_p", sample_offer(MODEL)))
    request = RouteRequest(prompt_tokens=10, max_tokens=10, customer_account_id="acct_c")
    prefs = RoutingPreferences(
        MODEL, provider=ProviderPreferences(max_price=MaxPrice(prompt_micro_usd_per_1m=30_000))
    )
    assert router.decide(prefs, request).candidates == ()
    registry.set_price_overrides("acct_p", {MODEL: OWN})  # 0.02 USD per 1M prompt tokens
    assert len(router.decide(prefs, request).candidates) == 1
