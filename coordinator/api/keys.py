"""API keys over HTTP: an account lists, creates and revokes its own keys.

=======  ====================  ============================================================
method   path                  what it does
=======  ====================  ============================================================
GET      /v1/keys              the caller's account's keys (revoked and app-scoped included)
POST     /v1/keys              a new key of the caller's account; the raw key, once (201)
DELETE   /v1/keys/{key_id}     revoke one of the account's keys (200, the revoked key)
=======  ====================  ============================================================

Any account key may call them; an app-scoped key may not (403 ``app_scoped_key``): an app must
not mint its customer's account keys. A key id of another account answers 404 like an unknown
one. Revoking the very key the request is made with is allowed: the answer still arrives, and
the key is refused from then on (and every console session opened with it ends).
"""

from __future__ import annotations

from typing import Any

from litestar import Request, delete, get, post
from litestar.handlers import HTTPRouteHandler
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.accounts import (
    AccountsError,
    ApiKey,
    KeyNotFound,
    issue_api_key,
    list_api_keys,
    revoke_key,
)
from coordinator.accounts.keys import hash_api_key
from coordinator.api.bodies import read_json_object
from coordinator.api.context import Caller, Services, caller_of, services_of
from coordinator.api.errors import ApiError

__all__ = ["KEY_HANDLERS", "key_json", "new_account_key"]


def key_json(key: ApiKey, *, current_key_id: str | None = None) -> dict[str, Any]:
    """The public view of a key: never its hash, never the raw key."""
    return {
        "id": key.id,
        "object": "api_key",
        "prefix": key.prefix,
        "created_at_ms": key.created_at_ms,
        "revoked_at_ms": key.revoked_at_ms,
        "last_used_at_ms": key.last_used_at_ms,
        "app_id": key.app_id,
        "active": key.revoked_at_ms is None,
        "current": key.id == current_key_id,
    }


def _sessions(services: Services) -> async_sessionmaker[AsyncSession]:
    if services.sessions is None:
        raise ApiError(
            503, "keys are not available: this coordinator has no database", code="unavailable"
        )
    return services.sessions


async def _account_caller(request: Request[Any, Any, Any]) -> Caller:
    caller = await caller_of(request)
    if caller.app_id is not None:
        raise ApiError(
            403,
            "an app-scoped key cannot manage API keys; use your account's key",
            code="app_scoped_key",
        )
    return caller


@get("/v1/keys")
async def list_keys_endpoint(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The caller's account's keys, oldest first; ``current`` marks the one calling."""
    caller = await _account_caller(request)
    async with _sessions(services_of(request))() as session:
        keys = await list_api_keys(session, caller.account_id)
    return {
        "object": "list",
        "data": [key_json(key, current_key_id=caller.api_key_id) for key in keys],
    }


@post("/v1/keys", status_code=201)
async def create_key_endpoint(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """A new key of the caller's account; ``api_key`` is the raw key, shown this once."""
    caller = await _account_caller(request)
    if await request.body():
        await read_json_object(request, frozenset())  # only an empty object is a valid body
    async with _sessions(services_of(request)).begin() as session:
        key, raw_key = await new_account_key(session, caller.account_id)
        body = key_json(key, current_key_id=caller.api_key_id)
    return {**body, "api_key": raw_key}


async def new_account_key(session: AsyncSession, account_id: str) -> tuple[ApiKey, str]:
    """A new (not app-scoped) key of ``account_id``: its row and the raw key, to show once.

    Works inside the caller's transaction, like :func:`coordinator.accounts.issue_api_key`.
    """
    raw_key = await issue_api_key(session, account_id)
    key = (
        await session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_api_key(raw_key)))
    ).one()
    return key, raw_key


@delete("/v1/keys/{key_id:str}", status_code=200)
async def revoke_key_endpoint(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Revoke one of the account's keys (the calling one too); revoking twice changes nothing."""
    caller = await _account_caller(request)
    key_id = str(request.path_params["key_id"])
    if not key_id.startswith("key_"):
        raise _no_such_key(key_id)
    try:
        async with _sessions(services_of(request)).begin() as session:
            key = await revoke_key(session, key_id, account_id=caller.account_id)
            body = key_json(key, current_key_id=caller.api_key_id)
    except KeyNotFound:
        raise _no_such_key(key_id) from None
    except AccountsError as error:  # pragma: no cover - an id names at most one key
        raise ApiError(400, str(error), code="invalid_value") from None
    return body


def _no_such_key(key_id: str) -> ApiError:
    return ApiError(404, f"no API key {key_id!r} of yours", code="key_not_found")


KEY_HANDLERS: list[HTTPRouteHandler] = [
    list_keys_endpoint,
    create_key_endpoint,
    revoke_key_endpoint,
]
"""The keys endpoints, for ``Litestar(route_handlers=[..., *KEY_HANDLERS])``."""
