"""Invariants of :func:`scheduler.route` over random fleets and preferences."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import (
    FILTERS,
    FilterContext,
    MaxPrice,
    NetworkSnapshot,
    NodeModelState,
    ProviderPreferences,
    RouteDecision,
    RouteRequest,
    RoutingPreferences,
    route,
)

from .factories import MODEL

OWNERS = ["cust", "o1", "o2", "o3"]
PROVIDERS = ["p1", "p2", "p3", "p4"]


@st.composite
def states(draw: st.DrawFn) -> list[NodeModelState]:
    count = draw(st.integers(0, 25))
    return [
        NodeModelState(
            node_id=f"n{i}",
            owner_account_id=draw(st.sampled_from(OWNERS)),
            model=draw(st.sampled_from([MODEL, MODEL, "other"])),
            provider=draw(st.sampled_from(PROVIDERS)),
            price_input_micro_usd_per_1m=draw(st.integers(0, 5_000_000)),
            price_output_micro_usd_per_1m=draw(st.integers(0, 5_000_000)),
            max_concurrency=draw(st.integers(1, 4)),
            in_flight=draw(st.integers(0, 4)),
            context_length=draw(st.sampled_from([2048, 8192])),
            supported_parameters=draw(st.frozensets(st.sampled_from(["tools", "seed"]))),
            ttft_p50_ms=draw(st.floats(0, 5000)),
            tokens_per_s_p50=draw(st.floats(0, 500)),
            error_rate=draw(st.floats(0, 1)),
            reputation=draw(st.floats(0, 1)),
            circuit=draw(st.sampled_from(["closed", "open", "half_open"])),
            probation=draw(st.booleans()),
            suspended=draw(st.sampled_from([False, False, False, True])),
        )
        for i in range(count)
    ]


providers = st.builds(
    ProviderPreferences,
    order=st.lists(st.sampled_from(PROVIDERS), max_size=2).map(tuple),
    only=st.none() | st.frozensets(st.sampled_from(PROVIDERS), max_size=3),
    ignore=st.frozensets(st.sampled_from(PROVIDERS), max_size=2),
    allow_fallbacks=st.booleans(),
    sort=st.sampled_from([None, "price", "latency", "throughput"]),
    max_price=st.builds(
        MaxPrice, st.none() | st.integers(0, 5_000_000), st.none() | st.integers(0, 5_000_000)
    ),
    min_reputation=st.floats(0, 1),
)
requests = st.builds(
    RouteRequest,
    prompt_tokens=st.integers(0, 4000),
    max_tokens=st.integers(1, 4000),
    parameters=st.frozensets(st.sampled_from(["tools", "seed"])),
    customer_account_id=st.sampled_from([None, "cust"]),
)


def decide(
    fleet: list[NodeModelState], provider: ProviderPreferences, request: RouteRequest, seed: int
) -> RouteDecision:
    prefs = RoutingPreferences(MODEL, provider=provider)
    return route(NetworkSnapshot.build(fleet), prefs, request, rng=random.Random(seed))


@settings(max_examples=200, deadline=None)
@given(states(), providers, requests, st.integers(0, 2**32))
def test_every_chosen_node_satisfies_every_hard_constraint(
    fleet: list[NodeModelState], provider: ProviderPreferences, request: RouteRequest, seed: int
) -> None:
    decision = decide(fleet, provider, request, seed)
    for c in decision.candidates:
        s = c.state
        ceiling = provider.max_price
        if ceiling.prompt_micro_usd_per_1m is not None:
            assert s.price_input_micro_usd_per_1m <= ceiling.prompt_micro_usd_per_1m
        if ceiling.completion_micro_usd_per_1m is not None:
            assert s.price_output_micro_usd_per_1m <= ceiling.completion_micro_usd_per_1m
        if provider.only is not None:
            assert s.provider in provider.only
        assert s.provider not in provider.ignore
        if request.customer_account_id is not None:
            assert s.owner_account_id != request.customer_account_id
        assert s.circuit != "open"
        assert s.in_flight < s.max_concurrency
        assert s.reputation >= provider.min_reputation
        assert s.model == MODEL
        assert request.prompt_tokens + request.max_tokens <= s.context_length
        assert "tools" not in request.parameters or "tools" in s.supported_parameters
    ids = [c.state.node_id for c in decision.candidates]
    assert len(ids) == len(set(ids))


@settings(max_examples=200, deadline=None)
@given(states(), providers, requests, st.integers(0, 2**32))
def test_every_node_is_chosen_or_excluded_with_a_reason(
    fleet: list[NodeModelState], provider: ProviderPreferences, request: RouteRequest, seed: int
) -> None:
    decision = decide(fleet, provider, request, seed)
    serving = {s.node_id for s in fleet if s.model == MODEL}
    chosen = {c.state.node_id for c in decision.candidates}
    excluded = {e.node_id for e in decision.excluded}
    assert all(e.reason for e in decision.excluded)
    assert not chosen & excluded
    # Eligible nodes may be left off only because the list is bounded or fallbacks are off.
    assert excluded <= serving
    assert chosen <= serving
    assert decision.examined == len(serving)
    if len(chosen | excluded) < len(serving):
        assert len(chosen) == 5 or not provider.allow_fallbacks


@settings(max_examples=100, deadline=None)
@given(states(), providers, requests, st.integers(0, 2**32))
def test_decision_is_deterministic_for_a_seed(
    fleet: list[NodeModelState], provider: ProviderPreferences, request: RouteRequest, seed: int
) -> None:
    assert decide(fleet, provider, request, seed) == decide(fleet, provider, request, seed)


@settings(max_examples=200, deadline=None)
@given(states(), providers, requests, st.integers(0, 2**32))
def test_exclusion_reason_is_the_first_failing_filter(
    fleet: list[NodeModelState], provider: ProviderPreferences, request: RouteRequest, seed: int
) -> None:
    """The inlined hot-path predicate agrees exactly with the documented filter chain."""
    decision = decide(fleet, provider, request, seed)
    reasons = {e.node_id: e.reason for e in decision.excluded}
    ctx = FilterContext(MODEL, request, provider)
    for s in fleet:
        if s.model != MODEL:
            continue
        expected = next((r for f in FILTERS if (r := f(s, ctx)) is not None), None)
        assert reasons.get(s.node_id) == expected
