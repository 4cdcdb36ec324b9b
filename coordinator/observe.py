"""What the coordinator tells operators about itself: Prometheus metrics and one log line per
request (docs/operators.md, "Metrics and logs").

:class:`Observer` owns a Prometheus registry (one per process; tests build their own) and starts
a :class:`RequestObservation` per inference request. The observation ends exactly once, whatever
the path (a JSON answer, a stream that ends, is cut or is abandoned, an error before dispatch):
that one end counts the request by model and outcome, observes its latency, time to first token
and tokens, and writes the ``shareai.requests`` log line.

Labels are bounded: the model label is a catalogued id or ``uncatalogued`` (a node may announce
any name), the outcome is ``completed``, ``cut``, ``disconnected`` or an API error code (a
closed set), and there is no per-request, per-customer or per-node label. Live figures (nodes,
sessions, jobs in flight, the credit gate's postings) are read when Prometheus scrapes.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from coordinator.billing import CreditGate
    from coordinator.catalogue import LiveCatalogue
    from coordinator.hub.nodes import NodeRegistry

__all__ = ["CONTENT_TYPE", "UNCATALOGUED", "Observer", "RequestObservation"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNCATALOGUED = "uncatalogued"

request_log = logging.getLogger("shareai.requests")

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


_WINDOW_MINUTES = 60
_TTFT_SAMPLES_PER_MINUTE = 512


@dataclass
class _Minute:
    """What ended in one wall-clock minute."""

    start_s: int
    outcomes: dict[str, int] = field(default_factory=dict)
    tokens: int = 0
    ttft_ms: list[float] = field(default_factory=list)
    latency_ms_total: float = 0.0


class TrafficWindow:
    """The last hour of requests in one-minute buckets (the status page's numbers and chart).

    Memory is bounded: 60 buckets, each with at most 512 time-to-first-token samples (the first
    512 of the minute; enough for its quantiles).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._minutes: deque[_Minute] = deque(maxlen=_WINDOW_MINUTES)

    def _bucket(self) -> _Minute:
        start = int(self._clock() // 60 * 60)
        if not self._minutes or self._minutes[-1].start_s != start:
            self._minutes.append(_Minute(start))
        return self._minutes[-1]

    def add(self, outcome: str, tokens: int, ttft_ms: float | None, latency_ms: float) -> None:
        minute = self._bucket()
        minute.outcomes[outcome] = minute.outcomes.get(outcome, 0) + 1
        minute.tokens += tokens
        minute.latency_ms_total += latency_ms
        if ttft_ms is not None and len(minute.ttft_ms) < _TTFT_SAMPLES_PER_MINUTE:
            minute.ttft_ms.append(ttft_ms)

    def summary(self) -> dict[str, object]:
        """The last hour: per-minute series (oldest first) and totals over the current and
        previous minute and over the hour (rates per minute). ``error_rate`` counts every
        outcome but ``completed`` and ``disconnected``."""
        now_minute = int(self._clock() // 60 * 60)
        by_start = {m.start_s: m for m in self._minutes}
        series = []
        for index in range(_WINDOW_MINUTES - 1, -1, -1):
            start = now_minute - index * 60
            minute = by_start.get(start)
            requests = sum(minute.outcomes.values()) if minute is not None else 0
            series.append(
                {
                    "minute_start_s": start,
                    "requests": requests,
                    "tokens": minute.tokens if minute is not None else 0,
                    "ttft_ms_p50": _quantile(minute.ttft_ms, 0.5) if minute is not None else None,
                    "latency_ms_mean": (
                        round(minute.latency_ms_total / requests, 1)
                        if minute is not None and requests
                        else None
                    ),
                }
            )
        hour = [m for m in self._minutes if m.start_s > now_minute - _WINDOW_MINUTES * 60]
        recent = [m for m in hour if m.start_s >= now_minute - 60]  # this minute and the last
        return {
            "last_2_minutes": _totals(recent, minutes=2),
            "last_hour": _totals(hour, minutes=_WINDOW_MINUTES),
            "per_minute": series,
        }


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def _totals(buckets: list[_Minute], *, minutes: int) -> dict[str, object]:
    outcomes: dict[str, int] = {}
    tokens = 0
    ttfts: list[float] = []
    for minute in buckets:
        for outcome, count in minute.outcomes.items():
            outcomes[outcome] = outcomes.get(outcome, 0) + count
        tokens += minute.tokens
        ttfts.extend(minute.ttft_ms)
    requests = sum(outcomes.values())
    failed = requests - outcomes.get("completed", 0) - outcomes.get("disconnected", 0)
    return {
        "requests": requests,
        "requests_per_minute": round(requests / minutes, 2),
        "tokens_per_minute": round(tokens / minutes, 1),
        "error_rate": round(failed / requests, 4) if requests else 0.0,
        "ttft_ms": {"p50": _quantile(ttfts, 0.5), "p90": _quantile(ttfts, 0.9)},
        "by_outcome": dict(sorted(outcomes.items())),
    }


class Observer:
    """The process's metrics; :meth:`start` one observation per inference request."""

    def __init__(
        self,
        *,
        catalogue: LiveCatalogue | None = None,
        nodes: NodeRegistry | None = None,
        gate: CreditGate | None = None,
        sessions_open: Callable[[], int] | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "shareai_requests",
            "Inference requests by model and outcome",
            ["model", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "shareai_request_duration_seconds",
            "From the request's arrival to its last byte or error",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "shareai_time_to_first_token_seconds",
            "From the request's arrival to the first output the customer received",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "shareai_tokens",
            "Tokens billed, by model and kind (prompt, completion)",
            ["model", "kind"],
            registry=self.registry,
        )
        self.attempts = Counter(
            "shareai_scheduler_attempts",
            "Nodes tried per request: first (the scheduler's pick) or failover",
            ["kind"],
            registry=self.registry,
        )
        self.hedged = Counter(
            "shareai_hedged_requests",
            "Requests a second node was raced for",
            registry=self.registry,
        )
        self.registry.register(_LiveFigures(nodes, gate, sessions_open))
        self.window = TrafficWindow()

    def model_label(self, model: str | None) -> str:
        if model is None:
            return "none"
        if self.catalogue is not None and self.catalogue.current.get(model) is not None:
            return model
        return UNCATALOGUED

    def start(self, request_id: str, requested_model: str) -> RequestObservation:
        return RequestObservation(self, request_id, requested_model)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)


@dataclass
class RequestObservation:
    """One request, from arrival to its one end (see the module doc)."""

    observer: Observer
    request_id: str
    requested_model: str
    started_s: float = field(default_factory=time.monotonic)
    first_output_s: float | None = None
    ended: bool = False

    def first_output(self) -> None:
        if self.first_output_s is None:
            self.first_output_s = time.monotonic()

    def end(
        self,
        outcome: str,
        *,
        status: int,
        model: str | None = None,
        node: str | None = None,
        attempts: int = 0,
        hedged: bool = False,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cost_micro_usd: int = 0,
    ) -> None:
        """Count the request and write its log line; later calls do nothing."""
        if self.ended:
            return
        self.ended = True
        now = time.monotonic()
        observer = self.observer
        label = observer.model_label(model)
        observer.requests.labels(label, outcome).inc()
        observer.latency.labels(label).observe(now - self.started_s)
        if self.first_output_s is not None:
            observer.ttft.labels(label).observe(self.first_output_s - self.started_s)
        if prompt_tokens:
            observer.tokens.labels(label, "prompt").inc(prompt_tokens)
        if completion_tokens:
            observer.tokens.labels(label, "completion").inc(completion_tokens)
        if attempts:
            observer.attempts.labels("first").inc()
            if attempts > 1:
                observer.attempts.labels("failover").inc(attempts - 1)
        if hedged:
            observer.hedged.inc()
        ttft_ms = (
            (self.first_output_s - self.started_s) * 1000
            if self.first_output_s is not None
            else None
        )
        observer.window.add(
            outcome, prompt_tokens + completion_tokens, ttft_ms, (now - self.started_s) * 1000
        )
        if not request_log.isEnabledFor(logging.INFO):
            return
        request_log.info(
            "%s",
            json.dumps(
                {
                    "request_id": self.request_id,
                    "requested_model": self.requested_model,
                    "model": model,
                    "node": node,
                    "outcome": outcome,
                    "status": status,
                    "attempts": attempts,
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "cost_micro_usd": cost_micro_usd,
                    "ttft_ms": (
                        round((self.first_output_s - self.started_s) * 1000, 1)
                        if self.first_output_s is not None
                        else None
                    ),
                    "latency_ms": round((now - self.started_s) * 1000, 1),
                },
                separators=(",", ":"),
            ),
        )


class _LiveFigures(Collector):
    """Gauges and counters read from the running parts when Prometheus scrapes."""

    def __init__(
        self,
        nodes: NodeRegistry | None,
        gate: CreditGate | None,
        sessions_open: Callable[[], int] | None,
    ) -> None:
        self._nodes = nodes
        self._gate = gate
        self._sessions_open = sessions_open

    def collect(self) -> Iterator[Metric]:
        if self._nodes is not None:
            live = self._nodes.all()
            yield GaugeMetricFamily(
                "shareai_nodes_active", "Nodes connected and admitted", value=len(live)
            )
            yield GaugeMetricFamily(
                "shareai_jobs_in_flight",
                "Jobs running on nodes",
                value=sum(sum(node.in_flight.values()) for node in live),
            )
        if self._sessions_open is not None:
            yield GaugeMetricFamily(
                "shareai_node_sessions_open",
                "Node websockets open (including handshakes in progress)",
                value=self._sessions_open(),
            )
        if self._gate is not None:
            gate = self._gate
            yield CounterMetricFamily(
                "shareai_ledger_postings",
                "Credit leases posted to the ledger (each settles a batch of requests)",
                value=gate.leases_posted,
            )
            yield CounterMetricFamily(
                "shareai_ledger_posting_failures",
                "Lease postings that failed (retried, or left unbilled when refused)",
                value=gate.post_failures,
            )
            yield CounterMetricFamily(
                "shareai_credit_refusals",
                "Requests refused for insufficient credits (402)",
                value=gate.refusals,
            )
            yield CounterMetricFamily(
                "shareai_leases_opened",
                "Credit leases held in the ledger",
                value=gate.leases_opened,
            )
