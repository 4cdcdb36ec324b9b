"""The customer's usage dashboard: spend and tokens per day, model, key and app, and as CSV.

======================================  ===================================================
``GET /console/customer/usage``         totals, charts of spend and tokens per UTC day,
                                        tables per model, key (prefix) and app
``GET /console/customer/usage.csv``     the same period as CSV: one line per day x model
                                        x key x app (a download)
======================================  ===================================================

Both take ``?period=`` (``7d``, ``30d``, ``90d`` or ``YYYY-MM``; default ``30d``), parsed by
:func:`coordinator.billing.usage.parse_period`; a bad one is shown on the page (400). The
numbers are :func:`coordinator.billing.usage.usage_report`'s, as ``GET /v1/usage`` answers
them, and always the viewer's own account.
"""

from __future__ import annotations

import time
from typing import Any

from litestar import Request, Response, get
from litestar.response import Template
from litestar.types import ControllerRouterHandler
from markupsafe import Markup

from coordinator.api.context import services_of
from coordinator.billing.usage import (
    PERIODS,
    InvalidUsagePeriod,
    UsagePeriod,
    UsageReport,
    parse_period,
    usage_csv,
    usage_report,
)
from coordinator.db.models import Role
from coordinator.web.charts import Series, line_chart
from coordinator.web.pages import PageError, database, page, require_viewer
from coordinator.web.sessions import Viewer

__all__ = ["USAGE_PAGE_HANDLERS", "usage_charts", "usage_tables"]

_PAGE = "/console/customer/usage"


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _report(
    request: Request[Any, Any, Any], viewer: Viewer, period: UsagePeriod
) -> UsageReport:
    async with database(services_of(request))() as session:
        return await usage_report(session, viewer.account_id, period)


def usage_charts(report: UsageReport) -> list[Markup]:
    """Spend (USD) and tokens (prompt, completion) per day of the report's period."""
    daily = report.daily()
    dates = [date.isoformat() for date, _ in daily]
    labels = [dates[0], dates[len(dates) // 2], dates[-1]] if len(dates) > 2 else dates
    return [
        line_chart(
            "Spend per day",
            [Series("spend", [t.cost_micro_usd / 1_000_000 for _, t in daily])],
            x_labels=labels,
            unit="USD",
        ),
        line_chart(
            "Tokens per day",
            [
                Series("prompt", [float(t.prompt_tokens) for _, t in daily]),
                Series("completion", [float(t.completion_tokens) for _, t in daily]),
            ],
            x_labels=labels,
        ),
    ]


def usage_tables(report: UsageReport) -> list[dict[str, Any]]:
    """The per-model, per-key and per-app tables: (label, ``data-`` attributes, totals) rows."""
    return [
        {
            "id": "by-model",
            "heading": "Per model",
            "column": "model",
            "groups": [(model, {"model": model}, t) for model, t in report.by_model()],
        },
        {
            "id": "by-key",
            "heading": "Per API key",
            "column": "key",
            "groups": [
                (
                    f"{prefix}…" if prefix else (key_id or "no key"),
                    {"key": key_id or "", "prefix": prefix or ""},
                    t,
                )
                for (key_id, prefix), t in report.by_key()
            ],
        },
        {
            "id": "by-app",
            "heading": "Per app",
            "column": "app",
            "groups": [
                (app_id or "direct (no app)", {"app": app_id or ""}, t)
                for app_id, t in report.by_app()
            ],
        },
    ]


@get(_PAGE)
async def usage_page(request: Request[Any, Any, Any]) -> Template:
    viewer = await require_viewer(request, Role.CUSTOMER)
    asked = request.query_params.get("period", "")
    context: dict[str, Any] = {"periods": list(PERIODS), "asked": asked[:40], "error": ""}
    try:
        period = parse_period(asked, _now_ms())
    except InvalidUsagePeriod as error:
        context |= {"error": str(error), "report": None, "charts": [], "tables": []}
        return page(request, "usage.html", viewer, context, status_code=400, title="Usage")
    report = await _report(request, viewer, period)
    context |= {
        "report": report,
        "charts": usage_charts(report),
        "tables": usage_tables(report),
    }
    return page(request, "usage.html", viewer, context, title="Usage")


@get(f"{_PAGE}.csv")
async def usage_csv_download(request: Request[Any, Any, Any]) -> Response[str]:
    """The period's groups as a CSV download (``text/csv``, an attachment)."""
    viewer = await require_viewer(request, Role.CUSTOMER)
    try:
        period = parse_period(request.query_params.get("period"), _now_ms())
    except InvalidUsagePeriod as error:
        raise PageError(400, str(error)) from None
    report = await _report(request, viewer, period)
    return Response(
        usage_csv(report),
        media_type="text/csv",  # Litestar adds "; charset=utf-8"
        headers={
            "content-disposition": f'attachment; filename="shareai-usage-{period.name}.csv"',
            "cache-control": "no-store",
            "x-content-type-options": "nosniff",
        },
    )


USAGE_PAGE_HANDLERS: list[ControllerRouterHandler] = [usage_page, usage_csv_download]
