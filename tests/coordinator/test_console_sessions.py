"""Console sessions on SQLite and PostgreSQL: a key logs a browser in; revoking it logs out."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import func, select

from coordinator.accounts import Role, create_account, revoke_key
from coordinator.apps import authorize_app, register_app
from coordinator.db.models import ConsoleSession
from coordinator.web.sessions import (
    SESSION_LIFETIME_MS,
    LoginRefused,
    end_session,
    open_session,
    viewer_of_token,
)
from tests.coordinator.conftest import Sessions

pytestmark = pytest.mark.asyncio

T0 = 1_767_225_600_000


async def test_a_session_opens_with_a_key_and_stores_only_the_token_hash(
    sessions: Sessions,
) -> None:
    async with sessions.begin() as session:
        account, raw_key = await create_account(session, Role.PROVIDER, "Grace", now_ms=T0)
        token, viewer = await open_session(session, raw_key, now_ms=T0)
    assert (viewer.account_id, viewer.role, viewer.name) == (account.id, Role.PROVIDER, "Grace")
    assert raw_key not in token
    async with sessions() as session:
        row = (await session.scalars(select(ConsoleSession))).one()
        assert row.token_hash == hashlib.sha256(token.encode()).digest()
        assert row.expires_at_ms == T0 + SESSION_LIFETIME_MS
        again = await viewer_of_token(session, token, now_ms=T0 + 1000)
    assert again == viewer


async def test_unknown_revoked_and_app_scoped_keys_cannot_log_in(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        customer, customer_key = await create_account(session, Role.CUSTOMER, "Ada", now_ms=T0)
        builder, _ = await create_account(session, Role.BUILDER, "Bob", now_ms=T0)
        app = await register_app(
            session, builder.id, "Bob's app", 500, max_surcharge_bps=2000, now_ms=T0
        )
        _, app_key = await authorize_app(session, customer.id, app.app.id, now_ms=T0)
    async with sessions.begin() as session:
        with pytest.raises(LoginRefused, match="not valid"):
            await open_session(session, "sk-sai-" + "a" * 52, now_ms=T0)
        with pytest.raises(LoginRefused, match="app-scoped"):
            await open_session(session, app_key, now_ms=T0)
        await revoke_key(session, customer_key, now_ms=T0)
        with pytest.raises(LoginRefused, match="not valid"):
            await open_session(session, customer_key, now_ms=T0)


async def test_a_session_ends_at_expiry_at_logout_and_when_its_key_is_revoked(
    sessions: Sessions,
) -> None:
    async with sessions.begin() as session:
        _, raw_key = await create_account(session, Role.CUSTOMER, "Ada", now_ms=T0)
        expiring, _ = await open_session(session, raw_key, now_ms=T0)
        logging_out, _ = await open_session(session, raw_key, now_ms=T0)
        revoked_with_key, _ = await open_session(session, raw_key, now_ms=T0)
    async with sessions.begin() as session:
        assert await viewer_of_token(session, expiring, now_ms=T0 + SESSION_LIFETIME_MS) is None
        await end_session(session, logging_out)
        assert await viewer_of_token(session, logging_out, now_ms=T0) is None
        assert await viewer_of_token(session, revoked_with_key, now_ms=T0) is not None
        await revoke_key(session, raw_key, now_ms=T0 + 1)
        assert await viewer_of_token(session, revoked_with_key, now_ms=T0 + 2) is None
        assert await viewer_of_token(session, "", now_ms=T0) is None
        assert await viewer_of_token(session, "x" * 500, now_ms=T0) is None


async def test_expired_sessions_are_swept_when_new_ones_open(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        _, raw_key = await create_account(session, Role.CUSTOMER, "Ada", now_ms=T0)
        for _ in range(3):
            await open_session(session, raw_key, now_ms=T0)
        await open_session(session, raw_key, now_ms=T0 + SESSION_LIFETIME_MS + 1)
        count = await session.scalar(select(func.count()).select_from(ConsoleSession))
    assert count == 1
