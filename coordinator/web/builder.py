"""The Builder console: apps, surcharges under the operator's cap, traffic, earnings, payouts.

=================================================  ==========================================
``GET  /console/builder``                          apps, traffic and earnings, statements,
                                                   payouts
``POST /console/builder/apps``                     register an app
``POST /console/builder/apps/{app_id}/surcharge``  a new surcharge version (new requests)
``GET  /console/builder/statement.csv?period=``    a month's statement as CSV
``/console/builder/apps/{app_id}/routes...``       the app's task routes
                                                   (:mod:`coordinator.web.task_routes`)
=================================================  ==========================================

Apps and surcharges go through :mod:`coordinator.apps` with the operator's maximum
(:func:`coordinator.api.apps.max_surcharge_bps_of`), exactly as ``/v1/apps`` does. Traffic and
earnings are sums over the posted usage records (``generations``) of requests through the
viewer's apps; statements are :func:`coordinator.billing.statements.statement`; unpaid earnings
and payouts are the ledger's. Days and months are UTC.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from litestar import Request, Response, get, post
from litestar.response import Template
from litestar.types import ControllerRouterHandler
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.api.apps import max_surcharge_bps_of
from coordinator.api.context import services_of
from coordinator.apps import (
    AppDetails,
    AppDisabled,
    AppNotFound,
    AppsError,
    InvalidAppInput,
    InvalidSurcharge,
    NotYourApp,
    list_apps,
    parse_surcharge_percent,
    register_app,
    set_surcharge,
)
from coordinator.billing.statements import StatementLine, statement, to_csv
from coordinator.db.generations import Generation
from coordinator.db.models import Role, TransferKind
from coordinator.ledger import (
    InvalidLedgerInput,
    Transfer,
    balance,
    builder_earnings,
    list_transfers,
    period_bounds_ms,
)
from coordinator.web.pages import PageError, database, page, read_form, require_viewer, see_other
from coordinator.web.sessions import Viewer

__all__ = ["BUILDER_HANDLERS"]

_HOME = "/console/builder"
_STATEMENT_MONTHS = 12
_DAY_MS = 24 * 3600 * 1000
_MAX_PAYOUTS_SHOWN = 240


@dataclass(frozen=True, slots=True)
class Traffic:
    """Posted requests through an app in a window: counts and money (micro-USD)."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    spend_micro_usd: int = 0
    """What customers paid for these requests (provider + surcharge + platform fee)."""
    earned_micro_usd: int = 0
    """The Builder's part: the surcharges."""

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(
            self.requests + other.requests,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.spend_micro_usd + other.spend_micro_usd,
            self.earned_micro_usd + other.earned_micro_usd,
        )


@dataclass
class AppView:
    """One app on the page, with its traffic per window and the surcharge form's state."""

    details: AppDetails
    traffic: dict[str, Traffic] = field(default_factory=dict)
    error: str = ""
    typed: str = ""


def _period_of(at_ms: int) -> str:
    return time.strftime("%Y-%m", time.gmtime(at_ms / 1000))


def _months_back(period: str, count: int) -> list[str]:
    """``period`` and the ``count - 1`` months before it, newest first."""
    year, month = (int(part) for part in period.split("-"))
    periods = []
    for _ in range(count):
        periods.append(f"{year:04d}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return periods


def _windows(now_ms: int) -> dict[str, int]:
    """The traffic windows the page shows, by label: their first instant (unix ms, UTC)."""
    month_start, _ = period_bounds_ms(_period_of(now_ms))
    return {"Today": now_ms - now_ms % _DAY_MS, "This month": month_start, "All time": 0}


async def _traffic_by_app(
    session: AsyncSession, builder_account_id: str, since_ms: int
) -> dict[str, Traffic]:
    """Per app of the Builder: its posted requests since ``since_ms``."""
    paid = (
        Generation.provider_micro_usd + Generation.builder_micro_usd + Generation.platform_micro_usd
    )
    rows = await session.execute(
        select(
            Generation.app_id,
            func.count(),
            func.sum(Generation.prompt_tokens),
            func.sum(Generation.completion_tokens),
            func.sum(paid),
            func.sum(Generation.builder_micro_usd),
        )
        .where(
            Generation.builder_account_id == builder_account_id,
            Generation.created_at_ms >= since_ms,
        )
        .group_by(Generation.app_id)
    )
    return {
        str(app_id): Traffic(*(int(value or 0) for value in numbers)) for app_id, *numbers in rows
    }


def _payout_period(transfer: Transfer) -> str:
    """A payout's id is ``payout#<period>#<ledger account>`` (coordinator.ledger.payouts)."""
    parts = transfer.id.split("#")
    return parts[1] if len(parts) == 3 else ""


async def _builder_context(
    request: Request[Any, Any, Any], viewer: Viewer, *, errors: dict[str, tuple[str, str]]
) -> dict[str, Any]:
    """Everything the page shows; ``errors`` maps an app id to (message, what was typed)."""
    services = services_of(request)
    now_ms = time.time_ns() // 1_000_000
    windows = _windows(now_ms)
    earnings_account = builder_earnings(viewer.account_id)
    async with database(services)() as session:
        apps = [AppView(details) for details in await list_apps(session, viewer.account_id)]
        totals: dict[str, Traffic] = {}
        for label, since_ms in windows.items():
            by_app = await _traffic_by_app(session, viewer.account_id, since_ms)
            for view in apps:
                view.traffic[label] = by_app.get(view.details.app.id, Traffic())
            totals[label] = sum(by_app.values(), Traffic())
        statements: list[tuple[str, StatementLine | None]] = []
        for period in _months_back(_period_of(now_ms), _STATEMENT_MONTHS):
            since_ms, until_ms = period_bounds_ms(period)
            lines = await statement(
                session, "builder", since_ms, until_ms, account_id=viewer.account_id
            )
            if lines or not statements:  # the current month always, older ones with traffic
                statements.append((period, lines[0] if lines else None))
        unpaid = await balance(session, earnings_account)
        payouts = await list_transfers(
            session,
            ledger_account_id=earnings_account,
            kind=TransferKind.PAYOUT,
            limit=_MAX_PAYOUTS_SHOWN,
        )
    for view in apps:
        view.error, view.typed = errors.get(view.details.app.id, ("", ""))
    return {
        "apps": apps,
        "windows": list(windows),
        "totals": totals,
        "max_surcharge_bps": max_surcharge_bps_of(services),
        "statements": statements,
        "unpaid_micro_usd": unpaid,
        "payouts": [(_payout_period(t), t) for t in reversed(payouts)],
        "paid_out_micro_usd": sum(t.amount_micro_usd for t in payouts),
        "register_error": "",
        "register_name": "",
        "register_surcharge": "",
    }


@get(_HOME)
async def builder_page(request: Request[Any, Any, Any]) -> Template:
    viewer = await require_viewer(request, Role.BUILDER)
    context = await _builder_context(request, viewer, errors={})
    return page(request, "builder.html", viewer, context, title="My apps")


@post(f"{_HOME}/apps/{{app_id:str}}/surcharge", status_code=303)
async def change_surcharge(request: Request[Any, Any, Any]) -> Response[Any]:
    """A new surcharge version for one of the viewer's apps; refusals are shown by the app."""
    viewer = await require_viewer(request, Role.BUILDER)
    fields = await read_form(request, viewer)
    app_id = str(request.path_params["app_id"])
    typed = fields.get("surcharge_percent", "").strip()
    services = services_of(request)
    try:
        bps = parse_surcharge_percent(typed)
        async with database(services).begin() as session:
            version = await set_surcharge(
                session,
                app_id,
                viewer.account_id,
                bps,
                max_surcharge_bps=max_surcharge_bps_of(services),
            )
    except (AppNotFound, NotYourApp):
        raise PageError(404, f"no app {app_id!r} of yours") from None
    except (InvalidSurcharge, AppDisabled) as refused:
        context = await _builder_context(request, viewer, errors={app_id: (str(refused), typed)})
        return page(request, "builder.html", viewer, context, status_code=400, title="My apps")
    return see_other(
        _HOME,
        notice=f"Surcharge set to {typed.removesuffix('%')} % (version {version}):"
        " it applies to requests that start from now on.",
    )


@post(f"{_HOME}/apps", status_code=303)
async def new_app(request: Request[Any, Any, Any]) -> Response[Any]:
    """Register an app of the viewer's with its first surcharge version."""
    viewer = await require_viewer(request, Role.BUILDER)
    fields = await read_form(request, viewer)
    name, typed = fields.get("name", ""), fields.get("surcharge_percent", "").strip()
    services = services_of(request)
    try:
        async with database(services).begin() as session:
            details = await register_app(
                session,
                viewer.account_id,
                name,
                parse_surcharge_percent(typed or "0"),
                max_surcharge_bps=max_surcharge_bps_of(services),
            )
    except (InvalidAppInput, InvalidSurcharge) as refused:
        context = await _builder_context(request, viewer, errors={})
        context |= {
            "register_error": str(refused),
            "register_name": name,
            "register_surcharge": typed,
        }
        return page(request, "builder.html", viewer, context, status_code=400, title="My apps")
    except AppsError as refused:  # pragma: no cover - the viewer is a builder account
        raise PageError(400, str(refused)) from None
    return see_other(
        _HOME, notice=f"App {details.app.name} registered as {details.app.id}: publish its id."
    )


@get(f"{_HOME}/statement.csv")
async def statement_csv(request: Request[Any, Any, Any]) -> Response[str]:
    """The viewer's statement for ``?period=YYYY-MM`` (default: this month) as CSV."""
    viewer = await require_viewer(request, Role.BUILDER)
    period = request.query_params.get("period") or _period_of(time.time_ns() // 1_000_000)
    try:
        since_ms, until_ms = period_bounds_ms(period)
    except InvalidLedgerInput as error:
        raise PageError(400, str(error)) from None
    async with database(services_of(request))() as session:
        lines = await statement(
            session, "builder", since_ms, until_ms, account_id=viewer.account_id
        )
    return Response(
        to_csv(lines),
        media_type="text/csv; charset=utf-8",
        headers={
            "content-disposition": f'attachment; filename="statement-builder-{period}.csv"',
            "cache-control": "no-store",
        },
    )


BUILDER_HANDLERS: list[ControllerRouterHandler] = [
    builder_page,
    change_surcharge,
    new_app,
    statement_csv,
]
