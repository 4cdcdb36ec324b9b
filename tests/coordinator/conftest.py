"""Database fixtures: every storage test runs on SQLite (a temporary file) and on PostgreSQL.

Each PostgreSQL test gets a database of its own, created on the server named by
``SHAREAI_TEST_POSTGRES_URL`` (default: the local server's ``postgres`` maintenance database)
and dropped afterwards, so test runs are isolated and may run at the same time. PostgreSQL is the
production database: when it cannot be reached the tests fail, they are never skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from coordinator.db import create_engine, create_session_factory, migrate

POSTGRES_ADMIN_URL = os.environ.get(
    "SHAREAI_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)

Sessions = async_sessionmaker[AsyncSession]


def _admin_engine() -> AsyncEngine:
    # CREATE/DROP DATABASE cannot run inside a transaction.
    return create_async_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)


async def create_postgres_database() -> str:
    """Create an empty database with a unique name; return its URL."""
    name = f"shareai_test_{uuid.uuid4().hex[:16]}"
    admin = _admin_engine()
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
    except (OSError, SQLAlchemyError) as error:
        pytest.fail(
            f"PostgreSQL at {make_url(POSTGRES_ADMIN_URL).render_as_string()} is unreachable"
            f" ({error}); the storage tests need it: start it, or point"
            " SHAREAI_TEST_POSTGRES_URL at a server where this user may CREATE DATABASE",
            pytrace=False,
        )
    finally:
        await admin.dispose()
    return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


async def drop_postgres_database(url: str) -> None:
    name = make_url(url).database
    admin = _admin_engine()
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


@pytest_asyncio.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of an empty, never migrated database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'coordinator.db'}"
        return
    url = await create_postgres_database()
    try:
        yield url
    finally:
        await drop_postgres_database(url)


@pytest_asyncio.fixture
async def sessions(database_url: str) -> AsyncIterator[Sessions]:
    """A session factory on a freshly migrated database."""
    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        yield create_session_factory(engine)
    finally:
        await engine.dispose()
