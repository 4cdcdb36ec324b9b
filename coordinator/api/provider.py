"""The Provider API: a Provider's own prices per model, and the enrollment token check.

=======  ===============================  ===============  ====================================
method   path                             key              what it does
=======  ===============================  ===============  ====================================
GET      /v1/provider/prices              provider         own prices, and the live offers with
                                                           each node's own and charged price
PUT      /v1/provider/prices/{model}      provider         set the own price of a model
DELETE   /v1/provider/prices/{model}      provider         clear it: nodes' own prices again
GET      /v1/nodes/enroll                 enrollment token the account a token enrolls into
=======  ===============================  ===============  ====================================

``{model}`` may contain ``/`` (``meta-llama/Llama-3.1-8B-Instruct``) and may be any spelling the
catalogue knows: prices are stored under the model's network id. A price applies to the offers
of all of the Provider's nodes at once (:func:`set_own_price`, which the console uses too), for
new jobs. Errors are OpenAI-style (:class:`~coordinator.api.errors.ApiError`).

``POST /v1/nodes/enroll`` (in :mod:`coordinator.app`) takes a one-time enrollment token in place
of a Provider key; :func:`enrollment_token_of` tells the two apart.
"""

from __future__ import annotations

import time
from typing import Any

from litestar import Request, delete, get, put
from litestar.types import ControllerRouterHandler
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.api.bodies import read_json_object
from coordinator.api.context import Caller, Services, caller_of, services_of
from coordinator.api.errors import ApiError
from coordinator.hub.nodes import LiveNode
from coordinator.money import format_usd
from coordinator.providers import (
    InvalidModelName,
    InvalidPrice,
    NotAProvider,
    ProvidersError,
    StoredPrice,
    TooManyPrices,
    checked_model,
    clear_price,
    is_enrollment_token,
    list_prices,
    parse_price_per_1m,
    set_price,
)
from coordinator.providers.sync import apply_provider_prices
from protocol import Offer

__all__ = [
    "PROVIDER_API_HANDLERS",
    "clear_own_price",
    "enrollment_token_of",
    "node_own_offers",
    "set_own_price",
]

_INPUT = "input_usd_per_1m"
_OUTPUT = "output_usd_per_1m"
_PRICE_FIELDS = frozenset({_INPUT, _OUTPUT})


def enrollment_token_of(request: Request[Any, Any, Any]) -> str | None:
    """The bearer of the request when it is a one-time enrollment token (not an API key)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and is_enrollment_token(token):
        return token
    return None


def _sessions(services: Services) -> async_sessionmaker[AsyncSession]:
    if services.sessions is None:
        raise ApiError(404, "Provider prices are not stored on this coordinator", code="not_found")
    return services.sessions


def node_own_offers(services: Services, node: LiveNode) -> dict[str, Offer]:
    """The node's offers by network id at the prices the node itself announced."""
    return services.registry.key_offers(node.announced)


async def _apply(services: Services, account_id: str) -> None:
    """Re-price the Provider's live nodes from what the database holds now."""
    await apply_provider_prices(services.registry, _sessions(services), account_id)


async def set_own_price(
    services: Services, account_id: str, model: str, input_usd_per_1m: object, output_usd: object
) -> StoredPrice:
    """Parse, store and apply the Provider's own price for ``model`` (any catalogued spelling;
    stored under its network id). Raises :class:`~coordinator.providers.ProvidersError`."""
    network_id = services.registry.catalogue.network_id(checked_model(model))
    price_in = parse_price_per_1m(input_usd_per_1m, _INPUT)
    price_out = parse_price_per_1m(output_usd, _OUTPUT)
    async with _sessions(services).begin() as session:
        stored = await set_price(
            session,
            account_id,
            network_id,
            input_micro_usd_per_1m=price_in,
            output_micro_usd_per_1m=price_out,
        )
    await _apply(services, account_id)
    return stored


async def clear_own_price(services: Services, account_id: str, model: str) -> tuple[str, bool]:
    """Clear the Provider's own price for ``model``; returns its network id and whether there
    was one. Raises :class:`~coordinator.providers.InvalidModelName`."""
    network_id = services.registry.catalogue.network_id(checked_model(model))
    async with _sessions(services).begin() as session:
        cleared = await clear_price(session, account_id, network_id)
    await _apply(services, account_id)
    return network_id, cleared


def _price_json(price: StoredPrice) -> dict[str, Any]:
    return {
        "object": "provider.price",
        "model": price.model,
        _INPUT: format_usd(price.input_micro_usd_per_1m),
        _OUTPUT: format_usd(price.output_micro_usd_per_1m),
        "price_input_micro_usd_per_1m": price.input_micro_usd_per_1m,
        "price_output_micro_usd_per_1m": price.output_micro_usd_per_1m,
        "updated_at_ms": price.updated_at_ms,
    }


def _api_error(error: ProvidersError) -> ApiError:
    if isinstance(error, InvalidPrice):
        param = _OUTPUT if str(error).startswith(_OUTPUT) else _INPUT
        return ApiError(400, str(error), code="invalid_price", param=param)
    if isinstance(error, InvalidModelName):
        return ApiError(400, str(error), code="invalid_value", param="model")
    if isinstance(error, TooManyPrices):
        return ApiError(409, str(error), code="too_many_prices")
    if isinstance(error, NotAProvider):
        return ApiError(403, str(error), code="wrong_role")
    return ApiError(400, str(error), code="invalid_value")


async def _provider(request: Request[Any, Any, Any]) -> tuple[Services, Caller]:
    caller = await caller_of(request)
    if caller.role != "provider" or caller.app_id is not None:
        raise ApiError(403, "only a Provider key can manage Provider prices", code="wrong_role")
    return services_of(request), caller


def _model(request: Request[Any, Any, Any]) -> str:
    model = str(request.path_params["model"]).strip("/")
    if not model:
        raise ApiError(404, "name a model: /v1/provider/prices/{model}", code="not_found")
    return model


@get("/v1/provider/prices")
async def list_provider_prices(request: Request[Any, Any, Any]) -> dict[str, Any]:
    services, caller = await _provider(request)
    async with _sessions(services)() as session:
        prices = await list_prices(session, caller.account_id)
    own = {price.model: price for price in prices}
    offers = []
    for node in sorted(services.registry.all(), key=lambda n: n.node_id):
        if node.provider_account_id != caller.account_id:
            continue
        announced = node_own_offers(services, node)
        for model, offer in sorted(node.offers.items()):
            node_offer = announced.get(model, offer)
            offers.append(
                {
                    "node": node.node_id,
                    "model": model,
                    "served_as": offer.model,
                    "node_price": {
                        "input": node_offer.price_input_micro_usd_per_1m,
                        "output": node_offer.price_output_micro_usd_per_1m,
                    },
                    "price": {
                        "input": offer.price_input_micro_usd_per_1m,
                        "output": offer.price_output_micro_usd_per_1m,
                    },
                    "own_price": model in own,
                }
            )
    return {
        "object": "list",
        "unit": "micro-USD per 1M tokens",
        "data": [_price_json(price) for price in prices],
        "offers": offers,
    }


@put("/v1/provider/prices/{model:path}", status_code=200)
async def put_provider_price(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Set the caller's own price for a model (``{"input_usd_per_1m": "0.20",
    "output_usd_per_1m": "0.60"}``), on all of the caller's nodes, for new jobs."""
    services, caller = await _provider(request)
    model = _model(request)
    data = await read_json_object(request, _PRICE_FIELDS)
    for field in (_INPUT, _OUTPUT):
        if field not in data:
            raise ApiError(
                400, f"missing field {field!r}", code="missing_required_parameter", param=field
            )
    try:
        stored = await set_own_price(
            services, caller.account_id, model, data[_INPUT], data[_OUTPUT]
        )
    except ProvidersError as error:
        raise _api_error(error) from None
    return _price_json(stored)


@delete("/v1/provider/prices/{model:path}", status_code=200)
async def delete_provider_price(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Clear the caller's own price for a model: each node's own price applies again."""
    services, caller = await _provider(request)
    model = _model(request)
    try:
        network_id, cleared = await clear_own_price(services, caller.account_id, model)
    except ProvidersError as error:
        raise _api_error(error) from None
    if not cleared:
        raise ApiError(
            404, f"you set no price of your own for {network_id!r}", code="price_not_found"
        )
    return {"object": "provider.price.deleted", "model": network_id, "deleted": True}


@get("/v1/nodes/enroll")
async def enrollment_token_info(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The Provider account a one-time enrollment token (the bearer) enrolls into; the node
    signs its enrollment proof for that account (``shareai node init --enroll-token``)."""
    token = enrollment_token_of(request)
    if token is None:
        raise ApiError(
            401,
            "send a one-time enrollment token: 'Authorization: Bearer sai-enroll-...'",
            code="missing_enroll_token",
        )
    account_id, expires_at_ms = await services_of(request).accounts.enrollment_token_account(
        token, time.time_ns() // 1_000_000
    )
    return {
        "object": "enrollment_token",
        "account_id": account_id,
        "expires_at_ms": expires_at_ms,
    }


PROVIDER_API_HANDLERS: list[ControllerRouterHandler] = [
    list_provider_prices,
    put_provider_price,
    delete_provider_price,
    enrollment_token_info,
]
