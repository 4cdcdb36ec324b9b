"""The apps API over HTTP: a real Litestar app (``create_app`` plus ``APP_HANDLERS``) on a real
database, called in-process through httpx's ASGI transport; no nodes needed.

httpx's transport runs the app on the test's own event loop, so the app can share the test's
database connections (Litestar's ``AsyncTestClient`` runs it on a loop of its own thread, where
asyncpg connections made by the test cannot be used).
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
from coordinator.api.apps import APP_HANDLERS, DatabaseAppTerms, max_surcharge_bps_of
from coordinator.api.errors import ApiError
from coordinator.app import Services, create_app
from coordinator.apps import DEFAULT_MAX_SURCHARGE_BPS, NotYourApp, disable_app
from coordinator.billing import AppTerms
from coordinator.hub.dispatch import Dispatcher
from coordinator.hub.hub import NodeHub
from coordinator.hub.nodes import NodeRegistry
from protocol import Identity
from tests.coordinator.conftest import Sessions

pytestmark = [
    pytest.mark.asyncio,
    # Some of create_app's own handlers (coordinator/app.py) declare path parameters in the
    # style recent Litestar deprecates; the apps handlers (/v1/apps...) do not, and stay checked.
    pytest.mark.filterwarnings(
        r"ignore:\[paths='/v1/(?!apps).*declared using deprecated inferred style"
        ":litestar.exceptions.LitestarDeprecationWarning"
    ),
]

Client = httpx.AsyncClient
_SURCHARGE = "surcharge_percent"


@dataclass
class ServicesWithCap(Services):
    """Services as the operator configures them: with a maximum surcharge of 5 %."""

    max_surcharge_bps: int = 500


def _services(sessions: Sessions, services_class: type[Services] = Services) -> Services:
    identity = Identity.generate()
    accounts = DatabaseAccounts(sessions, identity.public_key)
    registry = NodeRegistry()
    return services_class(
        accounts=accounts,
        hub=NodeHub(identity, registry, accounts.admission),
        registry=registry,
        dispatcher=Dispatcher(registry),
        sessions=sessions,
    )


@dataclass
class World:
    client: Client
    sessions: Sessions
    builder: dict[str, str]
    other_builder: dict[str, str]
    customer: dict[str, str]
    provider: dict[str, str]


def _bearer(raw_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw_key}"}


async def _key(sessions: Sessions, role: Role, name: str) -> str:
    async with sessions.begin() as session:
        _, raw_key = await create_account(session, role, name)
    return raw_key


async def _client(services: Services) -> AsyncIterator[Client]:
    app = create_app(services)
    # Until create_app registers the apps endpoints itself, add them here (once).
    if not any(route.path == "/v1/apps" for route in app.routes):
        for handler in APP_HANDLERS:
            app.register(handler)
    # Litestar's precise ASGI types are narrower than httpx's annotation; the app is ASGI.
    transport = httpx.ASGITransport(app=cast(Any, app))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest_asyncio.fixture
async def world(sessions: Sessions) -> AsyncIterator[World]:
    keys = [
        await _key(sessions, role, name)
        for role, name in (
            (Role.BUILDER, "Lin"),
            (Role.BUILDER, "Max"),
            (Role.CUSTOMER, "Ada"),
            (Role.PROVIDER, "Grace"),
        )
    ]
    async for client in _client(_services(sessions)):
        yield World(client, sessions, *(_bearer(key) for key in keys))


def _error(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    return error


async def _register(world: World, surcharge: object = "2.5", name: str = "Chat Pal") -> str:
    response = await world.client.post(
        "/v1/apps", json={"name": name, "surcharge_percent": surcharge}, headers=world.builder
    )
    assert response.status_code == 201, response.text
    app_id: str = response.json()["id"]
    return app_id


async def test_a_builder_registers_an_app_and_sees_it_with_its_surcharge(world: World) -> None:
    response = await world.client.post(
        "/v1/apps", json={"name": "Chat Pal", "surcharge_percent": "2.5"}, headers=world.builder
    )
    assert response.status_code == 201
    app = response.json()
    assert app["id"].startswith("app_")
    assert app["object"] == "app"
    assert app["name"] == "Chat Pal"
    assert app["builder_account_id"].startswith("acc_")
    assert app["disabled_at_ms"] is None
    assert {k: v for k, v in app["surcharge"].items() if k != "created_at_ms"} == {
        "version": 1,
        "surcharge_percent": "2.5",
        "surcharge_bps": 250,
    }
    assert app["surcharge_versions"] == [app["surcharge"]]

    listed = await world.client.get("/v1/apps", headers=world.builder)
    assert listed.status_code == 200
    assert listed.json() == {"object": "list", "data": [app], "max_surcharge_percent": "20"}
    others = await world.client.get("/v1/apps", headers=world.other_builder)
    assert others.json()["data"] == []


async def test_a_json_number_is_taken_exactly_and_whole_numbers_work(world: World) -> None:
    for surcharge, bps in ((2.55, 255), (3, 300), ("0", 0), ("20%", 2000)):
        response = await world.client.post(
            "/v1/apps", json={"name": "n", "surcharge_percent": surcharge}, headers=world.builder
        )
        assert response.status_code == 201, response.text
        assert response.json()["surcharge"]["surcharge_bps"] == bps
    exponent = await world.client.post(
        "/v1/apps", content=b'{"name": "n", "surcharge_percent": 1e1}', headers=world.builder
    )
    assert (exponent.status_code, _error(exponent)["code"]) == (400, "invalid_surcharge")


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        (
            {"name": "x", "surcharge_percent": "20.01"},
            "surcharge_above_maximum",
            "surcharge_percent",
        ),
        ({"name": "x", "surcharge_percent": "-1"}, "invalid_surcharge", "surcharge_percent"),
        ({"name": "x", "surcharge_percent": "2.555"}, "invalid_surcharge", "surcharge_percent"),
        ({"name": "x", "surcharge_percent": "lots"}, "invalid_surcharge", "surcharge_percent"),
        ({"name": "x", "surcharge_percent": True}, "invalid_surcharge", "surcharge_percent"),
        ({"name": "x", "surcharge_percent": [1]}, "invalid_surcharge", "surcharge_percent"),
        ({"name": "x", "surcharge_percent": 1e-3}, "invalid_surcharge", "surcharge_percent"),
        ({"name": "x"}, "missing_required_parameter", "surcharge_percent"),
        ({"surcharge_percent": "1"}, "missing_required_parameter", "name"),
        ({"name": "  ", "surcharge_percent": "1"}, "invalid_value", "name"),
        ({"name": 7, "surcharge_percent": "1"}, "invalid_value", "name"),
        ({"name": "x", "surcharge_percent": "1", "fee": 2}, "unsupported_parameter", "fee"),
    ],
)
async def test_bad_input_is_a_400_naming_the_parameter(
    world: World, body: dict[str, Any], code: str, param: str
) -> None:
    response = await world.client.post("/v1/apps", json=body, headers=world.builder)
    assert response.status_code == 400
    error = _error(response)
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param)
    listed = await world.client.get("/v1/apps", headers=world.builder)
    assert listed.json()["data"] == []


async def test_a_body_that_is_not_a_json_object_is_a_400(world: World) -> None:
    for content in (b"{", b"[]", b"\xff"):
        response = await world.client.post("/v1/apps", content=content, headers=world.builder)
        assert response.status_code == 400
        assert _error(response)["code"] == "invalid_json"


async def test_only_builders_manage_apps(world: World) -> None:
    for headers in (world.customer, world.provider):
        response = await world.client.post(
            "/v1/apps", json={"name": "x", "surcharge_percent": "1"}, headers=headers
        )
        assert response.status_code == 403
        assert _error(response)["code"] == "wrong_role"
        assert _error(response)["type"] == "permission_error"
        assert (await world.client.get("/v1/apps", headers=headers)).status_code == 403
        # The role is checked before the body: a wrong key learns nothing from its input.
        bad_body = await world.client.post("/v1/apps", content=b"{", headers=headers)
        assert (bad_body.status_code, _error(bad_body)["code"]) == (403, "wrong_role")
    missing = await world.client.post("/v1/apps", json={"name": "x", "surcharge_percent": "1"})
    assert missing.status_code == 401
    assert _error(missing)["code"] == "missing_api_key"


async def test_a_patch_adds_a_version_and_keeps_the_old_ones(world: World) -> None:
    app_id = await _register(world, "2.5")
    response = await world.client.patch(
        f"/v1/apps/{app_id}", json={"surcharge_percent": "4"}, headers=world.builder
    )
    assert response.status_code == 200
    app = response.json()
    assert app["surcharge"]["version"] == 2
    assert app["surcharge"]["surcharge_percent"] == "4"
    assert [(v["version"], v["surcharge_bps"]) for v in app["surcharge_versions"]] == [
        (1, 250),
        (2, 400),
    ]
    terms = await DatabaseAppTerms(world.sessions)(app_id)
    assert (terms.surcharge_version, terms.surcharge_bps) == (2, 400)

    not_yours = await world.client.patch(
        f"/v1/apps/{app_id}", json={"surcharge_percent": "1"}, headers=world.other_builder
    )
    assert (not_yours.status_code, _error(not_yours)["code"]) == (403, "not_your_app")
    unknown = await world.client.patch(
        "/v1/apps/app_missing", json={"surcharge_percent": "1"}, headers=world.builder
    )
    assert (unknown.status_code, _error(unknown)["code"]) == (404, "app_not_found")
    too_much = await world.client.patch(
        f"/v1/apps/{app_id}", json={"surcharge_percent": "50"}, headers=world.builder
    )
    assert (too_much.status_code, _error(too_much)["param"]) == (400, "surcharge_percent")
    renamed = await world.client.patch(
        f"/v1/apps/{app_id}", json={"name": "other"}, headers=world.builder
    )
    assert (renamed.status_code, _error(renamed)["code"]) == (400, "unsupported_parameter")
    listed = await world.client.get("/v1/apps", headers=world.builder)
    assert listed.json()["data"][0]["surcharge"]["version"] == 2


async def test_a_customer_authorises_an_app_and_its_key_works_until_revoked(
    world: World,
) -> None:
    app_id = await _register(world)
    response = await world.client.post(f"/v1/apps/{app_id}/authorizations", headers=world.customer)
    assert response.status_code == 201
    granted = response.json()
    assert granted["object"] == "app.authorization"
    assert granted["app_id"] == app_id
    assert granted["id"].startswith("auth_")
    assert granted["revoked_at_ms"] is None
    app_key = granted["api_key"]
    assert app_key.startswith("sk-sai-")

    me = await world.client.get("/v1/me", headers=_bearer(app_key))
    customer_me = await world.client.get("/v1/me", headers=world.customer)
    assert me.status_code == 200
    assert me.json() == customer_me.json()  # the customer's account: billed to the customer
    assert granted["customer_account_id"] == me.json()["account_id"]
    caller = await _services(world.sessions).accounts.authenticate(app_key)
    assert caller is not None
    assert caller.app_id == app_id

    # An app holding a customer's key must not use it to manage authorizations.
    for method in ("POST", "DELETE"):
        refused = await world.client.request(
            method, f"/v1/apps/{app_id}/authorizations", headers=_bearer(app_key)
        )
        assert (refused.status_code, _error(refused)["code"]) == (403, "app_scoped_key")

    revoked = await world.client.delete(f"/v1/apps/{app_id}/authorizations", headers=world.customer)
    assert revoked.status_code == 200
    assert revoked.json()["id"] == granted["id"]
    assert revoked.json()["revoked_at_ms"] is not None
    dead = await world.client.get("/v1/me", headers=_bearer(app_key))
    assert (dead.status_code, _error(dead)["code"]) == (401, "invalid_api_key")
    assert (await world.client.get("/v1/me", headers=world.customer)).status_code == 200

    again = await world.client.delete(f"/v1/apps/{app_id}/authorizations", headers=world.customer)
    assert (again.status_code, _error(again)["code"]) == (409, "authorization_revoked")


async def test_authorizations_are_for_customers_of_existing_enabled_apps(world: World) -> None:
    app_id = await _register(world)
    for headers in (world.builder, world.provider):
        response = await world.client.post(f"/v1/apps/{app_id}/authorizations", headers=headers)
        assert (response.status_code, _error(response)["code"]) == (403, "wrong_role")
    unknown = await world.client.post("/v1/apps/app_missing/authorizations", headers=world.customer)
    assert (unknown.status_code, _error(unknown)["code"]) == (404, "app_not_found")
    never = await world.client.delete(f"/v1/apps/{app_id}/authorizations", headers=world.customer)
    assert (never.status_code, _error(never)["code"]) == (404, "authorization_not_found")

    granted = await world.client.post(f"/v1/apps/{app_id}/authorizations", headers=world.customer)
    app_key = granted.json()["api_key"]
    async with world.sessions.begin() as session:
        with pytest.raises(NotYourApp):  # a customer cannot disable a Builder's app
            await disable_app(session, app_id, by=granted.json()["customer_account_id"])
    assert (await world.client.get("/v1/me", headers=_bearer(app_key))).status_code == 200


async def test_a_disabled_app_refuses_authorizations_and_its_keys(world: World) -> None:
    app_id = await _register(world)
    granted = await world.client.post(f"/v1/apps/{app_id}/authorizations", headers=world.customer)
    app_key = granted.json()["api_key"]
    builder_id = (await world.client.get("/v1/me", headers=world.builder)).json()["account_id"]
    async with world.sessions.begin() as session:
        await disable_app(session, app_id, by=builder_id)
    dead = await world.client.get("/v1/me", headers=_bearer(app_key))
    assert (dead.status_code, _error(dead)["code"]) == (401, "invalid_api_key")
    refused = await world.client.post(f"/v1/apps/{app_id}/authorizations", headers=world.customer)
    assert (refused.status_code, _error(refused)["code"]) == (409, "app_disabled")
    change = await world.client.patch(
        f"/v1/apps/{app_id}", json={"surcharge_percent": "1"}, headers=world.builder
    )
    assert (change.status_code, _error(change)["code"]) == (409, "app_disabled")
    with pytest.raises(ApiError) as terms:
        await DatabaseAppTerms(world.sessions)(app_id)
    assert (terms.value.status, terms.value.code) == (409, "app_disabled")
    listed = await world.client.get("/v1/apps", headers=world.builder)
    assert listed.json()["data"][0]["disabled_at_ms"] is not None


async def test_the_operators_maximum_comes_from_the_services(sessions: Sessions) -> None:
    builder = _bearer(await _key(sessions, Role.BUILDER, "Lin"))
    services = _services(sessions, ServicesWithCap)
    assert max_surcharge_bps_of(services) == 500
    assert max_surcharge_bps_of(_services(sessions)) == DEFAULT_MAX_SURCHARGE_BPS
    async for client in _client(services):
        above = await client.post(
            "/v1/apps", json={"name": "x", "surcharge_percent": "5.01"}, headers=builder
        )
        assert (above.status_code, _error(above)["code"]) == (400, "surcharge_above_maximum")
        assert "maximum of 5%" in _error(above)["message"]
        at_cap = await client.post(
            "/v1/apps", json={"name": "x", "surcharge_percent": "5"}, headers=builder
        )
        assert at_cap.status_code == 201
        listed = await client.get("/v1/apps", headers=builder)
        assert listed.json()["max_surcharge_percent"] == "5"


async def test_app_terms_name_the_builder_and_the_current_version(world: World) -> None:
    app_id = await _register(world, "1.25")
    builder_id = (await world.client.get("/v1/me", headers=world.builder)).json()["account_id"]
    assert await DatabaseAppTerms(world.sessions)(app_id) == AppTerms(
        app_id=app_id, builder_account_id=builder_id, surcharge_bps=125, surcharge_version=1
    )
    with pytest.raises(ApiError) as unknown:
        await DatabaseAppTerms(world.sessions)("app_missing")
    assert (unknown.value.status, unknown.value.code) == (404, "app_not_found")
