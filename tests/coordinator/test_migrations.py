"""Alembic migrations: applied from code on a fresh database, re-runnable, matching the ORM."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from coordinator.db import (
    MIGRATIONS_DIR,
    Base,
    create_engine,
    current_revision,
    head_revision,
    migrate,
)


def _table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def _schema_drift(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


@pytest.mark.asyncio
async def test_migrations_apply_on_a_fresh_database_and_are_rerunnable(database_url: str) -> None:
    assert await current_revision(database_url) is None
    assert await migrate(database_url) == head_revision()
    assert await migrate(database_url) == head_revision()
    assert await current_revision(database_url) == head_revision()
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(_table_names)
            assert {"accounts", "api_keys", "node_enrollments", "alembic_version"} <= tables
            versions = await connection.execute(text("SELECT version_num FROM alembic_version"))
            assert versions.scalars().all() == [head_revision()]
    finally:
        await engine.dispose()


@pytest.mark.asyncio
async def test_the_migrated_schema_matches_the_orm_tables(database_url: str) -> None:
    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(_schema_drift) == []
    finally:
        await engine.dispose()


@pytest.mark.asyncio
async def test_the_database_enforces_foreign_keys_and_the_balance_floor(database_url: str) -> None:
    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        with pytest.raises(IntegrityError):
            async with engine.begin() as connection:
                await connection.execute(
                    text(
                        "INSERT INTO api_keys (id, account_id, prefix, key_hash, created_at_ms)"
                        " VALUES ('key_x', 'acc_missing', 'sk-sai-x', :hash, 0)"
                    ),
                    {"hash": b"\x00" * 32},
                )
        with pytest.raises(IntegrityError):
            async with engine.begin() as connection:
                await connection.execute(
                    text(
                        "INSERT INTO accounts (id, role, name, balance_micro_usd, created_at_ms)"
                        " VALUES ('acc_x', 'customer', 'x', -1, 0)"
                    )
                )
        with pytest.raises(IntegrityError):
            async with engine.begin() as connection:
                await connection.execute(
                    text(
                        "INSERT INTO accounts (id, role, name, balance_micro_usd, created_at_ms)"
                        " VALUES ('acc_x', 'superuser', 'x', 0, 0)"
                    )
                )
    finally:
        await engine.dispose()


@pytest.mark.asyncio
async def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(tmp_path: Any) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'nested' / 'coordinator.db'}")
    try:
        async with engine.connect() as connection:
            pragmas = {
                name: (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar_one()
                for name in ("journal_mode", "foreign_keys", "busy_timeout")
            }
    finally:
        await engine.dispose()
    assert pragmas == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 10_000}


def test_migrations_ship_inside_the_package_without_an_alembic_ini() -> None:
    package_root = MIGRATIONS_DIR.parents[2]
    assert (package_root / "coordinator" / "__init__.py").is_file()
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert list((MIGRATIONS_DIR / "versions").glob("r*.py"))
    assert not list(package_root.glob("alembic.ini"))
    assert not list(MIGRATIONS_DIR.parent.rglob("alembic.ini"))
