"""Suspending nodes: the service on SQLite and PostgreSQL, admission, the operator's JSON API
(a real Litestar app on a real database, in-process) and ``shareai admin suspend-node``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import pytest_asyncio

from coordinator.accounts import (
    MAX_SUSPENSION_REASON_CHARS,
    OPERATOR,
    AccountNotFound,
    InvalidAccountInput,
    NodeNotFound,
    Role,
    RoleNotAllowed,
    create_account,
    enroll_node,
    restore_node,
    revoke_node,
    suspend_node,
    suspended_nodes,
)
from coordinator.api.accounts_gateway import DatabaseAccounts
from coordinator.app import Services, create_app
from coordinator.db import create_engine, create_session_factory
from coordinator.hub.dispatch import Dispatcher
from coordinator.hub.hub import NodeHub
from coordinator.hub.nodes import LiveNode, NodeLink, NodeRegistry
from coordinator.ledger import account_balances
from protocol import EnrollmentStatement, Identity
from tests.coordinator.conftest import Sessions
from tests.coordinator.test_admin_cli import admin, admin_json, one_line_error
from tests.protocol.peers import sample_hardware, sample_offer

pytestmark = [
    pytest.mark.asyncio,
    # create_app's older handlers declare path parameters in the style Litestar deprecates; the
    # operator endpoints tested here do not, and stay checked.
    pytest.mark.filterwarnings(
        r"ignore:\[paths='/v1/(?!admin/nodes/\{node_id.str\}/|admin/accounts/).*declared using"
        " deprecated inferred style:litestar.exceptions.LitestarDeprecationWarning"
    ),
]

NOW_MS = 1_767_225_600_000
COORDINATOR = Identity.from_seed(b"c" * 32)


async def new_account(sessions: Sessions, role: Role, name: str = "Grace") -> tuple[str, str]:
    async with sessions.begin() as session:
        account, raw_key = await create_account(session, role, name)
    return account.id, raw_key


async def enrolled_node(sessions: Sessions, provider_id: str, seed: bytes = b"n") -> str:
    node = Identity.from_seed(seed * 32)
    statement = EnrollmentStatement(
        coordinator_key=COORDINATOR.public_key,
        node_key=node.public_key,
        account_id=provider_id,
        issued_at_ms=NOW_MS,
    )
    async with sessions.begin() as session:
        enrollment = await enroll_node(
            session,
            provider_id,
            statement,
            statement.sign(node),
            NOW_MS,
            coordinator_key=COORDINATOR.public_key,
        )
    return enrollment.node_id


@dataclass
class Fleet:
    sessions: Sessions
    provider_id: str
    operator_id: str
    node_id: str


@pytest_asyncio.fixture
async def fleet(sessions: Sessions) -> Fleet:
    provider_id, _ = await new_account(sessions, Role.PROVIDER)
    operator_id, _ = await new_account(sessions, Role.OPERATOR, "ops")
    return Fleet(sessions, provider_id, operator_id, await enrolled_node(sessions, provider_id))


# --- the service ---------------------------------------------------------------------------------


async def test_an_operator_suspends_and_restores_a_node_and_both_are_idempotent(
    fleet: Fleet,
) -> None:
    async with fleet.sessions.begin() as session:
        first = await suspend_node(
            session, fleet.node_id, by=fleet.operator_id, reason="  wrong\nanswers ", now_ms=NOW_MS
        )
        assert (first.suspended_at_ms, first.suspended_by) == (NOW_MS, fleet.operator_id)
        assert first.suspended_reason == "wrong answers"  # one line
    async with fleet.sessions.begin() as session:
        again = await suspend_node(
            session, fleet.node_id, by=OPERATOR, reason="another reason", now_ms=NOW_MS + 1
        )
        # A second suspension changes nothing: the first one's time, author and reason stay.
        assert (again.suspended_at_ms, again.suspended_by, again.suspended_reason) == (
            NOW_MS,
            fleet.operator_id,
            "wrong answers",
        )
        assert [row.node_id for row in await suspended_nodes(session)] == [fleet.node_id]
    async with fleet.sessions.begin() as session:
        restored = await restore_node(session, fleet.node_id, by=fleet.operator_id)
        assert restored.suspended_at_ms is None
        assert restored.suspended_by is None
        assert restored.suspended_reason is None
        assert restored.active  # suspension never touched the enrollment itself
    async with fleet.sessions.begin() as session:
        await restore_node(session, fleet.node_id, by=OPERATOR)  # not suspended: a no-op
        assert await suspended_nodes(session) == []


async def test_the_operator_tools_are_recorded_as_the_operator(fleet: Fleet) -> None:
    async with fleet.sessions.begin() as session:
        enrollment = await suspend_node(session, fleet.node_id, by=OPERATOR, reason="audit")
    assert enrollment.suspended_by == "operator"


@pytest.mark.parametrize("role", [Role.PROVIDER, Role.CUSTOMER, Role.BUILDER])
async def test_only_the_operator_may_suspend_or_restore(fleet: Fleet, role: Role) -> None:
    if role is Role.PROVIDER:
        someone = fleet.provider_id  # even the node's own Provider
    else:
        someone, _ = await new_account(fleet.sessions, role, "someone")
    async with fleet.sessions.begin() as session:
        with pytest.raises(RoleNotAllowed):
            await suspend_node(session, fleet.node_id, by=someone, reason="mine")
        with pytest.raises(RoleNotAllowed):
            await restore_node(session, fleet.node_id, by=someone)
        with pytest.raises(AccountNotFound):
            await suspend_node(session, fleet.node_id, by="acc_nobody", reason="x")
    async with fleet.sessions.begin() as session:
        assert await suspended_nodes(session) == []


async def test_an_unknown_node_cannot_be_suspended(fleet: Fleet) -> None:
    async with fleet.sessions.begin() as session:
        with pytest.raises(NodeNotFound):
            await suspend_node(session, "nd_nobody", by=OPERATOR, reason="x")
        with pytest.raises(NodeNotFound):
            await restore_node(session, "nd_nobody", by=OPERATOR)


@pytest.mark.parametrize(
    "reason", ["", "   \n\t", "x" * (MAX_SUSPENSION_REASON_CHARS + 1), "bell\x07"]
)
async def test_a_suspension_needs_a_one_line_reason(fleet: Fleet, reason: str) -> None:
    async with fleet.sessions.begin() as session:
        with pytest.raises(InvalidAccountInput):
            await suspend_node(session, fleet.node_id, by=OPERATOR, reason=reason)


async def test_suspended_nodes_can_be_asked_about_a_few_nodes(fleet: Fleet) -> None:
    other = await enrolled_node(fleet.sessions, fleet.provider_id, b"m")
    async with fleet.sessions.begin() as session:
        await suspend_node(session, other, by=OPERATOR, reason="x", now_ms=NOW_MS)
        await suspend_node(session, fleet.node_id, by=OPERATOR, reason="y", now_ms=NOW_MS + 5)
        assert [n.node_id for n in await suspended_nodes(session)] == [fleet.node_id, other]
        assert [n.node_id for n in await suspended_nodes(session, [other])] == [other]
        assert await suspended_nodes(session, []) == []


async def test_admission_reads_the_suspension_so_it_survives_reconnects(fleet: Fleet) -> None:
    accounts = DatabaseAccounts(fleet.sessions, COORDINATOR.public_key)
    node_key = Identity.from_seed(b"n" * 32).public_key
    assert (await accounts.admission(node_key)).suspended is False
    async with fleet.sessions.begin() as session:
        await suspend_node(session, fleet.node_id, by=OPERATOR, reason="x")
    admitted = await accounts.admission(node_key)
    assert admitted.provider_account_id == fleet.provider_id  # admitted: it stays connected
    assert admitted.refusal is None
    assert admitted.suspended is True
    assert await accounts.suspended_among([fleet.node_id, "nd_other"]) == {fleet.node_id}
    async with fleet.sessions.begin() as session:
        await restore_node(session, fleet.node_id, by=OPERATOR)
    assert (await accounts.admission(node_key)).suspended is False
    assert await accounts.suspended_among([fleet.node_id]) == set()
    async with fleet.sessions.begin() as session:
        await suspend_node(session, fleet.node_id, by=OPERATOR, reason="x")
        await revoke_node(session, fleet.node_id, by=OPERATOR)
    assert (await accounts.admission(node_key)).refusal == "revoked"  # revocation still wins


# --- the operator's JSON API ---------------------------------------------------------------------


@dataclass
class Api:
    client: httpx.AsyncClient
    sessions: Sessions
    registry: NodeRegistry
    node_id: str
    operator: dict[str, str]
    provider: dict[str, str]
    customer_id: str
    customer: dict[str, str]


def _bearer(raw_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw_key}"}


def _live(node_id: str, provider_id: str) -> LiveNode:
    return LiveNode(
        node_id=node_id,
        provider_account_id=provider_id,
        session_id="ses",
        agent_version="test",
        hardware=sample_hardware(),
        offers={sample_offer().model: sample_offer()},
        link=cast(NodeLink, object()),
    )


@pytest_asyncio.fixture
async def api(sessions: Sessions) -> AsyncIterator[Api]:
    provider_id, provider_key = await new_account(sessions, Role.PROVIDER)
    _, operator_key = await new_account(sessions, Role.OPERATOR, "ops")
    customer_id, customer_key = await new_account(sessions, Role.CUSTOMER, "Ada")
    node_id = await enrolled_node(sessions, provider_id)
    identity = Identity.generate()
    accounts = DatabaseAccounts(sessions, identity.public_key)
    registry = NodeRegistry()
    registry.add(_live(node_id, provider_id))
    services = Services(
        accounts=accounts,
        hub=NodeHub(identity, registry, accounts.admission),
        registry=registry,
        dispatcher=Dispatcher(registry),
        sessions=sessions,
    )
    transport = httpx.ASGITransport(app=cast(Any, create_app(services)))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield Api(
            client,
            sessions,
            registry,
            node_id,
            _bearer(operator_key),
            _bearer(provider_key),
            customer_id,
            _bearer(customer_key),
        )


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    return error


def _live_suspended(api: Api) -> bool:
    live = api.registry.get(api.node_id)
    assert live is not None
    return live.suspended


async def test_the_operator_api_suspends_the_live_node_at_once_and_restores_it(api: Api) -> None:
    path = f"/v1/admin/nodes/{api.node_id}"
    response = await api.client.post(
        path + "/suspend", json={"reason": "abuse report"}, headers=api.operator
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "node.suspension"
    assert (body["node"], body["suspended"], body["reason"], body["live"]) == (
        api.node_id,
        True,
        "abuse report",
        True,
    )
    assert _live_suspended(api)  # this process's live node, without waiting for a sweep
    report = (await api.client.get(path, headers=api.operator)).json()
    assert report["suspended"] is True

    restored = await api.client.post(path + "/restore", headers=api.operator)
    assert restored.status_code == 200
    assert restored.json()["suspended"] is False
    assert not _live_suspended(api)
    async with api.sessions.begin() as session:
        assert await suspended_nodes(session) == []


async def test_the_operator_api_refuses_other_keys_unknown_nodes_and_no_reason(api: Api) -> None:
    path = f"/v1/admin/nodes/{api.node_id}"
    for headers in (api.provider, api.customer):
        refused = await api.client.post(path + "/suspend", json={"reason": "x"}, headers=headers)
        assert refused.status_code == 403
        assert _error(refused)["code"] == "wrong_role"
        refused = await api.client.post(path + "/restore", headers=headers)
        assert refused.status_code == 403
    assert (await api.client.post(path + "/suspend", json={"reason": "x"})).status_code == 401
    unknown = await api.client.post(
        "/v1/admin/nodes/nd_nobody/suspend", json={"reason": "x"}, headers=api.operator
    )
    assert unknown.status_code == 404
    assert _error(unknown)["code"] == "not_found"
    for body in ({}, {"reason": ""}, {"reason": 5}):
        bad = await api.client.post(path + "/suspend", json=body, headers=api.operator)
        assert bad.status_code == 400, body
        assert _error(bad)["code"] == "invalid_value"
    extra = await api.client.post(
        path + "/suspend", json={"reason": "x", "until": 5}, headers=api.operator
    )
    assert _error(extra)["code"] == "unsupported_parameter"
    assert not _live_suspended(api)


async def _available(api: Api) -> int:
    async with api.sessions() as session:
        return (await account_balances(session, api.customer_id)).available_micro_usd


async def test_a_top_up_with_a_transfer_id_happens_once(api: Api) -> None:
    path = f"/v1/admin/accounts/{api.customer_id}/credits"
    before = await _available(api)
    body = {"amount_usd": "2.50", "transfer_id": "topup_op_test_once_1"}
    first = await api.client.post(path, json=body, headers=api.operator)
    assert first.status_code == 200, first.text
    assert first.json()["applied"] is True
    assert first.json()["amount_micro_usd"] == 2_500_000
    again = await api.client.post(path, json=body, headers=api.operator)
    assert again.status_code == 200
    assert again.json()["applied"] is False
    assert await _available(api) == before + 2_500_000
    other_amount = await api.client.post(
        path, json=body | {"amount_usd": "3"}, headers=api.operator
    )
    assert other_amount.status_code == 409
    assert _error(other_amount)["code"] == "transfer_id_conflict"
    fresh = await api.client.post(path, json={"amount_micro_usd": 7}, headers=api.operator)
    assert fresh.json()["transfer_id"].startswith("topup_op_")
    assert await _available(api) == before + 2_500_007


async def test_a_top_up_is_refused_for_bad_input_other_keys_and_unknown_accounts(api: Api) -> None:
    path = f"/v1/admin/accounts/{api.customer_id}/credits"
    before = await _available(api)
    refused = await api.client.post(path, json={"amount_usd": "1"}, headers=api.customer)
    assert refused.status_code == 403
    for body, code in (
        ({}, "missing_required_parameter"),
        ({"amount_usd": "1", "amount_micro_usd": 1}, "missing_required_parameter"),
        ({"amount_usd": "-1"}, "invalid_value"),
        ({"amount_usd": 1}, "invalid_value"),
        ({"amount_usd": "0"}, "invalid_value"),
        ({"amount_micro_usd": True}, "invalid_value"),
        ({"amount_usd": "1", "transfer_id": "hold_123456789"}, "invalid_value"),
    ):
        bad = await api.client.post(path, json=body, headers=api.operator)
        assert bad.status_code == 400, body
        assert _error(bad)["code"] == code, body
    unknown = await api.client.post(
        "/v1/admin/accounts/acc_nobody/credits", json={"amount_usd": "1"}, headers=api.operator
    )
    assert unknown.status_code == 404
    assert await _available(api) == before


# --- shareai admin -------------------------------------------------------------------------------


async def test_the_admin_commands_suspend_and_restore_a_node(tmp_path: Path) -> None:
    provider = admin_json(tmp_path, "create-account", "--role", "provider", "--name", "p")
    assert isinstance(provider, dict)
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'coordinator.db'}")
    try:
        node_id = await enrolled_node(create_session_factory(engine), str(provider["account_id"]))
    finally:
        await engine.dispose()
    suspended = admin_json(tmp_path, "suspend-node", "--node-id", node_id, "--reason", "probe")
    assert isinstance(suspended, dict)
    assert suspended["suspended"] is True
    assert suspended["suspended_by"] == "operator"
    assert suspended["reason"] == "probe"
    table = admin(tmp_path, "suspend-node", "--node-id", node_id, "--reason", "again")
    assert table.returncode == 0
    assert "probe" in table.stdout  # the first suspension stays
    restored = admin_json(tmp_path, "restore-node", "--node-id", node_id)
    assert isinstance(restored, dict)
    assert (restored["suspended"], restored["reason"]) == (False, None)
    missing = admin(tmp_path, "suspend-node", "--node-id", "nd_nobody", "--reason", "x")
    assert "nd_nobody" in one_line_error(missing, 1)
    empty = admin(tmp_path, "suspend-node", "--node-id", node_id, "--reason", " ")
    assert "reason" in one_line_error(empty, 1)
