"""Routing policy: pure functions over an immutable snapshot of the network.

No I/O, no clock reads and no imports from ``coordinator`` or ``node_agent``. The pipeline is
:func:`route` (filter -> score -> select) over a :class:`NetworkSnapshot`; the caller keeps the
:class:`MeasurementBook`, :class:`ReputationBook` and :class:`CircuitBook` up to date from observed
outcomes and keeps a snapshot built from them (see :class:`LiveOverlay` for fields too volatile
to rebuild a snapshot for). See ``docs/scheduling.md``.

Task routes (:func:`parse_task_route`, :func:`match_task_route`) choose the models for a
``route:NAME`` request from the first rule of a customer's route that the request matches.
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
from scheduler.task_routes import (
    ROUTE_PREFIX,
    Conditions,
    InvalidTaskRoute,
    KnownModel,
    RequestFeatures,
    Rule,
    RuleEvaluation,
    RuleMatch,
    TaskRoute,
    match_task_route,
    parse_conditions,
    parse_task_route,
    route_name,
)
from scheduler.uptime import Uptime, UptimeBook

__all__ = [
    "FILTERS",
    "ROUTE_PREFIX",
    "CircuitBook",
    "CircuitBreaker",
    "CircuitConfig",
    "CircuitState",
    "Conditions",
    "DecayingCount",
    "DecayingQuantiles",
    "Exclusion",
    "FilterContext",
    "InvalidPreferences",
    "InvalidTaskRoute",
    "KnownModel",
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
    "RequestFeatures",
    "RouteDecision",
    "RouteRequest",
    "RoutingPreferences",
    "Rule",
    "RuleEvaluation",
    "RuleMatch",
    "SchedulerError",
    "ScoredCandidate",
    "SnapshotBuilder",
    "Sort",
    "TaskRoute",
    "Uptime",
    "UptimeBook",
    "Weights",
    "match_task_route",
    "parse_conditions",
    "parse_provider",
    "parse_routing_preferences",
    "parse_task_route",
    "route",
    "route_name",
    "score_candidates",
    "split_model_suffix",
    "usd_per_1m_to_micro_usd",
]
