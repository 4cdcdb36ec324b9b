"""Errors of the scheduler package.

Hierarchy::

    SchedulerError
    ├── InvalidPreferences   a routing preference in the request body is malformed (HTTP 400)
    └── NoRouteAvailable     no node qualifies; carries the decision that explains why (HTTP 503)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.policy import RouteDecision

__all__ = ["InvalidPreferences", "NoRouteAvailable", "SchedulerError"]


class SchedulerError(Exception):
    """Root of every error raised by :mod:`scheduler`."""


class InvalidPreferences(SchedulerError):
    """A preference failed to parse; ``field`` is its dotted path (``provider.max_price``)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class NoRouteAvailable(SchedulerError):
    """No node qualifies for the request; ``decision.excluded`` says why for each node examined."""

    def __init__(self, decision: RouteDecision) -> None:
        super().__init__(f"no node can serve {decision.models_tried!r}")
        self.decision = decision
