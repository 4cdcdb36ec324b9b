"""Changes to the catalogue, shared by every editor: the operator API, the console page and
``shareai admin catalogue``.

Editors differ only in how they read their input (JSON, a form, arguments); what an entry may
be and how a change applies is decided here, once:

- :func:`checked_entry`: an entry validated field by field, and its tokenizer loaded on this
  machine (:class:`~coordinator.catalogue.entries.InvalidEntry` otherwise).
- :class:`PutEntry`, :func:`add_aliases`, :func:`remove_aliases`, :func:`remove_model`:
  :data:`~coordinator.catalogue.store.CatalogueChange` functions; they raise
  :class:`~coordinator.catalogue.entries.CatalogueError` subclasses when they cannot apply.
- :func:`store_change`: store a change as the next version and put it in force on this
  coordinator at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.catalogue.entries import (
    Catalogue,
    CatalogueEntry,
    CatalogueError,
    InvalidEntry,
    ModelNotInCatalogue,
    alias_key,
)
from coordinator.catalogue.live import LiveCatalogue
from coordinator.catalogue.store import CatalogueChange, change_catalogue
from coordinator.catalogue.tokenizers import check_tokenizer
from coordinator.tokens import TokenizerError

__all__ = [
    "PutEntry",
    "add_aliases",
    "checked_entry",
    "find_model",
    "remove_aliases",
    "remove_model",
    "store_change",
]


def checked_entry(data: Mapping[str, object], *, where: str) -> CatalogueEntry:
    """``data`` as an entry whose tokenizer (if any) loads here; raises InvalidEntry naming
    ``where`` and the field. (``shareai admin catalogue`` may run on another machine than the
    coordinator, so it only warns about a tokenizer; every editor inside the coordinator uses
    this.)"""
    entry = CatalogueEntry.parse(dict(data), where=where)
    if entry.tokenizer is not None:
        try:
            check_tokenizer(entry.tokenizer)
        except TokenizerError as error:
            raise InvalidEntry(
                f"{where}: tokenizer: {' '.join(str(error).split())}", "tokenizer"
            ) from None
    return entry


def find_model(catalogue: Catalogue, model: str) -> CatalogueEntry:
    """The entry ``model`` names (its id or any alias); raises ModelNotInCatalogue."""
    entry = catalogue.resolve(model)
    if entry is None:
        raise ModelNotInCatalogue(f"no model {model!r} in the catalogue (by id or alias)", model)
    return entry


@dataclass
class PutEntry:
    """A change that adds ``entry``, or replaces the entry of its id; with ``replace=False`` an
    existing id is refused (a person adding a model did not mean to overwrite one).

    ``replaced`` tells, after the change was applied, whether the version it was applied to
    had the id (which may differ from the version the editor read).
    """

    entry: CatalogueEntry
    replace: bool = True
    replaced: bool = False

    def __call__(self, current: Catalogue) -> Catalogue:
        self.replaced = current.get(self.entry.id) is not None
        if self.replaced and not self.replace:
            raise CatalogueError(
                f"{self.entry.id} is already in the catalogue; edit that entry instead"
            )
        return current.with_entry(self.entry)


def add_aliases(model: str, aliases: Sequence[str]) -> CatalogueChange:
    """Add ``aliases`` to the entry ``model`` names (id or alias); a spelling it already has
    as written is skipped. Raises ModelNotInCatalogue, InvalidEntry (an alias too long or
    blank) or CatalogueError (an alias another entry claims)."""

    def change(catalogue: Catalogue) -> Catalogue:
        entry = find_model(catalogue, model)
        added = [a for a in dict.fromkeys(aliases) if a not in entry.aliases]
        updated = entry.to_json() | {"aliases": [*entry.aliases, *added]}
        return catalogue.with_entry(CatalogueEntry.parse(updated, where=entry.id))

    return change


def remove_aliases(model: str, aliases: Sequence[str]) -> CatalogueChange:
    """Remove ``aliases`` (compared as spellings: case and paths do not matter) from the entry
    ``model`` names. Raises ModelNotInCatalogue, or CatalogueError for an alias it lacks."""

    def change(catalogue: Catalogue) -> Catalogue:
        entry = find_model(catalogue, model)
        dropped = {alias_key(a) for a in aliases}
        missing = sorted(dropped - {alias_key(a) for a in entry.aliases})
        if missing:
            raise CatalogueError(f"{entry.id} has no alias {missing[0]!r}")
        kept = [a for a in entry.aliases if alias_key(a) not in dropped]
        return catalogue.with_entry(entry.model_copy(update={"aliases": kept}))

    return change


def remove_model(model_id: str) -> CatalogueChange:
    """Remove the entry of canonical id ``model_id`` (not an alias: removing is deliberate);
    its nodes' offers become uncatalogued names. Raises ModelNotInCatalogue."""

    def change(catalogue: Catalogue) -> Catalogue:
        try:
            return catalogue.without(model_id)
        except KeyError:
            raise ModelNotInCatalogue(f"no model {model_id!r} in the catalogue", model_id) from None

    return change


async def store_change(
    sessions: async_sessionmaker[AsyncSession],
    live: LiveCatalogue,
    change: CatalogueChange,
    *,
    author: str,
    note: str,
    expected_version: int | None = None,
) -> tuple[int, Catalogue]:
    """Store ``change`` as the next version (see
    :func:`~coordinator.catalogue.store.change_catalogue`, also for ``expected_version``) and
    put it in force in ``live`` at once. Raises what the change raises, CatalogueStale or
    CatalogueBusy; nothing is stored then."""
    version, catalogue = await change_catalogue(
        sessions, change, author=author, note=note, expected_version=expected_version
    )
    live.install(version, catalogue)
    return version, catalogue
