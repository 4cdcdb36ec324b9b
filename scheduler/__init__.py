"""Routing policy: pure functions over an immutable snapshot of the network.

No I/O, no clock reads and no imports from ``coordinator`` or ``node_agent``. The pipeline is
:func:`route` (filter -> score -> select) over a :class:`NetworkSnapshot`; the caller keeps the
:class:`MeasurementBook`, :class:`ReputationBook` and :class:`CircuitBook` up to date from observed
outcomes and keeps a snapshot built from them (see :class:`LiveOverlay` for fields too volatile
to rebuild a snapshot for). See ``docs/scheduling.md``.
"""

from scheduler.circuit import CircuitBook, CircuitBreaker, CircuitConfig
from scheduler.errors import InvalidPreferences, NoRouteAvailable, SchedulerError
from scheduler.measurements import (
    DecayingCount,
    DecayingQuantiles,
    MeasurementBook,
    Measurements,
    MeasurementSummary,
)
from scheduler.policy import (
    FILTERS,
    Exclusion,
    FilterContext,
    PolicyConfig,
    RouteDecision,
    RouteRequest,
    ScoredCandidate,
    Weights,
    route,
    score_candidates,
)
from scheduler.preferences import (
    MaxPrice,
    ProviderPreferences,
    RoutingPreferences,
    Sort,
    parse_provider,
    parse_routing_preferences,
    split_model_suffix,
    usd_per_1m_to_micro_usd,
)
from scheduler.reputation import Outcome, Reputation, ReputationBook
from scheduler.snapshot import (
    CircuitState,
    LiveOverlay,
    NetworkSnapshot,
    NodeModelState,
    SnapshotBuilder,
)
from scheduler.uptime import Uptime, UptimeBook

__all__ = [
    "FILTERS",
    "CircuitBook",
    "CircuitBreaker",
    "CircuitConfig",
    "CircuitState",
    "DecayingCount",
    "DecayingQuantiles",
    "Exclusion",
    "FilterContext",
    "InvalidPreferences",
    "LiveOverlay",
    "MaxPrice",
    "MeasurementBook",
    "MeasurementSummary",
    "Measurements",
    "NetworkSnapshot",
    "NoRouteAvailable",
    "NodeModelState",
    "Outcome",
    "PolicyConfig",
    "ProviderPreferences",
    "Reputation",
    "ReputationBook",
    "RouteDecision",
    "RouteRequest",
    "RoutingPreferences",
    "SchedulerError",
    "ScoredCandidate",
    "SnapshotBuilder",
    "Sort",
    "Uptime",
    "UptimeBook",
    "Weights",
    "parse_provider",
    "parse_routing_preferences",
    "route",
    "score_candidates",
    "split_model_suffix",
    "usd_per_1m_to_micro_usd",
]
