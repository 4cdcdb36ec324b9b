"""A circuit breaker per node-and-model.

States::

    closed --(N consecutive failures, or decayed failure rate >= R over >= M attempts)--> open
    open --(cool-down elapsed)--> half_open
    half_open --(the single probe succeeds)--> closed          (cool-down reset to the base)
    half_open --(the probe fails)--> open                      (cool-down doubled, capped)

Time is passed in (``now_s``); nothing reads a clock. :meth:`CircuitBreaker.state` performs the
open -> half_open transition lazily, so a snapshot built at ``now_s`` sees the right state;
:meth:`CircuitBreaker.try_acquire_probe` lets exactly one request through while half-open. A
probe whose outcome is never recorded (the customer went away mid-probe) does not block the
node forever: after one cool-down the probe lease lapses and another probe may go.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scheduler.measurements import DecayingCount
from scheduler.snapshot import CircuitState

__all__ = ["CircuitBook", "CircuitBreaker", "CircuitConfig"]


@dataclass(frozen=True, slots=True)
class CircuitConfig:
    consecutive_failures: int = 5
    failure_rate: float = 0.5
    min_attempts_for_rate: float = 10.0
    rate_half_life_s: float = 60.0
    base_cooldown_s: float = 10.0
    max_cooldown_s: float = 300.0


@dataclass
class CircuitBreaker:
    config: CircuitConfig = CircuitConfig()
    _state: CircuitState = "closed"
    _consecutive: int = 0
    _cooldown_s: float = 0.0
    _opened_at_s: float = 0.0
    _probe_out: bool = False
    _probe_at_s: float = 0.0
    _attempts: DecayingCount = field(init=False)
    _failures: DecayingCount = field(init=False)

    def __post_init__(self) -> None:
        self._cooldown_s = self.config.base_cooldown_s
        self._attempts = DecayingCount(self.config.rate_half_life_s)
        self._failures = DecayingCount(self.config.rate_half_life_s)

    def state(self, now_s: float) -> CircuitState:
        if self._state == "open" and now_s - self._opened_at_s >= self._cooldown_s:
            self._state = "half_open"
            self._probe_out = False
        return self._state

    @property
    def cooldown_s(self) -> float:
        return self._cooldown_s

    def try_acquire_probe(self, now_s: float) -> bool:
        """Whether a request may go now: always when closed, once when half-open, never open."""
        state = self.state(now_s)
        if state == "closed":
            return True
        lease_lapsed = self._probe_out and now_s - self._probe_at_s >= self._cooldown_s
        if state == "half_open" and (not self._probe_out or lease_lapsed):
            self._probe_out = True
            self._probe_at_s = now_s
            return True
        return False

    def _open(self, now_s: float) -> None:
        self._state = "open"
        self._opened_at_s = now_s
        self._probe_out = False

    def record_success(self, now_s: float) -> None:
        self._attempts.add(1.0, now_s)
        self._consecutive = 0
        if self.state(now_s) == "half_open":
            self._state = "closed"
            self._cooldown_s = self.config.base_cooldown_s
            self._attempts = DecayingCount(self.config.rate_half_life_s)
            self._failures = DecayingCount(self.config.rate_half_life_s)

    def record_failure(self, now_s: float) -> None:
        cfg = self.config
        self._attempts.add(1.0, now_s)
        self._failures.add(1.0, now_s)
        self._consecutive += 1
        state = self.state(now_s)
        if state == "half_open":
            self._cooldown_s = min(self._cooldown_s * 2.0, cfg.max_cooldown_s)
            self._open(now_s)
        elif state == "closed":
            attempts = self._attempts.value(now_s)
            rate_trips = (
                attempts >= cfg.min_attempts_for_rate
                and self._failures.value(now_s) / attempts >= cfg.failure_rate
            )
            if self._consecutive >= cfg.consecutive_failures or rate_trips:
                self._open(now_s)


@dataclass
class CircuitBook:
    config: CircuitConfig = CircuitConfig()
    _entries: dict[tuple[str, str], CircuitBreaker] = field(default_factory=dict)

    def of(self, node_id: str, model: str) -> CircuitBreaker:
        key = (node_id, model)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = CircuitBreaker(self.config)
        return entry

    def forget_node(self, node_id: str) -> None:
        for key in [k for k in self._entries if k[0] == node_id]:
            del self._entries[key]
