"""The model catalogue: one canonical id per model across Providers (docs/routing.md).

- :mod:`~coordinator.catalogue.entries`: entries, spellings and the alias index.
- :mod:`~coordinator.catalogue.store`: versions in the database, the shipped starter set.
- :mod:`~coordinator.catalogue.live`: the version a running coordinator uses, kept current.
- :mod:`~coordinator.catalogue.edits`: the changes every editor (API, console, CLI) shares.
- :mod:`~coordinator.catalogue.tokenizers`: which tokenizer counts each model's tokens.
"""

from coordinator.catalogue.edits import (
    PutEntry,
    add_aliases,
    checked_entry,
    find_model,
    remove_aliases,
    remove_model,
    store_change,
)
from coordinator.catalogue.entries import (
    Catalogue,
    CatalogueBusy,
    CatalogueEntry,
    CatalogueError,
    CatalogueStale,
    InvalidEntry,
    Modalities,
    ModelNotInCatalogue,
    alias_key,
)
from coordinator.catalogue.live import CatalogueListener, LiveCatalogue
from coordinator.catalogue.store import (
    CatalogueChange,
    CatalogueRevision,
    catalogue_history,
    change_catalogue,
    ensure_catalogue,
    load_catalogue_file,
    load_latest_catalogue,
    starter_catalogue,
)
from coordinator.catalogue.tokenizers import ModelTokenizers, check_tokenizer, tokenizer_file

__all__ = [
    "Catalogue",
    "CatalogueBusy",
    "CatalogueChange",
    "CatalogueEntry",
    "CatalogueError",
    "CatalogueListener",
    "CatalogueRevision",
    "CatalogueStale",
    "InvalidEntry",
    "LiveCatalogue",
    "Modalities",
    "ModelNotInCatalogue",
    "ModelTokenizers",
    "PutEntry",
    "add_aliases",
    "alias_key",
    "catalogue_history",
    "change_catalogue",
    "check_tokenizer",
    "checked_entry",
    "ensure_catalogue",
    "find_model",
    "load_catalogue_file",
    "load_latest_catalogue",
    "remove_aliases",
    "remove_model",
    "starter_catalogue",
    "store_change",
    "tokenizer_file",
]
