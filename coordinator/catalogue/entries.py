"""Catalogue entries and the alias index: one canonical id per model across Providers.

A :class:`CatalogueEntry` describes one model the operator knows: its canonical id, display name,
the other spellings Providers' servers use for it (aliases), family, context length, modalities,
the tokenizer the coordinator counts its tokens with, known weight fingerprints and a short
description. A :class:`Catalogue` is an immutable set of entries with an index from every
spelling to its canonical id.

**Spellings.** A name is compared by its :func:`alias_key`: trimmed, case-folded, and for a
filesystem path (``/srv/models/Llama-3.1-8B-Instruct``, ``./models/x``, ``~/m/x.gguf``) only its
last part, since a server started on a local folder reports the folder. ``meta-llama/Llama-3.1-8B``
(one ``/``, no leading ``/`` or ``.``) is a Hugging Face id and is compared whole. Two entries may
not claim the same spelling (:class:`CatalogueError`).

**Uncatalogued names.** :meth:`Catalogue.network_id` maps an offer's name to its canonical id,
or leaves a name no entry claims as it is; such a model is served under its own name and shown
as uncatalogued. It cannot collide with a catalogued model: every canonical id and alias is
claimed by its entry.

**Errors.** Every refusal is a :class:`CatalogueError` (``str()`` says what and where)::

    CatalogueError            a catalogue that cannot be (two entries claim a spelling, ...)
    ├── InvalidEntry          one entry's field is wrong (``field`` names it)
    ├── ModelNotInCatalogue   a change names a model the catalogue does not have
    ├── CatalogueStale        the editor read an older version than the one in force
    └── CatalogueBusy         other writers kept changing it; nothing was stored
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

__all__ = [
    "Catalogue",
    "CatalogueBusy",
    "CatalogueEntry",
    "CatalogueError",
    "CatalogueStale",
    "InvalidEntry",
    "Modalities",
    "ModelNotInCatalogue",
    "alias_key",
]

MAX_ENTRIES = 2000
MAX_ALIASES = 64

CanonicalId = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,255}$"),
]
"""Usually the Hugging Face id; no ``:`` (that would read as an Ollama tag or a ``:floor``
suffix) and no spaces. Compared without case, like every spelling."""

Alias = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]
Fingerprint = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9:_-]{8,136}$")]
Modality = Literal["text", "image", "audio", "video", "file"]


_PATTERN_HELP = {
    "id": "use letters, digits and . _ / - only, starting with a letter or digit"
    " (no spaces, no ':'), at most 256 characters",
    "fingerprints": "8 to 136 characters of letters, digits and : _ -",
}


class CatalogueError(ValueError):
    """An entry or a catalogue that cannot be used; ``str()`` names the entry and the field."""


class CatalogueBusy(CatalogueError):
    """Other writers kept changing the catalogue; the change was not stored (retry)."""


class InvalidEntry(CatalogueError):
    """An entry's ``field`` (``"context_length"``, ``"aliases.2"``, ``"tokenizer"``...) is wrong."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class ModelNotInCatalogue(CatalogueError):
    """A change names ``model``, which no entry of the catalogue has (as its id, or any alias
    where the change accepts one)."""

    def __init__(self, message: str, model: str) -> None:
        super().__init__(message)
        self.model = model


class CatalogueStale(CatalogueError):
    """The editor changed the catalogue as of version ``expected``, but ``current`` is in force
    now: someone changed it meanwhile, and nothing was stored (so nothing was overwritten)."""

    def __init__(self, expected: int, current: int) -> None:
        super().__init__(
            f"the catalogue changed meanwhile: this edit was made on version {expected},"
            f" and version {current} is in force now"
        )
        self.expected = expected
        self.current = current


class Modalities(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input: Annotated[list[Modality], Field(min_length=1, max_length=5)] = ["text"]
    output: Annotated[list[Modality], Field(min_length=1, max_length=5)] = ["text"]


class CatalogueEntry(BaseModel):
    """One canonical model (see the module doc); documented field by field in docs/routing.md."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: CanonicalId
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    aliases: Annotated[list[Alias], Field(max_length=MAX_ALIASES)] = []
    family: Annotated[str, StringConstraints(max_length=100)] = ""
    context_length: Annotated[int, Field(ge=1, le=100_000_000)]
    modalities: Modalities = Modalities()
    tokenizer: Annotated[str, StringConstraints(min_length=1, max_length=1000)] | None = None
    """A local ``tokenizer.json``, or ``package:MODULE/path`` inside an installed package."""
    fingerprints: Annotated[list[Fingerprint], Field(max_length=64)] = []
    description: Annotated[str, StringConstraints(max_length=1000)] = ""

    @classmethod
    def parse(cls, data: object, *, where: str = "entry") -> CatalogueEntry:
        """Validate ``data``; raises InvalidEntry naming ``where`` and the first bad field."""
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or "entry"
            message = first["msg"]
            if first["type"] == "string_pattern_mismatch":
                message = _PATTERN_HELP.get(field.split(".")[0], message)
            raise InvalidEntry(f"{where}: {field}: {message}", field) from None

    def spellings(self) -> Iterator[str]:
        """The id and every alias, as given."""
        yield self.id
        yield from self.aliases

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


_PATH_START = re.compile(r"^(?:/|\./|\.\./|~/|[A-Za-z]:\\)")


def alias_key(name: str) -> str:
    """How two spellings of a model are compared (see the module doc)."""
    name = name.strip()
    if _PATH_START.match(name) or name.count("/") > 1 or "\\" in name:
        name = re.split(r"[/\\]", name.rstrip("/\\"))[-1]
    return name.casefold()


class Catalogue:
    """An immutable set of entries with a spelling index; build changed copies with ``with_*``."""

    __slots__ = ("_by_id", "_index")

    def __init__(self, entries: Iterable[CatalogueEntry] = ()) -> None:
        by_id: dict[str, CatalogueEntry] = {}
        index: dict[str, str] = {}
        for entry in entries:
            if entry.id in by_id:
                raise CatalogueError(f"{entry.id}: listed twice")
            by_id[entry.id] = entry
            for spelling in entry.spellings():
                key = alias_key(spelling)
                owner = index.setdefault(key, entry.id)
                if owner != entry.id:
                    raise CatalogueError(f"{entry.id}: alias {spelling!r} already names {owner!r}")
        if len(by_id) > MAX_ENTRIES:
            raise CatalogueError(f"at most {MAX_ENTRIES} models in a catalogue")
        self._by_id = dict(sorted(by_id.items()))
        self._index = index

    @classmethod
    def from_document(cls, document: object) -> Catalogue:
        """``{"models": [entry, ...]}`` (the file and export format); raises CatalogueError."""
        if not isinstance(document, Mapping) or set(document) - {"models"}:
            raise CatalogueError('a catalogue is an object with one key, "models"')
        models = document.get("models", [])
        if not isinstance(models, list):
            raise CatalogueError('"models" must be a list of entries')
        return cls(
            CatalogueEntry.parse(item, where=f"models[{position}]")
            for position, item in enumerate(models)
        )

    def to_document(self) -> dict[str, Any]:
        return {"models": [entry.to_json() for entry in self._by_id.values()]}

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[CatalogueEntry]:
        return iter(self._by_id.values())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Catalogue) and self._by_id == other._by_id

    def __hash__(self) -> int:
        return hash(tuple(self._by_id))

    def get(self, model_id: str) -> CatalogueEntry | None:
        return self._by_id.get(model_id)

    def resolve(self, name: str) -> CatalogueEntry | None:
        """The entry ``name`` spells (its id or any alias), or None."""
        model_id = self._index.get(alias_key(name))
        return None if model_id is None else self._by_id[model_id]

    def network_id(self, name: str) -> str:
        """The canonical id ``name`` spells, or ``name`` itself when uncatalogued."""
        model_id = self._index.get(alias_key(name))
        return name if model_id is None else model_id

    def with_entry(self, entry: CatalogueEntry) -> Catalogue:
        """A copy with ``entry`` added, or replacing the entry of the same id."""
        return Catalogue([*(e for e in self if e.id != entry.id), entry])

    def without(self, model_id: str) -> Catalogue:
        if model_id not in self._by_id:
            raise KeyError(model_id)
        return Catalogue(e for e in self if e.id != model_id)
