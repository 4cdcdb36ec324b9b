"""What the public marketplace shows: model rows, one model's endpoints, Provider profiles.

Pure functions over the registry, the router's books and the :class:`MarketHistory`; the pages
(:mod:`coordinator.web.market`) and the JSON (:mod:`coordinator.api.market`) both show what they
return, so the two never disagree. Nothing here names an account: Providers are their
:func:`~coordinator.routing.provider_handle`, plus the public name a Provider chose to publish
(``provider_name``, None when it did not; read from the registry's in-memory map).

The figures, precisely:

- prices are the live offers' (micro-USD per 1M tokens): lowest and median (``median_low``);
- ``ttft_p50_ms`` and ``tokens_per_s_p50`` of a model are the median over its measured nodes of
  each node's own p50 (the router's measurements, decayed with a 10-minute half-life);
- ``availability_hour`` / ``availability_day``: the share of the last hour / 24 hours during
  which at least one live node offered the model, since this coordinator first saw it
  (:meth:`MarketHistory.availability`);
- a node's ``uptime`` is the router's decayed uptime (heartbeats, one-day half-life);
- ``high_reputation_share``: the share of the model's capacity (concurrent jobs) on nodes out of
  probation with reputation at least :data:`HIGH_REPUTATION`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from coordinator.catalogue import Catalogue
from coordinator.hub.nodes import NodeRegistry
from coordinator.routing import Router, provider_handle

__all__ = [
    "DAY_S",
    "HIGH_REPUTATION",
    "HOUR_S",
    "SORTS",
    "InvalidQuery",
    "ModelQuery",
    "ModelRow",
    "ProviderProfile",
    "model_rows",
    "parse_model_query",
    "provider_profiles",
    "select_rows",
]

HIGH_REPUTATION = 0.75
"""A node at or above this reputation (and out of probation) counts as high-reputation capacity.
With the reputation prior of 0.5 and prior strength 10, it takes 10 clean completions more than
bad outcomes to get there."""

HOUR_S = 3_600.0
DAY_S = 86_400.0

Sort = Literal["name", "price", "speed", "latency", "availability", "nodes"]
SORTS: tuple[Sort, ...] = ("name", "price", "speed", "latency", "availability", "nodes")
_MAX_QUERY_CHARS = 200


class InvalidQuery(ValueError):
    """A models query parameter that cannot be used; the message says which and why."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class ModelRow:
    model: str
    name: str
    catalogued: bool
    nodes: int
    capacity: int
    context_length: int
    price_lowest_input: int
    price_lowest_output: int
    price_median_input: int
    price_median_output: int
    ttft_p50_ms: float | None
    tokens_per_s_p50: float | None
    availability_hour: float | None
    availability_day: float | None
    high_reputation_share: float

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.model,
            "name": self.name,
            "catalogued": self.catalogued,
            "nodes": self.nodes,
            "capacity": self.capacity,
            "context_length": self.context_length,
            "pricing": {
                "unit": "micro-USD per 1M tokens",
                "lowest": {"input": self.price_lowest_input, "output": self.price_lowest_output},
                "median": {"input": self.price_median_input, "output": self.price_median_output},
            },
            "ttft_ms_p50": _round(self.ttft_p50_ms, 1),
            "tokens_per_s_p50": _round(self.tokens_per_s_p50, 1),
            "availability": {
                "last_hour": _round(self.availability_hour, 4),
                "last_day": _round(self.availability_day, 4),
            },
            "high_reputation_share": round(self.high_reputation_share, 4),
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _median(values: Iterable[float]) -> float | None:
    present = [v for v in values if v > 0]
    return statistics.median(present) if present else None


def model_rows(registry: NodeRegistry, router: Router, catalogue: Catalogue) -> list[ModelRow]:
    """Every model served now, by network id (see the module docstring for each figure)."""
    snapshot = router.snapshot()
    rows = []
    for summary in registry.summaries():
        states = snapshot.candidates(summary.model)
        capacity = sum(s.max_concurrency for s in states)
        trusted = sum(
            s.max_concurrency for s in states if not s.probation and s.reputation >= HIGH_REPUTATION
        )
        entry = catalogue.get(summary.model)
        rows.append(
            ModelRow(
                model=summary.model,
                name=entry.name if entry is not None else summary.model,
                catalogued=entry is not None,
                nodes=summary.nodes,
                capacity=capacity,
                context_length=summary.context_length,
                price_lowest_input=summary.min_price_input_micro_usd_per_1m,
                price_lowest_output=summary.min_price_output_micro_usd_per_1m,
                price_median_input=summary.median_price_input_micro_usd_per_1m,
                price_median_output=summary.median_price_output_micro_usd_per_1m,
                ttft_p50_ms=_median(s.ttft_p50_ms for s in states),
                tokens_per_s_p50=_median(s.tokens_per_s_p50 for s in states),
                availability_hour=router.history.availability(summary.model, HOUR_S),
                availability_day=router.history.availability(summary.model, DAY_S),
                high_reputation_share=trusted / capacity if capacity else 0.0,
            )
        )
    return rows


# --- sorting and filtering -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelQuery:
    """``?q=&sort=&max_price=&min_speed=&min_availability=`` of the models page and JSON."""

    q: str = ""
    """Part of the model id or name, case-insensitive."""
    sort: Sort = "name"
    max_price_micro_usd: int | None = None
    """Lowest output price per 1M tokens at most this (given in USD, e.g. ``0.50``)."""
    min_tokens_per_s: float | None = None
    min_availability: float | None = None
    """Availability over the last day at least this share (given in percent, e.g. ``99``)."""

    def params(self) -> dict[str, str]:
        """The query as URL parameters (only what differs from the defaults)."""
        out: dict[str, str] = {}
        if self.q:
            out["q"] = self.q
        if self.sort != "name":
            out["sort"] = self.sort
        if self.max_price_micro_usd is not None:
            out["max_price"] = str(Decimal(self.max_price_micro_usd) / 1_000_000)
        if self.min_tokens_per_s is not None:
            out["min_speed"] = f"{self.min_tokens_per_s:g}"
        if self.min_availability is not None:
            out["min_availability"] = f"{self.min_availability * 100:g}"
        return out


def _number(params: Mapping[str, str], name: str, what: str) -> Decimal | None:
    raw = params.get(name, "").strip()
    if not raw:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise InvalidQuery(name, f"{name} must be a number ({what}), not {raw[:40]!r}") from None
    if not value.is_finite() or value < 0:
        raise InvalidQuery(name, f"{name} must be a number of zero or more ({what})")
    return value


def parse_model_query(params: Mapping[str, str]) -> ModelQuery:
    """Read the models query; raises :class:`InvalidQuery` for a value that cannot be used."""
    q = params.get("q", "").strip()
    if len(q) > _MAX_QUERY_CHARS:
        raise InvalidQuery("q", f"q is at most {_MAX_QUERY_CHARS} characters")
    sort = params.get("sort", "").strip() or "name"
    if sort not in SORTS:
        raise InvalidQuery("sort", f"sort must be one of {', '.join(SORTS)}, not {sort[:40]!r}")
    max_price = _number(params, "max_price", "USD per 1M output tokens")
    min_speed = _number(params, "min_speed", "tokens per second")
    min_availability = _number(params, "min_availability", "percent")
    if min_availability is not None and min_availability > 100:
        raise InvalidQuery("min_availability", "min_availability is a percentage, 0 to 100")
    if max_price is not None and max_price > 1_000_000:
        raise InvalidQuery("max_price", "max_price is at most 1000000 (USD per 1M tokens)")
    return ModelQuery(
        q=q,
        sort=sort,
        max_price_micro_usd=int(max_price * 1_000_000) if max_price is not None else None,
        min_tokens_per_s=float(min_speed) if min_speed is not None else None,
        min_availability=float(min_availability) / 100 if min_availability is not None else None,
    )


def _missing_last(value: float | None, *, descending: bool) -> tuple[bool, float]:
    if value is None:
        return (True, 0.0)
    return (False, -value if descending else value)


def select_rows(rows: Iterable[ModelRow], query: ModelQuery) -> list[ModelRow]:
    """``rows`` filtered and sorted by ``query`` (ties by model id; unmeasured values last)."""
    needle = query.q.casefold()
    chosen = [
        row
        for row in rows
        if (not needle or needle in row.model.casefold() or needle in row.name.casefold())
        and (
            query.max_price_micro_usd is None
            or row.price_lowest_output <= query.max_price_micro_usd
        )
        and (
            query.min_tokens_per_s is None
            or (row.tokens_per_s_p50 or 0.0) >= query.min_tokens_per_s
        )
        and (
            query.min_availability is None
            or (row.availability_day or 0.0) >= query.min_availability - 1e-9
        )
    ]
    chosen.sort(key=lambda row: row.model)
    if query.sort == "price":
        chosen.sort(key=lambda row: row.price_lowest_input + row.price_lowest_output)
    elif query.sort == "speed":
        chosen.sort(key=lambda row: _missing_last(row.tokens_per_s_p50, descending=True))
    elif query.sort == "latency":
        chosen.sort(key=lambda row: _missing_last(row.ttft_p50_ms, descending=False))
    elif query.sort == "availability":
        chosen.sort(key=lambda row: _missing_last(row.availability_day, descending=True))
    elif query.sort == "nodes":
        chosen.sort(key=lambda row: -row.nodes)
    return chosen


# --- Providers ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProviderProfile:
    handle: str
    name: str | None
    """The public name the Provider chose, or None (anonymous: its handle only)."""
    nodes: int
    models: tuple[str, ...]
    uptime: float | None
    """Mean over the Provider's live nodes of their decayed uptime."""
    reputation: float | None
    """Mean over the Provider's live nodes of their reputation."""
    nodes_in_probation: int
    tokens_served: int
    """Prompt plus completion tokens of all settled requests its nodes served."""

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["provider"] = out.pop("handle")
        out["provider_name"] = out.pop("name")
        out["models"] = list(self.models)
        out["uptime"] = _round(self.uptime, 4)
        out["reputation"] = _round(self.reputation, 4)
        return out


def provider_profiles(
    registry: NodeRegistry, router: Router, tokens_by_account: Mapping[str, int]
) -> list[ProviderProfile]:
    """Every Provider with a live node or with tokens served, by handle; most tokens first.

    ``tokens_by_account`` (Provider account id -> tokens served) is read from the generations
    table by the caller; account ids go no further than this function.
    """
    now = router.clock()
    nodes: dict[str, list[str]] = {}
    models: dict[str, set[str]] = {}
    uptimes: dict[str, list[float]] = {}
    reputations: dict[str, list[float]] = {}
    probation: dict[str, int] = {}
    names: dict[str, str] = {}
    for node in registry.all():
        handle = provider_handle(node.provider_account_id)
        name = registry.public_name(node.provider_account_id)
        if name is not None:
            names[handle] = name
        nodes.setdefault(handle, []).append(node.node_id)
        models.setdefault(handle, set()).update(node.offers)
        uptime = router.uptime.get(node.node_id)
        if uptime is not None:
            uptimes.setdefault(handle, []).append(uptime.ratio(now))
        reputation = router.reputation.get(node.node_id)
        if reputation is not None:
            reputations.setdefault(handle, []).append(reputation.score(now))
        if reputation is None or reputation.in_probation:
            probation[handle] = probation.get(handle, 0) + 1
    tokens: dict[str, int] = {}
    for account_id, count in tokens_by_account.items():
        handle = provider_handle(account_id)
        tokens[handle] = tokens.get(handle, 0) + int(count)
        name = registry.public_name(account_id)
        if name is not None:
            names[handle] = name
    profiles = [
        ProviderProfile(
            handle=handle,
            name=names.get(handle),
            nodes=len(nodes.get(handle, ())),
            models=tuple(sorted(models.get(handle, ()))),
            uptime=_mean(uptimes.get(handle)),
            reputation=_mean(reputations.get(handle)),
            nodes_in_probation=probation.get(handle, 0),
            tokens_served=tokens.get(handle, 0),
        )
        for handle in set(nodes) | set(tokens)
    ]
    profiles.sort(key=lambda p: (-p.tokens_served, -p.nodes, p.handle))
    return profiles


def _mean(values: list[float] | None) -> float | None:
    if not values:
        return None
    return math.fsum(values) / len(values)
