"""The web layer's view of accounts, over the database (maps account errors to HTTP)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.accounts import (
    EnrollmentMismatch,
    InvalidEnrollmentProof,
    NodeEnrolledElsewhere,
    NodeRevoked,
    RoleNotAllowed,
    authenticate,
    enroll_node,
    find_enrollment,
    get_account,
)
from coordinator.api.context import Caller
from coordinator.api.errors import ApiError
from coordinator.db.models import NodeEnrollment
from coordinator.hub.hub import Admission
from coordinator.providers import (
    EnrollmentTokenRefused,
    check_enrollment_token,
    enroll_with_token,
)
from protocol import EnrollmentStatement, PublicKey

__all__ = ["DatabaseAccounts"]


_ENROLLMENT_REFUSALS = (
    RoleNotAllowed,
    InvalidEnrollmentProof,
    EnrollmentMismatch,
    NodeEnrolledElsewhere,
    NodeRevoked,
)


def _enrollment_refused(error: Exception) -> ApiError:
    """The API error of an enrollment refused by :mod:`coordinator.accounts` (with a key or a
    token alike)."""
    if isinstance(error, RoleNotAllowed):
        return ApiError(403, str(error), code="wrong_role")
    if isinstance(error, NodeEnrolledElsewhere):
        return ApiError(409, str(error), code="node_enrolled_elsewhere")
    if isinstance(error, NodeRevoked):
        return ApiError(403, str(error), code="node_revoked")
    return ApiError(400, str(error), code="invalid_proof")  # a bad or mismatched proof


class DatabaseAccounts:
    """Implements :class:`coordinator.app.AccountsGateway` and the hub's admission check."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], coordinator_key: PublicKey):
        self._sessions = sessions
        self._coordinator_key = coordinator_key

    async def authenticate(self, raw_key: str) -> Caller | None:
        """The caller behind ``raw_key``, or None (a 401): malformed, unknown or revoked, or
        app-scoped with its app disabled or its authorization revoked."""
        async with self._sessions.begin() as session:
            principal = await authenticate(session, raw_key)
            if principal is None:
                return None
            account = await get_account(session, principal.account_id)
            return Caller(
                account_id=account.id,
                role=principal.role.value,
                name=account.name,
                api_key_id=principal.key_id,
                app_id=principal.app_id,
            )

    async def enroll_node(
        self, caller: Caller, statement: EnrollmentStatement, proof: bytes, now_ms: int
    ) -> str:
        try:
            async with self._sessions.begin() as session:
                enrollment = await enroll_node(
                    session,
                    caller.account_id,
                    statement,
                    proof,
                    now_ms,
                    coordinator_key=self._coordinator_key,
                )
                return enrollment.node_id
        except _ENROLLMENT_REFUSALS as error:
            raise _enrollment_refused(error) from None

    async def enrollment_token_account(self, raw_token: str, now_ms: int) -> tuple[str, int]:
        try:
            async with self._sessions.begin() as session:
                token = await check_enrollment_token(session, raw_token, now_ms=now_ms)
                return token.account_id, token.expires_at_ms
        except EnrollmentTokenRefused as error:
            raise ApiError(401, str(error), code=error.code) from None

    async def enroll_node_with_token(
        self, raw_token: str, statement: EnrollmentStatement, proof: bytes, now_ms: int
    ) -> tuple[str, str]:
        try:
            async with self._sessions.begin() as session:
                enrollment = await enroll_with_token(
                    session,
                    raw_token,
                    statement,
                    proof,
                    now_ms,
                    coordinator_key=self._coordinator_key,
                )
                return enrollment.node_id, enrollment.account_id
        except EnrollmentTokenRefused as error:
            raise ApiError(401, str(error), code=error.code) from None
        except _ENROLLMENT_REFUSALS as error:
            raise _enrollment_refused(error) from None

    async def admission(self, node_key: PublicKey) -> Admission:
        async with self._sessions.begin() as session:
            enrollment = await find_enrollment(session, node_key, include_revoked=True)
        if enrollment is None:
            return Admission(None, "unknown_node", "enroll this key with `shareai node init` first")
        if enrollment.revoked_at_ms is not None:
            return Admission(None, "revoked", "this node key was revoked")
        return Admission(enrollment.account_id, suspended=enrollment.suspended_at_ms is not None)

    async def revoked_among(self, node_ids: list[str]) -> list[str]:
        """Which of ``node_ids`` are revoked now (for closing live sessions)."""
        if not node_ids:
            return []
        async with self._sessions.begin() as session:
            rows = await session.execute(
                select(NodeEnrollment.node_id).where(
                    NodeEnrollment.node_id.in_(node_ids),
                    NodeEnrollment.revoked_at_ms.is_not(None),
                )
            )
            return [row[0] for row in rows]

    async def suspended_among(self, node_ids: list[str]) -> set[str]:
        """Which of ``node_ids`` the operator has suspended now (to mark live nodes)."""
        if not node_ids:
            return set()
        async with self._sessions.begin() as session:
            rows = await session.execute(
                select(NodeEnrollment.node_id).where(
                    NodeEnrollment.node_id.in_(node_ids),
                    NodeEnrollment.suspended_at_ms.is_not(None),
                )
            )
            return {row[0] for row in rows}
