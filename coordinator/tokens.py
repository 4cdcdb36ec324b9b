"""Counting tokens on the coordinator with a model's own tokenizer (a Hugging Face
``tokenizer.json``), so usage can be checked, or known, without trusting the node.

Preparation for settlement: an upstream that reports no usage leaves the node unable to count
prompt tokens (the ``openai`` backend then reports 0), and a node's own report is a claim.
Nothing calls this yet.

The ``tokenizers`` package is imported on first use, so importing this module never needs it;
each file is loaded once per process (:func:`load_tokenizer` is cached per resolved path).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["TokenizerError", "count_tokens", "load_tokenizer"]

_CACHED_TOKENIZERS = 16


class TokenizerError(Exception):
    """A tokenizer file could not be loaded (missing, unreadable, or not a tokenizer)."""


def load_tokenizer(tokenizer_path: str | Path) -> Tokenizer:
    """The tokenizer in ``tokenizer_path`` (a ``tokenizer.json``), loaded once per process."""
    return _load(Path(tokenizer_path).resolve())


@lru_cache(maxsize=_CACHED_TOKENIZERS)
def _load(path: Path) -> Tokenizer:
    try:
        from tokenizers import Tokenizer  # noqa: PLC0415 - optional: loaded on first use
    except ImportError as error:
        raise TokenizerError(
            "counting tokens needs the tokenizers package: pip install tokenizers"
        ) from error
    if not path.is_file():
        raise TokenizerError(f"{path}: no such tokenizer file")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # the Rust side raises plain Exception for a bad file
        raise TokenizerError(f"{path}: not a tokenizer.json ({error})") from error


def count_tokens(tokenizer_path: str | Path, text: str, *, add_special_tokens: bool = False) -> int:
    """How many tokens ``text`` is, for the tokenizer in ``tokenizer_path``.

    By default the tokenizer's special tokens (a BOS its post-processor may add) are not
    counted: ``text`` is counted as it is. A chat prompt's template tokens are part of ``text``
    only once the template has been applied.
    """
    encoding = load_tokenizer(tokenizer_path).encode(text, add_special_tokens=add_special_tokens)
    return len(encoding.ids)
