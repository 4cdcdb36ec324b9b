"""A customer's usage over a period: spend and tokens per UTC day, model, API key and app.

:func:`parse_period` turns what a person or a client asks for (``7d``, ``30d``, ``90d`` or a
month ``YYYY-MM``) into a :class:`UsagePeriod` of whole UTC days, or raises
:class:`InvalidUsagePeriod` with a message to show as is. :func:`usage_report` aggregates the
account's ``generations`` rows in SQL (``GROUP BY`` day, model, key, app) and returns a
:class:`UsageReport`, whose per-day, per-model, per-key and per-app totals are sums of those
groups. The day of a row is ``created_at_ms // 86_400_000`` (integer division: UTC days since
the epoch), which SQLite and PostgreSQL compute alike, so no date function of either is used.

Amounts are integer micro-USD (the sum of a row's provider, builder and platform parts: what the
customer was charged); tokens are the metered counts the charge was worked out from.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.generations import Generation
from coordinator.db.models import ApiKey

__all__ = [
    "CSV_COLUMNS",
    "DAY_MS",
    "DEFAULT_PERIOD",
    "PERIODS",
    "InvalidUsagePeriod",
    "UsagePeriod",
    "UsageReport",
    "UsageRow",
    "UsageTotals",
    "parse_period",
    "usage_csv",
    "usage_report",
]

DAY_MS = 86_400_000
PERIODS = {"7d": 7, "30d": 30, "90d": 90}
"""The rolling periods: the last N UTC days, today included."""
DEFAULT_PERIOD = "30d"
_MONTH = re.compile(r"(\d{4})-(\d{2})")
_EPOCH = dt.date(1970, 1, 1)


class InvalidUsagePeriod(ValueError):
    """The period asked for is not one of ``7d``, ``30d``, ``90d`` or a past or current month
    ``YYYY-MM``; the message says so, for a person."""


@dataclass(frozen=True, slots=True)
class UsagePeriod:
    """Whole UTC days ``[first_day, first_day + days)``; ``name`` is what was asked for."""

    name: str
    first_day: int
    """UTC days since 1970-01-01."""
    days: int

    @property
    def start_ms(self) -> int:
        return self.first_day * DAY_MS

    @property
    def end_ms(self) -> int:
        """Exclusive."""
        return (self.first_day + self.days) * DAY_MS

    def dates(self) -> list[dt.date]:
        return [_date(self.first_day + offset) for offset in range(self.days)]


def _date(day: int) -> dt.date:
    return _EPOCH + dt.timedelta(days=day)


def _day(date: dt.date) -> int:
    return (date - _EPOCH).days


def parse_period(text: str | None, now_ms: int) -> UsagePeriod:
    """The period ``text`` names, as of ``now_ms`` (unix ms); empty or None: the last 30 days.

    Raises :class:`InvalidUsagePeriod` for anything else, including a month not begun yet.
    """
    name = (text or "").strip() or DEFAULT_PERIOD
    today = now_ms // DAY_MS
    if name in PERIODS:
        days = PERIODS[name]
        return UsagePeriod(name, today - days + 1, days)
    match = _MONTH.fullmatch(name)
    if match is None:
        raise InvalidUsagePeriod(
            f"unknown period {name[:40]!r}: use 7d, 30d or 90d (the last 7, 30 or 90 days)"
            " or a month as YYYY-MM, e.g. 2025-03"
        )
    year, month = int(match.group(1)), int(match.group(2))
    if not 1 <= month <= 12 or year < 1970:
        raise InvalidUsagePeriod(f"{name!r} is not a month: use YYYY-MM, e.g. 2025-03")
    first = dt.date(year, month, 1)
    if _day(first) > today:
        raise InvalidUsagePeriod(f"the month {name} has not begun yet")
    following = dt.date(year + month // 12, month % 12 + 1, 1)
    return UsagePeriod(name, _day(first), (following - first).days)


@dataclass(slots=True)
class UsageTotals:
    """Requests, tokens and spend (micro-USD) of a group of requests."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    provider_micro_usd: int = 0
    builder_micro_usd: int = 0
    platform_micro_usd: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost_micro_usd(self) -> int:
        return self.provider_micro_usd + self.builder_micro_usd + self.platform_micro_usd

    def add(self, other: UsageTotals) -> None:
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.provider_micro_usd += other.provider_micro_usd
        self.builder_micro_usd += other.builder_micro_usd
        self.platform_micro_usd += other.platform_micro_usd

    def to_json(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "provider_micro_usd": self.provider_micro_usd,
            "builder_surcharge_micro_usd": self.builder_micro_usd,
            "platform_fee_micro_usd": self.platform_micro_usd,
            "cost_micro_usd": self.cost_micro_usd,
        }


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One group: a UTC day, a model, a key (None: made without one) and an app (None: none)."""

    date: dt.date
    model: str
    api_key_id: str | None
    api_key_prefix: str | None
    app_id: str | None
    totals: UsageTotals


@dataclass(frozen=True, slots=True)
class UsageReport:
    """The groups of a period, oldest day first, and their sums along each dimension."""

    period: UsagePeriod
    rows: list[UsageRow]
    totals: UsageTotals = field(init=False)

    def __post_init__(self) -> None:
        totals = UsageTotals()
        for row in self.rows:
            totals.add(row.totals)
        object.__setattr__(self, "totals", totals)

    def _by(self, key: Callable[[UsageRow], Hashable]) -> dict[Any, UsageTotals]:
        groups: dict[Any, UsageTotals] = {}
        for row in self.rows:
            groups.setdefault(key(row), UsageTotals()).add(row.totals)
        return groups

    def daily(self) -> list[tuple[dt.date, UsageTotals]]:
        """Every day of the period (a day without requests: zeros), oldest first."""
        groups = self._by(lambda row: row.date)
        return [(date, groups.get(date, UsageTotals())) for date in self.period.dates()]

    def by_model(self) -> list[tuple[str, UsageTotals]]:
        """Models, the most spent on first."""
        return _by_spend(self._by(lambda row: row.model))

    def by_key(self) -> list[tuple[tuple[str | None, str | None], UsageTotals]]:
        """(key id, key prefix) pairs, the most spent on first."""
        return _by_spend(self._by(lambda row: (row.api_key_id, row.api_key_prefix)))

    def by_app(self) -> list[tuple[str | None, UsageTotals]]:
        """Apps (None: requests made without one), the most spent on first."""
        return _by_spend(self._by(lambda row: row.app_id))

    def to_json(self) -> dict[str, Any]:
        """The public view (``GET /v1/usage``): never a raw key, only key ids and prefixes."""
        return {
            "object": "usage",
            "unit": "micro-USD",
            "period": {
                "name": self.period.name,
                "first_day": _date(self.period.first_day).isoformat(),
                "days": self.period.days,
                "start_ms": self.period.start_ms,
                "end_ms": self.period.end_ms,
            },
            "totals": self.totals.to_json(),
            "daily": [
                {"date": date.isoformat(), **totals.to_json()} for date, totals in self.daily()
            ],
            "by_model": [{"model": model, **totals.to_json()} for model, totals in self.by_model()],
            "by_key": [
                {"key_id": key_id, "prefix": prefix, **totals.to_json()}
                for (key_id, prefix), totals in self.by_key()
            ],
            "by_app": [{"app_id": app_id, **totals.to_json()} for app_id, totals in self.by_app()],
            "rows": [
                {
                    "date": row.date.isoformat(),
                    "model": row.model,
                    "key_id": row.api_key_id,
                    "key_prefix": row.api_key_prefix,
                    "app_id": row.app_id,
                    **row.totals.to_json(),
                }
                for row in self.rows
            ],
        }


def _by_spend(groups: dict[Any, UsageTotals]) -> list[tuple[Any, UsageTotals]]:
    return sorted(groups.items(), key=lambda item: (-item[1].cost_micro_usd, str(item[0])))


async def usage_report(
    session: AsyncSession,
    customer_account_id: str,
    period: UsagePeriod,
    *,
    app_id: str | None = None,
) -> UsageReport:
    """The usage of ``customer_account_id`` in ``period`` (only through ``app_id`` when given).

    One query: the account's rows in the period, grouped by UTC day, model, key and app (the
    key's prefix comes from ``api_keys``, looked up within the same account).
    """
    day = (Generation.created_at_ms // DAY_MS).label("day")
    query = (
        select(
            day,
            Generation.model,
            Generation.api_key_id,
            ApiKey.prefix,
            Generation.app_id,
            func.count(),
            func.sum(Generation.prompt_tokens),
            func.sum(Generation.completion_tokens),
            func.sum(Generation.provider_micro_usd),
            func.sum(Generation.builder_micro_usd),
            func.sum(Generation.platform_micro_usd),
        )
        .select_from(Generation)
        .outerjoin(
            ApiKey,
            (ApiKey.id == Generation.api_key_id) & (ApiKey.account_id == customer_account_id),
        )
        .where(
            Generation.customer_account_id == customer_account_id,
            Generation.created_at_ms >= period.start_ms,
            Generation.created_at_ms < period.end_ms,
        )
        .group_by(day, Generation.model, Generation.api_key_id, ApiKey.prefix, Generation.app_id)
    )
    if app_id is not None:
        query = query.where(Generation.app_id == app_id)
    rows = [
        UsageRow(
            date=_date(int(found[0])),
            model=found[1],
            api_key_id=found[2],
            api_key_prefix=found[3],
            app_id=found[4],
            # SUM of a BIGINT is NUMERIC on PostgreSQL (a Decimal here): back to int.
            totals=UsageTotals(*(int(value or 0) for value in found[5:])),
        )
        for found in (await session.execute(query)).all()
    ]
    rows.sort(key=lambda r: (r.date, r.model, r.api_key_id or "", r.app_id or ""))
    return UsageReport(period, rows)


CSV_COLUMNS = (
    "date",
    "model",
    "key_id",
    "key_prefix",
    "app_id",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "provider_micro_usd",
    "builder_surcharge_micro_usd",
    "platform_fee_micro_usd",
    "cost_micro_usd",
    "cost_usd",
)


def _cell(text: str | None) -> str:
    """A text cell a spreadsheet will not run as a formula (a model name is a Provider's)."""
    if not text:
        return ""
    return "'" + text if text[0] in "=+-@\t\r" else text


def usage_csv(report: UsageReport) -> str:
    """The report as CSV: a header, then one line per day x model x key x app group."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    lines: Iterable[list[str | int]] = (
        [
            row.date.isoformat(),
            _cell(row.model),
            _cell(row.api_key_id),
            _cell(row.api_key_prefix),
            _cell(row.app_id),
            row.totals.requests,
            row.totals.prompt_tokens,
            row.totals.completion_tokens,
            row.totals.total_tokens,
            row.totals.provider_micro_usd,
            row.totals.builder_micro_usd,
            row.totals.platform_micro_usd,
            row.totals.cost_micro_usd,
            f"{row.totals.cost_micro_usd // 1_000_000}.{row.totals.cost_micro_usd % 1_000_000:06d}",
        ]
        for row in report.rows
    )
    writer.writerows(lines)
    return out.getvalue()
