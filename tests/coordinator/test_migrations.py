"""Alembic migrations: applied from code on a fresh database, re-runnable, matching the ORM."""

from __future__ import annotations

from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from coordinator.accounts import authenticate, hash_api_key
from coordinator.accounts.keys import generate_api_key
from coordinator.apps import authorize_app, register_app
from coordinator.db import (
    MIGRATIONS_DIR,
    Base,
    create_engine,
    create_session_factory,
    current_revision,
    head_revision,
    migrate,
)
from coordinator.ledger import WORLD, account_balances, audit, balance, list_transfers


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
            assert {
                "accounts",
                "api_keys",
                "node_enrollments",
                "ledger_accounts",
                "ledger_holds",
                "ledger_transfers",
                "generations",
                "apps",
                "app_surcharges",
                "app_authorizations",
                "alembic_version",
            } <= tables
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
    refused = [
        "INSERT INTO api_keys (id, account_id, prefix, key_hash, created_at_ms)"
        " VALUES ('key_x', 'acc_missing', 'sk-sai-x', :hash, 0)",
        "INSERT INTO accounts (id, role, name, created_at_ms)"
        " VALUES ('acc_x', 'superuser', 'x', 0)",
        # Only the world account may go below zero; a wallet, holds or earnings never.
        "INSERT INTO ledger_accounts (id, kind, owner_id, balance_micro_usd, created_at_ms)"
        " VALUES ('wallet:acc_ok', 'customer_wallet', 'acc_ok', -1, 0)",
        "INSERT INTO ledger_accounts (id, kind, owner_id, balance_micro_usd, created_at_ms)"
        " VALUES ('platform', 'platform_revenue', NULL, -1, 0)",
        "UPDATE ledger_accounts SET balance_micro_usd = -1 WHERE id = 'wallet:acc_ok'",
        "INSERT INTO ledger_accounts (id, kind, owner_id, balance_micro_usd, created_at_ms)"
        " VALUES ('x', 'piggy_bank', NULL, 0, 0)",
        # Transfers move a positive amount between two existing, different accounts.
        "INSERT INTO ledger_transfers (id, kind, debit_account_id, credit_account_id,"
        " amount_micro_usd, created_at_ms) VALUES ('t0', 'adjustment', 'world', 'wallet:acc_ok',"
        " 0, 0)",
        "INSERT INTO ledger_transfers (id, kind, debit_account_id, credit_account_id,"
        " amount_micro_usd, created_at_ms) VALUES ('t1', 'adjustment', 'world', 'world', 1, 0)",
        "INSERT INTO ledger_transfers (id, kind, debit_account_id, credit_account_id,"
        " amount_micro_usd, created_at_ms) VALUES ('t2', 'adjustment', 'world', 'nowhere', 1, 0)",
        # A hold never posts more than it holds, and is resolved exactly when it is not open.
        "INSERT INTO ledger_holds (id, account_id, amount_micro_usd, posted_micro_usd, state,"
        " created_at_ms, expires_at_ms, resolved_at_ms)"
        " VALUES ('h1', 'acc_ok', 5, 6, 'posted', 0, 1, 1)",
        "INSERT INTO ledger_holds (id, account_id, amount_micro_usd, posted_micro_usd, state,"
        " created_at_ms, expires_at_ms, resolved_at_ms)"
        " VALUES ('h2', 'acc_ok', 5, 0, 'released', 0, 1, NULL)",
        "INSERT INTO ledger_holds (id, account_id, amount_micro_usd, posted_micro_usd, state,"
        " created_at_ms, expires_at_ms, resolved_at_ms)"
        " VALUES ('h3', 'acc_ok', 5, 1, 'open', 0, 1, NULL)",
        # Apps belong to an account; keys name an existing app; surcharge versions are unique
        # per app, start at 1 and stay within 0..100 %; one active authorization per customer.
        "INSERT INTO apps (id, builder_account_id, name, created_at_ms)"
        " VALUES ('app_x', 'acc_missing', 'x', 0)",
        "INSERT INTO api_keys (id, account_id, prefix, key_hash, created_at_ms, app_id)"
        " VALUES ('key_x', 'acc_ok', 'sk-sai-x', :hash, 0, 'app_missing')",
        "INSERT INTO app_surcharges (app_id, version, surcharge_bps, created_at_ms)"
        " VALUES ('app_ok', 1, 100, 0)",
        "INSERT INTO app_surcharges (app_id, version, surcharge_bps, created_at_ms)"
        " VALUES ('app_ok', 0, 100, 0)",
        "INSERT INTO app_surcharges (app_id, version, surcharge_bps, created_at_ms)"
        " VALUES ('app_ok', 2, -1, 0)",
        "INSERT INTO app_surcharges (app_id, version, surcharge_bps, created_at_ms)"
        " VALUES ('app_ok', 2, 10001, 0)",
        "INSERT INTO app_surcharges (app_id, version, surcharge_bps, created_at_ms)"
        " VALUES ('app_missing', 1, 0, 0)",
        "INSERT INTO app_authorizations (id, app_id, customer_account_id, created_at_ms)"
        " VALUES ('auth_2', 'app_ok', 'acc_ok', 0)",
        "INSERT INTO app_authorizations (id, app_id, customer_account_id, created_at_ms)"
        " VALUES ('auth_3', 'app_missing', 'acc_ok', 0)",
    ]
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO accounts (id, role, name, created_at_ms)"
                    " VALUES ('acc_ok', 'customer', 'ok', 0)"
                )
            )
            await connection.execute(
                text(
                    "INSERT INTO ledger_accounts (id, kind, owner_id, balance_micro_usd,"
                    " created_at_ms) VALUES ('wallet:acc_ok', 'customer_wallet', 'acc_ok', 0, 0),"
                    " ('world', 'world', NULL, -1, 0)"
                )
            )
            await connection.execute(
                text(
                    "INSERT INTO apps (id, builder_account_id, name, created_at_ms)"
                    " VALUES ('app_ok', 'acc_ok', 'ok', 0)"
                )
            )
            await connection.execute(
                text(
                    "INSERT INTO app_surcharges (app_id, version, surcharge_bps, created_at_ms)"
                    " VALUES ('app_ok', 1, 10000, 0)"
                )
            )
            # Revoked authorizations are history: any number of them beside the active one.
            await connection.execute(
                text(
                    "INSERT INTO app_authorizations"
                    " (id, app_id, customer_account_id, created_at_ms, revoked_at_ms)"
                    " VALUES ('auth_0', 'app_ok', 'acc_ok', 0, 1),"
                    " ('auth_00', 'app_ok', 'acc_ok', 1, 2),"
                    " ('auth_1', 'app_ok', 'acc_ok', 2, NULL)"
                )
            )
        for statement in refused:
            with pytest.raises(IntegrityError):
                async with engine.begin() as connection:
                    await connection.execute(text(statement), {"hash": b"\x00" * 32})
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


def _schema_drift_of_session(sync_session: Any) -> list[Any]:
    return _schema_drift(sync_session.connection())


def _move_to(connection: Connection, revision: str, *, down: bool = False) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    (command.downgrade if down else command.upgrade)(config, revision)


@pytest.mark.asyncio
async def test_balances_carry_over_into_the_ledger_and_back(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_move_to, "0001")
            await connection.execute(
                text(
                    "INSERT INTO accounts (id, role, name, balance_micro_usd, created_at_ms)"
                    " VALUES ('acc_rich', 'customer', 'Rich', 25000000, 0),"
                    " ('acc_poor', 'builder', 'Poor', 0, 0),"
                    " ('acc_some', 'provider', 'Some', 7, 0)"
                )
            )
        await migrate(database_url)
        async with create_session_factory(engine).begin() as session:
            assert await audit(session) == []
            assert (await account_balances(session, "acc_rich")).available_micro_usd == 25_000_000
            assert (await account_balances(session, "acc_poor")).available_micro_usd == 0
            assert (await account_balances(session, "acc_some")).available_micro_usd == 7
            assert await balance(session, WORLD) == -25_000_007
            carried = await list_transfers(session)
            assert sorted((t.id, t.kind.value, t.amount_micro_usd) for t in carried) == [
                ("r0002#carry#acc_rich", "top_up", 25_000_000),
                ("r0002#carry#acc_some", "top_up", 7),
            ]
            columns = await session.run_sync(
                lambda sync: {c["name"] for c in inspect(sync.connection()).get_columns("accounts")}
            )
            assert "balance_micro_usd" not in columns
            assert await session.run_sync(_schema_drift_of_session) == []
            if database_url.startswith("sqlite"):
                violations = await session.execute(text("PRAGMA foreign_key_check"))
                assert violations.all() == []
        async with engine.begin() as connection:
            await connection.run_sync(_move_to, "0001", down=True)
        async with engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT id, balance_micro_usd FROM accounts ORDER BY id")
            )
            assert rows.all() == [("acc_poor", 0), ("acc_rich", 25_000_000), ("acc_some", 7)]
            assert "ledger_transfers" not in await connection.run_sync(_table_names)
    finally:
        await engine.dispose()


@pytest.mark.asyncio
async def test_keys_stay_account_keys_across_0004_and_app_keys_die_on_the_way_back(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    plain_key = generate_api_key()
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_move_to, "0003")
            await connection.execute(
                text(
                    "INSERT INTO accounts (id, role, name, created_at_ms)"
                    " VALUES ('acc_ada', 'customer', 'Ada', 0), ('acc_lin', 'builder', 'Lin', 0)"
                )
            )
            await connection.execute(
                text(
                    "INSERT INTO api_keys (id, account_id, prefix, key_hash, created_at_ms)"
                    " VALUES ('key_ada', 'acc_ada', 'sk-sai-x', :hash, 0)"
                ),
                {"hash": hash_api_key(plain_key)},
            )
        sessions = create_session_factory(engine)
        await migrate(database_url)
        async with sessions.begin() as session:
            assert await session.run_sync(_schema_drift_of_session) == []
            principal = await authenticate(session, plain_key)
            assert principal is not None
            assert principal.app_id is None
            details = await register_app(session, "acc_lin", "Pal", 100, max_surcharge_bps=2000)
            _, app_key = await authorize_app(session, "acc_ada", details.app.id)
        async with sessions.begin() as session:
            assert await authenticate(session, app_key) is not None
        async with engine.begin() as connection:
            await connection.run_sync(_move_to, "0003", down=True)
        async with engine.connect() as connection:
            assert not {"apps", "app_surcharges", "app_authorizations"} & await connection.run_sync(
                _table_names
            )
        async with sessions.begin() as session:
            # Without its app the key would be an unrestricted key of Ada's account: revoked.
            rows = await session.execute(text("SELECT key_hash, revoked_at_ms FROM api_keys"))
            revoked = {bytes(key_hash): at_ms is not None for key_hash, at_ms in rows}
            assert revoked == {hash_api_key(plain_key): False, hash_api_key(app_key): True}
        await migrate(database_url)
        async with sessions.begin() as session:
            assert await authenticate(session, plain_key) is not None
            assert await authenticate(session, app_key) is None
    finally:
        await engine.dispose()
