"""``GET /v1/usage``: the caller's own usage over a period, as JSON.

``?period=`` is ``7d``, ``30d`` (the default) or ``90d`` (the last N UTC days, today included)
or a month ``YYYY-MM``; anything else answers 400 ``invalid_period``. The answer is
:meth:`coordinator.billing.usage.UsageReport.to_json`: totals, every day of the period, and the
sums per model, per key (id and prefix, never the key) and per app, in micro-USD and tokens. An
app-scoped key sees only the usage made through its app.
"""

from __future__ import annotations

import time
from typing import Any

from litestar import Request, get
from litestar.handlers import HTTPRouteHandler

from coordinator.api.context import caller_of, services_of
from coordinator.api.errors import ApiError
from coordinator.billing.usage import InvalidUsagePeriod, parse_period, usage_report

__all__ = ["USAGE_HANDLERS"]


@get("/v1/usage")
async def usage(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The caller's spend and tokens per day, model, key and app in the period asked for."""
    caller = await caller_of(request)
    services = services_of(request)
    if services.sessions is None:
        raise ApiError(404, "usage needs the coordinator's database", code="not_found")
    try:
        period = parse_period(request.query_params.get("period"), int(time.time() * 1000))
    except InvalidUsagePeriod as error:
        raise ApiError(400, str(error), code="invalid_period", param="period") from None
    async with services.sessions() as session:
        report = await usage_report(session, caller.account_id, period, app_id=caller.app_id)
    return report.to_json()


USAGE_HANDLERS: list[HTTPRouteHandler] = [usage]
