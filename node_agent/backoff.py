"""Reconnect delays: exponential backoff with full jitter.

The ceiling doubles from ``min_s`` to ``max_s`` with each failed attempt, and each delay is drawn
uniformly between 0 and the ceiling ("full jitter"), so a coordinator restart does not bring
every node back in the same instant. :meth:`Backoff.reset` starts over after a session that
stayed up.
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays, in seconds, before successive reconnect attempts."""

    def __init__(self, min_s: float, max_s: float, *, rng: random.Random | None = None) -> None:
        if not 0 < min_s <= max_s:
            raise ValueError("backoff needs 0 < min_s <= max_s")
        self.min_s = min_s
        self.max_s = max_s
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self.attempts = 0

    def ceiling_s(self) -> float:
        """The largest delay the next attempt may get."""
        # Cap the exponent: 2**attempts overflows a float long before a node gives up.
        return min(self.max_s, self.min_s * 2.0 ** min(self.attempts, 64))

    def next_delay_s(self) -> float:
        """The delay before the next attempt (and count the attempt)."""
        delay = self._rng.uniform(0, self.ceiling_s())
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.attempts = 0
