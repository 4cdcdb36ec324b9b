"""Task routes in the database: named, versioned, owned by an account or a Builder app.

The rule language is :mod:`scheduler.task_routes` (pure); this module stores its documents in
``task_route_versions`` (append-only, :mod:`coordinator.db.catalogue`). Saving a changed route
appends the next version of its name (saving it unchanged appends nothing); deleting appends a
version with no document. The highest version
of a name is the one in force, so a change applies to requests that start after it, and a
request records the version it used. Two writers of one name race on the primary key; the loser
retries on top of the winner.

Owners: a customer's account (``owner_kind="account"``) routes that account's own traffic; a
Builder's app (``owner_kind="app"``) routes the traffic of the app's scoped keys, and the
customer's own routes serve an app key when the app has no route of that name.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.db.catalogue import TaskRouteVersion
from scheduler import TaskRoute, parse_task_route

__all__ = [
    "MAX_ROUTES_PER_OWNER",
    "OwnerKind",
    "RouteOwner",
    "StoredRoute",
    "TaskRouteConflict",
    "TaskRouteLimit",
    "current_route",
    "delete_route",
    "list_routes",
    "route_history",
    "route_version",
    "save_route",
]

OwnerKind = Literal["account", "app"]
MAX_ROUTES_PER_OWNER = 100
_WRITE_ATTEMPTS = 5


class TaskRouteConflict(Exception):
    """Others kept changing the route while this change was being saved."""


class TaskRouteLimit(Exception):
    """The owner already has :data:`MAX_ROUTES_PER_OWNER` routes."""


@dataclass(frozen=True, slots=True)
class RouteOwner:
    kind: OwnerKind
    id: str


@dataclass(frozen=True, slots=True)
class StoredRoute:
    """One version of a named route; ``route`` is None for a deletion."""

    owner: RouteOwner
    name: str
    version: int
    created_at_ms: int
    route: TaskRoute | None

    def to_json(self) -> dict[str, Any]:
        document = self.route.to_json() if self.route is not None else None
        return {
            "object": "route",
            "name": self.name,
            "owner": {"kind": self.owner.kind, "id": self.owner.id},
            "version": self.version,
            "created_at_ms": self.created_at_ms,
            "deleted": self.route is None,
            **(document or {}),
        }


def _stored(row: TaskRouteVersion) -> StoredRoute:
    kind: OwnerKind = "app" if row.owner_kind == "app" else "account"
    route = (
        parse_task_route(json.loads(row.document), name=row.name)
        if row.document is not None
        else None
    )
    return StoredRoute(
        RouteOwner(kind, row.owner_id), row.name, row.version, row.created_at_ms, route
    )


def _of(owner: RouteOwner) -> Any:
    return (TaskRouteVersion.owner_kind == owner.kind) & (TaskRouteVersion.owner_id == owner.id)


async def current_route(session: AsyncSession, owner: RouteOwner, name: str) -> StoredRoute | None:
    """The version in force of ``name``; None if there is none or it was deleted."""
    row = await session.scalar(
        select(TaskRouteVersion)
        .where(_of(owner), TaskRouteVersion.name == name)
        .order_by(TaskRouteVersion.version.desc())
        .limit(1)
    )
    if row is None or row.document is None:
        return None
    return _stored(row)


async def route_version(
    session: AsyncSession, owner: RouteOwner, name: str, version: int
) -> StoredRoute | None:
    row = await session.get(TaskRouteVersion, (owner.kind, owner.id, name, version))
    return _stored(row) if row is not None else None


async def route_history(session: AsyncSession, owner: RouteOwner, name: str) -> list[StoredRoute]:
    """Every version of ``name``, newest first (deletions included)."""
    rows = await session.scalars(
        select(TaskRouteVersion)
        .where(_of(owner), TaskRouteVersion.name == name)
        .order_by(TaskRouteVersion.version.desc())
    )
    return [_stored(row) for row in rows]


async def list_routes(session: AsyncSession, owner: RouteOwner) -> list[StoredRoute]:
    """The routes in force of ``owner`` (deleted ones left out), by name."""
    latest = (
        select(TaskRouteVersion.name, func.max(TaskRouteVersion.version).label("version"))
        .where(_of(owner))
        .group_by(TaskRouteVersion.name)
        .subquery()
    )
    rows = await session.scalars(
        select(TaskRouteVersion)
        .join(
            latest,
            (TaskRouteVersion.name == latest.c.name)
            & (TaskRouteVersion.version == latest.c.version),
        )
        .where(_of(owner), TaskRouteVersion.document.is_not(None))
    )
    # Sorted here, not in SQL: a database's collation may order '-', '.' and '_' otherwise.
    return sorted((_stored(row) for row in rows), key=lambda stored: stored.name)


async def _append(
    sessions: async_sessionmaker[AsyncSession],
    owner: RouteOwner,
    name: str,
    document: str | None,
    author_account_id: str,
) -> StoredRoute | None:
    """Append the next version of ``name``; None (nothing written) deleting a missing route."""
    for _ in range(_WRITE_ATTEMPTS):
        try:
            async with sessions.begin() as session:
                await _lock_owner(session, owner)
                latest = await session.scalar(
                    select(TaskRouteVersion)
                    .where(_of(owner), TaskRouteVersion.name == name)
                    .order_by(TaskRouteVersion.version.desc())
                    .limit(1)
                )
                live = latest is not None and latest.document is not None
                if document is None and not live:
                    return None
                if latest is not None and document is not None and latest.document == document:
                    return _stored(latest)  # unchanged: no new version
                if document is not None and not live:
                    await _check_room(session, owner)
                row = TaskRouteVersion(
                    owner_kind=owner.kind,
                    owner_id=owner.id,
                    name=name,
                    version=(latest.version if latest is not None else 0) + 1,
                    document=document,
                    created_at_ms=int(time.time() * 1000),
                    author_account_id=author_account_id,
                )
                session.add(row)
            return _stored(row)
        except IntegrityError:
            continue  # another writer took this version: append after theirs
    raise TaskRouteConflict(f"route {name!r} is being changed by others; try again")


async def _lock_owner(session: AsyncSession, owner: RouteOwner) -> None:
    """Serialise the writers of one owner's routes until the transaction ends.

    PostgreSQL: a transaction-scoped advisory lock on the owner, so the route count checked by
    :func:`_check_room` and the next version number cannot change before the commit. SQLite
    needs none: its writers already take turns (``BEGIN IMMEDIATE``).
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"task_routes:{owner.kind}:{owner.id}"},
        )


async def _check_room(session: AsyncSession, owner: RouteOwner) -> None:
    if len(await list_routes(session, owner)) >= MAX_ROUTES_PER_OWNER:
        raise TaskRouteLimit(f"at most {MAX_ROUTES_PER_OWNER} routes per owner; delete one first")


async def save_route(
    sessions: async_sessionmaker[AsyncSession],
    owner: RouteOwner,
    route: TaskRoute,
    author_account_id: str,
) -> StoredRoute:
    """Store ``route`` (already validated) as the next version of its name."""
    document = json.dumps(route.to_json(), separators=(",", ":"))
    stored = await _append(sessions, owner, route.name, document, author_account_id)
    assert stored is not None  # a document is always written
    return stored


async def delete_route(
    sessions: async_sessionmaker[AsyncSession],
    owner: RouteOwner,
    name: str,
    author_account_id: str,
) -> StoredRoute | None:
    """Record the deletion of ``name``; None when it does not exist (or is already deleted)."""
    return await _append(sessions, owner, name, None, author_account_id)
