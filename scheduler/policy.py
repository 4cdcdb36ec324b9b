"""The routing policy: filter -> score -> select, over a :class:`~scheduler.NetworkSnapshot`.

Pure and deterministic for a given ``rng``: no clock, no I/O. :func:`route` returns a
:class:`RouteDecision` with the ordered candidates (primary first, then bounded fallbacks), their
scores and the excluded nodes with a human-readable reason each. Scores are *lower is better*.

Large pools: when a model has more than ``PolicyConfig.scan_all_up_to`` nodes, the decision
examines a random sample of ``sample_size`` nodes plus the snapshot's per-key leaders, the nodes
named by ``order`` / ``only`` and the session's affinity node; when that yields fewer than
``max_candidates`` eligible nodes it scans the rest. The decision reports how many nodes it did
not examine.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from scheduler.errors import NoRouteAvailable
from scheduler.preferences import ProviderPreferences, RoutingPreferences
from scheduler.snapshot import LiveOverlay, NetworkSnapshot, NodeModelState

__all__ = [
    "ALWAYS_REQUIRED_PARAMETERS",
    "FILTERS",
    "Exclusion",
    "FilterContext",
    "PolicyConfig",
    "RouteDecision",
    "RouteRequest",
    "ScoredCandidate",
    "Weights",
    "filter_capacity",
    "filter_circuit",
    "filter_context",
    "filter_lists",
    "filter_max_price",
    "filter_model",
    "filter_owner",
    "filter_parameters",
    "filter_reputation",
    "filter_suspended",
    "route",
    "score_candidates",
]

ALWAYS_REQUIRED_PARAMETERS = frozenset({"tools", "response_format"})
"""Parameters a node must support whenever the request uses them, even without
``require_parameters``: a node that ignores them would return a wrong answer, not a worse one."""


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """The parts of a completion request that matter for routing."""

    prompt_tokens: int
    """The coordinator's estimate of the prompt's length in tokens."""
    max_tokens: int
    parameters: frozenset[str] = frozenset()
    """Request parameters in use (``tools``, ``response_format``, ``seed``, ...)."""
    customer_account_id: str | None = None


@dataclass(frozen=True, slots=True)
class Weights:
    cost: float
    latency: float
    throughput: float
    reputation: float
    load: float
    errors: float


_DEFAULT_WEIGHTS = Weights(
    cost=1.0, latency=1.0, throughput=0.0, reputation=1.0, load=0.5, errors=4.0
)
_SORT_WEIGHTS = {
    "price": Weights(cost=10.0, latency=0.5, throughput=0.0, reputation=0.5, load=0.25, errors=1.0),
    "latency": Weights(
        cost=0.5, latency=10.0, throughput=0.0, reputation=0.5, load=0.25, errors=1.0
    ),
    "throughput": Weights(
        cost=0.5, latency=0.5, throughput=10.0, reputation=0.5, load=0.25, errors=1.0
    ),
}


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    max_candidates: int = 5
    """Primary plus fallbacks returned, per decision."""
    near_best_ratio: float = 0.10
    """The primary is drawn uniformly among non-probation nodes within this ratio of the best."""
    probation_share: float = 0.10
    """Chance that the primary is a probation node (when a non-probation one qualifies); such a
    pick is uniform over the eligible probation nodes."""
    unknown_ttft_ms: float = 2000.0
    unknown_tokens_per_s: float = 20.0
    soft_penalty: float = 1.0
    """Score added for each soft preference missed (latency over, throughput under)."""
    scan_all_up_to: int = 256
    sample_size: int = 64
    default_weights: Weights = _DEFAULT_WEIGHTS
    sort_weights: Mapping[str, Weights] = field(default_factory=lambda: dict(_SORT_WEIGHTS))


@dataclass(frozen=True, slots=True)
class ScoredCandidate:
    state: NodeModelState
    score: float
    expected_cost_micro_usd: float
    expected_latency_ms: float
    soft_penalties: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Exclusion:
    node_id: str
    model: str
    reason: str


@dataclass(frozen=True)
class RouteDecision:
    """An explained route. ``candidates[0]`` is the primary; the rest are fallbacks, in order.

    The reasons for exclusions are worked out on first access of :attr:`excluded` (from the
    states as the decision saw them): most decisions are never explained, and running the
    filter chain for every excluded node would be most of a decision's cost.
    """

    candidates: tuple[ScoredCandidate, ...]
    rejected: tuple[tuple[NodeModelState, FilterContext], ...]
    """The examined states that did not qualify, with the context they were judged in."""
    models_tried: tuple[str, ...]
    examined: int
    not_examined: int
    affinity_used: bool = False
    probation_pick: bool = False

    @functools.cached_property
    def excluded(self) -> tuple[Exclusion, ...]:
        """Each examined node that did not qualify, with the first filter's reason."""
        return tuple(_exclusion(state, ctx) for state, ctx in self.rejected)

    @property
    def primary(self) -> ScoredCandidate:
        """Raises :class:`NoRouteAvailable` when nothing qualified."""
        if not self.candidates:
            raise NoRouteAvailable(self)
        return self.candidates[0]


# --- filters: each returns None (keep) or the reason for excluding the node ---------------------


@dataclass(frozen=True, slots=True)
class FilterContext:
    """What a filter may look at besides the node: the model asked for, the request, the prefs."""

    model: str
    request: RouteRequest
    prefs: ProviderPreferences


Filter = Callable[[NodeModelState, FilterContext], str | None]


def filter_model(state: NodeModelState, ctx: FilterContext) -> str | None:
    return None if state.model == ctx.model else f"does not serve {ctx.model}"


def filter_suspended(state: NodeModelState, _ctx: FilterContext) -> str | None:
    return "suspended by the operator" if state.suspended else None


def filter_circuit(state: NodeModelState, _ctx: FilterContext) -> str | None:
    if state.circuit == "open":
        return "circuit open: cooling down after failures"
    if state.circuit == "half_open" and state.in_flight > 0:
        return "circuit half-open: its one probe is already running"
    return None


def filter_capacity(state: NodeModelState, _ctx: FilterContext) -> str | None:
    if state.in_flight >= state.max_concurrency:
        return f"no free slot ({state.in_flight}/{state.max_concurrency} in flight)"
    return None


def filter_lists(state: NodeModelState, ctx: FilterContext) -> str | None:
    if state.provider in ctx.prefs.ignore or state.node_id in ctx.prefs.ignore:
        return "in provider.ignore"
    if (
        ctx.prefs.only is not None
        and state.provider not in ctx.prefs.only
        and state.node_id not in ctx.prefs.only
    ):
        return "not in provider.only"
    return None


def filter_owner(state: NodeModelState, ctx: FilterContext) -> str | None:
    if (
        ctx.request.customer_account_id is not None
        and state.owner_account_id == ctx.request.customer_account_id
    ):
        return "owned by the customer's own account"
    return None


def filter_max_price(state: NodeModelState, ctx: FilterContext) -> str | None:
    ceiling = ctx.prefs.max_price
    prompt_max = ceiling.prompt_micro_usd_per_1m
    if prompt_max is not None and state.price_input_micro_usd_per_1m > prompt_max:
        return (
            f"prompt price {state.price_input_micro_usd_per_1m} over max_price.prompt {prompt_max}"
            " (micro-USD per 1M tokens)"
        )
    completion_max = ceiling.completion_micro_usd_per_1m
    if completion_max is not None and state.price_output_micro_usd_per_1m > completion_max:
        return (
            f"completion price {state.price_output_micro_usd_per_1m} over max_price.completion"
            f" {completion_max} (micro-USD per 1M tokens)"
        )
    return None


def filter_reputation(state: NodeModelState, ctx: FilterContext) -> str | None:
    if state.reputation < ctx.prefs.min_reputation:
        return (
            f"reputation {state.reputation:.3f} under min_reputation {ctx.prefs.min_reputation:.3f}"
        )
    return None


def filter_parameters(state: NodeModelState, ctx: FilterContext) -> str | None:
    needed = (
        ctx.request.parameters
        if ctx.prefs.require_parameters
        else (ctx.request.parameters & ALWAYS_REQUIRED_PARAMETERS)
    )
    missing = needed - state.supported_parameters
    if missing:
        return f"missing required parameter(s): {', '.join(sorted(missing))}"
    return None


def filter_context(state: NodeModelState, ctx: FilterContext) -> str | None:
    needed = ctx.request.prompt_tokens + ctx.request.max_tokens
    if needed > state.context_length:
        return f"context {state.context_length} too small for prompt+max_tokens {needed}"
    return None


FILTERS: tuple[Filter, ...] = (
    filter_model,
    filter_suspended,
    filter_lists,
    filter_owner,
    filter_max_price,
    filter_reputation,
    filter_parameters,
    filter_context,
    filter_circuit,
    filter_capacity,
)
"""Applied in this order; the first reason found is the one reported.

The operator's suspension comes right after the model: it overrides everything the request
asks for, so a suspended node always reads "suspended by the operator". Reasons that follow
from the request and its preferences come next and the node's passing condition (circuit, free
slots) last, so an explanation names the stable cause: a node the customer ignored reads
"in provider.ignore" whether or not its circuit also happens to be open.
"""


# --- scoring -------------------------------------------------------------------------------------

_MIN_TOKENS_PER_S = 0.001


def score_candidates(
    eligible: list[NodeModelState],
    request: RouteRequest,
    prefs: ProviderPreferences,
    config: PolicyConfig,
) -> list[ScoredCandidate]:
    """Score eligible nodes (lower is better), sorted best first.

    ``score = w_cost * cost/min_cost + w_latency * latency/min_latency + w_throughput * max_tps/tps
    + w_reputation * (1 - reputation) + w_load * in_flight/max_concurrency
    + w_errors * (error_rate + timeout_rate) + soft penalties``; the relative terms are 1 for the
    best node on that key. ``cost`` is ``prompt_tokens * price_in + max_tokens * price_out`` (in
    micro-USD) and ``latency`` is ``ttft_p50 + max_tokens / tokens_per_s`` (in ms).
    """
    if not eligible:
        return []
    weights = config.sort_weights[prefs.sort] if prefs.sort else config.default_weights
    prompt, completion = request.prompt_tokens, request.max_tokens
    unknown_ttft, unknown_tps = config.unknown_ttft_ms, config.unknown_tokens_per_s
    raw: list[tuple[NodeModelState, float, float, float]] = []
    for s in eligible:
        # A measured speed this low is a broken measurement; below 0.001 tok/s the latency term
        # would overflow to infinity and turn the score into NaN.
        tps = max(s.tokens_per_s_p50, _MIN_TOKENS_PER_S) if s.tokens_per_s_p50 > 0 else unknown_tps
        ttft = s.ttft_p50_ms if s.ttft_p50_ms > 0 else unknown_ttft
        cost = (
            prompt * s.price_input_micro_usd_per_1m + completion * s.price_output_micro_usd_per_1m
        ) / 1e6
        raw.append((s, cost, ttft + completion * 1000.0 / tps, tps))
    min_cost = max(min(r[1] for r in raw), 1e-9)
    min_latency = max(min(r[2] for r in raw), 1e-9)
    max_tps = max(r[3] for r in raw)
    w_cost, w_latency = weights.cost / min_cost, weights.latency / min_latency
    w_throughput = weights.throughput * max_tps
    w_reputation, w_load, w_errors = weights.reputation, weights.load, weights.errors
    max_latency_pref = prefs.preferred_max_latency_ms
    min_tps_pref = prefs.preferred_min_throughput_tps
    soft = max_latency_pref is not None or min_tps_pref is not None
    scored: list[ScoredCandidate] = []
    for s, cost, latency, tps in raw:
        score = (
            w_cost * max(cost, 1e-9)
            + w_latency * latency
            + w_throughput / tps
            + w_reputation * (1.0 - s.reputation)
            + w_load * s.in_flight / s.max_concurrency
            + w_errors * (s.error_rate + s.timeout_rate)
        )
        penalties: tuple[str, ...] = ()
        if soft:
            missed = []
            if max_latency_pref is not None and latency > max_latency_pref:
                missed.append(f"expected latency {latency:.0f} ms over preferred_max_latency")
            if min_tps_pref is not None and tps < min_tps_pref:
                missed.append(f"throughput {tps:.1f} tok/s under preferred_min_throughput")
            penalties = tuple(missed)
            score += config.soft_penalty * len(penalties)
        scored.append(ScoredCandidate(s, score, cost, latency, penalties))
    scored.sort(key=lambda c: (c.score, c.state.node_id))
    return scored


# --- selection -----------------------------------------------------------------------------------


def _examined_states(
    *,
    snapshot: NetworkSnapshot,
    model: str,
    prefs: RoutingPreferences,
    affinity_node: str | None,
    rng: random.Random,
    config: PolicyConfig,
    live: LiveOverlay | None,
) -> tuple[list[NodeModelState], tuple[NodeModelState, ...]]:
    """The states to examine first, and the whole pool (for a fallback full scan).

    The examined states are brought up to date through ``live``; the pool is as snapshotted.
    """
    pool = snapshot.candidates(model)
    if len(pool) <= config.scan_all_up_to:
        return _current(pool, live), pool
    provider = prefs.provider
    chosen: dict[str, NodeModelState] = {}
    named = list(provider.order) + sorted(provider.only or ())
    if affinity_node is not None:
        named.append(affinity_node)
    for name in named:
        for s in snapshot.find(model, name):
            chosen.setdefault(s.node_id, s)
    if provider.only is None:
        for s in snapshot.leaders(model):
            chosen.setdefault(s.node_id, s)
        # Drawn with replacement (a repeat is merely skipped): much cheaper than rng.sample, and
        # with pools this large repeats are rare.
        draw, size = rng.random, len(pool)
        for _ in range(config.sample_size):
            s = pool[int(draw() * size)]
            chosen.setdefault(s.node_id, s)
    return _current(chosen.values(), live), pool


def _current(states: Iterable[NodeModelState], live: LiveOverlay | None) -> list[NodeModelState]:
    if live is None:
        return list(states)
    current = live.current
    return [current(s) for s in states]


def _exclusion(state: NodeModelState, ctx: FilterContext) -> Exclusion:
    for check in FILTERS:
        reason = check(state, ctx)
        if reason is not None:
            return Exclusion(state.node_id, ctx.model, reason)
    raise AssertionError(f"{state.node_id} was rejected but every filter keeps it")


def _partition(
    states: list[NodeModelState],
    ctx: FilterContext,
    rejected: list[tuple[NodeModelState, FilterContext]],
) -> list[NodeModelState]:
    """Split ``states`` into eligible ones (returned) and rejected ones (appended).

    The hot path is one inlined predicate equivalent to "every filter in :data:`FILTERS` keeps
    the node" (a property test holds them equal); the filters run only to explain an exclusion,
    when :attr:`RouteDecision.excluded` is read.
    """
    eligible: list[NodeModelState] = []
    model, request, prefs = ctx.model, ctx.request, ctx.prefs
    customer = request.customer_account_id
    needed_tokens = request.prompt_tokens + request.max_tokens
    needed_params = (
        request.parameters
        if prefs.require_parameters
        else request.parameters & ALWAYS_REQUIRED_PARAMETERS
    )
    only, ignore, min_reputation = prefs.only, prefs.ignore, prefs.min_reputation
    prompt_max = prefs.max_price.prompt_micro_usd_per_1m
    completion_max = prefs.max_price.completion_micro_usd_per_1m
    for s in states:
        if (
            s.model == model
            and not s.suspended
            and s.in_flight < s.max_concurrency
            and (s.circuit == "closed" or (s.circuit == "half_open" and s.in_flight == 0))
            and s.owner_account_id != customer
            and (prompt_max is None or s.price_input_micro_usd_per_1m <= prompt_max)
            and (completion_max is None or s.price_output_micro_usd_per_1m <= completion_max)
            and s.reputation >= min_reputation
            and needed_tokens <= s.context_length
            and (not ignore or (s.provider not in ignore and s.node_id not in ignore))
            and (only is None or s.provider in only or s.node_id in only)
            and (not needed_params or needed_params <= s.supported_parameters)
        ):
            eligible.append(s)
        else:
            rejected.append((s, ctx))
    return eligible


def _order_rank(c: ScoredCandidate, order: tuple[str, ...]) -> int:
    for i, name in enumerate(order):
        if name in {c.state.provider, c.state.node_id}:
            return i
    return len(order)


def _unmeasured(state: NodeModelState) -> bool:
    """Never tried for this model: no latency sample and no failure either."""
    return state.ttft_p50_ms == 0 and state.error_rate == 0 and state.timeout_rate == 0


def _pick_primary(
    ranked: list[ScoredCandidate], rng: random.Random, config: PolicyConfig, *, by_price: bool
) -> tuple[ScoredCandidate, bool]:
    regular = [c for c in ranked if not c.state.probation]
    probation = [c for c in ranked if c.state.probation]
    if probation and regular and rng.random() < config.probation_share:
        # Uniform over every eligible probation node: the point is to measure them all, and
        # their scores rest on priors rather than measurements.
        return rng.choice(probation), True
    if not regular and not by_price:
        # Only new nodes (a network starting up): try each once before trusting the scores, or
        # the first one measured would look better than every prior and keep all the traffic.
        untried = [c for c in probation if _unmeasured(c.state)]
        if untried:
            return rng.choice(untried), True
    pool = regular or probation  # only new nodes: still honour price and the preferences
    best = pool[0].score
    near = [c for c in pool if c.score <= best * (1 + config.near_best_ratio)] or pool[:1]
    return rng.choice(near), not regular


def route(
    snapshot: NetworkSnapshot,
    prefs: RoutingPreferences,
    request: RouteRequest,
    *,
    rng: random.Random,
    affinity: Mapping[str, str] | None = None,
    config: PolicyConfig | None = None,
    live: LiveOverlay | None = None,
) -> RouteDecision:
    """Choose the nodes for one request; never raises for "no route" (see ``decision.primary``).

    ``affinity`` maps a ``session_id`` to the node id it used last; that node is the primary while
    it is still eligible (and no ``order`` is given). Fallback models (``prefs.models``) add their
    candidates after those of the requested model. ``live`` overlays volatile fields (jobs in
    flight, circuit state) on every state the decision examines.
    """
    cfg = config if config is not None else PolicyConfig()
    provider = prefs.provider
    affinity_node = (
        affinity.get(prefs.session_id) if affinity is not None and prefs.session_id else None
    )
    rejected: list[tuple[NodeModelState, FilterContext]] = []
    candidates: list[ScoredCandidate] = []
    examined_total = not_examined = 0
    affinity_used = probation_pick = False
    models = prefs.models_in_order()
    for model in models:
        ctx = FilterContext(model, request, provider)
        states, pool = _examined_states(
            snapshot=snapshot,
            model=model,
            prefs=prefs,
            affinity_node=affinity_node,
            rng=rng,
            config=cfg,
            live=live,
        )
        eligible = _partition(states, ctx, rejected)
        examined = len(states)
        if len(eligible) < cfg.max_candidates and examined < len(pool):
            seen = {s.node_id for s in states}
            rest = _current((s for s in pool if s.node_id not in seen), live)
            eligible += _partition(rest, ctx, rejected)
            examined = len(pool)
        examined_total += examined
        not_examined += len(pool) - examined
        ranked = score_candidates(eligible, request, provider, cfg)
        if not ranked:
            continue
        ordered: list[ScoredCandidate]
        if provider.order:
            ranked.sort(key=lambda c: _order_rank(c, provider.order))  # stable: score within rank
            in_order = [c for c in ranked if _order_rank(c, provider.order) < len(provider.order)]
            ordered = ranked if provider.allow_fallbacks else in_order
        else:
            sticky = next((c for c in ranked if c.state.node_id == affinity_node), None)
            if sticky is not None and not candidates:
                first, affinity_used = sticky, True
            elif not candidates:
                first, probation_pick = _pick_primary(
                    ranked, rng, cfg, by_price=provider.sort == "price"
                )
            else:
                first = ranked[0]
            ordered = [first, *(c for c in ranked if c is not first)]
            if not provider.allow_fallbacks:
                ordered = ordered[:1]
        candidates.extend(ordered[: cfg.max_candidates - len(candidates)])
        if len(candidates) >= cfg.max_candidates:
            break
    return RouteDecision(
        candidates=tuple(candidates),
        rejected=tuple(rejected),
        models_tried=models,
        examined=examined_total,
        not_examined=not_examined,
        affinity_used=affinity_used,
        probation_pick=probation_pick,
    )
