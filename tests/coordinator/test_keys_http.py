"""The keys API over HTTP (``/v1/keys``): a real Litestar app from ``create_app`` on a real
database (SQLite and PostgreSQL), called in-process through httpx's ASGI transport.

An account sees, creates and revokes only its own keys; another account's key id is "not found"
exactly like an unknown one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import httpx
import pytest
import pytest_asyncio

from coordinator.accounts import Role, create_account
from coordinator.api.accounts_gateway import DatabaseAccounts
from coordinator.app import Services, create_app
from coordinator.apps import authorize_app, register_app
from coordinator.hub.dispatch import Dispatcher
from coordinator.hub.hub import NodeHub
from coordinator.hub.nodes import NodeRegistry
from protocol import Identity
from tests.coordinator.conftest import Sessions

pytestmark = [
    pytest.mark.asyncio,
    # Some of create_app's own handlers (coordinator/app.py) declare path parameters in the
    # style recent Litestar deprecates; the keys handlers (/v1/keys...) do not, and stay checked.
    pytest.mark.filterwarnings(
        r"ignore:\[paths='/v1/(?!keys).*declared using deprecated inferred style"
        ":litestar.exceptions.LitestarDeprecationWarning"
    ),
]


@dataclass
class World:
    client: httpx.AsyncClient
    sessions: Sessions
    ada: str
    bob: str
    """Two customers' raw keys."""


async def _key(sessions: Sessions, role: Role, name: str) -> str:
    async with sessions.begin() as session:
        _, raw_key = await create_account(session, role, name)
    return raw_key


@pytest_asyncio.fixture
async def world(sessions: Sessions) -> AsyncIterator[World]:
    identity = Identity.generate()
    accounts = DatabaseAccounts(sessions, identity.public_key)
    registry = NodeRegistry()
    services = Services(
        accounts=accounts,
        hub=NodeHub(identity, registry, accounts.admission),
        registry=registry,
        dispatcher=Dispatcher(registry),
        sessions=sessions,
    )
    transport = httpx.ASGITransport(app=cast(Any, create_app(services)))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield World(
            client,
            sessions,
            await _key(sessions, Role.CUSTOMER, "Ada"),
            await _key(sessions, Role.CUSTOMER, "Bob"),
        )


def _bearer(raw_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw_key}"}


def _error(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"}
    return response.status_code, body["error"]["code"]


async def _keys(world: World, raw_key: str) -> list[dict[str, Any]]:
    response = await world.client.get("/v1/keys", headers=_bearer(raw_key))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list"
    data: list[dict[str, Any]] = body["data"]
    return data


async def test_an_account_lists_only_its_own_keys_and_never_a_secret(world: World) -> None:
    (key,) = await _keys(world, world.ada)
    assert key["id"].startswith("key_")
    assert world.ada.startswith(key["prefix"])
    assert (key["object"], key["active"], key["current"], key["app_id"]) == (
        "api_key",
        True,
        True,
        None,
    )
    assert key["revoked_at_ms"] is None
    assert "api_key" not in key
    assert "key_hash" not in key
    (bobs,) = await _keys(world, world.bob)
    assert bobs["id"] != key["id"]


async def test_a_new_key_is_shown_once_and_works(world: World) -> None:
    created = await world.client.post("/v1/keys", headers=_bearer(world.ada))
    assert created.status_code == 201, created.text
    body = created.json()
    raw_key = body["api_key"]
    assert raw_key.startswith(body["prefix"])
    assert body["current"] is False
    me = await world.client.get("/v1/me", headers=_bearer(raw_key))
    assert me.json()["name"] == "Ada"
    listed = await _keys(world, world.ada)
    assert [k["id"] for k in listed][-1] == body["id"]
    assert raw_key not in str(listed)
    assert [k["current"] for k in await _keys(world, raw_key)] == [False, True]
    empty_object = await world.client.post("/v1/keys", json={}, headers=_bearer(world.ada))
    assert empty_object.status_code == 201


async def test_revoking_refuses_the_key_at_once_and_twice_changes_nothing(world: World) -> None:
    created = (await world.client.post("/v1/keys", headers=_bearer(world.ada))).json()
    revoked = await world.client.delete(f"/v1/keys/{created['id']}", headers=_bearer(world.ada))
    assert revoked.status_code == 200
    first = revoked.json()
    assert (first["id"], first["active"]) == (created["id"], False)
    assert first["revoked_at_ms"] is not None
    refused = await world.client.get("/v1/me", headers=_bearer(created["api_key"]))
    assert _error(refused) == (401, "invalid_api_key")
    again = await world.client.delete(f"/v1/keys/{created['id']}", headers=_bearer(world.ada))
    assert again.json()["revoked_at_ms"] == first["revoked_at_ms"]
    assert (await world.client.get("/v1/me", headers=_bearer(world.ada))).status_code == 200


async def test_another_account_s_key_is_not_found_like_an_unknown_one(world: World) -> None:
    (bobs,) = await _keys(world, world.bob)
    theirs = await world.client.delete(f"/v1/keys/{bobs['id']}", headers=_bearer(world.ada))
    unknown = await world.client.delete("/v1/keys/key_nosuchkey", headers=_bearer(world.ada))
    by_prefix = await world.client.delete(f"/v1/keys/{bobs['prefix']}", headers=_bearer(world.ada))
    for response in (theirs, unknown, by_prefix):
        assert _error(response) == (404, "key_not_found")
    assert theirs.json()["error"]["message"] == f"no API key {bobs['id']!r} of yours"
    me = await world.client.get("/v1/me", headers=_bearer(world.bob))
    assert me.status_code == 200  # Bob's key still works
    assert (await _keys(world, world.bob))[0]["active"] is True


async def test_revoking_the_key_the_request_is_made_with_is_allowed(world: World) -> None:
    (own,) = await _keys(world, world.ada)
    response = await world.client.delete(f"/v1/keys/{own['id']}", headers=_bearer(world.ada))
    assert response.status_code == 200
    assert (response.json()["current"], response.json()["active"]) == (True, False)
    after = await world.client.get("/v1/keys", headers=_bearer(world.ada))
    assert _error(after) == (401, "invalid_api_key")


async def test_an_app_scoped_key_cannot_manage_keys(world: World) -> None:
    async with world.sessions.begin() as session:
        builder, _ = await create_account(session, Role.BUILDER, "Lin")
        details = await register_app(session, builder.id, "Chat Pal", 0, max_surcharge_bps=2000)
    ada_id = (await world.client.get("/v1/me", headers=_bearer(world.ada))).json()["account_id"]
    async with world.sessions.begin() as session:
        _, app_key = await authorize_app(session, ada_id, details.app.id)
    own = (await _keys(world, world.ada))[0]
    for method, path in (
        ("GET", "/v1/keys"),
        ("POST", "/v1/keys"),
        ("DELETE", f"/v1/keys/{own['id']}"),
    ):
        response = await world.client.request(method, path, headers=_bearer(app_key))
        assert _error(response) == (403, "app_scoped_key"), (method, path)
    listed = await _keys(world, world.ada)
    assert [k["app_id"] for k in listed] == [None, details.app.id]
    assert all(k["active"] for k in listed)


async def test_a_malformed_body_or_no_key_is_refused(world: World) -> None:
    for content in (b"[]", b"{", b'{"name": "x"}'):
        response = await world.client.post("/v1/keys", content=content, headers=_bearer(world.ada))
        assert response.status_code == 400, content
    assert _error(await world.client.get("/v1/keys")) == (401, "missing_api_key")
    assert len(await _keys(world, world.ada)) == 1
