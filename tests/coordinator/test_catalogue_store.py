"""The catalogue's versions in the database (SQLite and PostgreSQL), the live catalogue that
follows them, and catalogue files."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from coordinator.catalogue import (
    Catalogue,
    CatalogueEntry,
    CatalogueError,
    LiveCatalogue,
    catalogue_history,
    change_catalogue,
    ensure_catalogue,
    load_catalogue_file,
    load_latest_catalogue,
    starter_catalogue,
)
from tests.coordinator.conftest import Sessions

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"


def entry(model_id: str, **fields: Any) -> CatalogueEntry:
    return CatalogueEntry.parse({"id": model_id, "name": model_id, "context_length": 4096} | fields)


SMALL = Catalogue([entry("org/A", aliases=["a:1b"]), entry("org/B")])


def adding(model: CatalogueEntry) -> Any:
    return lambda current: current.with_entry(model)


async def versions(sessions: Sessions) -> list[int]:
    async with sessions() as session:
        return [row.version for row in await catalogue_history(session, limit=100)]


# --- storing versions -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_empty_database_has_no_catalogue(sessions: Sessions) -> None:
    async with sessions() as session:
        assert await load_latest_catalogue(session) == (0, Catalogue())
        assert await catalogue_history(session) == []


@pytest.mark.asyncio
async def test_ensure_catalogue_stores_the_starter_set_once(sessions: Sessions) -> None:
    first = await ensure_catalogue(sessions)
    second = await ensure_catalogue(sessions)
    assert first == second == (1, starter_catalogue())
    async with sessions() as session:
        (row,) = await catalogue_history(session)
        assert await load_latest_catalogue(session) == (1, starter_catalogue())
    assert (row.version, row.author, row.models) == (1, "starter", 20)
    assert row.created_at_ms > 0


@pytest.mark.asyncio
async def test_ensure_catalogue_racing_itself_still_stores_one_version(sessions: Sessions) -> None:
    results = await asyncio.gather(*(ensure_catalogue(sessions, SMALL) for _ in range(3)))
    assert results == [(1, SMALL)] * 3
    assert await versions(sessions) == [1]


@pytest.mark.asyncio
async def test_ensure_catalogue_keeps_a_catalogue_the_operator_emptied(sessions: Sessions) -> None:
    await ensure_catalogue(sessions, SMALL)
    emptied = await change_catalogue(sessions, lambda _: Catalogue(), author="op")
    assert emptied == (2, Catalogue())
    assert await ensure_catalogue(sessions, SMALL) == (2, Catalogue())


@pytest.mark.asyncio
async def test_each_change_is_the_next_version_and_a_no_op_stores_nothing(
    sessions: Sessions,
) -> None:
    await ensure_catalogue(sessions, SMALL)
    version, catalogue = await change_catalogue(
        sessions, adding(entry("org/C")), author="op", note="put org/C"
    )
    assert version == 2
    assert [e.id for e in catalogue] == ["org/A", "org/B", "org/C"]
    assert await change_catalogue(sessions, lambda c: c.without("org/B"), author="op") == (
        3,
        Catalogue([entry("org/A", aliases=["a:1b"]), entry("org/C")]),
    )
    same = await change_catalogue(sessions, adding(entry("org/C")), author="op", note="again")
    assert same == (3, catalogue.without("org/B"))
    assert await change_catalogue(sessions, lambda c: c, author="op") == same
    assert await versions(sessions) == [3, 2, 1]
    async with sessions() as session:
        assert await load_latest_catalogue(session) == same


@pytest.mark.asyncio
async def test_concurrent_changes_all_land_in_consecutive_versions(sessions: Sessions) -> None:
    await ensure_catalogue(sessions, SMALL)

    def add_alias(alias: str) -> Any:
        def change(current: Catalogue) -> Catalogue:
            model = current.get("org/B")
            assert model is not None
            return current.with_entry(model.model_copy(update={"aliases": [*model.aliases, alias]}))

        return change

    aliases = [f"b-{n}" for n in range(5)]
    results = await asyncio.gather(
        *(change_catalogue(sessions, add_alias(a), author=f"w{a}") for a in aliases)
    )
    assert sorted(version for version, _ in results) == [2, 3, 4, 5, 6]
    assert await versions(sessions) == [6, 5, 4, 3, 2, 1]
    async with sessions() as session:
        version, catalogue = await load_latest_catalogue(session)
    final = catalogue.get("org/B")
    assert final is not None
    assert version == 6
    assert sorted(final.aliases) == aliases
    for alias in aliases:
        assert catalogue.network_id(alias.upper()) == "org/B"


@pytest.mark.asyncio
async def test_a_refused_change_stores_nothing(sessions: Sessions) -> None:
    await ensure_catalogue(sessions, SMALL)
    with pytest.raises(CatalogueError, match="already names 'org/A'"):
        await change_catalogue(sessions, adding(entry("org/X", aliases=["A:1B"])), author="op")
    with pytest.raises(KeyError):
        await change_catalogue(sessions, lambda c: c.without("org/missing"), author="op")
    assert await versions(sessions) == [1]
    async with sessions() as session:
        assert await load_latest_catalogue(session) == (1, SMALL)


@pytest.mark.asyncio
async def test_history_lists_the_newest_first_with_author_note_and_size(
    sessions: Sessions,
) -> None:
    await ensure_catalogue(sessions, SMALL)
    await change_catalogue(sessions, adding(entry("org/C")), author="operator:acc_1", note="put C")
    await change_catalogue(sessions, lambda c: c.without("org/A"), author="admin-cli", note="rm A")
    async with sessions() as session:
        history = await catalogue_history(session)
        latest_two = await catalogue_history(session, limit=2)
    assert [(h.version, h.author, h.note, h.models) for h in history] == [
        (3, "admin-cli", "rm A", 2),
        (2, "operator:acc_1", "put C", 3),
        (1, "starter", "the starter set shipped with the coordinator", 2),
    ]
    assert latest_two == history[:2]
    assert history[0].created_at_ms >= history[2].created_at_ms


# --- the live catalogue -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_refresh_installs_a_version_written_elsewhere_and_tells_listeners_once(
    sessions: Sessions,
) -> None:
    version, catalogue = await ensure_catalogue(sessions, SMALL)
    live = LiveCatalogue(catalogue, version)
    seen: list[Catalogue] = []
    live.listen(seen.append)
    assert seen == [SMALL]  # a listener hears the current catalogue at once
    assert not await live.refresh(sessions)

    version, changed = await change_catalogue(sessions, adding(entry("org/C")), author="other")
    assert await live.refresh(sessions)
    assert (live.version, live.current) == (version, changed)
    assert seen == [SMALL, changed]
    assert not await live.refresh(sessions)
    assert len(seen) == 2


@pytest.mark.asyncio
async def test_watch_picks_up_changes_in_the_background(sessions: Sessions) -> None:
    live = LiveCatalogue()
    watcher = asyncio.create_task(live.watch(sessions, refresh_s=0.01))
    try:
        await ensure_catalogue(sessions, SMALL)
        async with asyncio.timeout(10):
            while live.version != 1:
                await asyncio.sleep(0.01)
        assert live.current == SMALL
    finally:
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher


def test_install_ignores_versions_not_newer_than_the_current() -> None:
    live = LiveCatalogue()
    heard: list[int] = []
    live.listen(lambda catalogue: heard.append(len(catalogue)))
    assert live.install(2, SMALL)
    assert not live.install(1, Catalogue())
    assert not live.install(2, Catalogue())
    assert (live.version, live.current) == (2, SMALL)
    assert heard == [0, 2]


# --- catalogue files --------------------------------------------------------------------------


def test_a_toml_file_and_a_json_file_load(tmp_path: Path) -> None:
    toml = tmp_path / "models.toml"
    toml.write_text(
        '[[models]]\nid = "org/A"\nname = "org/A"\ncontext_length = 4096\naliases = ["a:1b"]\n'
        '\n[[models]]\nid = "org/B"\nname = "org/B"\ncontext_length = 4096\n',
        encoding="utf-8",
    )
    assert load_catalogue_file(toml) == SMALL
    as_json = tmp_path / "models.JSON"
    as_json.write_text(json.dumps(SMALL.to_document()), encoding="utf-8")
    assert load_catalogue_file(as_json) == SMALL


def test_the_shipped_starter_file_loads_as_a_file() -> None:
    path = Path(__file__).parents[2] / "coordinator" / "catalogue" / "starter.toml"
    assert load_catalogue_file(path) == starter_catalogue()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.toml", "[[models]\n", "not valid TOML"),
        ("bad.json", "{", "not valid JSON"),
        ("list.json", "[]", 'one key, "models"'),
        ("entry.toml", '[[models]]\nid = "org/A"\nname = "A"\n', "models[0]: context_length"),
        ("binary.toml", b"\xff\xfe", "cannot read"),
    ],
)
def test_a_bad_file_is_an_error_naming_it(
    tmp_path: Path, name: str, content: str | bytes, message: str
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(CatalogueError) as error:
        load_catalogue_file(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match="cannot read"):
        load_catalogue_file(tmp_path / "nowhere.toml")
