"""Per-model market history, in memory and bounded: the model pages' charts and availability.

Two records per model network id, both fed by the :class:`~coordinator.routing.Router`:

- **served minutes** (:meth:`MarketHistory.record_served`, after each successful attempt): per
  UTC minute with traffic, the number of requests served, their mean time to first token and
  tokens/s, and the mean and lowest price paid (micro-USD per 1M tokens, the serving node's
  offer). Minutes without traffic are not stored; they read as ``None`` (a gap in a chart).
- **availability** (:meth:`MarketHistory.node_offers`, on every join, leave and offers change of
  a node): the intervals during which at least one live, unsuspended node offered the model. A
  model's availability over a window is the share of the window it was offered, counted from
  when this coordinator first saw it (so a model seen 10 minutes ago and offered since is 100 %).

Bounds: ``keep_s`` of history (24 h by default) and at most ``max_models`` models with served
minutes (the least recently served forgotten first), so at most ``max_models * keep_s / 60``
minute records. Everything is lost when the coordinator restarts. Time is wall-clock seconds
(``time.time`` unless a clock is given), so minutes can be labelled in UTC.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = ["MarketHistory", "MinutePoint"]


class _Minute:
    """What was served of one model in one minute (sums, so adding a request is O(1))."""

    __slots__ = (
        "price_input_min",
        "price_input_sum",
        "price_output_min",
        "price_output_sum",
        "priced",
        "requests",
        "start_s",
        "tokens_per_s_count",
        "tokens_per_s_sum",
        "ttft_ms_sum",
    )

    def __init__(self, start_s: float) -> None:
        self.start_s = start_s
        self.requests = 0
        self.ttft_ms_sum = 0.0
        self.tokens_per_s_sum = 0.0
        self.tokens_per_s_count = 0
        self.priced = 0
        self.price_input_sum = 0
        self.price_output_sum = 0
        self.price_input_min: int | None = None
        self.price_output_min: int | None = None


@dataclass(frozen=True, slots=True)
class MinutePoint:
    """One step of a model's history (a minute, or several merged); ``None``: nothing served."""

    start_s: float
    requests: int
    ttft_ms_mean: float | None
    tokens_per_s_mean: float | None
    price_input_mean: float | None
    """Mean price paid, micro-USD per 1M input tokens."""
    price_output_mean: float | None
    price_input_lowest: int | None
    price_output_lowest: int | None


@dataclass
class _Availability:
    nodes: set[str] = field(default_factory=set)
    first_seen_s: float = 0.0
    up_since_s: float | None = None
    intervals: deque[tuple[float, float]] = field(default_factory=deque)
    """Closed intervals (start, end) during which the model was offered, oldest first."""


class MarketHistory:
    """See the module docstring. Not thread-safe (the coordinator runs on one event loop)."""

    def __init__(
        self,
        *,
        keep_s: float = 86_400.0,
        max_models: int = 2_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if keep_s < 60 or max_models < 1:
            raise ValueError("keep at least one minute of at least one model")
        self.keep_s = keep_s
        self.max_models = max_models
        self.clock = clock
        self._served: OrderedDict[str, deque[_Minute]] = OrderedDict()
        self._availability: dict[str, _Availability] = {}
        self._node_models: dict[str, frozenset[str]] = {}
        self._trimmed_at_s: float | None = None

    # --- feeding ---------------------------------------------------------------------------

    def record_served(
        self,
        model: str,
        *,
        ttft_ms: float,
        tokens_per_s: float | None,
        price_input_micro_usd_per_1m: int | None,
        price_output_micro_usd_per_1m: int | None,
    ) -> None:
        """One request of ``model`` was served now."""
        now = self.clock()
        start = now - now % 60
        minutes = self._served.get(model)
        if minutes is None:
            minutes = self._served[model] = deque()
            while len(self._served) > self.max_models:
                self._served.popitem(last=False)
        self._served.move_to_end(model)
        if not minutes or minutes[-1].start_s < start:
            minutes.append(_Minute(start))
        while minutes and minutes[0].start_s <= now - self.keep_s - 60:
            minutes.popleft()
        minute = minutes[-1]
        minute.requests += 1
        minute.ttft_ms_sum += ttft_ms
        if tokens_per_s is not None:
            minute.tokens_per_s_sum += tokens_per_s
            minute.tokens_per_s_count += 1
        if price_input_micro_usd_per_1m is not None and price_output_micro_usd_per_1m is not None:
            minute.priced += 1
            minute.price_input_sum += price_input_micro_usd_per_1m
            minute.price_output_sum += price_output_micro_usd_per_1m
            minute.price_input_min = _lowest(minute.price_input_min, price_input_micro_usd_per_1m)
            minute.price_output_min = _lowest(
                minute.price_output_min, price_output_micro_usd_per_1m
            )

    def node_offers(self, node_id: str, models: Iterable[str]) -> None:
        """``node_id`` offers exactly ``models`` from now on (nothing: it left or is suspended)."""
        now = self.clock()
        wanted = frozenset(models)
        before = self._node_models.get(node_id, frozenset())
        if wanted:
            self._node_models[node_id] = wanted
        else:
            self._node_models.pop(node_id, None)
        for model in before - wanted:
            entry = self._availability.get(model)
            if entry is None:
                continue
            entry.nodes.discard(node_id)
            if not entry.nodes and entry.up_since_s is not None:
                entry.intervals.append((entry.up_since_s, now))
                entry.up_since_s = None
        for model in wanted - before:
            entry = self._availability.get(model)
            if entry is None:
                entry = self._availability[model] = _Availability(first_seen_s=now)
            if not entry.nodes:
                entry.up_since_s = now
            entry.nodes.add(node_id)
        self._trim_availability(now)

    def _trim_availability(self, now_s: float) -> None:
        """Drop intervals older than the kept history (at most once a minute: it is O(models))."""
        if self._trimmed_at_s is not None and now_s - self._trimmed_at_s < 60:
            return
        self._trimmed_at_s = now_s
        horizon = now_s - self.keep_s
        for model in list(self._availability):
            entry = self._availability[model]
            while entry.intervals and entry.intervals[0][1] < horizon:
                entry.intervals.popleft()
            if not entry.nodes and not entry.intervals:
                del self._availability[model]

    # --- reading ---------------------------------------------------------------------------

    def availability(self, model: str, window_s: float) -> float | None:
        """The share of the last ``window_s`` seconds during which ``model`` was offered, from
        when it was first seen; ``None`` for a model not seen within the kept history."""
        entry = self._availability.get(model)
        if entry is None:
            return None
        now = self.clock()
        start = max(now - min(window_s, self.keep_s), entry.first_seen_s)
        observed = now - start
        up = sum(max(0.0, min(end, now) - max(begin, start)) for begin, end in entry.intervals)
        if entry.up_since_s is not None:
            up += max(0.0, now - max(entry.up_since_s, start))
        if observed <= 0:
            return 1.0 if entry.up_since_s is not None else 0.0
        return min(1.0, up / observed)

    def series(self, model: str, window_s: float, step_s: float = 60.0) -> list[MinutePoint]:
        """``model``'s history over the last ``window_s`` seconds in steps of ``step_s`` (a
        multiple of 60), oldest first, one point per step whether or not anything was served."""
        if step_s < 60 or step_s % 60:
            raise ValueError("a step is a whole number of minutes")
        now = self.clock()
        window_s = min(window_s, self.keep_s)
        last = now - now % step_s
        steps = max(1, int(window_s // step_s))
        first = last - (steps - 1) * step_s
        buckets: list[list[_Minute]] = [[] for _ in range(steps)]
        for minute in self._served.get(model, ()):
            index = int((minute.start_s - first) // step_s)
            if 0 <= index < steps:
                buckets[index].append(minute)
        return [_point(first + i * step_s, bucket) for i, bucket in enumerate(buckets)]

    def models(self) -> list[str]:
        """Models with served minutes or availability records, sorted."""
        return sorted(set(self._served) | set(self._availability))


def _lowest(current: int | None, value: int) -> int:
    return value if current is None else min(current, value)


def _point(start_s: float, minutes: list[_Minute]) -> MinutePoint:
    requests = sum(m.requests for m in minutes)
    tps_count = sum(m.tokens_per_s_count for m in minutes)
    priced = sum(m.priced for m in minutes)
    inputs = [m.price_input_min for m in minutes if m.price_input_min is not None]
    outputs = [m.price_output_min for m in minutes if m.price_output_min is not None]
    return MinutePoint(
        start_s=start_s,
        requests=requests,
        ttft_ms_mean=sum(m.ttft_ms_sum for m in minutes) / requests if requests else None,
        tokens_per_s_mean=(
            sum(m.tokens_per_s_sum for m in minutes) / tps_count if tps_count else None
        ),
        price_input_mean=sum(m.price_input_sum for m in minutes) / priced if priced else None,
        price_output_mean=sum(m.price_output_sum for m in minutes) / priced if priced else None,
        price_input_lowest=min(inputs, default=None),
        price_output_lowest=min(outputs, default=None),
    )
