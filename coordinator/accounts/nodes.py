"""Node enrollments: binding a node's Ed25519 key to the Provider account that runs it.

The node proves it holds the key by signing a :class:`protocol.EnrollmentStatement` naming this
coordinator, the Provider's account and the time (``shareai node init`` makes it); the Provider's
API key authenticates the request. An enrolled key belongs to one Provider for good: another
Provider cannot take it over, and a revoked key cannot be enrolled again (make a new key).

Like :mod:`coordinator.accounts.service`, every function works inside the caller's transaction.
Revoking here only marks the row; closing the node's live sessions is the node hub's job.

The operator may also *suspend* a node (:func:`suspend_node`): unlike revocation it is undone by
:func:`restore_node`, and the node stays enrolled and connected but gets no new jobs. Marking the
live node is the caller's job (the node registry); the hub reads the mark at admission, so a
suspension survives reconnects and restarts.
"""

from __future__ import annotations

import time
from enum import Enum
from typing import Final, Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.accounts.errors import (
    AccountNotFound,
    EnrollmentMismatch,
    InvalidAccountInput,
    InvalidEnrollmentProof,
    NodeEnrolledElsewhere,
    NodeNotFound,
    NodeRevoked,
    NotPermitted,
    RoleNotAllowed,
)
from coordinator.db.models import Account, NodeEnrollment, Role
from protocol import BadSignature, EnrollmentStatement, PublicKey

__all__ = [
    "MAX_SUSPENSION_REASON_CHARS",
    "OPERATOR",
    "Revoker",
    "enroll_node",
    "find_enrollment",
    "list_nodes",
    "restore_node",
    "revoke_node",
    "suspend_node",
    "suspended_nodes",
]

MAX_SUSPENSION_REASON_CHARS = 500
"""The longest reason a suspension keeps (the column's size)."""


class _Operator(Enum):
    OPERATOR = "operator"


OPERATOR: Final = _Operator.OPERATOR
"""Acting as the operator (the ``shareai admin`` tools), who may revoke any node."""

Revoker = str | Literal[_Operator.OPERATOR]
"""Who revokes a node: an account id, or :data:`OPERATOR`."""


async def enroll_node(
    session: AsyncSession,
    provider_account_id: str,
    statement: EnrollmentStatement,
    proof: bytes,
    now_ms: int,
    *,
    coordinator_key: PublicKey,
) -> NodeEnrollment:
    """Enroll ``statement.node_key`` under the Provider ``provider_account_id``.

    ``proof`` is the node's signature over ``statement``; ``coordinator_key`` is this
    coordinator's public key; ``now_ms`` is the current unix time in milliseconds, against which
    the proof's age is checked. Enrolling a key already enrolled to the same Provider returns the
    existing enrollment unchanged.

    Raises :class:`AccountNotFound`; :class:`RoleNotAllowed` unless the account is a Provider;
    :class:`EnrollmentMismatch` if the statement names another account or coordinator;
    :class:`InvalidEnrollmentProof` for a bad signature or a proof more than 5 minutes old or
    ahead; :class:`NodeEnrolledElsewhere` or :class:`NodeRevoked` for a key that is taken.
    """
    account = await session.get(Account, provider_account_id)
    if account is None:
        raise AccountNotFound(f"no account {provider_account_id!r}")
    if account.role is not Role.PROVIDER:
        raise RoleNotAllowed(f"only provider accounts enroll nodes; this is a {account.role}")
    if statement.account_id != provider_account_id:
        raise EnrollmentMismatch("the enrollment proof was made for another account")
    if statement.coordinator_key != coordinator_key:
        raise EnrollmentMismatch("the enrollment proof was made for another coordinator")
    try:
        statement.verify(proof, now_ms=now_ms)
    except BadSignature:
        raise InvalidEnrollmentProof(
            "the enrollment proof is not a signature by the node key"
        ) from None
    except ValueError as error:
        raise InvalidEnrollmentProof(str(error)) from None

    node_key = statement.node_key
    existing = await find_enrollment(session, node_key, include_revoked=True)
    if existing is not None:
        return _existing_or_refuse(existing, provider_account_id)
    enrollment = NodeEnrollment(
        node_id=node_key.node_id,
        public_key=node_key.raw,
        account_id=provider_account_id,
        enrolled_at_ms=now_ms,
    )
    try:
        # A savepoint: losing a race with a concurrent enrollment of the same key must not
        # abort the caller's transaction.
        async with session.begin_nested():
            session.add(enrollment)
    except IntegrityError:
        existing = await find_enrollment(session, node_key, include_revoked=True)
        if existing is None:
            raise
        return _existing_or_refuse(existing, provider_account_id)
    return enrollment


def _existing_or_refuse(existing: NodeEnrollment, provider_account_id: str) -> NodeEnrollment:
    if existing.account_id != provider_account_id:
        raise NodeEnrolledElsewhere(
            f"node {existing.node_id} is enrolled under another provider account"
        )
    if existing.revoked_at_ms is not None:
        raise NodeRevoked(f"node {existing.node_id} was revoked; generate a new node key")
    return existing


async def find_enrollment(
    session: AsyncSession, node_key: bytes | PublicKey, *, include_revoked: bool = False
) -> NodeEnrollment | None:
    """The enrollment of a node key (raw 32 bytes or a PublicKey), or None.

    A revoked enrollment counts as none unless ``include_revoked``: the node hub can admit a
    node exactly when this returns an enrollment.
    """
    raw = node_key.raw if isinstance(node_key, PublicKey) else bytes(node_key)
    query = select(NodeEnrollment).where(NodeEnrollment.public_key == raw)
    if not include_revoked:
        query = query.where(NodeEnrollment.revoked_at_ms.is_(None))
    return (await session.scalars(query)).one_or_none()


async def revoke_node(
    session: AsyncSession, node_id: str, *, by: Revoker, now_ms: int | None = None
) -> NodeEnrollment:
    """Revoke the node ``node_id``; return its enrollment. Revoking twice changes nothing.

    ``by`` is :data:`OPERATOR`, or the id of the account asking: its Provider or an operator
    account. Raises :class:`NodeNotFound`, :class:`AccountNotFound` for an unknown ``by``, and
    :class:`NotPermitted` when ``by`` is another account.
    """
    enrollment = await session.get(NodeEnrollment, node_id)
    if enrollment is None:
        raise NodeNotFound(f"no enrolled node {node_id!r}")
    if by is OPERATOR:
        revoked_by = OPERATOR.value
    else:
        account = await session.get(Account, by)
        if account is None:
            raise AccountNotFound(f"no account {by!r}")
        if account.role is not Role.OPERATOR and account.id != enrollment.account_id:
            raise NotPermitted(f"node {node_id} belongs to another provider account")
        revoked_by = account.id
    if enrollment.revoked_at_ms is None:
        enrollment.revoked_at_ms = now_ms if now_ms is not None else time.time_ns() // 1_000_000
        enrollment.revoked_by = revoked_by
        await session.flush()
    return enrollment


async def list_nodes(session: AsyncSession, provider_account_id: str) -> list[NodeEnrollment]:
    """The Provider's nodes, revoked ones included, oldest enrollment first."""
    query = (
        select(NodeEnrollment)
        .where(NodeEnrollment.account_id == provider_account_id)
        .order_by(NodeEnrollment.enrolled_at_ms, NodeEnrollment.node_id)
    )
    return list((await session.scalars(query)).all())


async def _operator_id(session: AsyncSession, by: Revoker, doing: str) -> str:
    """What ``*_by`` columns record for ``by``: ``"operator"``, or an operator account's id."""
    if by is OPERATOR:
        return OPERATOR.value
    account = await session.get(Account, by)
    if account is None:
        raise AccountNotFound(f"no account {by!r}")
    if account.role is not Role.OPERATOR:
        raise RoleNotAllowed(f"only the operator may {doing}; this is a {account.role.value}")
    return account.id


def _checked_reason(reason: str) -> str:
    text = " ".join(reason.split())  # one line: newlines and tabs become spaces
    if not text:
        raise InvalidAccountInput(
            "say why the node is suspended (the reason is shown to operators)"
        )
    if len(text) > MAX_SUSPENSION_REASON_CHARS:
        raise InvalidAccountInput(
            f"a suspension reason is at most {MAX_SUSPENSION_REASON_CHARS} characters"
        )
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        raise InvalidAccountInput("a suspension reason cannot contain control characters")
    return text


async def suspend_node(
    session: AsyncSession,
    node_id: str,
    *,
    by: Revoker,
    reason: str,
    now_ms: int | None = None,
) -> NodeEnrollment:
    """Suspend the node ``node_id`` (no new jobs until :func:`restore_node`); return its
    enrollment. Suspending a suspended node changes nothing (its time, author and reason stay).

    ``by`` is :data:`OPERATOR` or an operator account's id; ``reason`` is a one-line text for
    operators (whitespace runs become one space). Raises :class:`NodeNotFound`,
    :class:`AccountNotFound` for an unknown ``by``, :class:`RoleNotAllowed` when ``by`` is not an
    operator, and :class:`InvalidAccountInput` for an empty or too long reason.
    """
    text = _checked_reason(reason)
    suspended_by = await _operator_id(session, by, "suspend nodes")
    enrollment = await session.get(NodeEnrollment, node_id)
    if enrollment is None:
        raise NodeNotFound(f"no enrolled node {node_id!r}")
    if enrollment.suspended_at_ms is None:
        enrollment.suspended_at_ms = now_ms if now_ms is not None else time.time_ns() // 1_000_000
        enrollment.suspended_by = suspended_by
        enrollment.suspended_reason = text
        await session.flush()
    return enrollment


async def restore_node(session: AsyncSession, node_id: str, *, by: Revoker) -> NodeEnrollment:
    """Lift the node's suspension; return its enrollment. Restoring a node that is not
    suspended changes nothing. Raises like :func:`suspend_node`."""
    await _operator_id(session, by, "restore nodes")
    enrollment = await session.get(NodeEnrollment, node_id)
    if enrollment is None:
        raise NodeNotFound(f"no enrolled node {node_id!r}")
    if enrollment.suspended_at_ms is not None:
        enrollment.suspended_at_ms = None
        enrollment.suspended_by = None
        enrollment.suspended_reason = None
        await session.flush()
    return enrollment


async def suspended_nodes(
    session: AsyncSession, node_ids: list[str] | None = None
) -> list[NodeEnrollment]:
    """The suspended nodes (only among ``node_ids`` when given), most recently suspended first."""
    query = select(NodeEnrollment).where(NodeEnrollment.suspended_at_ms.is_not(None))
    if node_ids is not None:
        if not node_ids:
            return []
        query = query.where(NodeEnrollment.node_id.in_(node_ids))
    query = query.order_by(NodeEnrollment.suspended_at_ms.desc(), NodeEnrollment.node_id)
    return list((await session.scalars(query)).all())
