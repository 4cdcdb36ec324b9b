"""The async engine and session factory for the two supported databases.

- SQLite (``sqlite+aiosqlite:///path``), the embedded default: every connection is put in WAL
  mode with foreign keys on and a busy timeout, and every transaction starts with
  ``BEGIN IMMEDIATE``, so a transaction that reads and then writes never fails half-way with
  "database is locked": transactions queue (up to the busy timeout) instead. The price: a
  read-only transaction queues behind a writer too, so keep transactions short and never hold
  one open across network I/O.
- PostgreSQL (``postgresql+asyncpg://user@host/db``), for production and several replicas.

Plain ``sqlite:///`` and ``postgresql://`` (or ``postgres://``) URLs are accepted and mapped to the
async drivers; anything else is refused with :class:`InvalidDatabaseUrl`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine

__all__ = [
    "SQLITE_BUSY_TIMEOUT_MS",
    "InvalidDatabaseUrl",
    "create_engine",
    "create_session_factory",
    "normalize_database_url",
]

SQLITE_BUSY_TIMEOUT_MS = 10_000

_SQLITE_DRIVERS = frozenset({"sqlite", "sqlite+aiosqlite", "sqlite+pysqlite"})
_POSTGRES_DRIVERS = frozenset({"postgres", "postgresql", "postgresql+asyncpg"})


class InvalidDatabaseUrl(ValueError):
    """A database URL that is malformed or names a database this coordinator cannot use."""


def _parse(database_url: str) -> URL:
    try:
        url = make_url(database_url)
    except ArgumentError:
        raise InvalidDatabaseUrl(
            f"invalid database URL {database_url!r}: expected e.g."
            " sqlite+aiosqlite:///path/to/coordinator.db or postgresql+asyncpg://user@host/db"
        ) from None
    if url.drivername in _SQLITE_DRIVERS:
        if url.database in (None, "", ":memory:") or "mode=memory" in str(url.query):
            raise InvalidDatabaseUrl(
                "an in-memory SQLite database is not supported (each connection would see its"
                " own empty database): give a file path, e.g. sqlite+aiosqlite:///coordinator.db"
            )
        return url.set(drivername="sqlite+aiosqlite")
    if url.drivername in _POSTGRES_DRIVERS:
        return url.set(drivername="postgresql+asyncpg")
    raise InvalidDatabaseUrl(
        f"unsupported database {url.drivername!r} in {url.render_as_string()!r}:"
        " use sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB"
    )


def normalize_database_url(database_url: str) -> str:
    """The URL with its async driver named (``postgresql://`` -> ``postgresql+asyncpg://``).

    Raises :class:`InvalidDatabaseUrl`. The password, if any, is kept.
    """
    return _parse(database_url).render_as_string(hide_password=False)


def create_engine(database_url: str, **engine_options: Any) -> AsyncEngine:
    """An :class:`AsyncEngine` for ``database_url``, configured as the module docstring says.

    For a SQLite file, its parent directory is created. ``engine_options`` go to SQLAlchemy's
    ``create_async_engine`` (e.g. ``pool_size``). The caller owns the engine: ``await
    engine.dispose()`` when done. Raises :class:`InvalidDatabaseUrl`; connection errors surface
    on first use, not here.
    """
    url = _parse(database_url)
    if url.drivername == "sqlite+aiosqlite":
        assert url.database is not None  # _parse refused the in-memory forms
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = _create_async_engine(url, **engine_options)
        _configure_sqlite(engine)
        return engine
    return _create_async_engine(url, **engine_options)


def _configure_sqlite(engine: AsyncEngine) -> None:
    # The recipe from SQLAlchemy's SQLite dialect documentation ("Enabling Non-Legacy SQLite
    # Transactional Modes"): the driver's own implicit BEGIN is switched off, and SQLAlchemy
    # emits BEGIN IMMEDIATE itself, so transactional DDL and SAVEPOINTs work as expected.
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            # In WAL mode NORMAL is durable against application crashes and keeps commits fast;
            # only a power cut can lose the last transactions, never corrupt the file.
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions whose objects stay readable after commit (``expire_on_commit=False``).

    Use one transaction per unit of work: ``async with sessions.begin() as session: ...``
    commits at the end of the block and rolls back on an exception.
    """
    return async_sessionmaker(engine, expire_on_commit=False)
