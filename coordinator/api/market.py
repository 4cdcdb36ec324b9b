"""The public marketplace as JSON: ``/v1/market/models``, ``/v1/market/models/{model}``,
``/v1/providers``.

Public and read-only, like ``GET /v1/network/status``: no key, no account id, name or e-mail;
Providers by handle (``pv_...``). The pages of :mod:`coordinator.web.market` show exactly what
:func:`models_listing`, :func:`model_detail` and :func:`providers_listing` return.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from litestar import Request, get
from sqlalchemy import func, select

from coordinator.api.context import Services, services_of
from coordinator.api.errors import ApiError
from coordinator.db.generations import Generation
from coordinator.market.views import (
    DAY_S,
    HOUR_S,
    InvalidQuery,
    ModelQuery,
    model_rows,
    parse_model_query,
    provider_profiles,
    select_rows,
)

__all__ = [
    "MARKET_API_HANDLERS",
    "UnknownModel",
    "model_detail",
    "models_listing",
    "providers_listing",
    "tokens_served_by_provider",
]

WINDOWS = {"1h": (HOUR_S, 60.0), "24h": (DAY_S, 900.0)}
"""A chart window -> (its length, the step of its points), both in seconds."""


class UnknownModel(LookupError):
    """No live node serves the model."""


def models_listing(services: Services, query: ModelQuery) -> dict[str, Any]:
    rows = model_rows(services.registry, services.dispatcher.router, services.catalogue.current)
    chosen = select_rows(rows, query)
    return {
        "object": "list",
        "query": query.params(),
        "total_models": len(rows),
        "data": [row.to_json() for row in chosen],
    }


def model_detail(services: Services, model: str, window: str = "1h") -> dict[str, Any]:
    """One model: its summary row, endpoints (with reputation inputs) and history.

    Raises :class:`UnknownModel` when no live node serves ``model`` (any spelling of it) and
    KeyError for a ``window`` not in :data:`WINDOWS`.
    """
    length_s, step_s = WINDOWS[window]
    router = services.dispatcher.router
    catalogue = services.catalogue.current
    entry = catalogue.resolve(model)
    model_id = entry.id if entry is not None else model
    endpoints = router.endpoints(model_id)
    if not endpoints:
        raise UnknownModel(model)
    now = router.clock()
    for endpoint in endpoints:
        reputation = router.reputation.get(endpoint["node"])
        endpoint["reputation_inputs"] = reputation.inputs(now) if reputation is not None else {}
    (row,) = [r for r in model_rows(services.registry, router, catalogue) if r.model == model_id]
    history = [
        {
            "start_s": int(point.start_s),
            "requests": point.requests,
            "ttft_ms_mean": _round(point.ttft_ms_mean, 1),
            "tokens_per_s_mean": _round(point.tokens_per_s_mean, 1),
            "price_paid_mean": {
                "input": _round(point.price_input_mean, 0),
                "output": _round(point.price_output_mean, 0),
            },
            "price_paid_lowest": {
                "input": point.price_input_lowest,
                "output": point.price_output_lowest,
            },
        }
        for point in router.history.series(model_id, length_s, step_s)
    ]
    return {
        "object": "market.model",
        "model": row.to_json(),
        "endpoints": endpoints,
        "history": {"window": window, "step_s": int(step_s), "points": history},
    }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


async def tokens_served_by_provider(services: Services) -> dict[str, int]:
    """Provider account id -> prompt plus completion tokens of its settled requests (empty
    without a database). Account ids: for :func:`provider_profiles` only, never shown."""
    if services.sessions is None:
        return {}
    async with services.sessions() as session:
        rows = await session.execute(
            select(
                Generation.provider_account_id,
                func.sum(Generation.prompt_tokens + Generation.completion_tokens),
            ).group_by(Generation.provider_account_id)
        )
        return {str(account): int(tokens or 0) for account, tokens in rows}


async def providers_listing(services: Services) -> dict[str, Any]:
    tokens = await tokens_served_by_provider(services)
    profiles = provider_profiles(services.registry, services.dispatcher.router, tokens)
    return {"object": "list", "data": [profile.to_json() for profile in profiles]}


def _query(params: Mapping[str, str]) -> ModelQuery:
    try:
        return parse_model_query(params)
    except InvalidQuery as error:
        raise ApiError(400, str(error), code="invalid_value", param=error.param) from None


@get("/v1/market/models")
async def market_models(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The models page's rows: ``?q=&sort=&max_price=&min_speed=&min_availability=``."""
    return models_listing(services_of(request), _query(request.query_params))


@get("/v1/market/models/{model:path}")
async def market_model(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """One model's page as JSON (``?window=1h`` or ``24h`` for its history)."""
    model = str(request.path_params["model"]).strip("/")
    window = request.query_params.get("window", "1h")
    if window not in WINDOWS:
        raise ApiError(400, "window must be 1h or 24h", code="invalid_value", param="window")
    try:
        return model_detail(services_of(request), model, window)
    except UnknownModel:
        raise ApiError(404, f"no node serves the model {model!r}", code="model_not_found") from None


@get("/v1/providers")
async def providers(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Public Provider profiles by handle, for ``provider.only`` / ``order``."""
    return await providers_listing(services_of(request))


MARKET_API_HANDLERS = [market_models, market_model, providers]
