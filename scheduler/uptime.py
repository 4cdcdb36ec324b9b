"""Uptime from heartbeats: the decayed share of time a node was reachable since it was first seen.

Time is passed in (``now_s``, seconds on any monotonic clock). The caller reports three events:
:meth:`Uptime.connected`, :meth:`Uptime.heartbeat` (any frame from the node counts) and
:meth:`Uptime.disconnected`. Between two contacts at most ``grace_intervals`` heartbeat intervals
apart the node counts as up for the whole gap; a longer silence counts as up for one interval
(the node was fine until its next heartbeat was due) and down for the rest. Time while
disconnected is down. Up and observed time decay with ``half_life_s`` (one day by default), so
::

    uptime = decayed up time / decayed observed time        (1.0 before any observation)

forgives an outage at the pace the evidence of good behaviour fades.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scheduler.measurements import DecayingCount

__all__ = ["Uptime", "UptimeBook"]


@dataclass
class Uptime:
    """One node's uptime record."""

    half_life_s: float = 86_400.0
    grace_intervals: float = 2.0
    _up: DecayingCount = field(init=False)
    _observed: DecayingCount = field(init=False)
    _last_contact_s: float | None = None
    _down_since_s: float | None = None
    _interval_s: float = 15.0
    last_event_s: float = 0.0

    def __post_init__(self) -> None:
        self._up = DecayingCount(self.half_life_s)
        self._observed = DecayingCount(self.half_life_s)

    @property
    def online(self) -> bool:
        return self._last_contact_s is not None

    def connected(self, now_s: float, interval_s: float) -> None:
        """The node's session started; ``interval_s`` is its heartbeat interval."""
        if self._down_since_s is not None:
            self._observed.add(max(0.0, now_s - self._down_since_s), now_s)
            self._down_since_s = None
        elif self._last_contact_s is not None:  # a new session replaced one never closed
            self._account_gap(now_s)
        self._interval_s = max(interval_s, 1e-3)
        self._last_contact_s = now_s
        self.last_event_s = now_s

    def heartbeat(self, now_s: float) -> None:
        """A frame arrived from the node."""
        if self._last_contact_s is None:
            return
        self._account_gap(now_s)
        self._last_contact_s = now_s
        self.last_event_s = now_s

    def disconnected(self, now_s: float) -> None:
        """The node's session ended; it is down from its last contact plus one interval."""
        if self._last_contact_s is None:
            return
        last = self._last_contact_s
        up_until = min(now_s, last + self._interval_s)
        self._add(up=up_until - last, observed=up_until - last, now_s=now_s)
        self._last_contact_s = None
        self._down_since_s = up_until
        self.last_event_s = now_s

    def _account_gap(self, now_s: float) -> None:
        assert self._last_contact_s is not None
        gap = max(0.0, now_s - self._last_contact_s)
        if gap <= self._interval_s * self.grace_intervals:
            self._add(up=gap, observed=gap, now_s=now_s)
        else:
            self._add(up=self._interval_s, observed=gap, now_s=now_s)

    def _add(self, *, up: float, observed: float, now_s: float) -> None:
        self._up.add(up, now_s)
        self._observed.add(observed, now_s)

    def ratio(self, now_s: float) -> float:
        """Decayed up time over decayed observed time, counting an outage still going on."""
        up = self._up.value(now_s)
        observed = self._observed.value(now_s)
        if self._down_since_s is not None:
            observed += max(0.0, now_s - self._down_since_s)
        elif self._last_contact_s is not None:
            silence = max(0.0, now_s - self._last_contact_s)
            within_grace = silence <= self._interval_s * self.grace_intervals
            up += silence if within_grace else self._interval_s
            observed += silence
        return up / observed if observed > 0 else 1.0


@dataclass
class UptimeBook:
    """Uptime per node id, kept across reconnects."""

    half_life_s: float = 86_400.0
    grace_intervals: float = 2.0
    _entries: dict[str, Uptime] = field(default_factory=dict)

    def of(self, node_id: str) -> Uptime:
        entry = self._entries.get(node_id)
        if entry is None:
            entry = self._entries[node_id] = Uptime(self.half_life_s, self.grace_intervals)
        return entry

    def get(self, node_id: str) -> Uptime | None:
        return self._entries.get(node_id)

    def __len__(self) -> int:
        return len(self._entries)

    def idle_nodes(self, now_s: float, idle_s: float) -> list[str]:
        """Offline nodes with no event for more than ``idle_s`` seconds."""
        return [
            node_id
            for node_id, entry in self._entries.items()
            if not entry.online and now_s - entry.last_event_s > idle_s
        ]

    def forget_node(self, node_id: str) -> None:
        self._entries.pop(node_id, None)
