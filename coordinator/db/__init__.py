"""Storage of the coordinator: engine and sessions, ORM tables and Alembic migrations.

SQLite (WAL, a local file) is the embedded default; PostgreSQL via asyncpg is the production
database; one URL picks between them. Typical start-up::

    await migrate(settings.database_url)
    engine = create_engine(settings.database_url)
    sessions = create_session_factory(engine)
    async with sessions.begin() as session:
        ...
    await engine.dispose()
"""

from coordinator.db.engine import (
    InvalidDatabaseUrl,
    create_engine,
    create_session_factory,
    normalize_database_url,
)
from coordinator.db.generations import Generation
from coordinator.db.migrate import MIGRATIONS_DIR, current_revision, head_revision, migrate
from coordinator.db.models import Account, ApiKey, Base, NodeEnrollment, Role

__all__ = [
    "MIGRATIONS_DIR",
    "Account",
    "ApiKey",
    "Base",
    "Generation",
    "InvalidDatabaseUrl",
    "NodeEnrollment",
    "Role",
    "create_engine",
    "create_session_factory",
    "current_revision",
    "head_revision",
    "migrate",
    "normalize_database_url",
]
