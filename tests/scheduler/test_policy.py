from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import replace

import pytest

from scheduler import (
    NetworkSnapshot,
    NodeModelState,
    NoRouteAvailable,
    PolicyConfig,
    ProviderPreferences,
    RouteDecision,
    RouteRequest,
    RoutingPreferences,
    route,
)

from .factories import MODEL, node

REQ = RouteRequest(prompt_tokens=1000, max_tokens=200, customer_account_id="cust")


def decide(
    states: list[NodeModelState],
    provider: ProviderPreferences | None = None,
    *,
    seed: int = 0,
    models: tuple[str, ...] = (),
    session_id: str | None = None,
    affinity: dict[str, str] | None = None,
    config: PolicyConfig | None = None,
) -> RouteDecision:
    prefs = RoutingPreferences(MODEL, models, provider or ProviderPreferences(), session_id)
    return route(
        NetworkSnapshot.build(states),
        prefs,
        REQ,
        rng=random.Random(seed),
        affinity=affinity,
        config=config,
    )


def test_explains_every_exclusion_and_ranks_the_rest() -> None:
    states = [
        node("good"),
        node("full", in_flight=4),
        node("mine", owner_account_id="cust"),
        node("broken", circuit="open"),
        node("worse", reputation=0.1, tokens_per_s_p50=10.0),
    ]
    d = decide(states)
    assert [c.state.node_id for c in d.candidates] == ["good", "worse"]
    reasons = {e.node_id: e.reason for e in d.excluded}
    assert set(reasons) == {"full", "mine", "broken"}
    assert reasons["mine"] == "owned by the customer's own account"
    assert d.examined == 5
    assert d.not_examined == 0


def test_no_route_raises_with_the_explanation() -> None:
    d = decide([node("mine", owner_account_id="cust")])
    with pytest.raises(NoRouteAvailable) as caught:
        _ = d.primary
    assert caught.value.decision.excluded[0].node_id == "mine"


def test_a_suspended_node_is_never_chosen_and_says_why() -> None:
    d = decide([node("kept"), node("off", suspended=True, price_input_micro_usd_per_1m=1)])
    assert [c.state.node_id for c in d.candidates] == ["kept"]
    assert {e.node_id: e.reason for e in d.excluded} == {"off": "suspended by the operator"}


def test_a_suspended_node_loses_its_session_affinity_and_order_position() -> None:
    states = [node("a", suspended=True), node("b")]
    sticky = decide(states, session_id="s1", affinity={"s1": "a"})
    assert [c.state.node_id for c in sticky.candidates] == ["b"]
    assert not sticky.affinity_used
    ordered = decide(states, ProviderPreferences(order=("a",), allow_fallbacks=False))
    assert ordered.candidates == ()
    assert ordered.excluded[0].reason == "suspended by the operator"


def test_a_large_pool_never_picks_a_suspended_leader() -> None:
    # The cheapest, fastest node of a pool past scan_all_up_to is a leader, so it is always
    # examined; suspended, it must still be excluded.
    states = [node(f"n{i}") for i in range(40)] + [
        node("leader", suspended=True, price_input_micro_usd_per_1m=1, ttft_p50_ms=1.0)
    ]
    config = PolicyConfig(scan_all_up_to=10, sample_size=5)
    for seed in range(20):
        d = decide(states, config=config, seed=seed)
        assert "leader" not in {c.state.node_id for c in d.candidates}
        assert ("leader", "suspended by the operator") in {
            (e.node_id, e.reason) for e in d.excluded
        }


def test_unserved_model_yields_empty_decision() -> None:
    d = decide([node("a", model="other")])
    assert d.candidates == ()


def test_order_comes_first_then_fallbacks() -> None:
    states = [node("a"), node("b", tokens_per_s_p50=5.0), node("c", tokens_per_s_p50=6.0)]
    d = decide(states, ProviderPreferences(order=("prov-c", "b")))
    assert [c.state.node_id for c in d.candidates] == ["c", "b", "a"]
    strict = decide(states, ProviderPreferences(order=("prov-c", "b"), allow_fallbacks=False))
    assert [c.state.node_id for c in strict.candidates] == ["c", "b"]


def test_no_fallbacks_means_one_candidate() -> None:
    d = decide([node("a"), node("b")], ProviderPreferences(allow_fallbacks=False))
    assert len(d.candidates) == 1


def test_candidates_are_bounded() -> None:
    d = decide([node(f"n{i}") for i in range(20)], config=PolicyConfig(max_candidates=3))
    assert len(d.candidates) == 3


def test_fallback_models_follow_the_requested_one() -> None:
    states = [node("a"), node("b", model="backup")]
    d = decide(states, models=("backup",))
    assert [c.state.model for c in d.candidates] == [MODEL, "backup"]
    gone = decide([node("b", model="backup")], models=("backup",))
    assert gone.candidates[0].state.node_id == "b"


def test_session_affinity_sticks_while_eligible() -> None:
    states = [node("best", tokens_per_s_p50=500.0), node("used", tokens_per_s_p50=10.0)]
    d = decide(states, session_id="s", affinity={"s": "used"})
    assert d.candidates[0].state.node_id == "used"
    assert d.affinity_used
    states[1] = node("used", in_flight=4)
    d = decide(states, session_id="s", affinity={"s": "used"})
    assert d.candidates[0].state.node_id == "best"
    assert not d.affinity_used


def test_randomises_among_near_best_only() -> None:
    states = [node("a"), node("b"), node("c"), node("far", tokens_per_s_p50=5.0)]
    firsts = Counter(decide(states, seed=s).candidates[0].state.node_id for s in range(300))
    assert set(firsts) == {"a", "b", "c"}
    assert min(firsts.values()) > 60


def test_probation_share_is_bounded() -> None:
    states = [node("vet"), *(node(f"new{i}", probation=True) for i in range(5))]
    picks = [decide(states, seed=s).probation_pick for s in range(2000)]
    assert 0.05 < sum(picks) / len(picks) < 0.15


def test_probation_nodes_serve_when_nothing_else_qualifies() -> None:
    d = decide([node("new", probation=True), node("vet", circuit="open")])
    assert d.candidates[0].state.node_id == "new"


def test_when_only_new_nodes_qualify_preferences_still_choose_among_them() -> None:
    cheap = node("cheap", probation=True, price_input_micro_usd_per_1m=1_000)
    dear = node("dear", probation=True, price_input_micro_usd_per_1m=900_000)
    for seed in range(200):
        d = decide([cheap, dear], ProviderPreferences(sort="price"), seed=seed)
        assert d.primary.state.node_id == "cheap"
        assert d.probation_pick


def test_a_network_of_new_nodes_tries_each_untried_node_before_trusting_scores() -> None:
    tried = node("tried", probation=True, ttft_p50_ms=600.0, tokens_per_s_p50=1000.0)
    untried = node("untried", probation=True, ttft_p50_ms=0.0, tokens_per_s_p50=0.0)
    failed = node("failed", probation=True, ttft_p50_ms=0.0, tokens_per_s_p50=0.0, error_rate=1.0)
    picks = {decide([tried, untried, failed], seed=s).primary.state.node_id for s in range(50)}
    assert picks == {"untried"}
    measured = node("untried", probation=True, ttft_p50_ms=20.0, tokens_per_s_p50=1000.0)
    picks = {decide([tried, measured, failed], seed=s).primary.state.node_id for s in range(50)}
    assert picks == {"untried"}  # now measured and fastest: the scores decide
    by_price = ProviderPreferences(sort="price")
    cheap = node("cheap", probation=True, price_input_micro_usd_per_1m=1)
    assert decide([cheap, untried], by_price).primary.state.node_id == "cheap"


class Overlay:
    """A LiveOverlay that reports jobs in flight and circuits different from the snapshot."""

    def __init__(self, in_flight: dict[str, int], circuits: dict[str, str] | None = None) -> None:
        self.in_flight = in_flight
        self.circuits = circuits or {}
        self.seen: list[str] = []

    def current(self, state: NodeModelState) -> NodeModelState:
        self.seen.append(state.node_id)
        circuit = self.circuits.get(state.node_id, state.circuit)
        return replace(
            state,
            in_flight=self.in_flight.get(state.node_id, state.in_flight),
            circuit=circuit,  # type: ignore[arg-type]
        )


def test_the_live_overlay_wins_over_a_stale_snapshot() -> None:
    snapshot = NetworkSnapshot.build([node("a"), node("b"), node("c")])
    live = Overlay({"a": 4}, {"b": "open"})  # a filled up, b's circuit opened since the build
    d = route(
        snapshot,
        RoutingPreferences(MODEL),
        REQ,
        rng=random.Random(1),
        live=live,
    )
    assert [c.state.node_id for c in d.candidates] == ["c"]
    reasons = {e.node_id: e.reason for e in d.excluded}
    assert reasons == {
        "a": "no free slot (4/4 in flight)",
        "b": "circuit open: cooling down after failures",
    }
    assert sorted(live.seen) == ["a", "b", "c"]


def test_the_overlay_is_consulted_only_for_examined_nodes() -> None:
    states = [node(f"n{i}") for i in range(3000)]
    live = Overlay({})
    d = route(
        NetworkSnapshot.build(states),
        RoutingPreferences(MODEL),
        REQ,
        rng=random.Random(1),
        live=live,
    )
    assert len(live.seen) == d.examined < 200


def test_large_pool_examines_a_bounded_sample_plus_leaders() -> None:
    states = [node(f"n{i}", tokens_per_s_p50=10.0 + i % 7) for i in range(5000)]
    states.append(node("star", tokens_per_s_p50=900.0))
    d = decide(states)
    assert d.examined < 200
    assert d.examined + d.not_examined == 5001
    assert d.candidates[0].state.node_id == "star"


def test_large_pool_falls_back_to_a_full_scan_when_few_qualify() -> None:
    states = [node(f"n{i}", in_flight=4) for i in range(3000)]
    states[1234] = node("n1234")
    d = decide(states)
    assert d.candidates[0].state.node_id == "n1234"
    assert d.not_examined == 0
    assert len(d.excluded) == 2999


def test_large_pool_only_uses_the_provider_index() -> None:
    states = [node(f"n{i}") for i in range(3000)]
    d = decide(states, ProviderPreferences(only=frozenset({"prov-n42", "n7"})))
    assert {c.state.node_id for c in d.candidates} == {"n42", "n7"}


def test_an_absurdly_low_measured_speed_still_gets_a_finite_score() -> None:
    # Found by hypothesis: 1e-308 tok/s made the latency term infinite and the score NaN, so no
    # node was "near the best" and the pick failed.
    crawling = node("crawling", tokens_per_s_p50=1.1125369292536007e-308, ttft_p50_ms=0.0)
    d = decide([crawling], ProviderPreferences(allow_fallbacks=False))
    assert d.primary.state.node_id == "crawling"
    assert math.isfinite(d.primary.score)
