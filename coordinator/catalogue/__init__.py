"""The model catalogue: one canonical id per model across Providers (docs/routing.md).

- :mod:`~coordinator.catalogue.entries`: entries, spellings and the alias index.
- :mod:`~coordinator.catalogue.store`: versions in the database, the shipped starter set.
- :mod:`~coordinator.catalogue.live`: the version a running coordinator uses, kept current.
- :mod:`~coordinator.catalogue.tokenizers`: which tokenizer counts each model's tokens.
"""

from coordinator.catalogue.entries import (
    Catalogue,
    CatalogueBusy,
    CatalogueEntry,
    CatalogueError,
    Modalities,
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
    "LiveCatalogue",
    "Modalities",
    "ModelTokenizers",
    "alias_key",
    "catalogue_history",
    "change_catalogue",
    "check_tokenizer",
    "ensure_catalogue",
    "load_catalogue_file",
    "load_latest_catalogue",
    "starter_catalogue",
    "tokenizer_file",
]
