"""Node enrollment: proof of possession, bound to one Provider and one coordinator."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from coordinator.accounts import (
    OPERATOR,
    AccountNotFound,
    EnrollmentMismatch,
    InvalidEnrollmentProof,
    NodeEnrolledElsewhere,
    NodeEnrollment,
    NodeNotFound,
    NodeRevoked,
    NotPermitted,
    Role,
    RoleNotAllowed,
    create_account,
    enroll_node,
    find_enrollment,
    list_nodes,
    revoke_node,
)
from protocol import EnrollmentStatement, Identity, PublicKey
from tests.coordinator.conftest import Sessions

pytestmark = pytest.mark.asyncio

NOW_MS = 1_767_225_600_000
COORDINATOR = Identity.from_seed(b"c" * 32)
NODE = Identity.from_seed(b"n" * 32)


def statement_for(
    account_id: str,
    *,
    node: Identity = NODE,
    coordinator: PublicKey = COORDINATOR.public_key,
    issued_at_ms: int = NOW_MS,
) -> EnrollmentStatement:
    return EnrollmentStatement(
        coordinator_key=coordinator,
        node_key=node.public_key,
        account_id=account_id,
        issued_at_ms=issued_at_ms,
    )


async def new_account(sessions: Sessions, role: Role, name: str = "Grace") -> str:
    async with sessions.begin() as session:
        account, _ = await create_account(session, role, name)
    return account.id


async def enroll(
    sessions: Sessions,
    provider_id: str,
    statement: EnrollmentStatement,
    proof: bytes | None = None,
    now_ms: int = NOW_MS,
) -> NodeEnrollment:
    async with sessions.begin() as session:
        return await enroll_node(
            session,
            provider_id,
            statement,
            statement.sign(NODE) if proof is None else proof,
            now_ms,
            coordinator_key=COORDINATOR.public_key,
        )


async def stored_nodes(sessions: Sessions, provider_id: str) -> list[str]:
    async with sessions.begin() as session:
        return [node.node_id for node in await list_nodes(session, provider_id)]


async def test_a_provider_enrolls_a_node_key_and_re_enrolling_it_changes_nothing(
    sessions: Sessions,
) -> None:
    provider = await new_account(sessions, Role.PROVIDER)
    enrollment = await enroll(sessions, provider, statement_for(provider))
    assert enrollment.node_id == NODE.public_key.node_id
    assert enrollment.public_key == NODE.public_key.raw
    assert (enrollment.account_id, enrollment.enrolled_at_ms) == (provider, NOW_MS)
    assert enrollment.active

    later = statement_for(provider, issued_at_ms=NOW_MS + 60_000)
    again = await enroll(sessions, provider, later, now_ms=NOW_MS + 60_000)
    assert (again.node_id, again.enrolled_at_ms) == (enrollment.node_id, NOW_MS)
    assert await stored_nodes(sessions, provider) == [enrollment.node_id]
    async with sessions.begin() as session:
        found = await find_enrollment(session, NODE.public_key.raw)
        found_by_key = await find_enrollment(session, NODE.public_key)
        assert await find_enrollment(session, Identity.generate().public_key) is None
    assert found is not None
    assert found_by_key is not None
    assert found.node_id == found_by_key.node_id == enrollment.node_id


async def test_concurrent_enrollments_of_one_key_store_it_once(sessions: Sessions) -> None:
    provider = await new_account(sessions, Role.PROVIDER)
    results = await asyncio.gather(
        *(enroll(sessions, provider, statement_for(provider)) for _ in range(8))
    )
    assert {result.node_id for result in results} == {NODE.public_key.node_id}
    assert await stored_nodes(sessions, provider) == [NODE.public_key.node_id]


async def test_a_forged_proof_is_refused(sessions: Sessions) -> None:
    provider = await new_account(sessions, Role.PROVIDER)
    statement = statement_for(provider)
    impostor = Identity.generate().sign(statement.signing_bytes())
    genuine = statement.sign(NODE)
    flipped = bytes([genuine[0] ^ 1]) + genuine[1:]
    for proof in (impostor, flipped, b"", b"\x00" * 64):
        with pytest.raises(InvalidEnrollmentProof, match="not a signature by the node key"):
            await enroll(sessions, provider, statement, proof)
    # A proof for one statement does not carry over to another time.
    with pytest.raises(InvalidEnrollmentProof):
        await enroll(sessions, provider, replace(statement, issued_at_ms=NOW_MS + 1), genuine)
    assert await stored_nodes(sessions, provider) == []


@pytest.mark.parametrize("age_ms", [5 * 60 * 1000 + 1, -(5 * 60 * 1000 + 1)])
async def test_a_proof_too_old_or_from_the_future_is_refused(
    sessions: Sessions, age_ms: int
) -> None:
    provider = await new_account(sessions, Role.PROVIDER)
    statement = statement_for(provider, issued_at_ms=NOW_MS - age_ms)
    with pytest.raises(InvalidEnrollmentProof, match="older than 5 minutes or from the future"):
        await enroll(sessions, provider, statement)
    assert await stored_nodes(sessions, provider) == []


async def test_a_proof_made_for_another_account_is_refused(sessions: Sessions) -> None:
    provider = await new_account(sessions, Role.PROVIDER, "Grace")
    other = await new_account(sessions, Role.PROVIDER, "Mallory")
    with pytest.raises(EnrollmentMismatch, match="another account"):
        await enroll(sessions, other, statement_for(provider))
    assert await stored_nodes(sessions, other) == []
    assert await stored_nodes(sessions, provider) == []


async def test_a_proof_made_for_another_coordinator_is_refused(sessions: Sessions) -> None:
    provider = await new_account(sessions, Role.PROVIDER)
    elsewhere = statement_for(provider, coordinator=Identity.generate().public_key)
    with pytest.raises(EnrollmentMismatch, match="another coordinator"):
        await enroll(sessions, provider, elsewhere)
    assert await stored_nodes(sessions, provider) == []


@pytest.mark.parametrize("role", [Role.CUSTOMER, Role.BUILDER, Role.OPERATOR])
async def test_only_provider_accounts_enroll_nodes(sessions: Sessions, role: Role) -> None:
    account = await new_account(sessions, role)
    with pytest.raises(RoleNotAllowed, match="only provider accounts"):
        await enroll(sessions, account, statement_for(account))
    with pytest.raises(AccountNotFound):
        await enroll(sessions, "acc_missing", statement_for("acc_missing"))


async def test_a_key_enrolled_by_one_provider_is_refused_to_another(sessions: Sessions) -> None:
    provider = await new_account(sessions, Role.PROVIDER, "Grace")
    other = await new_account(sessions, Role.PROVIDER, "Mallory")
    await enroll(sessions, provider, statement_for(provider))
    with pytest.raises(NodeEnrolledElsewhere):
        await enroll(sessions, other, statement_for(other))
    assert await stored_nodes(sessions, other) == []
    assert await stored_nodes(sessions, provider) == [NODE.public_key.node_id]


async def test_a_revoked_node_stays_revoked(sessions: Sessions) -> None:
    provider = await new_account(sessions, Role.PROVIDER, "Grace")
    node_id = (await enroll(sessions, provider, statement_for(provider))).node_id
    async with sessions.begin() as session:
        revoked = await revoke_node(session, node_id, by=provider, now_ms=NOW_MS + 5)
    assert (revoked.revoked_at_ms, revoked.revoked_by, revoked.active) == (
        NOW_MS + 5,
        provider,
        False,
    )
    async with sessions.begin() as session:
        assert await find_enrollment(session, NODE.public_key) is None
        kept = await find_enrollment(session, NODE.public_key, include_revoked=True)
        assert kept is not None
        assert kept.revoked_at_ms == NOW_MS + 5
        again = await revoke_node(session, node_id, by=OPERATOR, now_ms=NOW_MS + 9)
        assert (again.revoked_at_ms, again.revoked_by) == (NOW_MS + 5, provider)
    with pytest.raises(NodeRevoked, match="generate a new node key"):
        await enroll(sessions, provider, statement_for(provider))
    assert await stored_nodes(sessions, provider) == [node_id]


async def test_only_the_nodes_provider_or_an_operator_may_revoke_it(sessions: Sessions) -> None:
    provider = await new_account(sessions, Role.PROVIDER, "Grace")
    other = await new_account(sessions, Role.PROVIDER, "Mallory")
    operator = await new_account(sessions, Role.OPERATOR, "Ops")
    node_id = (await enroll(sessions, provider, statement_for(provider))).node_id
    async with sessions.begin() as session:
        with pytest.raises(NotPermitted):
            await revoke_node(session, node_id, by=other)
        with pytest.raises(AccountNotFound):
            await revoke_node(session, node_id, by="acc_missing")
        with pytest.raises(NodeNotFound):
            await revoke_node(session, "nd_missing", by=OPERATOR)
        assert await find_enrollment(session, NODE.public_key) is not None
        revoked = await revoke_node(session, node_id, by=operator)
    assert revoked.revoked_by == operator

    second = Identity.generate()
    statement = statement_for(provider, node=second)
    async with sessions.begin() as session:
        enrolled = await enroll_node(
            session,
            provider,
            statement,
            statement.sign(second),
            NOW_MS,
            coordinator_key=COORDINATOR.public_key,
        )
        by_tools = await revoke_node(session, enrolled.node_id, by=OPERATOR)
    assert by_tools.revoked_by == "operator"
    assert await stored_nodes(sessions, provider) == sorted(
        [node_id, enrolled.node_id]
    )  # same enrolled_at_ms: ordered by node id
