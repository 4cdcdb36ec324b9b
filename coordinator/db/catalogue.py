"""The ``catalogue_versions`` and ``task_route_versions`` tables: versioned documents.

Both are append-only: a change is a new version row holding the whole new document (JSON
text), so every earlier state stays readable and a request can record the version it used.

- ``catalogue_versions``: the operator's model catalogue (:mod:`coordinator.catalogue`); the
  highest version is the catalogue in force.
- ``task_route_versions``: a customer's or a Builder app's named task routes
  (:mod:`coordinator.task_routes`); the highest version of a name is in force unless it is a
  deletion (``document`` null).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from coordinator.db.models import Base

__all__ = ["CatalogueVersion", "TaskRouteVersion"]


class CatalogueVersion(Base):
    __tablename__ = "catalogue_versions"
    __table_args__ = (CheckConstraint("version >= 1", name="version_positive"),)

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    document: Mapped[str] = mapped_column(Text)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    author: Mapped[str] = mapped_column(String(200))
    note: Mapped[str] = mapped_column(String(500))


class TaskRouteVersion(Base):
    __tablename__ = "task_route_versions"
    __table_args__ = (
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint("owner_kind IN ('account', 'app')", name="owner_kind_known"),
    )

    owner_kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    document: Mapped[str | None] = mapped_column(Text)
    """The route as JSON; null records a deletion."""
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    author_account_id: Mapped[str] = mapped_column(String(40))
