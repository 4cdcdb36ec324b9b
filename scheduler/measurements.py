"""Per node-and-model measurements: decaying estimates of latency, throughput and failure rates.

Time is always passed in (``now_s``, seconds on any monotonic clock); nothing here reads a clock.

* Quantiles (TTFT p50/p90, tokens/s p50) come from a bounded reservoir of the most recent samples,
  each weighted by ``2 ** (-age / half_life_s)``; the weighted quantile is the smallest sample whose
  cumulative weight reaches the fraction. Old samples fade, and the reservoir bounds memory.
* Rates (errors, timeouts) are ratios of two :class:`DecayingCount` (events / attempts) with the
  same half-life, so an incident is forgotten at the same pace as the traffic that saw it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "DecayingCount",
    "DecayingQuantiles",
    "MeasurementBook",
    "MeasurementSummary",
    "Measurements",
]


class DecayingCount:
    """A sum whose past halves every ``half_life_s`` seconds."""

    __slots__ = ("_half_life_s", "_last_s", "_value")

    def __init__(self, half_life_s: float) -> None:
        self._half_life_s = half_life_s
        self._value = 0.0
        self._last_s: float | None = None

    def _decay_to(self, now_s: float) -> None:
        if self._last_s is not None and now_s > self._last_s:
            self._value *= 2.0 ** (-(now_s - self._last_s) / self._half_life_s)
        if self._last_s is None or now_s > self._last_s:
            self._last_s = now_s

    def add(self, amount: float, now_s: float) -> None:
        self._decay_to(now_s)
        self._value += amount

    def value(self, now_s: float) -> float:
        self._decay_to(now_s)
        return self._value


class DecayingQuantiles:
    """Time-weighted quantiles over the last ``capacity`` samples."""

    __slots__ = ("_half_life_s", "_samples")

    def __init__(self, half_life_s: float, capacity: int = 64) -> None:
        self._half_life_s = half_life_s
        self._samples: deque[tuple[float, float]] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, value: float, now_s: float) -> None:
        self._samples.append((now_s, value))

    def quantile(self, fraction: float, now_s: float) -> float | None:
        """The weighted ``fraction`` quantile, or ``None`` with no samples."""
        return self.quantiles((fraction,), now_s)[0]

    def quantiles(self, fractions: tuple[float, ...], now_s: float) -> tuple[float | None, ...]:
        """Several weighted quantiles (``fractions`` ascending) from one sort of the samples."""
        if not self._samples:
            return tuple(None for _ in fractions)
        half_life = self._half_life_s
        weighted = sorted(
            (value, 2.0 ** (-max(0.0, now_s - t) / half_life)) for t, value in self._samples
        )
        total = sum(w for _, w in weighted)
        found: list[float | None] = []
        running = 0.0
        i = 0
        for fraction in fractions:
            target = fraction * total
            while i < len(weighted) and running + weighted[i][1] < target:
                running += weighted[i][1]
                i += 1
            found.append(weighted[min(i, len(weighted) - 1)][0])
        return tuple(found)


@dataclass(frozen=True, slots=True)
class MeasurementSummary:
    """Fields of :class:`~scheduler.NodeModelState`; ``0.0`` means "no measurement yet"."""

    ttft_p50_ms: float
    ttft_p90_ms: float
    tokens_per_s_p50: float
    error_rate: float
    timeout_rate: float
    samples: int


Failure = Literal["error", "timeout"]


@dataclass
class Measurements:
    """One node serving one model."""

    half_life_s: float = 600.0
    ttft_ms: DecayingQuantiles = field(init=False)
    tokens_per_s: DecayingQuantiles = field(init=False)
    attempts: DecayingCount = field(init=False)
    errors: DecayingCount = field(init=False)
    timeouts: DecayingCount = field(init=False)

    def __post_init__(self) -> None:
        self.ttft_ms = DecayingQuantiles(self.half_life_s)
        self.tokens_per_s = DecayingQuantiles(self.half_life_s)
        self.attempts = DecayingCount(self.half_life_s)
        self.errors = DecayingCount(self.half_life_s)
        self.timeouts = DecayingCount(self.half_life_s)

    def record_success(self, now_s: float, *, ttft_ms: float, tokens_per_s: float | None) -> None:
        """A completed job. ``tokens_per_s`` is ``None`` when too few tokens were produced."""
        self.attempts.add(1.0, now_s)
        self.ttft_ms.add(ttft_ms, now_s)
        if tokens_per_s is not None and tokens_per_s > 0:
            self.tokens_per_s.add(tokens_per_s, now_s)

    def record_censored_ttft(self, now_s: float, *, at_least_ms: float) -> None:
        """An attempt abandoned before its first token (a lost hedge): TTFT was at least this.

        Counted as a TTFT sample (a lower bound) so a node that turns slow shows it in its
        quantiles, but neither as an attempt nor as a failure.
        """
        self.ttft_ms.add(at_least_ms, now_s)

    def record_failure(self, now_s: float, kind: Failure) -> None:
        self.attempts.add(1.0, now_s)
        (self.errors if kind == "error" else self.timeouts).add(1.0, now_s)

    def summary(self, now_s: float) -> MeasurementSummary:
        attempts = self.attempts.value(now_s)
        ttft_p50, ttft_p90 = self.ttft_ms.quantiles((0.5, 0.9), now_s)
        return MeasurementSummary(
            ttft_p50_ms=ttft_p50 or 0.0,
            ttft_p90_ms=ttft_p90 or 0.0,
            tokens_per_s_p50=self.tokens_per_s.quantile(0.5, now_s) or 0.0,
            error_rate=self.errors.value(now_s) / attempts if attempts > 0 else 0.0,
            timeout_rate=self.timeouts.value(now_s) / attempts if attempts > 0 else 0.0,
            samples=len(self.ttft_ms),
        )


@dataclass
class MeasurementBook:
    """Measurements keyed by ``(node_id, model)``, created on first use."""

    half_life_s: float = 600.0
    _entries: dict[tuple[str, str], Measurements] = field(default_factory=dict)

    def of(self, node_id: str, model: str) -> Measurements:
        key = (node_id, model)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = Measurements(self.half_life_s)
        return entry

    def forget_node(self, node_id: str) -> None:
        for key in [k for k in self._entries if k[0] == node_id]:
            del self._entries[key]
