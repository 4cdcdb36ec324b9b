"""coordinator.routing: the snapshot built from the registry, the books, affinity, endpoints."""

from __future__ import annotations

import random
from typing import Any, cast

from coordinator.hub.nodes import LiveNode, NodeLink, NodeRegistry
from coordinator.routing import SUPPORTED_PARAMETERS, Router
from scheduler import ProviderPreferences, RouteRequest, RoutingPreferences
from tests.protocol.peers import sample_hardware, sample_offer

MODEL = sample_offer().model


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def live(node_id: str, owner: str = "acct_p", price: int = 100, slots: int = 4) -> LiveNode:
    offer = sample_offer().model_copy(
        update={
            "price_input_micro_usd_per_1m": price,
            "price_output_micro_usd_per_1m": price,
            "max_concurrency": slots,
        }
    )
    return LiveNode(
        node_id=node_id,
        provider_account_id=owner,
        session_id="ses",
        agent_version="test",
        hardware=sample_hardware(),
        offers={MODEL: offer},
        link=cast(NodeLink, object()),
    )


def router(*nodes: LiveNode) -> tuple[Router, Clock]:
    registry = NodeRegistry()
    for node in nodes:
        registry.add(node)
    clock = Clock()
    return Router(registry, clock=clock, rng=random.Random(7), affinity_limit=2), clock


def request(customer: str | None = "acct_c") -> RouteRequest:
    return RouteRequest(prompt_tokens=10, max_tokens=10, customer_account_id=customer)


def test_snapshot_carries_offers_load_owner_and_books() -> None:
    node = live("nd_a", owner="acct_p", price=250, slots=4)
    node.in_flight[MODEL] = 3
    r, _ = router(node)
    r.record_success("nd_a", MODEL, ttft_ms=120.0, tokens_per_s=80.0)
    (state,) = r.snapshot().candidates(MODEL)
    assert state.owner_account_id == "acct_p"
    assert state.provider == "nd_a"
    assert state.price_input_micro_usd_per_1m == 250
    assert (state.in_flight, state.max_concurrency) == (3, 4)
    assert state.ttft_p50_ms == 120.0
    assert state.tokens_per_s_p50 == 80.0
    assert state.reputation > 0.5
    assert state.circuit == "closed"
    assert state.supported_parameters == SUPPORTED_PARAMETERS


def test_failures_lower_reputation_raise_error_rate_and_open_the_circuit() -> None:
    r, clock = router(live("nd_a"))
    for _ in range(5):
        r.record_failure("nd_a", MODEL, "failure")
    (state,) = r.snapshot().candidates(MODEL)
    assert state.reputation < 0.5
    assert state.error_rate == 1.0
    assert state.circuit == "open"
    assert not r.may_try("nd_a", MODEL)
    clock.now += 11  # the base cool-down has passed: one probe goes through
    assert r.may_try("nd_a", MODEL)
    assert not r.may_try("nd_a", MODEL)
    r.record_success("nd_a", MODEL, ttft_ms=10.0, tokens_per_s=None)
    assert r.snapshot().candidates(MODEL)[0].circuit == "closed"


def test_timeouts_count_as_timeouts() -> None:
    r, _ = router(live("nd_a"))
    r.record_failure("nd_a", MODEL, "timeout")
    (state,) = r.snapshot().candidates(MODEL)
    assert state.timeout_rate == 1.0
    assert state.error_rate == 0.0


def test_a_customer_is_never_routed_to_their_own_node() -> None:
    r, _ = router(live("nd_own", owner="acct_c", price=1), live("nd_other", price=1000))
    for _ in range(20):
        decision = r.decide(RoutingPreferences(MODEL), request("acct_c"))
        assert [c.state.node_id for c in decision.candidates] == ["nd_other"]
    assert any(e.node_id == "nd_own" for e in decision.excluded)


def test_preferences_reach_the_policy() -> None:
    r, _ = router(live("nd_a"), live("nd_b"))
    only_b = RoutingPreferences(MODEL, provider=ProviderPreferences(only=frozenset({"nd_b"})))
    assert [c.state.node_id for c in r.decide(only_b, request()).candidates] == ["nd_b"]


def test_session_affinity_is_used_and_bounded() -> None:
    r, _ = router(live("nd_a"), live("nd_b"))
    r.remember_session("s1", "nd_b")
    decision = r.decide(RoutingPreferences(MODEL, session_id="s1"), request())
    assert decision.affinity_used
    assert decision.primary.state.node_id == "nd_b"
    r.remember_session("s2", "nd_a")
    r.remember_session("s3", "nd_a")
    assert list(r.affinity) == ["s2", "s3"]


def test_endpoints_list_each_node_without_secrets() -> None:
    r, _ = router(live("nd_a", price=5), live("nd_b", price=7))
    r.record_success("nd_a", MODEL, ttft_ms=50.0, tokens_per_s=100.0)
    rows: list[dict[str, Any]] = r.endpoints(MODEL)
    assert [row["node"] for row in rows] == ["nd_a", "nd_b"]
    assert rows[0]["pricing"]["input"] == 5
    assert rows[0]["latency_ms"] == {"p50": 50.0, "p90": 50.0}
    assert rows[1]["latency_ms"] == {"p50": None, "p90": None}
    assert rows[0]["circuit"] == "closed"
    assert "acct_p" not in str(rows)
    assert r.endpoints("other/model") == []
