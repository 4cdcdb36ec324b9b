"""The coordinator's side of the scheduler: the books of observed outcomes and the live snapshot.

:mod:`scheduler` is pure policy; this module owns its mutable inputs:

* the :class:`~scheduler.MeasurementBook` (TTFT and tokens/s quantiles, error and timeout rates
  per node-and-model), the :class:`~scheduler.ReputationBook` (per node), the
  :class:`~scheduler.CircuitBook` (per node-and-model), all fed by :meth:`Router.record_success`
  and :meth:`Router.record_failure` after each attempt the dispatcher makes, and the
  :class:`~scheduler.UptimeBook` (per node), fed by the registry's join/leave/heard events;
* a bounded session-affinity map (``session_id`` -> the node that last served it, least recently
  used sessions forgotten first);
* the snapshot (:meth:`Router.snapshot`), kept up to date incrementally by a
  :class:`~scheduler.SnapshotBuilder`: a node's states are recomputed when it joins, changes its
  offers or has an outcome recorded, and otherwise round-robin every ``state_refresh_s`` (for
  decay); the volatile fields (jobs in flight, circuit state) are overlaid live on each
  decision, so a decision never sees them stale;
* the :class:`RouteLog`: why recent requests went where they went, for operators.

A node's public provider handle (``provider`` in the snapshot, matched by ``provider.order`` /
``only`` / ``ignore`` alongside node ids) is :func:`provider_handle` of its Provider's account:
stable and the same for all of a Provider's nodes, so a customer can pick a Provider's whole
fleet, but not the account id itself (public views never show account ids). What a node
supports comes from its offer. Time is ``time.monotonic`` unless a clock is given (tests).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from coordinator.hub.nodes import LiveNode, NodeRegistry
from coordinator.market.history import MarketHistory
from protocol import Offer
from scheduler import (
    CircuitBook,
    MeasurementBook,
    MeasurementSummary,
    NetworkSnapshot,
    NodeModelState,
    Outcome,
    PolicyConfig,
    ReputationBook,
    RouteDecision,
    RouteRequest,
    RoutingPreferences,
    SnapshotBuilder,
    UptimeBook,
    route,
)

__all__ = [
    "AttemptFailure",
    "AttemptRecord",
    "RouteInput",
    "RouteLog",
    "RouteRecord",
    "Router",
    "TaskRouteChoice",
    "fingerprint_status",
    "provider_handle",
]


def fingerprint_status(weights_hash: str | None, known: Sequence[str]) -> str:
    """``matches``, ``mismatch`` (the catalogue knows other weights) or ``unknown``."""
    if weights_hash is None or not known:
        return "unknown"
    return "matches" if weights_hash in known else "mismatch"


@functools.lru_cache(maxsize=65_536)
def provider_handle(account_id: str) -> str:
    """The public, anonymised handle of a Provider account: ``pv_`` + 16 base32 characters of
    a SHA-256 of the account id (random, so the handle reveals nothing of it)."""
    digest = hashlib.sha256(b"shareai-provider-handle:" + account_id.encode()).digest()
    return "pv_" + base64.b32encode(digest).decode().lower()[:16]


AttemptFailure = Literal["failure", "timeout", "disconnect", "node_cancel"]


@dataclass
class AttemptRecord:
    """One node tried for a request, and what came of it."""

    node_id: str
    model: str
    outcome: str
    """``served``, ``failed``, ``timeout``, ``disconnected``, ``node_cancel``, ``rejected``,
    ``hedge_lost`` (cancelled: the other racer answered first) or ``cancelled`` (the customer
    left), while running ``running``."""
    detail: str = ""
    hedge: bool = False
    """Started as a hedge (a second racer) rather than after a failure."""
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))


@dataclass
class RouteRecord:
    """Why one request went where it went: the decision and every attempt."""

    request_id: str
    customer_account_id: str | None
    model: str
    decision: RouteDecision
    hedging: bool
    at_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    attempts: list[AttemptRecord] = field(default_factory=list)
    served_by: str | None = None
    error: str | None = None

    @property
    def served_model(self) -> str | None:
        """The network id of the model that served the request (a fallback model, maybe)."""
        for attempt in reversed(self.attempts):
            if attempt.node_id == self.served_by:
                return attempt.model
        return None

    def to_json(self) -> dict[str, Any]:
        d = self.decision
        return {
            "request_id": self.request_id,
            "at_ms": self.at_ms,
            "customer_account_id": self.customer_account_id,
            "model": self.model,
            "served_by": self.served_by,
            "error": self.error,
            "hedging": self.hedging,
            "attempts": [
                {
                    "node": a.node_id,
                    "model": a.model,
                    "outcome": a.outcome,
                    "detail": a.detail,
                    "hedge": a.hedge,
                    "started_ms": a.started_ms,
                }
                for a in self.attempts
            ],
            "decision": {
                "models_tried": list(d.models_tried),
                "examined": d.examined,
                "not_examined": d.not_examined,
                "affinity_used": d.affinity_used,
                "probation_pick": d.probation_pick,
                "candidates": [
                    {
                        "node": c.state.node_id,
                        "provider": c.state.provider,
                        "model": c.state.model,
                        "score": round(c.score, 6),
                        "expected_cost_micro_usd": round(c.expected_cost_micro_usd, 3),
                        "expected_latency_ms": round(c.expected_latency_ms, 1),
                        "soft_penalties": list(c.soft_penalties),
                        "inputs": {
                            "price_input_micro_usd_per_1m": c.state.price_input_micro_usd_per_1m,
                            "price_output_micro_usd_per_1m": c.state.price_output_micro_usd_per_1m,
                            "ttft_p50_ms": c.state.ttft_p50_ms or None,
                            "ttft_p90_ms": c.state.ttft_p90_ms or None,
                            "tokens_per_s_p50": c.state.tokens_per_s_p50 or None,
                            "error_rate": round(c.state.error_rate, 4),
                            "timeout_rate": round(c.state.timeout_rate, 4),
                            "reputation": round(c.state.reputation, 4),
                            "in_flight": c.state.in_flight,
                            "max_concurrency": c.state.max_concurrency,
                            "circuit": c.state.circuit,
                            "probation": c.state.probation,
                        },
                    }
                    for c in d.candidates
                ],
                "excluded": [
                    {"node": e.node_id, "model": e.model, "reason": e.reason} for e in d.excluded
                ],
            },
        }


class RouteLog:
    """The most recent :class:`RouteRecord` s, by request id (oldest forgotten first)."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._records: OrderedDict[str, RouteRecord] = OrderedDict()

    def add(self, record: RouteRecord) -> None:
        self._records[record.request_id] = record
        self._records.move_to_end(record.request_id)
        while len(self._records) > self.limit:
            self._records.popitem(last=False)

    def get(self, request_id: str) -> RouteRecord | None:
        return self._records.get(request_id)

    def recent(self, limit: int) -> list[RouteRecord]:
        """Newest first."""
        out: list[RouteRecord] = []
        for key in reversed(self._records):
            if len(out) >= limit:
                break
            out.append(self._records[key])
        return out


@dataclass(frozen=True, slots=True)
class TaskRouteChoice:
    """Which task route (and version) a request used, and the rule that chose its models."""

    name: str
    version: int
    rule: str
    owner: Literal["account", "app"]


@dataclass
class RouteInput:
    """What the API layer hands the dispatcher for one request; the dispatcher fills the rest."""

    prefs: RoutingPreferences
    request: RouteRequest
    request_id: str = ""
    task_route: TaskRouteChoice | None = None
    """The task route and rule that chose the models, for ``model: "route:NAME"``."""
    attempts: int = 0
    hedged: bool = False
    """A second node was raced against a late first one."""
    decision: RouteDecision | None = None
    record: RouteRecord | None = None


class _LiveView:
    """The :class:`~scheduler.LiveOverlay` of one decision: in-flight jobs and circuits now."""

    __slots__ = ("_circuits", "_node", "_now", "_tripped")

    def __init__(self, router: Router, now_s: float) -> None:
        self._node = router.registry.lookup
        self._tripped = router.tripped
        self._circuits = router.circuits
        self._now = now_s

    def current(self, state: NodeModelState) -> NodeModelState:
        node = self._node(state.node_id)
        in_flight = (
            node.in_flight.get(state.model, 0) if node is not None else state.max_concurrency
        )
        tripped = self._tripped.get(state.node_id) if self._tripped else None
        if tripped is None or state.model not in tripped:
            if in_flight == state.in_flight:
                return state
            return replace(state, in_flight=in_flight)
        circuit = self._circuits.of(state.node_id, state.model).state(self._now)
        if in_flight == state.in_flight and circuit == state.circuit:
            return state
        return replace(state, in_flight=in_flight, circuit=circuit)


@dataclass
class Router:
    registry: NodeRegistry
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    state_refresh_s: float = 30.0
    """Each node-and-model state is recomputed at least this often (measurements decay with a
    10-minute half-life, so a 30-second-old state is close enough)."""
    max_refreshes_per_snapshot: int = 256
    """Bounds the work of one :meth:`snapshot` call after a long idle spell."""
    always_fresh_up_to: int = 256
    """Networks of at most this many node-model states apply news at every decision; larger
    ones batch it, at most every ``apply_every_s`` (the volatile fields stay live regardless)."""
    apply_every_s: float = 0.01
    hedge_default: bool = False
    """Whether requests that do not say (``provider.hedge``) are hedged."""
    affinity_limit: int = 10_000
    forget_after_s: float = 7 * 86_400.0
    """Books of a node gone this long are dropped (its reputation has decayed to the prior)."""
    measurements: MeasurementBook = field(default_factory=MeasurementBook)
    reputation: ReputationBook = field(default_factory=ReputationBook)
    circuits: CircuitBook = field(default_factory=CircuitBook)
    uptime: UptimeBook = field(default_factory=UptimeBook)
    affinity: OrderedDict[str, str] = field(default_factory=OrderedDict)
    routes: RouteLog = field(default_factory=RouteLog)
    history: MarketHistory = field(default_factory=MarketHistory)
    """Per-model served minutes and availability for the public model pages (wall clock)."""
    states_computed: int = 0
    """How many node-and-model states were (re)computed: the snapshot upkeep's work."""
    _builder: SnapshotBuilder = field(default_factory=SnapshotBuilder)
    _dirty: set[str] = field(default_factory=set)
    _models_of: dict[str, frozenset[str]] = field(default_factory=dict)
    _refresh_order: OrderedDict[tuple[str, str], None] = field(default_factory=OrderedDict)
    _refreshed_at_s: float | None = None
    _applied_at_s: float | None = None
    tripped: dict[str, set[str]] = field(default_factory=dict)
    """Node id -> models whose circuit left ``closed`` (overlaid live on decisions)."""
    _last_sweep_s: float | None = None

    def __post_init__(self) -> None:
        self.registry.listen(self)
        for node in self.registry.all():  # already connected before the router existed
            self.node_added(node)

    # --- the registry's events (RegistryListener) ---------------------------------------------

    def node_added(self, node: LiveNode) -> None:
        self.uptime.of(node.node_id).connected(self.clock(), node.heartbeat_interval_s)
        self.history.node_offers(node.node_id, () if node.suspended else node.offers)
        self._dirty.add(node.node_id)

    def node_removed(self, node: LiveNode) -> None:
        self.uptime.of(node.node_id).disconnected(self.clock())
        self.history.node_offers(node.node_id, ())
        self._dirty.add(node.node_id)

    def node_offers_changed(self, node: LiveNode) -> None:
        self.history.node_offers(node.node_id, () if node.suspended else node.offers)
        self._dirty.add(node.node_id)

    def node_heard(self, node: LiveNode) -> None:
        self.uptime.of(node.node_id).heartbeat(self.clock())

    # --- the snapshot ---------------------------------------------------------------------------

    def snapshot(self) -> NetworkSnapshot:
        """The network as of now: news applied, the states due for decay refreshed.

        On a large network news is applied in batches (see ``apply_every_s``), so the snapshot
        may be that much behind on measurements and membership, never on load or circuits.
        """
        now = self.clock()
        if (
            self._applied_at_s is not None
            and now - self._applied_at_s < self.apply_every_s
            and len(self._refresh_order) > self.always_fresh_up_to
        ):
            return self._builder.build()
        self._applied_at_s = now
        for node_id in self._dirty:
            self._sync(node_id, now)
        self._dirty.clear()
        self._refresh_due(now)
        self._sweep(now)
        return self._builder.build()

    def _sync(self, node_id: str, now_s: float) -> None:
        """Recompute the states of ``node_id`` (all its models); drop what it no longer offers."""
        node = self.registry.get(node_id)
        offers = node.offers if node is not None else {}
        for model in self._models_of.get(node_id, frozenset()) - offers.keys():
            self._builder.remove(node_id, model)
            self._refresh_order.pop((node_id, model), None)
        if node is None:
            self._models_of.pop(node_id, None)
            return
        self._models_of[node_id] = frozenset(offers)
        for model, offer in offers.items():
            self._builder.upsert(self._state(node, model, offer, now_s))
            self._refresh_order[(node_id, model)] = None
            self._refresh_order.move_to_end((node_id, model))

    def _refresh_due(self, now_s: float) -> None:
        """Recompute the oldest states, at the pace that refreshes each every state_refresh_s."""
        last, self._refreshed_at_s = self._refreshed_at_s, now_s
        if last is None or now_s <= last or not self._refresh_order:
            return
        due = len(self._refresh_order) * (now_s - last) / self.state_refresh_s
        count = min(max(1, round(due)), self.max_refreshes_per_snapshot, len(self._refresh_order))
        for _ in range(count):
            node_id, model = next(iter(self._refresh_order))
            self._refresh_order.move_to_end((node_id, model))
            node = self.registry.get(node_id)
            offer = node.offers.get(model) if node is not None else None
            if node is None or offer is None:
                self._dirty.add(node_id)  # gone: the next snapshot removes it
                continue
            self._builder.upsert(self._state(node, model, offer, now_s))

    def _state(self, node: LiveNode, model: str, offer: Offer, now_s: float) -> NodeModelState:
        self.states_computed += 1
        rep = self.reputation.of(node.node_id)
        summary = self.measurements.of(node.node_id, model).summary(now_s)
        return NodeModelState(
            node_id=node.node_id,
            owner_account_id=node.provider_account_id,
            model=model,
            provider=provider_handle(node.provider_account_id),
            price_input_micro_usd_per_1m=offer.price_input_micro_usd_per_1m,
            price_output_micro_usd_per_1m=offer.price_output_micro_usd_per_1m,
            max_concurrency=offer.max_concurrency,
            in_flight=node.in_flight.get(model, 0),
            context_length=offer.context_length,
            supported_parameters=frozenset(offer.supported_parameters),
            ttft_p50_ms=summary.ttft_p50_ms,
            ttft_p90_ms=summary.ttft_p90_ms,
            tokens_per_s_p50=summary.tokens_per_s_p50,
            error_rate=summary.error_rate,
            timeout_rate=summary.timeout_rate,
            reputation=rep.score(now_s),
            circuit=self.circuits.of(node.node_id, model).state(now_s),
            probation=rep.in_probation,
            suspended=node.suspended,
        )

    def _sweep(self, now_s: float) -> None:
        """Forget the books of nodes long gone (at most once a minute)."""
        if self._last_sweep_s is not None and now_s - self._last_sweep_s < 60.0:
            return
        self._last_sweep_s = now_s
        live = {node.node_id for node in self.registry.all()}
        for node_id in list(self.tripped):
            if node_id not in live:
                self._untrip_closed(node_id, now_s)
        gone = [
            node_id
            for node_id in self.uptime.idle_nodes(now_s, self.forget_after_s)
            if node_id not in live
        ]
        for node_id in gone:
            self.uptime.forget_node(node_id)
            self.reputation.forget_node(node_id)
            self.measurements.forget_node(node_id)
            self.circuits.forget_node(node_id)
            self.tripped.pop(node_id, None)

    def _untrip_closed(self, node_id: str, now_s: float) -> None:
        models = self.tripped.get(node_id, set())
        for model in [m for m in models if self.circuits.of(node_id, m).state(now_s) == "closed"]:
            models.discard(model)
        if not models:
            self.tripped.pop(node_id, None)

    # --- decisions ------------------------------------------------------------------------------

    def decide(self, prefs: RoutingPreferences, request: RouteRequest) -> RouteDecision:
        return route(
            self.snapshot(),
            prefs,
            request,
            rng=self.rng,
            affinity=self.affinity,
            config=self.policy,
            live=_LiveView(self, self.clock()),
        )

    def hedging(self, prefs: RoutingPreferences) -> bool:
        """Whether this request is hedged: its own ``provider.hedge``, else the default."""
        return prefs.provider.hedge if prefs.provider.hedge is not None else self.hedge_default

    def hedge_after_ms(self, state: NodeModelState) -> float:
        """How long to wait for ``state``'s node's first token before racing another node: its
        own TTFT p90 (the policy's prior TTFT while it has none)."""
        return state.ttft_p90_ms if state.ttft_p90_ms > 0 else self.policy.unknown_ttft_ms

    def may_try(self, node_id: str, model: str) -> bool:
        """The circuit's say: always when closed, once (the probe) when half-open, never open."""
        return self.circuits.of(node_id, model).try_acquire_probe(self.clock())

    def remember_session(self, session_id: str, node_id: str) -> None:
        self.affinity[session_id] = node_id
        self.affinity.move_to_end(session_id)
        while len(self.affinity) > self.affinity_limit:
            self.affinity.popitem(last=False)

    # --- outcomes -------------------------------------------------------------------------------

    def record_success(
        self, node_id: str, model: str, *, ttft_ms: float, tokens_per_s: float | None
    ) -> None:
        now = self.clock()
        self.measurements.of(node_id, model).record_success(
            now, ttft_ms=ttft_ms, tokens_per_s=tokens_per_s
        )
        self.reputation.of(node_id).record("completion", now)
        self.circuits.of(node_id, model).record_success(now)
        node = self.registry.get(node_id)
        offer = node.offers.get(model) if node is not None else None
        self.history.record_served(
            model,
            ttft_ms=ttft_ms,
            tokens_per_s=tokens_per_s,
            price_input_micro_usd_per_1m=offer.price_input_micro_usd_per_1m if offer else None,
            price_output_micro_usd_per_1m=offer.price_output_micro_usd_per_1m if offer else None,
        )
        self._dirty.add(node_id)
        if node_id in self.tripped:
            self._untrip_closed(node_id, now)

    def record_failure(self, node_id: str, model: str, kind: AttemptFailure) -> None:
        now = self.clock()
        self.measurements.of(node_id, model).record_failure(
            now, "timeout" if kind == "timeout" else "error"
        )
        self.reputation.of(node_id).record(kind, now)
        circuit = self.circuits.of(node_id, model)
        circuit.record_failure(now)
        if circuit.state(now) != "closed":
            self.tripped.setdefault(node_id, set()).add(model)
        self._dirty.add(node_id)

    def record_lost_hedge(self, node_id: str, model: str, *, waited_ms: float) -> None:
        """``node_id`` had not answered after ``waited_ms`` when another node won the race."""
        self.measurements.of(node_id, model).record_censored_ttft(
            self.clock(), at_least_ms=waited_ms
        )
        self._dirty.add(node_id)

    def record_outcome(self, node_id: str, outcome: Outcome) -> None:
        """A reputation-only outcome found after the fact (e.g. a token-count mismatch)."""
        self.reputation.of(node_id).record(outcome, self.clock())
        self._dirty.add(node_id)

    # --- views ----------------------------------------------------------------------------------

    def endpoints(self, model: str) -> list[dict[str, Any]]:
        """Per-node offers for ``model``, any spelling of it (public: prices, measurements,
        uptime, reputation; the node's own name for the model and whether its weights'
        fingerprint is one the catalogue knows)."""
        now = self.clock()
        entry = self.registry.catalogue.resolve(model)
        model = entry.id if entry is not None else model
        rows: list[dict[str, Any]] = []
        for node in sorted(self.registry.all(), key=lambda n: n.node_id):
            offer = node.offers.get(model)
            if offer is None or node.suspended:  # a suspended node takes no jobs
                continue
            summary = self.measurements.of(node.node_id, model).summary(now)
            rep = self.reputation.of(node.node_id)
            rows.append(
                {
                    "node": node.node_id,
                    "provider": provider_handle(node.provider_account_id),
                    "provider_name": self.registry.public_name(node.provider_account_id),
                    "served_as": offer.model,
                    "fingerprint": fingerprint_status(
                        offer.weights_hash, entry.fingerprints if entry is not None else ()
                    ),
                    "pricing": {
                        "unit": "micro-USD per 1M tokens",
                        "input": offer.price_input_micro_usd_per_1m,
                        "output": offer.price_output_micro_usd_per_1m,
                    },
                    "context_length": offer.context_length,
                    "supported_parameters": sorted(offer.supported_parameters),
                    "latency_ms": {
                        "p50": summary.ttft_p50_ms or None,
                        "p90": summary.ttft_p90_ms or None,
                    },
                    "throughput_tokens_per_s": {
                        "p50": summary.tokens_per_s_p50 or None,
                        "p90": self.measurements.of(node.node_id, model).tokens_per_s.quantile(
                            0.9, now
                        ),
                    },
                    "error_rate": round(summary.error_rate, 4),
                    "timeout_rate": round(summary.timeout_rate, 4),
                    "samples": summary.samples,
                    "uptime": round(self.uptime.of(node.node_id).ratio(now), 4),
                    "reputation": round(rep.score(now), 4),
                    "probation": rep.in_probation,
                    "circuit": self.circuits.of(node.node_id, model).state(now),
                    "in_flight": node.in_flight.get(model, 0),
                    "max_concurrency": offer.max_concurrency,
                }
            )
        return rows

    def node_report(self, node_id: str) -> dict[str, Any] | None:
        """Everything the router knows of one node, live or remembered (for operators)."""
        now = self.clock()
        node = self.registry.get(node_id)
        rep = self.reputation.get(node_id)
        uptime = self.uptime.get(node_id)
        if node is None and rep is None and uptime is None:
            return None
        models = sorted(node.offers) if node is not None else []
        return {
            "node": node_id,
            "live": node is not None,
            "suspended": node.suspended if node is not None else None,
            "provider_account_id": node.provider_account_id if node is not None else None,
            "provider": provider_handle(node.provider_account_id) if node is not None else None,
            "uptime": round(uptime.ratio(now), 4) if uptime is not None else None,
            "reputation": {
                "score": round(rep.score(now), 4) if rep is not None else None,
                "probation": rep.in_probation if rep is not None else True,
                "inputs": rep.inputs(now) if rep is not None else {},
            },
            "models": {
                model: {
                    **_summary_json(self.measurements.of(node_id, model).summary(now)),
                    "circuit": self.circuits.of(node_id, model).state(now),
                    "circuit_cooldown_s": self.circuits.of(node_id, model).cooldown_s,
                }
                for model in models
            },
        }


def _summary_json(summary: MeasurementSummary) -> dict[str, Any]:
    return {
        "ttft_ms": {"p50": summary.ttft_p50_ms or None, "p90": summary.ttft_p90_ms or None},
        "tokens_per_s_p50": summary.tokens_per_s_p50 or None,
        "error_rate": round(summary.error_rate, 4),
        "timeout_rate": round(summary.timeout_rate, 4),
        "samples": summary.samples,
    }
