"""Time as a seam: the session reads time only through a :class:`Clock`, so tests can move it."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """Wall-clock time (for frame timestamps) and monotonic time (for deadlines), in seconds."""

    def time(self) -> float: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The real clocks of this machine."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to: both readings advance together."""

    def __init__(self, wall_s: float = 1_767_225_600.0, monotonic_s: float = 1_000.0) -> None:
        self._wall_s = wall_s
        self._monotonic_s = monotonic_s

    def time(self) -> float:
        return self._wall_s

    def monotonic(self) -> float:
        return self._monotonic_s

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a manual clock only moves forward")
        self._wall_s += seconds
        self._monotonic_s += seconds

    def set_wall(self, wall_s: float) -> None:
        """Move only the wall clock (to simulate skew between machines)."""
        self._wall_s = wall_s
