"""The Provider API over HTTP (the real app, SQLite and PostgreSQL): own prices, and enrolling a
node with a one-time token in place of a Provider key."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import httpx
import pytest
import pytest_asyncio

from coordinator.accounts import Role, create_account, list_nodes
from coordinator.api.accounts_gateway import DatabaseAccounts
from coordinator.app import Services, create_app
from coordinator.catalogue import Catalogue, CatalogueEntry
from coordinator.hub.dispatch import Dispatcher
from coordinator.hub.hub import NodeHub
from coordinator.hub.nodes import LiveNode, NodeLink, NodeRegistry
from coordinator.providers import ENROLLMENT_TOKEN_LIFETIME_MS, create_enrollment_token
from protocol import EnrollmentStatement, Identity
from tests.coordinator.conftest import Sessions
from tests.protocol.peers import sample_hardware, sample_offer

pytestmark = [
    pytest.mark.asyncio,
    # Some of create_app's own handlers declare path parameters in the style recent Litestar
    # deprecates; the Provider API's handlers do not, and stay checked.
    pytest.mark.filterwarnings(
        r"ignore:\[paths='/v1/(?!provider|nodes).*declared using deprecated inferred style"
        ":litestar.exceptions.LitestarDeprecationWarning"
    ),
]

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
ALIAS = "llama3.1:8b"


@dataclass
class World:
    client: httpx.AsyncClient
    sessions: Sessions
    services: Services
    provider_id: str
    provider: dict[str, str]
    other_provider: dict[str, str]
    customer: dict[str, str]


def _bearer(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


async def _account(sessions: Sessions, role: Role, name: str) -> tuple[str, str]:
    async with sessions.begin() as session:
        account, raw_key = await create_account(session, role, name)
    return account.id, raw_key


def _live_node(provider_id: str, node_id: str = "nd_live") -> LiveNode:
    return LiveNode(
        node_id=node_id,
        provider_account_id=provider_id,
        session_id="ses",
        agent_version="test",
        hardware=sample_hardware(),
        offers={ALIAS: sample_offer(ALIAS)},
        link=cast(NodeLink, object()),
    )


@pytest_asyncio.fixture
async def world(sessions: Sessions) -> AsyncIterator[World]:
    identity = Identity.generate()
    accounts = DatabaseAccounts(sessions, identity.public_key)
    registry = NodeRegistry()
    registry.use_catalogue(
        Catalogue(
            [
                CatalogueEntry.parse(
                    {"id": MODEL, "name": "Llama", "aliases": [ALIAS], "context_length": 131072}
                )
            ]
        )
    )
    services = Services(
        accounts=accounts,
        hub=NodeHub(identity, registry, accounts.admission),
        registry=registry,
        dispatcher=Dispatcher(registry),
        sessions=sessions,
    )
    provider_id, provider_key = await _account(sessions, Role.PROVIDER, "Grace")
    _, other_key = await _account(sessions, Role.PROVIDER, "Mallory")
    _, customer_key = await _account(sessions, Role.CUSTOMER, "Ada")
    registry.add(_live_node(provider_id))
    transport = httpx.ASGITransport(app=cast(Any, create_app(services)))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield World(
            client,
            sessions,
            services,
            provider_id,
            _bearer(provider_key),
            _bearer(other_key),
            _bearer(customer_key),
        )


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    return error


def _live_price(world: World) -> tuple[int, int]:
    node = world.services.registry.get("nd_live")
    assert node is not None
    offer = node.offers[MODEL]
    return offer.price_input_micro_usd_per_1m, offer.price_output_micro_usd_per_1m


# --- own prices -------------------------------------------------------------------------------


async def test_a_provider_prices_a_model_by_any_spelling_and_its_live_node_charges_it(
    world: World,
) -> None:
    assert _live_price(world) == (50_000, 150_000)
    response = await world.client.put(
        f"/v1/provider/prices/{ALIAS}",
        json={"input_usd_per_1m": "0.20", "output_usd_per_1m": "0.60"},
        headers=world.provider,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert {k: v for k, v in body.items() if k != "updated_at_ms"} == {
        "object": "provider.price",
        "model": MODEL,
        "input_usd_per_1m": "0.20",
        "output_usd_per_1m": "0.60",
        "price_input_micro_usd_per_1m": 200_000,
        "price_output_micro_usd_per_1m": 600_000,
    }
    assert _live_price(world) == (200_000, 600_000)

    listed = (await world.client.get("/v1/provider/prices", headers=world.provider)).json()
    assert [price["model"] for price in listed["data"]] == [MODEL]
    assert listed["offers"] == [
        {
            "node": "nd_live",
            "model": MODEL,
            "served_as": ALIAS,
            "node_price": {"input": 50_000, "output": 150_000},
            "price": {"input": 200_000, "output": 600_000},
            "own_price": True,
        }
    ]
    # Another Provider sees none of it, and sets its own without touching this one's node.
    theirs = (await world.client.get("/v1/provider/prices", headers=world.other_provider)).json()
    assert theirs["data"] == theirs["offers"] == []
    other = await world.client.put(
        f"/v1/provider/prices/{MODEL}",
        json={"input_usd_per_1m": 9, "output_usd_per_1m": 9},
        headers=world.other_provider,
    )
    assert other.status_code == 200
    assert _live_price(world) == (200_000, 600_000)

    deleted = await world.client.delete(f"/v1/provider/prices/{MODEL}", headers=world.provider)
    assert deleted.json() == {"object": "provider.price.deleted", "model": MODEL, "deleted": True}
    assert _live_price(world) == (50_000, 150_000)
    again = await world.client.delete(f"/v1/provider/prices/{MODEL}", headers=world.provider)
    assert again.status_code == 404
    assert _error(again)["code"] == "price_not_found"


async def test_a_node_that_connects_later_gets_the_price(world: World) -> None:
    await world.client.put(
        f"/v1/provider/prices/{MODEL}",
        json={"input_usd_per_1m": "1", "output_usd_per_1m": "2"},
        headers=world.provider,
    )
    late = _live_node(world.provider_id, "nd_late")
    world.services.registry.add(late)
    assert late.offers[MODEL].price_input_micro_usd_per_1m == 1_000_000


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"input_usd_per_1m": "0.2"}, 400, "missing_required_parameter", "output_usd_per_1m"),
        ({"input_usd_per_1m": "0.2", "output_usd_per_1m": "-1"}, 400, "invalid_price",
         "output_usd_per_1m"),
        ({"input_usd_per_1m": "x", "output_usd_per_1m": "1"}, 400, "invalid_price",
         "input_usd_per_1m"),
        ({"input_usd_per_1m": 0.1234567, "output_usd_per_1m": "1"}, 400, "invalid_price",
         "input_usd_per_1m"),
        ({"input_usd_per_1m": "1", "output_usd_per_1m": "1", "colour": "red"}, 400,
         "unsupported_parameter", "colour"),
        ([1, 2], 400, "invalid_json", None),
    ],
)  # fmt: skip
async def test_a_bad_price_body_is_refused_and_nothing_changes(
    world: World, body: object, status: int, code: str, param: str | None
) -> None:
    response = await world.client.put(
        f"/v1/provider/prices/{MODEL}", json=body, headers=world.provider
    )
    assert response.status_code == status
    error = _error(response)
    assert (error["code"], error["param"]) == (code, param)
    assert _live_price(world) == (50_000, 150_000)


async def test_only_provider_keys_manage_prices(world: World) -> None:
    price = {"input_usd_per_1m": "1", "output_usd_per_1m": "1"}
    for method, path in (
        ("GET", "/v1/provider/prices"),
        ("PUT", f"/v1/provider/prices/{MODEL}"),
        ("DELETE", f"/v1/provider/prices/{MODEL}"),
    ):
        as_customer = await world.client.request(
            method, path, headers=world.customer, json=price if method == "PUT" else None
        )
        assert as_customer.status_code == 403
        assert _error(as_customer)["code"] == "wrong_role"
        anonymous = await world.client.request(method, path)
        assert anonymous.status_code == 401
    too_long = await world.client.put(
        "/v1/provider/prices/" + "x" * 300, json=price, headers=world.provider
    )
    assert too_long.status_code == 400
    assert _error(too_long)["param"] == "model"


# --- enrolling with a one-time token -------------------------------------------------------------


async def _token(world: World, at_ms: int | None = None) -> str:
    async with world.sessions.begin() as session:
        raw, _ = await create_enrollment_token(session, world.provider_id, now_ms=at_ms)
    return raw


def _enrollment(world: World, node: Identity, account_id: str) -> dict[str, Any]:
    now_ms = int(time.time() * 1000)
    statement = EnrollmentStatement(
        coordinator_key=world.services.hub.identity.public_key,
        node_key=node.public_key,
        account_id=account_id,
        issued_at_ms=now_ms,
    )
    return {
        "node_key": node.public_key.to_text(),
        "account_id": account_id,
        "issued_at_ms": now_ms,
        "proof": base64.urlsafe_b64encode(statement.sign(node)).decode().rstrip("="),
    }


async def test_a_token_tells_its_account_then_enrolls_one_node_in_place_of_a_key(
    world: World,
) -> None:
    token = await _token(world)
    info = await world.client.get("/v1/nodes/enroll", headers=_bearer(token))
    assert info.status_code == 200
    assert info.json()["account_id"] == world.provider_id
    assert info.json()["expires_at_ms"] > time.time() * 1000

    # A proof for another account is refused, and the token stays good.
    node = Identity.generate()
    wrong = await world.client.post(
        "/v1/nodes/enroll", json=_enrollment(world, node, "acc_other"), headers=_bearer(token)
    )
    assert wrong.status_code == 400
    assert _error(wrong)["code"] == "invalid_proof"

    enrolled = await world.client.post(
        "/v1/nodes/enroll",
        json=_enrollment(world, node, world.provider_id),
        headers=_bearer(token),
    )
    assert enrolled.status_code == 201, enrolled.text
    assert enrolled.json() == {"node_id": node.public_key.node_id, "account_id": world.provider_id}
    async with world.sessions() as session:
        assert [n.node_id for n in await list_nodes(session, world.provider_id)] == [
            node.public_key.node_id
        ]

    second = Identity.generate()
    for response in (
        await world.client.get("/v1/nodes/enroll", headers=_bearer(token)),
        await world.client.post(
            "/v1/nodes/enroll",
            json=_enrollment(world, second, world.provider_id),
            headers=_bearer(token),
        ),
    ):
        assert response.status_code == 401
        assert _error(response)["code"] == "enroll_token_used"
        assert token not in response.text


async def test_unknown_and_expired_tokens_are_refused_with_their_own_codes(world: World) -> None:
    long_ago = int(time.time() * 1000) - ENROLLMENT_TOKEN_LIFETIME_MS - 1
    expired = await _token(world, at_ms=long_ago)
    for token, code in (
        ("sai-enroll-" + "a" * 52, "invalid_enroll_token"),
        (expired, "enroll_token_expired"),
    ):
        response = await world.client.post(
            "/v1/nodes/enroll",
            json=_enrollment(world, Identity.generate(), world.provider_id),
            headers=_bearer(token),
        )
        assert response.status_code == 401
        assert _error(response)["code"] == code
    without = await world.client.get("/v1/nodes/enroll", headers=world.provider)
    assert without.status_code == 401
    assert _error(without)["code"] == "missing_enroll_token"


async def test_a_provider_key_still_enrolls_and_other_keys_do_not(world: World) -> None:
    node = Identity.generate()
    as_customer = await world.client.post(
        "/v1/nodes/enroll", json=_enrollment(world, node, world.provider_id), headers=world.customer
    )
    assert as_customer.status_code == 403
    as_provider = await world.client.post(
        "/v1/nodes/enroll", json=_enrollment(world, node, world.provider_id), headers=world.provider
    )
    assert as_provider.status_code == 201
