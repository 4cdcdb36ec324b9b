"""The catalogue in the database: append-only versions, seeded from the starter file.

Every change (operator API, ``shareai admin catalogue``) is a read-modify-write that inserts the
next version in one transaction; two writers racing for the same version collide on the primary
key and the loser retries on top of the winner, so no change is lost. A coordinator picks up a
new version within its refresh interval (:class:`~coordinator.catalogue.live.LiveCatalogue`).
"""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.catalogue.entries import Catalogue, CatalogueBusy, CatalogueError, CatalogueStale
from coordinator.db.catalogue import CatalogueVersion

__all__ = [
    "CatalogueChange",
    "CatalogueRevision",
    "catalogue_history",
    "change_catalogue",
    "ensure_catalogue",
    "latest_version_number",
    "load_catalogue_file",
    "load_latest_catalogue",
    "starter_catalogue",
]

_WRITE_ATTEMPTS = 20

CatalogueChange = Callable[[Catalogue], Catalogue]
"""Builds the new catalogue from the current one; may raise CatalogueError or KeyError."""


@dataclass(frozen=True, slots=True)
class CatalogueRevision:
    version: int
    created_at_ms: int
    author: str
    note: str
    models: int


def load_catalogue_file(path: Path) -> Catalogue:
    """A catalogue from a ``.toml`` (``[[models]]`` tables) or ``.json`` file.

    Raises CatalogueError with the file name and the first problem.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CatalogueError(f"{path}: cannot read ({error})") from None
    try:
        document: object = (
            json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
        )
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
        raise CatalogueError(f"{path}: not valid {kind} ({error})") from None
    try:
        return Catalogue.from_document(document)
    except CatalogueError as error:
        raise CatalogueError(f"{path}: {error}") from None


def starter_catalogue() -> Catalogue:
    """The starter set shipped with the coordinator (``coordinator/catalogue/starter.toml``)."""
    text = resources.files("coordinator.catalogue").joinpath("starter.toml").read_text("utf-8")
    return Catalogue.from_document(tomllib.loads(text))


async def latest_version_number(session: AsyncSession) -> int:
    """The version in force, 0 when the catalogue was never written."""
    latest = await session.scalar(select(func.max(CatalogueVersion.version)))
    return int(latest or 0)


async def load_latest_catalogue(session: AsyncSession) -> tuple[int, Catalogue]:
    """``(version, catalogue)`` in force; ``(0, empty)`` when never written."""
    row = await session.scalar(
        select(CatalogueVersion).order_by(CatalogueVersion.version.desc()).limit(1)
    )
    if row is None:
        return 0, Catalogue()
    return row.version, Catalogue.from_document(json.loads(row.document))


async def change_catalogue(
    sessions: async_sessionmaker[AsyncSession],
    change: CatalogueChange,
    *,
    author: str,
    note: str = "",
    expected_version: int | None = None,
) -> tuple[int, Catalogue]:
    """Apply ``change`` to the catalogue in force and store the result as the next version.

    Returns the new ``(version, catalogue)``; a change that alters nothing stores nothing and
    returns the current one. Raises what ``change`` raises. With ``expected_version`` (the
    version an editor showed to a person), raises CatalogueStale rather than apply the change
    on top of any other version, so an edit never silently overwrites one it did not see.
    """
    for _ in range(_WRITE_ATTEMPTS):
        try:
            async with sessions.begin() as session:
                version, current = await load_latest_catalogue(session)
                if expected_version is not None and version != expected_version:
                    raise CatalogueStale(expected_version, version)
                updated = change(current)
                if version > 0 and updated == current:
                    return version, current
                session.add(
                    CatalogueVersion(
                        version=version + 1,
                        document=json.dumps(updated.to_document(), separators=(",", ":")),
                        created_at_ms=int(time.time() * 1000),
                        author=author[:200],
                        note=note[:500],
                    )
                )
            return version + 1, updated
        except IntegrityError:
            continue  # another writer took this version: redo the change on top of theirs
    raise CatalogueBusy("the catalogue is being changed by others; try again")


async def ensure_catalogue(
    sessions: async_sessionmaker[AsyncSession], starter: Catalogue | None = None
) -> tuple[int, Catalogue]:
    """The catalogue in force, after storing the starter set as version 1 if there is none."""
    async with sessions() as session:
        version, catalogue = await load_latest_catalogue(session)
    if version > 0:
        return version, catalogue
    seed = starter_catalogue() if starter is None else starter
    return await change_catalogue(
        sessions,
        lambda current: current if len(current) else seed,
        author="starter",
        note="the starter set shipped with the coordinator",
    )


async def catalogue_history(session: AsyncSession, limit: int = 20) -> list[CatalogueRevision]:
    rows = await session.scalars(
        select(CatalogueVersion).order_by(CatalogueVersion.version.desc()).limit(limit)
    )
    return [
        CatalogueRevision(
            version=row.version,
            created_at_ms=row.created_at_ms,
            author=row.author,
            note=row.note,
            models=len(json.loads(row.document).get("models", [])),
        )
        for row in rows
    ]
