from __future__ import annotations

import pytest

from scheduler import FilterContext, MaxPrice, PolicyConfig, ProviderPreferences, RouteRequest
from scheduler import policy as p
from scheduler.policy import score_candidates

from .factories import MODEL, node

REQ = RouteRequest(prompt_tokens=1000, max_tokens=500, customer_account_id="cust")


def ctx(request: RouteRequest = REQ, **prefs: object) -> FilterContext:
    return FilterContext(MODEL, request, ProviderPreferences(**prefs))  # type: ignore[arg-type]


def test_model_filter() -> None:
    assert p.filter_model(node(), ctx()) is None
    assert p.filter_model(node(model="other"), ctx()) == f"does not serve {MODEL}"


def test_suspended_filter() -> None:
    assert p.filter_suspended(node(), ctx()) is None
    assert p.filter_suspended(node(suspended=True), ctx()) == "suspended by the operator"


def test_suspension_is_the_reason_reported_before_any_request_preference() -> None:
    """An operator's suspension outranks the customer's own lists and the node's load."""
    suspended = node("n1", suspended=True, in_flight=4, circuit="open")
    context = ctx(ignore=frozenset({"n1"}))
    first = next(r for f in p.FILTERS if (r := f(suspended, context)) is not None)
    assert first == "suspended by the operator"


def test_circuit_filter() -> None:
    assert p.filter_circuit(node(circuit="closed"), ctx()) is None
    assert p.filter_circuit(node(circuit="half_open"), ctx()) is None
    assert "half-open" in (p.filter_circuit(node(circuit="half_open", in_flight=1), ctx()) or "")
    assert "circuit open" in (p.filter_circuit(node(circuit="open"), ctx()) or "")


def test_capacity_filter() -> None:
    assert p.filter_capacity(node(in_flight=3), ctx()) is None
    assert p.filter_capacity(node(in_flight=4), ctx()) == "no free slot (4/4 in flight)"


def test_lists_filter_matches_provider_or_node_id() -> None:
    n = node("n1")
    assert p.filter_lists(n, ctx(ignore=frozenset({"prov-n1"}))) == "in provider.ignore"
    assert p.filter_lists(n, ctx(ignore=frozenset({"n1"}))) == "in provider.ignore"
    assert p.filter_lists(n, ctx(only=frozenset({"other"}))) == "not in provider.only"
    assert p.filter_lists(n, ctx(only=frozenset({"n1"}))) is None


def test_owner_filter() -> None:
    assert p.filter_owner(node(owner_account_id="cust"), ctx()) == (
        "owned by the customer's own account"
    )
    assert p.filter_owner(node(), ctx()) is None
    anonymous = RouteRequest(prompt_tokens=1, max_tokens=1)
    assert p.filter_owner(node(owner_account_id="cust"), ctx(anonymous)) is None


def test_max_price_filter_on_each_side() -> None:
    n = node(price_input_micro_usd_per_1m=100, price_output_micro_usd_per_1m=300)
    assert p.filter_max_price(n, ctx(max_price=MaxPrice(100, 300))) is None
    assert "max_price.prompt" in (p.filter_max_price(n, ctx(max_price=MaxPrice(99, None))) or "")
    reason = p.filter_max_price(n, ctx(max_price=MaxPrice(None, 299)))
    assert reason is not None
    assert "max_price.completion" in reason


def test_reputation_filter() -> None:
    assert p.filter_reputation(node(reputation=0.7), ctx(min_reputation=0.7)) is None
    assert "under min_reputation" in (
        p.filter_reputation(node(reputation=0.69), ctx(min_reputation=0.7)) or ""
    )


def test_parameters_filter_always_requires_tools_and_formats() -> None:
    plain = node(supported_parameters=frozenset())
    tools = RouteRequest(prompt_tokens=1, max_tokens=1, parameters=frozenset({"tools", "seed"}))
    assert p.filter_parameters(plain, ctx(tools)) == "missing required parameter(s): tools"
    with_tools = node(supported_parameters=frozenset({"tools"}))
    assert p.filter_parameters(with_tools, ctx(tools)) is None
    assert p.filter_parameters(with_tools, ctx(tools, require_parameters=True)) == (
        "missing required parameter(s): seed"
    )


def test_context_filter() -> None:
    assert p.filter_context(node(context_length=1500), ctx()) is None
    assert p.filter_context(node(context_length=1499), ctx()) == (
        "context 1499 too small for prompt+max_tokens 1500"
    )


def test_cost_and_latency_estimates() -> None:
    n = node(
        price_input_micro_usd_per_1m=1_000_000,
        price_output_micro_usd_per_1m=2_000_000,
        ttft_p50_ms=300.0,
        tokens_per_s_p50=50.0,
    )
    (scored,) = score_candidates([n], REQ, ProviderPreferences(), PolicyConfig())
    assert scored.expected_cost_micro_usd == pytest.approx(1000 * 1.0 + 500 * 2.0)
    assert scored.expected_latency_ms == pytest.approx(300 + 500 / 50 * 1000)


def test_unknown_measurements_use_priors() -> None:
    cfg = PolicyConfig(unknown_ttft_ms=1000.0, unknown_tokens_per_s=10.0)
    (scored,) = score_candidates(
        [node(ttft_p50_ms=0.0, tokens_per_s_p50=0.0)], REQ, ProviderPreferences(), cfg
    )
    assert scored.expected_latency_ms == pytest.approx(1000 + 50_000)


def ranking(prefs: ProviderPreferences, *nodes: object) -> list[str]:
    scored = score_candidates(list(nodes), REQ, prefs, PolicyConfig())  # type: ignore[arg-type]
    return [c.state.node_id for c in scored]


CHEAP_SLOW = node("cheap", price_output_micro_usd_per_1m=10_000, tokens_per_s_p50=10.0)
PRICEY_FAST = node("fast", price_output_micro_usd_per_1m=900_000, tokens_per_s_p50=200.0)


@pytest.mark.parametrize(
    ("sort", "first"), [("price", "cheap"), ("latency", "fast"), ("throughput", "fast")]
)
def test_sort_changes_the_primary_key(sort: str, first: str) -> None:
    prefs = ProviderPreferences(sort=sort)  # type: ignore[arg-type]
    assert ranking(prefs, CHEAP_SLOW, PRICEY_FAST)[0] == first


def test_reputation_load_and_errors_break_ties() -> None:
    prefs = ProviderPreferences()
    assert ranking(prefs, node("a", reputation=0.5), node("b", reputation=0.9))[0] == "b"
    assert ranking(prefs, node("a", in_flight=3), node("b", in_flight=0))[0] == "b"
    assert ranking(prefs, node("a", error_rate=0.2), node("b", timeout_rate=0.0))[0] == "b"


def test_soft_preferences_penalise_but_do_not_exclude() -> None:
    prefs = ProviderPreferences(preferred_max_latency_ms=15_000.0, preferred_min_throughput_tps=40)
    slow = node("slow", tokens_per_s_p50=20.0)
    scored = score_candidates([slow, node("ok")], REQ, prefs, PolicyConfig())
    assert [c.state.node_id for c in scored] == ["ok", "slow"]
    assert len(scored[1].soft_penalties) == 2
    assert scored[0].soft_penalties == ()
