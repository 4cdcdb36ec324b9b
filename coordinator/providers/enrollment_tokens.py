"""One-time enrollment tokens: enroll a node without putting the Provider's API key on it.

The Provider makes a token in the console and runs ``shareai node init --enroll-token TOKEN``
on the node. The token stands in for the Provider's key in ``POST /v1/nodes/enroll``, once:

- it is ``sai-enroll-`` and 52 base32 characters (256 random bits); only its SHA-256 is stored,
  with a display prefix (``sai-enroll-XXXXXXXX``), so a stolen database enrolls nothing;
- it is bound to the Provider's account: the node it enrolls belongs to that account;
- it works once, within :data:`ENROLLMENT_TOKEN_LIFETIME_MS` of its creation, unless revoked.
  A used, expired, revoked or unknown token is refused with its own error
  (:class:`~coordinator.providers.errors.EnrollmentTokenRefused` subclasses).

Using a token and enrolling the node happen in one transaction: a refused enrollment (a bad
proof, a key enrolled elsewhere) leaves the token unused, and of two nodes racing with one token
exactly one wins. Functions work inside the caller's transaction (they flush, never commit).
"""

from __future__ import annotations

import hashlib
import time

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.accounts import enroll_node
from coordinator.accounts.keys import DISPLAY_PREFIX_CHARS, random_id
from coordinator.db.models import Account, EnrollmentToken, NodeEnrollment, Role
from coordinator.providers.errors import (
    EnrollmentTokenExpired,
    EnrollmentTokenNotFound,
    EnrollmentTokenRevoked,
    EnrollmentTokenUsed,
    NotAProvider,
    TooManyTokens,
    UnknownEnrollmentToken,
)
from protocol import EnrollmentStatement, PublicKey

__all__ = [
    "ENROLLMENT_TOKEN_LIFETIME_MS",
    "ENROLLMENT_TOKEN_PREFIX",
    "MAX_PENDING_TOKENS",
    "check_enrollment_token",
    "create_enrollment_token",
    "enroll_with_token",
    "is_enrollment_token",
    "pending_enrollment_tokens",
    "revoke_enrollment_token",
]

ENROLLMENT_TOKEN_PREFIX = "sai-enroll-"  # noqa: S105 - a prefix, not a secret
ENROLLMENT_TOKEN_LIFETIME_MS = 3600 * 1000
"""A token works for one hour after it is made."""
MAX_PENDING_TOKENS = 20
_KEEP_SPENT_MS = 30 * 24 * 3600 * 1000
"""Tokens expired this long ago are deleted as new ones are made (used ones stay as history
until then)."""


def _now_ms(now_ms: int | None) -> int:
    return now_ms if now_ms is not None else time.time_ns() // 1_000_000


def _digest(raw_token: str) -> bytes:
    return hashlib.sha256(raw_token.encode("utf-8")).digest()


def is_enrollment_token(text: str) -> bool:
    """Whether ``text`` looks like an enrollment token (rather than an API key)."""
    return text.startswith(ENROLLMENT_TOKEN_PREFIX)


async def create_enrollment_token(
    session: AsyncSession, account_id: str, *, now_ms: int | None = None
) -> tuple[str, EnrollmentToken]:
    """A new token for the Provider ``account_id``: the raw token (show it once) and its row.

    Raises :class:`NotAProvider` and :class:`TooManyTokens` (past :data:`MAX_PENDING_TOKENS`
    pending at once).
    """
    account = await session.get(Account, account_id)
    if account is None or account.role is not Role.PROVIDER:
        raise NotAProvider("only a Provider account makes enrollment tokens")
    at_ms = _now_ms(now_ms)
    await session.execute(
        delete(EnrollmentToken).where(
            EnrollmentToken.account_id == account_id,
            EnrollmentToken.expires_at_ms <= at_ms - _KEEP_SPENT_MS,
        )
    )
    pending = await session.scalar(
        select(func.count()).where(*_pending(account_id, at_ms)).select_from(EnrollmentToken)
    )
    if (pending or 0) >= MAX_PENDING_TOKENS:
        raise TooManyTokens(
            f"you have {MAX_PENDING_TOKENS} unused enrollment tokens; revoke some first"
        )
    raw = random_id(ENROLLMENT_TOKEN_PREFIX) + random_id("")  # 2 x 128 random bits
    token = EnrollmentToken(
        id=random_id("et_"),
        token_hash=_digest(raw),
        prefix=raw[: len(ENROLLMENT_TOKEN_PREFIX) + DISPLAY_PREFIX_CHARS],
        account_id=account_id,
        created_at_ms=at_ms,
        expires_at_ms=at_ms + ENROLLMENT_TOKEN_LIFETIME_MS,
    )
    session.add(token)
    await session.flush()
    return raw, token


def _pending(account_id: str, at_ms: int) -> tuple[ColumnElement[bool], ...]:
    return (
        EnrollmentToken.account_id == account_id,
        EnrollmentToken.used_at_ms.is_(None),
        EnrollmentToken.revoked_at_ms.is_(None),
        EnrollmentToken.expires_at_ms > at_ms,
    )


async def pending_enrollment_tokens(
    session: AsyncSession, account_id: str, *, now_ms: int | None = None
) -> list[EnrollmentToken]:
    """The Provider's tokens that can still enroll a node, newest first."""
    rows = await session.scalars(
        select(EnrollmentToken)
        .where(*_pending(account_id, _now_ms(now_ms)))
        .order_by(EnrollmentToken.created_at_ms.desc(), EnrollmentToken.id)
    )
    return list(rows)


async def revoke_enrollment_token(
    session: AsyncSession, account_id: str, token_id: str, *, now_ms: int | None = None
) -> EnrollmentToken:
    """Revoke the pending token ``token_id`` of the Provider ``account_id``.

    Raises :class:`EnrollmentTokenNotFound` for a token of another account, unknown, or no
    longer pending (the same error for each: token ids of others are not confirmed).
    """
    at_ms = _now_ms(now_ms)
    token = await session.get(EnrollmentToken, token_id)
    if (
        token is None
        or token.account_id != account_id
        or token.used_at_ms is not None
        or token.revoked_at_ms is not None
        or token.expires_at_ms <= at_ms
    ):
        raise EnrollmentTokenNotFound(f"no pending enrollment token {token_id!r} of yours")
    token.revoked_at_ms = at_ms
    await session.flush()
    return token


async def check_enrollment_token(
    session: AsyncSession, raw_token: str, *, now_ms: int | None = None
) -> EnrollmentToken:
    """The token ``raw_token`` names, if it can still enroll a node. Raises
    :class:`UnknownEnrollmentToken`, :class:`EnrollmentTokenUsed`,
    :class:`EnrollmentTokenExpired` or :class:`EnrollmentTokenRevoked`."""
    token = None
    if is_enrollment_token(raw_token) and len(raw_token) <= 128:
        token = (
            await session.scalars(
                select(EnrollmentToken).where(EnrollmentToken.token_hash == _digest(raw_token))
            )
        ).one_or_none()
    if token is None:
        raise UnknownEnrollmentToken(
            "unknown enrollment token: check that it was copied whole, or create a new one in"
            " the Provider console"
        )
    if token.used_at_ms is not None:
        raise EnrollmentTokenUsed(
            f"this enrollment token ({token.prefix}...) was already used, by node"
            f" {token.node_id}; each token enrolls one node: create a new one"
        )
    if token.revoked_at_ms is not None:
        raise EnrollmentTokenRevoked(
            f"this enrollment token ({token.prefix}...) was revoked; create a new one"
        )
    if token.expires_at_ms <= _now_ms(now_ms):
        raise EnrollmentTokenExpired(
            f"this enrollment token ({token.prefix}...) expired (tokens work for"
            f" {ENROLLMENT_TOKEN_LIFETIME_MS // 60_000} minutes); create a new one"
        )
    return token


async def enroll_with_token(
    session: AsyncSession,
    raw_token: str,
    statement: EnrollmentStatement,
    proof: bytes,
    now_ms: int,
    *,
    coordinator_key: PublicKey,
) -> NodeEnrollment:
    """Use the token to enroll ``statement.node_key`` under the token's Provider.

    Raises what :func:`check_enrollment_token` raises, and what
    :func:`coordinator.accounts.enroll_node` raises (the token stays unused then, once the
    caller's transaction rolls back).
    """
    token = await check_enrollment_token(session, raw_token, now_ms=now_ms)
    # Conditional: of concurrent uses of one token, exactly one changes the row (on PostgreSQL
    # the others wait for its transaction and then find the token used).
    used = await session.execute(
        update(EnrollmentToken)
        .where(
            EnrollmentToken.id == token.id,
            EnrollmentToken.used_at_ms.is_(None),
            EnrollmentToken.revoked_at_ms.is_(None),
        )
        .values(used_at_ms=now_ms, node_id=statement.node_key.node_id)
        .execution_options(synchronize_session=False)
    )
    if getattr(used, "rowcount", 0) != 1:
        raise EnrollmentTokenUsed(
            f"this enrollment token ({token.prefix}...) was just used by another node; create"
            " a new one"
        )
    return await enroll_node(
        session, token.account_id, statement, proof, now_ms, coordinator_key=coordinator_key
    )
