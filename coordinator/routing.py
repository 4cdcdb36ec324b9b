"""The coordinator's side of the scheduler: the books of observed outcomes and the live snapshot.

:mod:`scheduler` is pure policy; this module owns its mutable inputs:

* the :class:`~scheduler.MeasurementBook` (TTFT and tokens/s quantiles, error and timeout rates
  per node-and-model), the :class:`~scheduler.ReputationBook` (per node) and the
  :class:`~scheduler.CircuitBook` (per node-and-model), all fed by :meth:`Router.record_success`
  and :meth:`Router.record_failure` after each attempt the dispatcher makes;
* a bounded session-affinity map (``session_id`` -> the node that last served it, least recently
  used sessions forgotten first);
* :meth:`Router.snapshot`, a :class:`~scheduler.NetworkSnapshot` built from the
  :class:`~coordinator.hub.nodes.NodeRegistry` (offers, in-flight jobs, owner =
  ``provider_account_id``) and the books, and :meth:`Router.decide`, which calls
  :func:`scheduler.route` over it.

Choices made for now: a node's public handle (``provider`` in the snapshot, matched by
``provider.order`` / ``only`` / ``ignore``) is its node id; every node is taken to support every
request parameter (:data:`SUPPORTED_PARAMETERS`), because offers do not say yet: a node whose
backend cannot serve tools says so with a retryable ``failed`` and the dispatcher fails over.
Time is ``time.monotonic`` unless a clock is given (tests).
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from coordinator.hub.nodes import NodeRegistry
from scheduler import (
    CircuitBook,
    MeasurementBook,
    NetworkSnapshot,
    NodeModelState,
    PolicyConfig,
    ReputationBook,
    RouteDecision,
    RouteRequest,
    RoutingPreferences,
    route,
)

__all__ = ["SUPPORTED_PARAMETERS", "AttemptFailure", "RouteInput", "Router"]

SUPPORTED_PARAMETERS = frozenset(
    {
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "seed",
        "stop",
        "temperature",
        "top_p",
        "max_tokens",
        "presence_penalty",
        "frequency_penalty",
    }
)
"""What every node is assumed to support (offers carry no parameter list yet)."""

AttemptFailure = Literal["failure", "timeout", "disconnect"]


@dataclass
class RouteInput:
    """What the API layer hands the dispatcher for one request; ``attempts`` is filled in."""

    prefs: RoutingPreferences
    request: RouteRequest
    attempts: int = 0
    decision: RouteDecision | None = None


@dataclass
class Router:
    registry: NodeRegistry
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    affinity_limit: int = 10_000
    measurements: MeasurementBook = field(default_factory=MeasurementBook)
    reputation: ReputationBook = field(default_factory=ReputationBook)
    circuits: CircuitBook = field(default_factory=CircuitBook)
    affinity: OrderedDict[str, str] = field(default_factory=OrderedDict)

    def snapshot(self) -> NetworkSnapshot:
        now = self.clock()
        states: list[NodeModelState] = []
        for node in self.registry.all():
            rep = self.reputation.of(node.node_id)
            reputation = rep.score(now)
            for model, offer in node.offers.items():
                summary = self.measurements.of(node.node_id, model).summary(now)
                states.append(
                    NodeModelState(
                        node_id=node.node_id,
                        owner_account_id=node.provider_account_id,
                        model=model,
                        provider=node.node_id,
                        price_input_micro_usd_per_1m=offer.price_input_micro_usd_per_1m,
                        price_output_micro_usd_per_1m=offer.price_output_micro_usd_per_1m,
                        max_concurrency=offer.max_concurrency,
                        in_flight=node.in_flight.get(model, 0),
                        context_length=offer.context_length,
                        supported_parameters=SUPPORTED_PARAMETERS,
                        ttft_p50_ms=summary.ttft_p50_ms,
                        ttft_p90_ms=summary.ttft_p90_ms,
                        tokens_per_s_p50=summary.tokens_per_s_p50,
                        error_rate=summary.error_rate,
                        timeout_rate=summary.timeout_rate,
                        reputation=reputation,
                        circuit=self.circuits.of(node.node_id, model).state(now),
                        probation=rep.in_probation,
                    )
                )
        return NetworkSnapshot.build(states)

    def decide(self, prefs: RoutingPreferences, request: RouteRequest) -> RouteDecision:
        return route(
            self.snapshot(),
            prefs,
            request,
            rng=self.rng,
            affinity=self.affinity,
            config=self.policy,
        )

    def may_try(self, node_id: str, model: str) -> bool:
        """The circuit's say: always when closed, once (the probe) when half-open, never open."""
        return self.circuits.of(node_id, model).try_acquire_probe(self.clock())

    def remember_session(self, session_id: str, node_id: str) -> None:
        self.affinity[session_id] = node_id
        self.affinity.move_to_end(session_id)
        while len(self.affinity) > self.affinity_limit:
            self.affinity.popitem(last=False)

    def record_success(
        self, node_id: str, model: str, *, ttft_ms: float, tokens_per_s: float | None
    ) -> None:
        now = self.clock()
        self.measurements.of(node_id, model).record_success(
            now, ttft_ms=ttft_ms, tokens_per_s=tokens_per_s
        )
        self.reputation.of(node_id).record("completion", now)
        self.circuits.of(node_id, model).record_success(now)

    def record_failure(self, node_id: str, model: str, kind: AttemptFailure) -> None:
        now = self.clock()
        self.measurements.of(node_id, model).record_failure(
            now, "timeout" if kind == "timeout" else "error"
        )
        self.reputation.of(node_id).record(kind, now)
        self.circuits.of(node_id, model).record_failure(now)

    def endpoints(self, model: str) -> list[dict[str, Any]]:
        """Per-node offers for ``model``: prices, measurements, reputation, circuit, load."""
        now = self.clock()
        rows: list[dict[str, Any]] = []
        for node in sorted(self.registry.all(), key=lambda n: n.node_id):
            offer = node.offers.get(model)
            if offer is None:
                continue
            summary = self.measurements.of(node.node_id, model).summary(now)
            rep = self.reputation.of(node.node_id)
            rows.append(
                {
                    "node": node.node_id,
                    "pricing": {
                        "unit": "micro-USD per 1M tokens",
                        "input": offer.price_input_micro_usd_per_1m,
                        "output": offer.price_output_micro_usd_per_1m,
                    },
                    "context_length": offer.context_length,
                    "latency_ms": {
                        "p50": summary.ttft_p50_ms or None,
                        "p90": summary.ttft_p90_ms or None,
                    },
                    "throughput_tokens_per_s": {"p50": summary.tokens_per_s_p50 or None},
                    "error_rate": round(summary.error_rate, 4),
                    "timeout_rate": round(summary.timeout_rate, 4),
                    "samples": summary.samples,
                    "reputation": round(rep.score(now), 4),
                    "probation": rep.in_probation,
                    "circuit": self.circuits.of(node.node_id, model).state(now),
                    "in_flight": node.in_flight.get(model, 0),
                    "max_concurrency": offer.max_concurrency,
                }
            )
        return rows
