"""The Builder apps API: Builders register apps and change their surcharge; customers authorise
an app and get an app-scoped key for it.

=======  ====================================  =========  =====================================
method   path                                  key        what it does
=======  ====================================  =========  =====================================
POST     /v1/apps                              builder    register an app (201)
GET      /v1/apps                              builder    the caller's apps, with all versions
PATCH    /v1/apps/{app_id}                     builder    a new surcharge version
POST     /v1/apps/{app_id}/authorizations      customer   authorise; an app-scoped key (201)
DELETE   /v1/apps/{app_id}/authorizations      customer   revoke, with the app's keys
=======  ====================================  =========  =====================================

Handlers are thin: parse, call :mod:`coordinator.apps` in one transaction, shape the answer;
:class:`coordinator.apps.AppsError` becomes an OpenAI-style error here and nowhere else. The
operator's maximum surcharge is ``Services.max_surcharge_bps`` when the services carry one, else
:data:`coordinator.apps.DEFAULT_MAX_SURCHARGE_BPS`. Register with ``route_handlers=[...,
*APP_HANDLERS]``.

:class:`DatabaseAppTerms` is the request path's ``Services.app_terms``: the Builder and current
surcharge version a request through an app-scoped key is billed at.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from litestar import Request, delete, get, patch, post
from litestar.handlers import HTTPRouteHandler
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.api.bodies import read_json_object
from coordinator.api.context import Caller, Services, caller_of, services_of
from coordinator.api.errors import ApiError
from coordinator.apps import (
    DEFAULT_MAX_SURCHARGE_BPS,
    AppAuthorization,
    AppDetails,
    AppDisabled,
    AppNotFound,
    AppsError,
    AppSurchargeVersion,
    AuthorizationNotFound,
    AuthorizationRevoked,
    InvalidAppInput,
    InvalidSurcharge,
    NotYourApp,
    SurchargeAboveMaximum,
    UnknownAccount,
    WrongRole,
    authorize_app,
    current_surcharge,
    format_percent,
    get_app,
    list_apps,
    parse_surcharge_percent,
    register_app,
    revoke_authorization,
    set_surcharge,
)
from coordinator.billing import AppTerms
from coordinator.ledger import MAX_RATE_BPS

__all__ = ["APP_HANDLERS", "DatabaseAppTerms", "max_surcharge_bps_of"]

_SURCHARGE = "surcharge_percent"

# Most specific first: SurchargeAboveMaximum is an InvalidSurcharge.
_STATUSES: tuple[tuple[type[AppsError], int, str, str | None], ...] = (
    (SurchargeAboveMaximum, 400, "surcharge_above_maximum", _SURCHARGE),
    (InvalidSurcharge, 400, "invalid_surcharge", _SURCHARGE),
    (InvalidAppInput, 400, "invalid_value", "name"),
    (WrongRole, 403, "wrong_role", None),
    (NotYourApp, 403, "not_your_app", None),
    (AppNotFound, 404, "app_not_found", None),
    (AuthorizationNotFound, 404, "authorization_not_found", None),
    (UnknownAccount, 404, "account_not_found", None),
    (AppDisabled, 409, "app_disabled", None),
    (AuthorizationRevoked, 409, "authorization_revoked", None),
)


def _api_error(error: AppsError) -> ApiError:
    for kind, status, code, param in _STATUSES:
        if isinstance(error, kind):
            return ApiError(status, str(error), code=code, param=param)
    return ApiError(400, str(error), code="invalid_request")  # pragma: no cover - a new error


def max_surcharge_bps_of(services: Services) -> int:
    """The operator's maximum surcharge: ``services.max_surcharge_bps`` if the services carry a
    valid one (0 to 10,000 bp), else :data:`~coordinator.apps.DEFAULT_MAX_SURCHARGE_BPS`."""
    value = getattr(services, "max_surcharge_bps", None)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_RATE_BPS:
        return value
    return DEFAULT_MAX_SURCHARGE_BPS


def _sessions(services: Services) -> async_sessionmaker[AsyncSession]:
    if services.sessions is None:
        raise ApiError(
            503, "apps are not available: this coordinator has no database", code="unavailable"
        )
    return services.sessions


async def _json_object(request: Request[Any, Any, Any], allowed: frozenset[str]) -> dict[str, Any]:
    """The body as a JSON object with only ``allowed`` keys; decimals stay exact (Decimal)."""
    return await read_json_object(request, allowed)


def _required(data: dict[str, Any], name: str) -> object:
    value = data.get(name)
    if value is None:
        raise ApiError(
            400,
            f"missing required parameter: {name}",
            code="missing_required_parameter",
            param=name,
        )
    return value


def _surcharge_bps(data: dict[str, Any]) -> int:
    value = _required(data, _SURCHARGE)
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise ApiError(
            400,
            f'{_SURCHARGE} is a percentage of the provider price, such as "2.5"',
            code="invalid_surcharge",
            param=_SURCHARGE,
        )
    try:
        return parse_surcharge_percent(str(value))
    except InvalidSurcharge as error:
        raise _api_error(error) from None


def _version_json(version: AppSurchargeVersion) -> dict[str, Any]:
    return {
        "version": version.version,
        "surcharge_percent": format_percent(version.surcharge_bps),
        "surcharge_bps": version.surcharge_bps,
        "created_at_ms": version.created_at_ms,
    }


def _app_json(details: AppDetails) -> dict[str, Any]:
    app = details.app
    return {
        "id": app.id,
        "object": "app",
        "name": app.name,
        "builder_account_id": app.builder_account_id,
        "created_at_ms": app.created_at_ms,
        "disabled_at_ms": app.disabled_at_ms,
        "surcharge": _version_json(details.current),
        "surcharge_versions": [_version_json(version) for version in details.surcharges],
    }


def _authorization_json(authorization: AppAuthorization) -> dict[str, Any]:
    return {
        "id": authorization.id,
        "object": "app.authorization",
        "app_id": authorization.app_id,
        "customer_account_id": authorization.customer_account_id,
        "created_at_ms": authorization.created_at_ms,
        "revoked_at_ms": authorization.revoked_at_ms,
    }


def _app_id(request: Request[Any, Any, Any]) -> str:
    # Read from the request rather than declared as a handler parameter: Litestar's way of
    # declaring path parameters changed across the versions this project supports.
    return str(request.path_params["app_id"])


async def _account_caller(request: Request[Any, Any, Any], role: str, doing: str) -> Caller:
    """The caller, if of ``role``, refusing app-scoped keys: an app must not manage apps or
    authorizations (with its customer's key it could otherwise authorise other apps).

    The service checks the role again; checking here first answers 403 before a bad body's 400.
    """
    caller = await caller_of(request)
    if caller.app_id is not None:
        raise ApiError(
            403,
            "an app-scoped key cannot manage apps or authorizations; use your account's key",
            code="app_scoped_key",
        )
    if caller.role != role:
        raise ApiError(
            403, f"only a {role} key can {doing}; this is a {caller.role} key", code="wrong_role"
        )
    return caller


@post("/v1/apps", status_code=201)
async def register_app_endpoint(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Builder: ``{"name", "surcharge_percent": "2.5"}`` -> the app with surcharge version 1."""
    caller = await _account_caller(request, "builder", "register apps")
    services = services_of(request)
    data = await _json_object(request, frozenset({"name", _SURCHARGE}))
    name = _required(data, "name")
    if not isinstance(name, str):
        raise ApiError(400, "name must be a string", code="invalid_value", param="name")
    bps = _surcharge_bps(data)
    try:
        async with _sessions(services).begin() as session:
            details = await register_app(
                session,
                caller.account_id,
                name,
                bps,
                max_surcharge_bps=max_surcharge_bps_of(services),
            )
    except AppsError as error:
        raise _api_error(error) from None
    return _app_json(details)


@get("/v1/apps")
async def list_apps_endpoint(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Builder: the caller's apps (disabled ones included), each with every surcharge version."""
    caller = await _account_caller(request, "builder", "list apps")
    services = services_of(request)
    try:
        async with _sessions(services).begin() as session:
            apps = await list_apps(session, caller.account_id)
    except AppsError as error:
        raise _api_error(error) from None
    return {
        "object": "list",
        "data": [_app_json(details) for details in apps],
        "max_surcharge_percent": format_percent(max_surcharge_bps_of(services)),
    }


@patch("/v1/apps/{app_id:str}")
async def change_surcharge_endpoint(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Builder: ``{"surcharge_percent": "3"}`` -> the app with its new current version."""
    app_id = _app_id(request)
    caller = await _account_caller(request, "builder", "change apps")
    services = services_of(request)
    data = await _json_object(request, frozenset({_SURCHARGE}))
    bps = _surcharge_bps(data)
    try:
        async with _sessions(services).begin() as session:
            await set_surcharge(
                session,
                app_id,
                caller.account_id,
                bps,
                max_surcharge_bps=max_surcharge_bps_of(services),
            )
            details = await get_app(session, app_id)
    except AppsError as error:
        raise _api_error(error) from None
    return _app_json(details)


@post("/v1/apps/{app_id:str}/authorizations", status_code=201)
async def authorize_app_endpoint(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Customer: authorise the app -> the authorization and an app-scoped key, shown once."""
    app_id = _app_id(request)
    caller = await _account_caller(request, "customer", "authorise apps")
    try:
        async with _sessions(services_of(request)).begin() as session:
            authorization, raw_key = await authorize_app(session, caller.account_id, app_id)
    except AppsError as error:
        raise _api_error(error) from None
    return {**_authorization_json(authorization), "api_key": raw_key}


@delete("/v1/apps/{app_id:str}/authorizations", status_code=200)
async def revoke_authorization_endpoint(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Customer: revoke the authorization; every app-scoped key for the app stops working."""
    app_id = _app_id(request)
    caller = await _account_caller(request, "customer", "revoke app authorizations")
    try:
        async with _sessions(services_of(request)).begin() as session:
            authorization = await revoke_authorization(session, caller.account_id, app_id)
    except AppsError as error:
        raise _api_error(error) from None
    return _authorization_json(authorization)


class DatabaseAppTerms:
    """Implements :class:`coordinator.api.context.AppTermsLookup` over the database: the terms
    a *new* request through ``app_id`` is billed at (one short read transaction).

    Raises ApiError 404 ``app_not_found`` or 409 ``app_disabled`` (the app was disabled after
    the key was authenticated).
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def __call__(self, app_id: str) -> AppTerms:
        try:
            async with self._sessions.begin() as session:
                surcharge = await current_surcharge(session, app_id)
        except AppsError as error:
            raise _api_error(error) from None
        return AppTerms(
            app_id=surcharge.app_id,
            builder_account_id=surcharge.builder_account_id,
            surcharge_bps=surcharge.surcharge_bps,
            surcharge_version=surcharge.version,
        )


APP_HANDLERS: list[HTTPRouteHandler] = [
    register_app_endpoint,
    list_apps_endpoint,
    change_surcharge_endpoint,
    authorize_app_endpoint,
    revoke_authorization_endpoint,
]
"""The apps endpoints, for ``Litestar(route_handlers=[..., *APP_HANDLERS])``."""
