"""Console sessions: a browser logs in with an API key and then carries a cookie.

The cookie holds a random token; the database keeps only its SHA-256 (:class:`ConsoleSession`),
with the account and key it logged in with and the session's CSRF token. A session is valid
while it has not expired and its key is not revoked, so revoking a key logs out every browser
that used it. Functions take an ``AsyncSession`` and flush, never commit (like
:mod:`coordinator.accounts`).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.accounts import authenticate
from coordinator.db.models import Account, ApiKey, ConsoleSession, Role

__all__ = [
    "SESSION_LIFETIME_MS",
    "LoginRefused",
    "Viewer",
    "end_session",
    "open_session",
    "viewer_of_token",
]

SESSION_LIFETIME_MS = 12 * 3600 * 1000
"""A console login lasts 12 hours, then the browser logs in again."""

_TOKEN_BYTES = 32


class LoginRefused(Exception):
    """The key cannot open a console session (the message says why, without secrets)."""


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking at a console page: the account behind a live session."""

    account_id: str
    role: Role
    name: str
    api_key_id: str
    csrf_token: str


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def open_session(
    session: AsyncSession, raw_key: str, *, now_ms: int | None = None
) -> tuple[str, Viewer]:
    """Log in with ``raw_key``: returns the cookie token (shown to the browser only) and the
    viewer. Raises :class:`LoginRefused` for an unknown, revoked or app-scoped key."""
    principal = await authenticate(session, raw_key.strip())
    if principal is None:
        raise LoginRefused("that API key is not valid (unknown or revoked)")
    if principal.app_id is not None:
        raise LoginRefused(
            "an app-scoped key only makes requests for its app; log in with your own account key"
        )
    at_ms = now_ms if now_ms is not None else _now_ms()
    # Old sessions of everyone are swept as new ones open: the table stays small without a job.
    await session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at_ms <= at_ms))
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    csrf = secrets.token_urlsafe(_TOKEN_BYTES)
    session.add(
        ConsoleSession(
            token_hash=_digest(token),
            account_id=principal.account_id,
            api_key_id=principal.key_id,
            csrf_token=csrf,
            created_at_ms=at_ms,
            expires_at_ms=at_ms + SESSION_LIFETIME_MS,
        )
    )
    await session.flush()
    account = await session.get(Account, principal.account_id)
    assert account is not None  # authenticate joined it
    return token, Viewer(principal.account_id, principal.role, account.name, principal.key_id, csrf)


async def viewer_of_token(
    session: AsyncSession, token: str, *, now_ms: int | None = None
) -> Viewer | None:
    """The viewer of a cookie token, or None when unknown, expired or its key was revoked."""
    if not token or len(token) > 128:
        return None
    at_ms = now_ms if now_ms is not None else _now_ms()
    row = (
        await session.execute(
            select(
                ConsoleSession.account_id,
                Account.role,
                Account.name,
                ConsoleSession.api_key_id,
                ConsoleSession.csrf_token,
            )
            .join(Account, Account.id == ConsoleSession.account_id)
            .join(ApiKey, ApiKey.id == ConsoleSession.api_key_id)
            .where(
                ConsoleSession.token_hash == _digest(token),
                ConsoleSession.expires_at_ms > at_ms,
                ApiKey.revoked_at_ms.is_(None),
            )
        )
    ).one_or_none()
    if row is None:
        return None
    account_id, role, name, key_id, csrf = row
    return Viewer(account_id, Role(role), name, key_id, csrf)


async def end_session(session: AsyncSession, token: str) -> None:
    """Log out: the token no longer opens anything (unknown tokens are fine)."""
    await session.execute(delete(ConsoleSession).where(ConsoleSession.token_hash == _digest(token)))
