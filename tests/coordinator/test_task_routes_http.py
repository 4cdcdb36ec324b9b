"""Task routes over HTTP: a real Litestar app (``create_app``) on a real database (SQLite and
PostgreSQL), called in-process through httpx's ASGI transport, with the starter catalogue live
so that route documents name known models. No node ever answers: requests through a route stop
at the dispatcher, which is enough to see the route and the rule it chose.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import httpx
import pytest
import pytest_asyncio

from coordinator.accounts import Role, create_account
from coordinator.api.accounts_gateway import DatabaseAccounts
from coordinator.api.completions import CompletionSettings, build_job, estimate_prompt_tokens
from coordinator.api.schemas import ChatCompletionRequest, CompletionRequest, parse_body
from coordinator.api.task_routes import request_features
from coordinator.app import Services, create_app
from coordinator.catalogue import LiveCatalogue, starter_catalogue
from coordinator.hub.dispatch import Dispatcher
from coordinator.hub.hub import NodeHub
from coordinator.hub.nodes import LiveNode, NodeLink, NodeRegistry
from coordinator.task_routes import MAX_ROUTES_PER_OWNER
from protocol import Identity
from scheduler import RequestFeatures
from tests.coordinator.conftest import Sessions
from tests.protocol.peers import sample_hardware, sample_offer

pytestmark = [
    # Some of create_app's own handlers (coordinator/app.py) declare path parameters in the
    # style recent Litestar deprecates; the route handlers (/v1/routes, /v1/apps) do not, and
    # stay checked.
    pytest.mark.filterwarnings(
        r"ignore:\[paths='/v1/(?!apps|routes).*declared using deprecated inferred style"
        ":litestar.exceptions.LitestarDeprecationWarning"
    ),
]

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
QWEN = "Qwen/Qwen2.5-7B-Instruct"
SMALL_ALIAS = "llama3.2:1b"
SMALL = "meta-llama/Llama-3.2-1B-Instruct"
DEFAULT_MAX_TOKENS = CompletionSettings().default_max_tokens

SUPPORT: dict[str, Any] = {
    "description": "cheap for triage",
    "rules": [
        {
            "name": "triage",
            "when": {"task": "triage", "max_prompt_tokens": 50},
            "models": [SMALL_ALIAS],
            "provider": {"sort": "price", "require_parameters": True},
        },
        {"name": "json", "when": {"structured_output": True}, "models": [QWEN]},
    ],
    "default": {"models": [LLAMA]},
}

# What GET returns for SUPPORT: the canonical document (keys in order, "task" as a list).
SUPPORT_CANONICAL: dict[str, Any] = {
    "name": "support",
    "description": "cheap for triage",
    "rules": [
        {
            "name": "triage",
            "when": {"task": ["triage"], "max_prompt_tokens": 50},
            "models": [SMALL_ALIAS],
            "provider": {"sort": "price", "require_parameters": True},
        },
        {"name": "json", "when": {"structured_output": True}, "models": [QWEN]},
    ],
    "default": {"name": "default", "models": [LLAMA]},
}


def simple(model: str = LLAMA) -> dict[str, Any]:
    return {"default": {"models": [model]}}


def node(node_id: str, model: str) -> LiveNode:
    return LiveNode(
        node_id=node_id,
        provider_account_id="acct_p",
        session_id="ses",
        agent_version="test",
        hardware=sample_hardware(),
        offers={model: sample_offer(model)},
        link=cast(NodeLink, object()),  # never dispatched to: only counted and named
    )


@dataclass
class World:
    client: httpx.AsyncClient
    sessions: Sessions
    services: Services
    ada: dict[str, str]
    bob: dict[str, str]
    lin: dict[str, str]
    max: dict[str, str]
    grace: dict[str, str]


def _bearer(raw_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw_key}"}


async def _key(sessions: Sessions, role: Role, name: str) -> dict[str, str]:
    async with sessions.begin() as session:
        _, raw_key = await create_account(session, role, name)
    return _bearer(raw_key)


@pytest_asyncio.fixture
async def world(sessions: Sessions) -> AsyncIterator[World]:
    identity = Identity.generate()
    accounts = DatabaseAccounts(sessions, identity.public_key)
    registry = NodeRegistry()
    catalogue = LiveCatalogue(starter_catalogue(), 1)
    catalogue.listen(registry.use_catalogue)
    services = Services(
        accounts=accounts,
        hub=NodeHub(identity, registry, accounts.admission),
        registry=registry,
        dispatcher=Dispatcher(registry),
        sessions=sessions,
        catalogue=catalogue,
    )
    keys = [
        await _key(sessions, role, name)
        for role, name in (
            (Role.CUSTOMER, "Ada"),
            (Role.CUSTOMER, "Bob"),
            (Role.BUILDER, "Lin"),
            (Role.BUILDER, "Max"),
            (Role.PROVIDER, "Grace"),
        )
    ]
    # Litestar's precise ASGI types are narrower than httpx's annotation; the app is ASGI.
    transport = httpx.ASGITransport(app=cast(Any, create_app(services)))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield World(client, sessions, services, *keys)


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    return error


def _refusal(response: httpx.Response) -> tuple[int, str, str | None]:
    error = _error(response)
    return response.status_code, error["code"], error.get("param")


async def _put(
    world: World,
    name: str,
    document: object,
    headers: dict[str, str] | None = None,
    base: str = "/v1/routes",
) -> httpx.Response:
    return await world.client.put(
        f"{base}/{name}", json=document, headers=world.ada if headers is None else headers
    )


async def _put_ok(
    world: World,
    name: str,
    document: object,
    headers: dict[str, str] | None = None,
    base: str = "/v1/routes",
) -> dict[str, Any]:
    response = await _put(world, name, document, headers, base)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _listed(world: World, headers: dict[str, str], base: str = "/v1/routes") -> list[str]:
    response = await world.client.get(base, headers=headers)
    assert response.status_code == 200, response.text
    return [route["name"] for route in response.json()["data"]]


async def _me(world: World, headers: dict[str, str]) -> str:
    account_id: str = (await world.client.get("/v1/me", headers=headers)).json()["account_id"]
    return account_id


async def _app_of_lin(world: World) -> str:
    response = await world.client.post(
        "/v1/apps", json={"name": "Chat Pal", "surcharge_percent": "1"}, headers=world.lin
    )
    assert response.status_code == 201, response.text
    app_id: str = response.json()["id"]
    return app_id


async def _app_key_of_ada(world: World, app_id: str) -> dict[str, str]:
    response = await world.client.post(f"/v1/apps/{app_id}/authorizations", headers=world.ada)
    assert response.status_code == 201, response.text
    return _bearer(response.json()["api_key"])


def _management_calls(base: str) -> list[tuple[str, str, object]]:
    return [
        ("GET", base, None),
        ("GET", f"{base}/support", None),
        ("PUT", f"{base}/support", simple()),
        ("DELETE", f"{base}/support", None),
        ("GET", f"{base}/support/versions", None),
        ("POST", f"{base}/support/dry-run", {"prompt": "hi"}),
    ]


# --- who may manage routes ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_managing_routes_needs_a_key_of_an_account_with_traffic(world: World) -> None:
    await _put_ok(world, "support", simple())
    for method, path, body in _management_calls("/v1/routes"):
        missing = await world.client.request(method, path, json=body)
        assert _refusal(missing)[:2] == (401, "missing_api_key"), (method, path)
        wrong = await world.client.request(
            method, path, json=body, headers=_bearer("sk-sai-not-a-key")
        )
        assert _refusal(wrong)[:2] == (401, "invalid_api_key"), (method, path)
        provider = await world.client.request(method, path, json=body, headers=world.grace)
        assert _refusal(provider)[:2] == (403, "wrong_role"), (method, path)
        assert _error(provider)["type"] == "permission_error"
        # The role is checked before the body: a wrong key learns nothing from its input.
        garbage = await world.client.request(method, path, content=b"{", headers=world.grace)
        assert _refusal(garbage)[:2] == (403, "wrong_role"), (method, path)
    # Builders and operators route their own traffic too.
    assert (await _put(world, "support", simple(), world.lin)).status_code == 200
    operator = await _key(world.sessions, Role.OPERATOR, "Op")
    assert (await _put(world, "support", simple(), operator)).status_code == 200
    assert await _listed(world, operator) == ["support"]
    assert await _listed(world, world.ada) == ["support"]


@pytest.mark.asyncio
async def test_an_app_scoped_key_cannot_manage_any_routes(world: World) -> None:
    app_id = await _app_of_lin(world)
    app_key = await _app_key_of_ada(world, app_id)
    for base in ("/v1/routes", f"/v1/apps/{app_id}/routes"):
        for method, path, body in _management_calls(base):
            refused = await world.client.request(method, path, json=body, headers=app_key)
            assert _refusal(refused)[:2] == (403, "app_scoped_key"), (method, path)
    assert await _listed(world, world.ada) == []


# --- PUT ------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_put_creates_version_one_then_two_echoing_the_canonical_document(
    world: World,
) -> None:
    ada_id = await _me(world, world.ada)
    first = await _put_ok(world, "support", SUPPORT)
    assert first == {
        "object": "route",
        "name": "support",
        "owner": {"kind": "account", "id": ada_id},
        "version": 1,
        "created_at_ms": first["created_at_ms"],
        "deleted": False,
        **SUPPORT_CANONICAL,
    }
    assert isinstance(first["created_at_ms"], int)
    # A body may repeat the URL's name; the canonical document PUT again is the same route.
    second = await _put_ok(world, "support", {**SUPPORT_CANONICAL, "description": "v2"})
    assert second["version"] == 2
    assert second["description"] == "v2"
    assert second["created_at_ms"] >= first["created_at_ms"]
    got = await world.client.get("/v1/routes/support", headers=world.ada)
    assert got.json() == second


BAD_DOCUMENTS: list[tuple[bytes, str, str | None]] = [
    (b"{", "invalid_json", None),
    (b"\xff", "invalid_json", None),
    (b"[]", "invalid_route", "document"),
    (b'{"rules": []}', "invalid_route", "default"),
    (b'{"default": {"models": ["nobody/no-such-model"]}}', "invalid_route", "default.models[0]"),
    (b'{"default": {"models": ["route:other"]}}', "invalid_route", "default.models[0]"),
    (b'{"default": {"models": []}}', "invalid_route", "default.models"),
    (b'{"default": {"models": ["llama3.1"]}, "x": 1}', "invalid_route", "x"),
    (b'{"name": "other", "default": {"models": ["llama3.1"]}}', "invalid_route", "name"),
    (
        json.dumps(
            {
                "rules": [
                    {"name": "a", "when": {"task": "t"}, "models": [LLAMA]},
                    {"name": "b", "when": {"task": "t", "tools": True}, "models": [QWEN]},
                ],
                "default": {"models": [LLAMA]},
            }
        ).encode(),
        "invalid_route",
        "rules[1]",
    ),
    (
        json.dumps(
            {
                "rules": [{"name": "a", "when": {"task": "t"}, "models": [LLAMA, "nope/x"]}],
                "default": {"models": [LLAMA]},
            }
        ).encode(),
        "invalid_route",
        "rules[0].models[1]",
    ),
    (
        json.dumps({"default": {"models": [LLAMA], "provider": {"sort": "fastest"}}}).encode(),
        "invalid_route",
        "default.provider.sort",
    ),
]


@pytest.mark.asyncio
async def test_put_refuses_a_bad_document_naming_the_field(world: World) -> None:
    for content, code, param in BAD_DOCUMENTS:
        response = await world.client.put("/v1/routes/support", content=content, headers=world.ada)
        assert _refusal(response) == (400, code, param), content
        assert _error(response)["type"] == "invalid_request_error"
    assert await _listed(world, world.ada) == []
    missing = await world.client.get("/v1/routes/support/versions", headers=world.ada)
    assert missing.status_code == 404


@pytest.mark.asyncio
async def test_put_refuses_a_bad_route_name_in_the_url(world: World) -> None:
    for name in ("Bad_Name!", "Support", "-lead", "a" * 65, "caf%C3%A9", "a%20b"):
        response = await _put(world, name, simple())
        assert _refusal(response) == (400, "invalid_route", "name"), name
    assert await _listed(world, world.ada) == []


@pytest.mark.asyncio
async def test_models_are_catalogue_ids_aliases_or_names_a_live_node_serves(
    world: World,
) -> None:
    alias = await _put_ok(world, "alias", simple(SMALL_ALIAS))
    assert alias["default"]["models"] == [SMALL_ALIAS]  # kept as written
    home_made = simple("my-own-build")
    refused = await _put(world, "home-made", home_made)
    assert _refusal(refused) == (400, "invalid_route", "default.models[0]")
    assert "my-own-build" in _error(refused)["message"]
    world.services.registry.add(node("nd_a", "my-own-build"))
    assert (await _put_ok(world, "home-made", home_made))["version"] == 1


# --- GET ------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_get_returns_the_route_in_force_or_a_past_version(world: World) -> None:
    unknown = await world.client.get("/v1/routes/support", headers=world.ada)
    assert _refusal(unknown) == (404, "route_not_found", None)
    v1 = await _put_ok(world, "support", simple(LLAMA))
    v2 = await _put_ok(world, "support", simple(QWEN))

    assert (await world.client.get("/v1/routes/support", headers=world.ada)).json() == v2
    past = await world.client.get("/v1/routes/support", params={"version": 1}, headers=world.ada)
    assert past.status_code == 200
    assert past.json() == v1
    assert past.json()["default"]["models"] == [LLAMA]
    for bad in ("0", "x", "-1", "1.5", ""):
        response = await world.client.get(
            "/v1/routes/support", params={"version": bad}, headers=world.ada
        )
        assert _refusal(response) == (400, "invalid_value", "version"), bad
    beyond = await world.client.get("/v1/routes/support", params={"version": 99}, headers=world.ada)
    assert _refusal(beyond)[:2] == (404, "route_not_found")
    # Another customer's route of the same name does not exist for them.
    other = await world.client.get("/v1/routes/support", headers=world.bob)
    assert _refusal(other)[:2] == (404, "route_not_found")
    other_past = await world.client.get(
        "/v1/routes/support", params={"version": 1}, headers=world.bob
    )
    assert other_past.status_code == 404


@pytest.mark.asyncio
async def test_a_version_that_is_odd_or_huge_is_refused_not_a_server_error(
    world: World,
) -> None:
    await _put_ok(world, "support", simple())
    answers = {}
    for version in ("²", "2147483648", "9223372036854775808"):
        response = await world.client.get(
            "/v1/routes/support", params={"version": version}, headers=world.ada
        )
        answers[version] = response.status_code
    assert answers == {"²": 400, "2147483648": 404, "9223372036854775808": 404}


# --- DELETE and versions --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_delete_records_a_version_and_a_new_put_continues_the_numbers(
    world: World,
) -> None:
    unknown = await world.client.delete("/v1/routes/support", headers=world.ada)
    assert _refusal(unknown)[:2] == (404, "route_not_found")
    no_versions = await world.client.get("/v1/routes/support/versions", headers=world.ada)
    assert _refusal(no_versions)[:2] == (404, "route_not_found")

    await _put_ok(world, "support", simple())
    await _put_ok(world, "keep", simple())
    await _put_ok(world, "support", simple(QWEN))
    deleted = await world.client.delete("/v1/routes/support", headers=world.ada)
    assert deleted.status_code == 200
    assert deleted.json() == {
        "object": "route.deleted",
        "name": "support",
        "version": 3,
        "deleted": True,
    }
    gone = await world.client.get("/v1/routes/support", headers=world.ada)
    assert _refusal(gone)[:2] == (404, "route_not_found")
    assert await _listed(world, world.ada) == ["keep"]
    again = await world.client.delete("/v1/routes/support", headers=world.ada)
    assert again.status_code == 404
    # The deletion itself, as a version, has no document to show.
    tombstone = await world.client.get(
        "/v1/routes/support", params={"version": 3}, headers=world.ada
    )
    assert tombstone.status_code == 200
    assert tombstone.json()["deleted"] is True
    assert "default" not in tombstone.json()

    back = await _put_ok(world, "support", simple())
    assert back["version"] == 4
    versions = await world.client.get("/v1/routes/support/versions", headers=world.ada)
    assert versions.status_code == 200
    body = versions.json()
    assert (body["object"], body["name"]) == ("list", "support")
    assert [(v["version"], v["deleted"]) for v in body["data"]] == [
        (4, False),
        (3, True),
        (2, False),
        (1, False),
    ]
    assert all(isinstance(v["created_at_ms"], int) for v in body["data"])
    assert await _listed(world, world.ada) == ["keep", "support"]


# --- list -----------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_each_customer_lists_only_their_own_routes_by_name(world: World) -> None:
    for name in ("zeta", "alpha", "m.id", "b-2"):
        await _put_ok(world, name, simple())
    await _put_ok(world, "alpha", simple(QWEN))
    await _put_ok(world, "bobs", simple(), world.bob)
    await _put_ok(world, "zeta", simple(), world.bob)

    listed = await world.client.get("/v1/routes", headers=world.ada)
    assert listed.json()["object"] == "list"
    data = listed.json()["data"]
    assert [route["name"] for route in data] == ["alpha", "b-2", "m.id", "zeta"]
    assert data[0]["version"] == 2
    assert data[0]["default"]["models"] == [QWEN]
    ada_id = await _me(world, world.ada)
    assert {route["owner"]["id"] for route in data} == {ada_id}
    assert await _listed(world, world.bob) == ["bobs", "zeta"]
    assert await _listed(world, world.lin) == []


# --- the limit ------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_account_has_at_most_the_limit_of_routes(world: World) -> None:
    for index in range(MAX_ROUTES_PER_OWNER):
        await _put_ok(world, f"r{index:03d}", simple())
    over = await _put(world, "one-too-many", simple())
    assert _refusal(over)[:2] == (409, "too_many_routes")
    assert str(MAX_ROUTES_PER_OWNER) in _error(over)["message"]
    assert (await _put_ok(world, "r000", simple(QWEN)))["version"] == 2
    assert (await _put_ok(world, "bobs", simple(), world.bob))["version"] == 1
    assert (await world.client.delete("/v1/routes/r042", headers=world.ada)).status_code == 200
    assert (await _put_ok(world, "one-too-many", simple()))["version"] == 1
    assert len(await _listed(world, world.ada)) == MAX_ROUTES_PER_OWNER
    full_again = await _put(world, "r042", simple())
    assert _refusal(full_again)[:2] == (409, "too_many_routes")


# --- concurrent writers ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_putting_the_route_in_force_again_adds_no_version(world: World) -> None:
    first = await _put_ok(world, "support", SUPPORT)
    assert await _put_ok(world, "support", SUPPORT_CANONICAL) == first  # the same document
    assert (await _put_ok(world, "support", simple()))["version"] == 2
    assert (await _put_ok(world, "support", SUPPORT))["version"] == 3  # only the newest counts
    versions = await world.client.get("/v1/routes/support/versions", headers=world.ada)
    assert [v["version"] for v in versions.json()["data"]] == [3, 2, 1]
    # Another owner's identical document is their own first version.
    assert (await _put_ok(world, "support", SUPPORT, world.bob))["version"] == 1


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("database_url", "writers"),
    [
        ("sqlite", 8),  # BEGIN IMMEDIATE: writers take turns, and never collide
        ("postgresql", 8),  # a lock per owner (coordinator/task_routes.py): writers take turns
    ],
    indirect=["database_url"],
)
async def test_concurrent_puts_of_one_name_each_get_their_own_version(
    world: World, writers: int
) -> None:
    responses = await asyncio.gather(
        *(
            _put(world, "support", {**simple(), "description": f"writer {i}"}, world.ada)
            for i in range(writers)
        )
    )
    assert [r.status_code for r in responses] == [200] * writers, [r.text for r in responses]
    assert sorted(r.json()["version"] for r in responses) == list(range(1, writers + 1))
    versions = await world.client.get("/v1/routes/support/versions", headers=world.ada)
    assert [v["version"] for v in versions.json()["data"]] == list(range(writers, 0, -1))


# --- a Builder's app routes -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_builder_manages_the_routes_of_their_app(world: World) -> None:
    app_id = await _app_of_lin(world)
    base = f"/v1/apps/{app_id}/routes"
    created = await _put_ok(world, "support", SUPPORT, world.lin, base)
    assert created["owner"] == {"kind": "app", "id": app_id}
    assert created["version"] == 1
    assert (await _put_ok(world, "support", simple(), world.lin, base))["version"] == 2
    assert await _listed(world, world.lin, base) == ["support"]
    assert await _listed(world, world.lin) == []  # not Lin's own account routes
    past = await world.client.get(f"{base}/support", params={"version": 1}, headers=world.lin)
    assert past.json()["rules"] == SUPPORT_CANONICAL["rules"]
    versions = await world.client.get(f"{base}/support/versions", headers=world.lin)
    assert [v["version"] for v in versions.json()["data"]] == [2, 1]
    dry_run = await world.client.post(
        f"{base}/support/dry-run", json={"prompt": "hello"}, headers=world.lin
    )
    assert (dry_run.status_code, dry_run.json()["rule"]) == (200, "default")
    # An app's dry run looks at the app's routes only, not at its Builder's own.
    await _put_ok(world, "lins-own", simple(), world.lin)
    not_the_apps = await world.client.post(
        f"{base}/lins-own/dry-run", json={"prompt": "hello"}, headers=world.lin
    )
    assert _refusal(not_the_apps)[:2] == (404, "route_not_found")
    deleted = await world.client.delete(f"{base}/support", headers=world.lin)
    assert (deleted.status_code, deleted.json()["version"]) == (200, 3)
    assert await _listed(world, world.lin, base) == []


@pytest.mark.asyncio
async def test_only_the_apps_builder_manages_its_routes(world: World) -> None:
    app_id = await _app_of_lin(world)
    base = f"/v1/apps/{app_id}/routes"
    await _put_ok(world, "support", simple(), world.lin, base)
    for headers in (world.max, world.ada, world.grace):
        for method, path, body in _management_calls(base):
            refused = await world.client.request(method, path, json=body, headers=headers)
            assert _refusal(refused)[:2] == (403, "not_your_app"), (method, path)
    for method, path, body in _management_calls("/v1/apps/app_missing/routes"):
        unknown = await world.client.request(method, path, json=body, headers=world.lin)
        assert _refusal(unknown)[:2] == (404, "app_not_found"), (method, path)
    versions = await world.client.get(f"{base}/support/versions", headers=world.lin)
    assert [v["version"] for v in versions.json()["data"]] == [1]


# --- dry runs -------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_dry_run_of_an_unknown_route_is_a_404(world: World) -> None:
    response = await world.client.post(
        "/v1/routes/nope/dry-run", json={"prompt": "hi"}, headers=world.ada
    )
    assert _refusal(response)[:2] == (404, "route_not_found")


@pytest.mark.asyncio
async def test_a_dry_run_sample_must_be_a_valid_request(world: World) -> None:
    await _put_ok(world, "support", SUPPORT)
    for sample, param in (
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user"}]}, "messages.0"),
        ({}, "prompt"),
        ({"prompt": "hi", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "hi", "bogus": 1}, "bogus"),
    ):
        response = await world.client.post(
            "/v1/routes/support/dry-run", json=sample, headers=world.ada
        )
        status, _, got_param = _refusal(response)
        assert (status, got_param) == (400, param), sample
    not_json = await world.client.post(
        "/v1/routes/support/dry-run", content=b"[1]", headers=world.ada
    )
    assert _refusal(not_json)[:2] == (400, "invalid_json")


@pytest.mark.asyncio
async def test_a_dry_run_of_a_chat_sample_shows_the_rule_features_and_provider(
    world: World,
) -> None:
    await _put_ok(world, "support", SUPPORT)
    sample = {
        "messages": [{"role": "user", "content": "my order is late"}],
        "metadata": {"task": "triage", "tags": " support, en ,,"},
        "stream": True,
        "max_tokens": 100,
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}}],
        "provider": {"sort": "latency", "allow_fallbacks": False},
    }
    response = await world.client.post("/v1/routes/support/dry-run", json=sample, headers=world.ada)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["object"] == "route.dry_run"
    assert (result["route"], result["version"], result["rule"]) == ("support", 1, "triage")
    assert result["models"] == [SMALL_ALIAS]
    assert result["evaluated"] == [{"rule": "triage", "matched": True, "reason": None}]
    features = result["features"]
    assert features == {
        "task": "triage",
        "tags": ["en", "support"],
        "metadata": {"task": "triage", "tags": " support, en ,,"},
        "tools": True,
        "structured_output": False,
        "stream": True,
        "prompt_tokens": features["prompt_tokens"],
        "output_tokens": 100,
    }
    assert 1 <= features["prompt_tokens"] <= 50
    # The request's own provider fields win over the rule's; the rest of the rule's stay.
    assert result["provider"] == {
        "sort": "latency",
        "require_parameters": True,
        "allow_fallbacks": False,
    }
    # An alias is shown by its canonical id.
    assert result["availability"] == [{"model": SMALL, "catalogued": True, "nodes": 0}]


@pytest.mark.asyncio
async def test_a_dry_run_of_a_text_sample_explains_every_rule_it_passed(world: World) -> None:
    await _put_ok(world, "support", SUPPORT)
    world.services.registry.add(node("nd_a", "llama3.1:8b"))  # serves LLAMA, by an alias
    response = await world.client.post(
        "/v1/routes/support/dry-run", json={"prompt": "x" * 400}, headers=world.ada
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["rule"] == "default"
    assert result["evaluated"] == [
        {"rule": "triage", "matched": False, "reason": "no task in the request, not one of triage"},
        {
            "rule": "json",
            "matched": False,
            "reason": "the request does not ask for structured output",
        },
        {"rule": "default", "matched": True, "reason": None},
    ]
    assert result["features"]["task"] is None
    assert result["features"]["tags"] == []
    assert result["features"]["stream"] is False
    assert result["features"]["prompt_tokens"] == 100
    assert result["features"]["output_tokens"] == DEFAULT_MAX_TOKENS
    assert result["provider"] == {}
    assert result["availability"] == [{"model": LLAMA, "catalogued": True, "nodes": 1}]


@pytest.mark.asyncio
async def test_a_dry_run_sees_structured_output_only_for_json_formats(world: World) -> None:
    await _put_ok(world, "support", SUPPORT)
    json_schema = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {}}}
    for response_format, structured, rule, model in (
        ({"type": "json_object"}, True, "json", QWEN),
        (json_schema, True, "json", QWEN),
        ({"type": "text"}, False, "default", LLAMA),
        (None, False, "default", LLAMA),
    ):
        sample: dict[str, Any] = {
            "messages": [{"role": "user", "content": "hi"}],
            "metadata": {"task": "chat"},
        }
        if response_format is not None:
            sample["response_format"] = response_format
        response = await world.client.post(
            "/v1/routes/support/dry-run", json=sample, headers=world.ada
        )
        assert response.status_code == 200, response.text
        result = response.json()
        assert (result["features"]["structured_output"], result["rule"]) == (structured, rule)
        assert result["evaluated"][0] == {
            "rule": "triage",
            "matched": False,
            "reason": "task is 'chat', not one of triage",
        }
        assert [a["model"] for a in result["availability"]] == [model]


@pytest.mark.asyncio
async def test_a_dry_run_refuses_fallback_models_as_a_request_would(world: World) -> None:
    await _put_ok(world, "support", SUPPORT)
    response = await world.client.post(
        "/v1/routes/support/dry-run", json={"prompt": "hi", "models": [QWEN]}, headers=world.ada
    )
    assert _refusal(response) == (400, "invalid_value", "models")


@pytest.mark.asyncio
async def test_a_suffix_then_the_requests_provider_override_the_rules_sort(world: World) -> None:
    await _put_ok(world, "support", SUPPORT)
    triage = {"messages": [{"role": "user", "content": "hi"}], "metadata": {"task": "triage"}}
    for model, provider, sort in (
        ("route:support", None, "price"),
        ("route:support:nitro", None, "throughput"),
        ("route:support:floor", {"sort": "latency"}, "latency"),
    ):
        sample: dict[str, Any] = {"model": model, **triage}
        if provider is not None:
            sample["provider"] = provider
        response = await world.client.post(
            "/v1/routes/support/dry-run", json=sample, headers=world.ada
        )
        assert response.status_code == 200, response.text
        assert response.json()["rule"] == "triage"
        assert response.json()["provider"] == {"sort": sort, "require_parameters": True}, model


@pytest.mark.asyncio
async def test_a_dry_run_sample_may_hold_fractional_numbers(world: World) -> None:
    await _put_ok(world, "support", SUPPORT)
    response = await world.client.post(
        "/v1/routes/support/dry-run",
        json={"prompt": "hi", "temperature": 0.5, "provider": {"max_price": {"prompt": 0.25}}},
        headers=world.ada,
    )
    assert response.status_code == 200, response.text
    assert response.json()["provider"] == {"max_price": {"prompt": 0.25}}


@pytest.mark.asyncio
async def test_a_rules_provider_may_hold_fractions_lists_and_nested_objects(
    world: World,
) -> None:
    provider = {
        "min_reputation": 0.9,
        "preferred_max_latency": 1.5,
        "max_price": {"prompt": 0.5, "completion": "0.75"},
        "order": ["nd_a", "nd_b"],
        "only": ["nd_a", "nd_b"],
        "ignore": ["nd_c"],
    }
    stored = await _put_ok(world, "pinned", {"default": {"models": [LLAMA], "provider": provider}})
    assert stored["default"]["provider"] == provider
    got = await world.client.get("/v1/routes/pinned", headers=world.ada)
    assert got.json()["default"]["provider"] == provider
    dry_run = await world.client.post(
        "/v1/routes/pinned/dry-run", json={"prompt": "hi"}, headers=world.ada
    )
    assert dry_run.status_code == 200, dry_run.text
    assert dry_run.json()["provider"] == provider
    through = await _chat_through(world, "route:pinned", world.ada)
    assert _refusal(through)[:2] == (404, "model_not_found")


# --- request features (no database) ---------------------------------------------------------------


def _features(body: dict[str, Any]) -> RequestFeatures:
    raw = json.dumps({"model": "route:support", **body}).encode()
    parsed: ChatCompletionRequest | CompletionRequest = (
        parse_body(raw, ChatCompletionRequest)
        if "messages" in body
        else parse_body(raw, CompletionRequest)
    )
    return request_features(parsed, build_job(parsed, CompletionSettings()))


def _chat(**fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "hello"}], **fields}


def test_tags_are_split_on_commas_trimmed_and_empty_ones_dropped() -> None:
    features = _features(_chat(metadata={"tags": " a, b,,c ", "task": "t", "tier": "free"}))
    assert features.tags == frozenset({"a", "b", "c"})
    assert features.task == "t"
    assert dict(features.metadata) == {"tags": " a, b,,c ", "task": "t", "tier": "free"}
    assert _features(_chat(metadata={"tags": " , ,"})).tags == frozenset()


def test_a_request_without_metadata_has_no_task_or_tags() -> None:
    features = _features(_chat())
    assert (features.task, features.tags, dict(features.metadata)) == (None, frozenset(), {})
    assert (features.tools, features.structured_output, features.stream) == (False, False, False)
    assert features.output_tokens == DEFAULT_MAX_TOKENS


@pytest.mark.parametrize(
    ("response_format", "structured"),
    [
        ({"type": "json_object"}, True),
        ({"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}, True),
        ({"type": "text"}, False),
    ],
)
def test_structured_output_means_a_json_response_format(
    response_format: dict[str, Any], structured: bool
) -> None:
    assert _features(_chat(response_format=response_format)).structured_output is structured


def test_tools_stream_and_output_tokens_come_from_the_request() -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    features = _features(_chat(tools=tools, stream=True, max_completion_tokens=77))
    assert (features.tools, features.stream, features.output_tokens) == (True, True, 77)
    assert _features({"prompt": "hi", "max_tokens": 9}).output_tokens == 9
    assert _features({"prompt": "hi"}).output_tokens == DEFAULT_MAX_TOKENS


def test_the_prompt_token_estimate_grows_with_the_prompt() -> None:
    sizes = [_features({"prompt": "x" * n}).prompt_tokens for n in (0, 40, 400, 4000)]
    assert sizes == sorted(sizes)
    assert sizes[0] >= 1
    assert sizes[-1] > sizes[1]
    chat = _features(_chat(messages=[{"role": "user", "content": "y" * 800}]))
    assert chat.prompt_tokens == 200
    raw = json.dumps({"model": "m", "prompt": "z" * 800}).encode()
    body = parse_body(raw, CompletionRequest)
    job = build_job(body, CompletionSettings())
    assert request_features(body, job).prompt_tokens == estimate_prompt_tokens(job)


# --- requests through a route ---------------------------------------------------------------------


async def _chat_through(
    world: World, model: str, headers: dict[str, str], **fields: Any
) -> httpx.Response:
    return await world.client.post(
        "/v1/chat/completions", json={"model": model, **_chat(**fields)}, headers=headers
    )


@pytest.mark.asyncio
async def test_a_request_to_an_unknown_route_is_a_404_naming_the_model(world: World) -> None:
    response = await _chat_through(world, "route:nope", world.ada)
    assert _refusal(response) == (404, "route_not_found", "model")
    assert "PUT /v1/routes/nope" in _error(response)["message"]


@pytest.mark.asyncio
async def test_a_request_to_a_route_cannot_also_name_fallback_models(world: World) -> None:
    await _put_ok(world, "support", SUPPORT)
    response = await _chat_through(world, "route:support", world.ada, models=[QWEN])
    assert _refusal(response) == (400, "invalid_value", "models")


@pytest.mark.asyncio
async def test_a_request_to_a_route_goes_to_the_chosen_rules_models(world: World) -> None:
    await _put_ok(world, "support", SUPPORT)
    triage = await _chat_through(world, "route:support", world.ada, metadata={"task": "triage"})
    assert _refusal(triage) == (404, "model_not_found", "model")
    assert SMALL in _error(triage)["message"]  # the triage rule's model, by its canonical id
    other = await _chat_through(world, "route:support", world.ada)
    assert _refusal(other) == (404, "model_not_found", "model")
    assert LLAMA in _error(other)["message"]  # the default rule's model
    text = await world.client.post(
        "/v1/completions",
        json={"model": "route:support:floor", "prompt": "hi"},
        headers=world.ada,
    )
    assert _refusal(text) == (404, "model_not_found", "model")
    # Routes are the caller's own: Bob has none of that name.
    bobs = await _chat_through(world, "route:support", world.bob)
    assert _refusal(bobs)[:2] == (404, "route_not_found")
    await world.client.delete("/v1/routes/support", headers=world.ada)
    deleted = await _chat_through(world, "route:support", world.ada)
    assert _refusal(deleted)[:2] == (404, "route_not_found")


@pytest.mark.asyncio
async def test_an_app_key_uses_the_apps_route_before_the_customers_own(world: World) -> None:
    app_id = await _app_of_lin(world)
    app_key = await _app_key_of_ada(world, app_id)
    base = f"/v1/apps/{app_id}/routes"
    await _put_ok(world, "shared", simple(QWEN), world.lin, base)
    await _put_ok(world, "shared", simple(LLAMA))
    await _put_ok(world, "adas", simple(SMALL_ALIAS))
    await _put_ok(world, "apps", simple(QWEN), world.lin, base)

    via_app = await _chat_through(world, "route:shared", app_key)
    assert _refusal(via_app)[:2] == (404, "model_not_found")
    assert QWEN in _error(via_app)["message"]
    own = await _chat_through(world, "route:shared", world.ada)
    assert LLAMA in _error(own)["message"]
    fallback_to_own = await _chat_through(world, "route:adas", app_key)
    assert SMALL in _error(fallback_to_own)["message"]
    # The app's routes serve only its scoped keys.
    not_for_ada = await _chat_through(world, "route:apps", world.ada)
    assert _refusal(not_for_ada)[:2] == (404, "route_not_found")
    for_the_app = await _chat_through(world, "route:apps", app_key)
    assert _refusal(for_the_app)[:2] == (404, "model_not_found")
