"""Usage reports (coordinator.billing.usage) on SQLite and PostgreSQL: periods, UTC days, sums."""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools

import pytest

from coordinator.accounts import create_account, issue_api_key, list_api_keys
from coordinator.billing.usage import (
    CSV_COLUMNS,
    DAY_MS,
    InvalidUsagePeriod,
    UsagePeriod,
    UsageReport,
    UsageRow,
    UsageTotals,
    parse_period,
    usage_csv,
    usage_report,
)
from coordinator.db.generations import Generation
from tests.coordinator.conftest import Sessions

# 2025-03-15 12:00 UTC
NOW_MS = int(dt.datetime(2025, 3, 15, 12, tzinfo=dt.UTC).timestamp() * 1000)
_ids = itertools.count()


def _ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, ms: int = 0) -> int:
    moment = dt.datetime(year, month, day, hour, minute, tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000) + ms


# --- periods -----------------------------------------------------------------------------------


def test_rolling_periods_are_whole_utc_days_ending_today() -> None:
    week = parse_period("7d", NOW_MS)
    assert week.days == 7
    assert week.dates()[0] == dt.date(2025, 3, 9)
    assert week.dates()[-1] == dt.date(2025, 3, 15)
    assert week.start_ms == _ms(2025, 3, 9)
    assert week.end_ms == _ms(2025, 3, 16)
    assert parse_period(None, NOW_MS) == parse_period("30d", NOW_MS)
    assert parse_period("", NOW_MS).name == "30d"
    assert parse_period("90d", NOW_MS).days == 90


def test_a_month_is_its_calendar_days() -> None:
    feb = parse_period("2024-02", NOW_MS)
    assert (feb.days, feb.dates()[0], feb.dates()[-1]) == (
        29,
        dt.date(2024, 2, 1),
        dt.date(2024, 2, 29),
    )
    dec = parse_period("2024-12", NOW_MS)
    assert dec.end_ms == _ms(2025, 1, 1)
    current = parse_period("2025-03", NOW_MS)
    assert current.days == 31


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("14d", "unknown period '14d'"),
        ("2025-3", "unknown period"),
        ("march", "use 7d, 30d or 90d"),
        ("2025-13", "'2025-13' is not a month"),
        ("2025-00", "is not a month"),
        ("2025-04", "the month 2025-04 has not begun yet"),
        ("9999-12", "has not begun yet"),
    ],
)
def test_a_bad_period_is_refused_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(InvalidUsagePeriod, match=message):
        parse_period(text, NOW_MS)


# --- reports over a real database --------------------------------------------------------------


def _row(
    customer: str,
    at_ms: int,
    *,
    model: str = "m/a",
    key: str | None = None,
    app: str | None = None,
    tokens: tuple[int, int] = (10, 20),
    cost: tuple[int, int, int] = (100, 0, 5),
) -> Generation:
    n = next(_ids)
    return Generation(
        id=f"gen-u{n}",
        request_id=f"req_u{n}",
        customer_account_id=customer,
        api_key_id=key,
        app_id=app,
        node_id="nd_x",
        provider_account_id="acc_p",
        model=model,
        created_at_ms=at_ms,
        total_ms=5,
        outcome="completed",
        attempts=1,
        hedged=False,
        prompt_tokens=tokens[0],
        completion_tokens=tokens[1],
        metering="node_report_bounded",
        token_mismatch=False,
        price_input_micro_usd_per_1m=1,
        price_output_micro_usd_per_1m=1,
        provider_micro_usd=cost[0],
        builder_micro_usd=cost[1],
        platform_micro_usd=cost[2],
        lease_hold_id="hold_x",
    )


@pytest.mark.asyncio
async def test_a_report_groups_by_utc_day_model_key_and_app(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        customer, _ = await create_account(session, "customer", "c")
        other, _ = await create_account(session, "customer", "other")
        await issue_api_key(session, customer.id)
        keys = await list_api_keys(session, customer.id)
        (theirs,) = await list_api_keys(session, other.id)
        first, second = keys[0], keys[1]
        rows = [
            # The last millisecond of 14 March and the first of 15 March are different days.
            _row(customer.id, _ms(2025, 3, 15) - 1, key=first.id, tokens=(1, 2), cost=(10, 0, 1)),
            _row(customer.id, _ms(2025, 3, 15), key=first.id, tokens=(3, 4), cost=(20, 0, 2)),
            _row(customer.id, _ms(2025, 3, 15, 11), key=first.id, tokens=(5, 6), cost=(30, 0, 3)),
            _row(customer.id, _ms(2025, 3, 15, 9), key=second.id, model="m/b", cost=(7, 0, 1)),
            _row(customer.id, _ms(2025, 3, 10), key=second.id, app="app_x", cost=(50, 9, 3)),
            _row(customer.id, _ms(2025, 3, 12), key=None, cost=(1, 0, 0)),
            # Outside the week: before it, and another account's.
            _row(customer.id, _ms(2025, 3, 9) - 1, key=first.id, cost=(999, 0, 0)),
            _row(other.id, _ms(2025, 3, 15, 1), key=theirs.id, cost=(777, 0, 0)),
        ]
        session.add_all(rows)

    async with sessions() as session:
        report = await usage_report(session, customer.id, parse_period("7d", NOW_MS))
        only_app = await usage_report(
            session, customer.id, parse_period("7d", NOW_MS), app_id="app_x"
        )

    assert [(r.date.isoformat(), r.model, r.api_key_id, r.app_id) for r in report.rows] == [
        ("2025-03-10", "m/a", second.id, "app_x"),
        ("2025-03-12", "m/a", None, None),
        ("2025-03-14", "m/a", first.id, None),
        ("2025-03-15", "m/a", first.id, None),
        ("2025-03-15", "m/b", second.id, None),
    ]
    fifteenth = report.rows[3].totals
    assert (fifteenth.requests, fifteenth.prompt_tokens, fifteenth.completion_tokens) == (2, 8, 10)
    assert fifteenth.cost_micro_usd == 20 + 2 + 30 + 3
    assert report.rows[3].api_key_prefix == first.prefix

    in_week = rows[:6]
    assert report.totals.requests == 6
    assert report.totals.cost_micro_usd == sum(
        g.provider_micro_usd + g.builder_micro_usd + g.platform_micro_usd for g in in_week
    )
    assert report.totals.total_tokens == sum(g.prompt_tokens + g.completion_tokens for g in in_week)
    assert report.totals.builder_micro_usd == 9

    daily = report.daily()
    assert [date.day for date, _ in daily] == [9, 10, 11, 12, 13, 14, 15]
    assert [t.cost_micro_usd for _, t in daily] == [0, 62, 0, 1, 0, 11, 63]
    assert [model for model, _ in report.by_model()] == ["m/a", "m/b"]
    by_key = dict(report.by_key())
    assert by_key[(second.id, second.prefix)].cost_micro_usd == 62 + 8
    assert by_key[(first.id, first.prefix)].requests == 3
    assert by_key[(None, None)].requests == 1
    assert dict(report.by_app())["app_x"].cost_micro_usd == 62
    assert only_app.totals.requests == 1

    body = report.to_json()
    assert body["totals"]["cost_micro_usd"] == report.totals.cost_micro_usd
    assert len(body["daily"]) == 7
    assert theirs.id not in str(body)

    lines = list(csv.reader(io.StringIO(usage_csv(report))))
    assert tuple(lines[0]) == CSV_COLUMNS
    assert len(lines) == 1 + len(report.rows)
    assert sum(int(line[CSV_COLUMNS.index("cost_micro_usd")]) for line in lines[1:]) == (
        report.totals.cost_micro_usd
    )
    assert lines[1][:5] == ["2025-03-10", "m/a", second.id, second.prefix, "app_x"]


@pytest.mark.asyncio
async def test_an_empty_period_has_every_day_at_zero(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        customer, _ = await create_account(session, "customer", "c")
    async with sessions() as session:
        report = await usage_report(session, customer.id, parse_period("2025-02", NOW_MS))
    assert report.rows == []
    assert len(report.daily()) == 28
    assert report.totals.cost_micro_usd == 0
    assert usage_csv(report) == ",".join(CSV_COLUMNS) + "\r\n"


def test_a_csv_cell_never_starts_a_formula() -> None:
    period = UsagePeriod("7d", NOW_MS // DAY_MS, 1)
    row = UsageRow(dt.date(2025, 3, 15), "=HYPERLINK(1)", None, None, None, UsageTotals(1))
    lines = list(csv.reader(io.StringIO(usage_csv(UsageReport(period, [row])))))
    assert lines[1][1] == "'=HYPERLINK(1)"
