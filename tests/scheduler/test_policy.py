from __future__ import annotations

import random
from collections import Counter

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
