"""Schema migrations, applied from code: ``await migrate(database_url)`` upgrades to the newest
revision. Alembic is configured here, programmatically; no ``alembic.ini`` is read or shipped.

Running it again is a no-op. Coordinators sharing one PostgreSQL database may run it at the same
time: a transaction-scoped advisory lock lets one migrate while the others wait. On SQLite the
upgrade runs inside one ``BEGIN IMMEDIATE`` transaction, which serializes the same way.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

from coordinator.db.engine import create_engine

__all__ = ["MIGRATIONS_DIR", "current_revision", "head_revision", "migrate"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any constant shared by every coordinator: "shareai" in ASCII, as a signed 64-bit key.
_POSTGRES_MIGRATION_LOCK = 0x7368617265616900


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision shipped with this version of the coordinator."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships a revision
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def _upgrade_to_head(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": _POSTGRES_MIGRATION_LOCK}
        )
    command.upgrade(_alembic_config(connection), "head")


async def migrate(database_url: str) -> str:
    """Upgrade the database at ``database_url`` to :func:`head_revision`; return that revision.

    Creates the SQLite file (and its directory) if missing; a PostgreSQL database must exist.
    Raises :class:`~coordinator.db.InvalidDatabaseUrl` for a bad URL and SQLAlchemy's
    ``OperationalError`` (or the driver's ``OSError``) when the database cannot be reached.
    """
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade_to_head)
    finally:
        await engine.dispose()
    return head_revision()


def _read_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(database_url: str) -> str | None:
    """The revision the database is at, or None for a database never migrated."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_read_revision)
    finally:
        await engine.dispose()
