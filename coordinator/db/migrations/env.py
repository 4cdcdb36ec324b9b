"""Alembic environment: runs only through :func:`coordinator.db.migrate`, which hands it a live
connection in ``config.attributes["connection"]`` (there is no ``alembic.ini``).

To write a new revision, copy the newest file in ``versions/`` and chain ``down_revision`` to it.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from coordinator.db.catalogue import CatalogueVersion, TaskRouteVersion  # noqa: F401 - tables
from coordinator.db.generations import Generation  # noqa: F401 - registers its table
from coordinator.db.models import Base

_connection = context.config.attributes.get("connection")
if not isinstance(_connection, Connection):  # e.g. the alembic command line, with no connection
    raise RuntimeError("run migrations with coordinator.db.migrate(database_url)")  # noqa: TRY004

context.configure(
    connection=_connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things in place; batch mode rebuilds the table instead.
    render_as_batch=_connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
