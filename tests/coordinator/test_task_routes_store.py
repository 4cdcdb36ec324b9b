"""Task routes in the database (SQLite and PostgreSQL): versions appended per owner and name,
deletions recorded as versions without a document, the route in force, and concurrent writers."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session
from sqlalchemy.util import await_only

from coordinator.db.catalogue import TaskRouteVersion
from coordinator.task_routes import (
    MAX_ROUTES_PER_OWNER,
    RouteOwner,
    StoredRoute,
    TaskRouteLimit,
    current_route,
    delete_route,
    list_routes,
    route_history,
    route_version,
    save_route,
)
from scheduler import TaskRoute, parse_task_route
from tests.coordinator.conftest import Sessions

pytestmark = pytest.mark.asyncio

ADA = RouteOwner("account", "acc_ada")
BOB = RouteOwner("account", "acc_bob")
ADA_APP = RouteOwner("app", "acc_ada")  # an app whose id happens to spell Ada's account id
AUTHOR = "acc_author"


def route(name: str = "support", model: str = "org/default", **document: Any) -> TaskRoute:
    return parse_task_route({"default": {"models": [model]}, **document}, name=name)


RICH = parse_task_route(
    {
        "name": "support-bot",
        "description": "cheap for triage, a big model for the rest",
        "rules": [
            {
                "name": "triage",
                "when": {
                    "task": ["triage", "classify"],
                    "tags": ["support"],
                    "any_tags": ["en", "de"],
                    "metadata": {"tier": "free"},
                    "tools": False,
                    "structured_output": False,
                    "stream": True,
                    "min_prompt_tokens": 1,
                    "max_prompt_tokens": 2000,
                    "min_output_tokens": 0,
                    "max_output_tokens": 512,
                },
                "models": ["org/small", "org/small-backup"],
                "provider": {"sort": "price", "max_price": {"prompt": "0.5"}, "order": ["x"]},
            },
            {"name": "json.v2", "when": {"structured_output": True}, "models": ["org/json"]},
        ],
        "default": {"name": "default", "models": ["org/big"], "provider": {"sort": "latency"}},
    }
)


async def rows(sessions: Sessions) -> list[TaskRouteVersion]:
    async with sessions() as session:
        return list(
            await session.scalars(
                select(TaskRouteVersion).order_by(
                    TaskRouteVersion.owner_kind,
                    TaskRouteVersion.owner_id,
                    TaskRouteVersion.name,
                    TaskRouteVersion.version,
                )
            )
        )


async def history(sessions: Sessions, owner: RouteOwner, name: str) -> list[int]:
    async with sessions() as session:
        return [stored.version for stored in await route_history(session, owner, name)]


async def current(sessions: Sessions, owner: RouteOwner, name: str) -> StoredRoute | None:
    async with sessions() as session:
        return await current_route(session, owner, name)


async def names(sessions: Sessions, owner: RouteOwner) -> list[str]:
    async with sessions() as session:
        return [stored.name for stored in await list_routes(session, owner)]


# --- versions -------------------------------------------------------------------------------------


async def test_saving_appends_versions_and_the_newest_is_in_force(sessions: Sessions) -> None:
    before_ms = int(time.time() * 1000)
    first = await save_route(sessions, ADA, route(model="org/one"), AUTHOR)
    second = await save_route(sessions, ADA, route(model="org/two"), AUTHOR)
    after_ms = int(time.time() * 1000)

    assert (first.owner, first.name, first.version) == (ADA, "support", 1)
    assert second.version == 2
    assert before_ms <= first.created_at_ms <= second.created_at_ms <= after_ms
    in_force = await current(sessions, ADA, "support")
    assert in_force == second
    assert in_force.route is not None
    assert in_force.route.default.models == ("org/two",)
    async with sessions() as session:
        old = await route_version(session, ADA, "support", 1)
        assert old == first
        assert old is not None
        assert old.route is not None
        assert old.route.default.models == ("org/one",)
        assert await route_version(session, ADA, "support", 3) is None
        assert await route_version(session, BOB, "support", 1) is None
    assert await history(sessions, ADA, "support") == [2, 1]
    assert [(row.version, row.author_account_id) for row in await rows(sessions)] == [
        (1, AUTHOR),
        (2, AUTHOR),
    ]


async def test_saving_the_route_in_force_again_appends_nothing(sessions: Sessions) -> None:
    first = await save_route(sessions, ADA, route(model="org/one"), "acc_first")
    again = await save_route(sessions, ADA, route(model="org/one"), "acc_second")
    assert again == first
    await save_route(sessions, ADA, route(model="org/two"), AUTHOR)
    back = await save_route(sessions, ADA, route(model="org/one"), AUTHOR)
    assert back.version == 3  # unchanged means unchanged from the newest version only
    await delete_route(sessions, ADA, "support", AUTHOR)
    revived = await save_route(sessions, ADA, route(model="org/one"), AUTHOR)
    assert revived.version == 5
    assert [row.author_account_id for row in await rows(sessions)][:1] == ["acc_first"]
    assert await history(sessions, ADA, "support") == [5, 4, 3, 2, 1]


async def test_a_stored_route_reads_back_equal_to_what_was_saved(sessions: Sessions) -> None:
    saved = await save_route(sessions, ADA, RICH, AUTHOR)
    assert saved.route == RICH
    stored = await current(sessions, ADA, "support-bot")
    assert stored is not None
    assert stored.route == RICH
    assert stored.route.to_json() == RICH.to_json()
    assert stored.to_json() == {
        "object": "route",
        "name": "support-bot",
        "owner": {"kind": "account", "id": "acc_ada"},
        "version": 1,
        "created_at_ms": saved.created_at_ms,
        "deleted": False,
        **RICH.to_json(),
    }


async def test_deleting_appends_a_version_without_a_document(sessions: Sessions) -> None:
    await save_route(sessions, ADA, route(), AUTHOR)
    await save_route(sessions, ADA, route(model="org/two"), AUTHOR)
    deleted = await delete_route(sessions, ADA, "support", "acc_deleter")

    assert deleted is not None
    assert (deleted.version, deleted.route) == (3, None)
    assert deleted.to_json()["deleted"] is True
    assert "default" not in deleted.to_json()
    assert await current(sessions, ADA, "support") is None
    assert await names(sessions, ADA) == []
    async with sessions() as session:
        gone = await route_version(session, ADA, "support", 3)
        assert gone is not None
        assert gone.route is None
        kept = await route_version(session, ADA, "support", 2)
        assert kept is not None
        assert kept.route is not None
        assert [s.route is None for s in await route_history(session, ADA, "support")] == [
            True,
            False,
            False,
        ]
    last = (await rows(sessions))[-1]
    assert (last.version, last.document, last.author_account_id) == (3, None, "acc_deleter")

    again = await save_route(sessions, ADA, route(model="org/back"), AUTHOR)
    assert again.version == 4  # numbering continues after a deletion
    assert await names(sessions, ADA) == ["support"]


async def test_deleting_a_missing_route_returns_none_and_writes_nothing(
    sessions: Sessions,
) -> None:
    assert await delete_route(sessions, ADA, "never", AUTHOR) is None
    assert await rows(sessions) == []
    await save_route(sessions, ADA, route(), AUTHOR)
    assert await delete_route(sessions, ADA, "support", AUTHOR) is not None
    assert await delete_route(sessions, ADA, "support", AUTHOR) is None  # already deleted
    assert await delete_route(sessions, BOB, "support", AUTHOR) is None  # someone else's name
    assert [(row.owner_id, row.version) for row in await rows(sessions)] == [
        ("acc_ada", 1),
        ("acc_ada", 2),
    ]
    assert await history(sessions, BOB, "support") == []


async def test_owners_are_isolated_even_when_their_ids_are_spelled_alike(
    sessions: Sessions,
) -> None:
    await save_route(sessions, ADA, route(model="org/ada"), AUTHOR)
    app_route = await save_route(sessions, ADA_APP, route(model="org/app"), AUTHOR)
    await save_route(sessions, BOB, route("other", model="org/bob"), AUTHOR)

    assert app_route.version == 1  # its own numbering
    ada = await current(sessions, ADA, "support")
    app = await current(sessions, ADA_APP, "support")
    assert ada is not None
    assert app is not None
    assert ada.route is not None
    assert app.route is not None
    assert (ada.owner, ada.route.default.models) == (ADA, ("org/ada",))
    assert (app.owner, app.route.default.models) == (ADA_APP, ("org/app",))
    assert app.to_json()["owner"] == {"kind": "app", "id": "acc_ada"}
    assert await current(sessions, BOB, "support") is None
    assert await names(sessions, BOB) == ["other"]

    await delete_route(sessions, ADA_APP, "support", AUTHOR)
    assert await current(sessions, ADA_APP, "support") is None
    assert await current(sessions, ADA, "support") == ada
    assert await history(sessions, ADA, "support") == [1]


async def test_list_shows_each_live_route_once_at_its_newest_version_by_name(
    sessions: Sessions,
) -> None:
    for name in ("zeta", "alpha", "m.id", "gone", "b-2", "b_1", "0day"):
        await save_route(sessions, ADA, route(name), AUTHOR)
    await save_route(sessions, ADA, route("alpha", model="org/newer"), AUTHOR)
    await delete_route(sessions, ADA, "gone", AUTHOR)
    await save_route(sessions, BOB, route("bob-only"), AUTHOR)

    async with sessions() as session:
        listed = await list_routes(session, ADA)
    assert [s.name for s in listed] == sorted(["zeta", "alpha", "m.id", "b-2", "b_1", "0day"])
    alpha = next(s for s in listed if s.name == "alpha")
    assert alpha.version == 2
    assert alpha.route is not None
    assert alpha.route.default.models == ("org/newer",)
    assert all(s.owner == ADA for s in listed)


# --- limits and concurrent writers ----------------------------------------------------------------


async def fill(sessions: Sessions, owner: RouteOwner, count: int) -> None:
    for index in range(count):
        await save_route(sessions, owner, route(f"r{index:03d}"), AUTHOR)


async def test_an_owner_has_at_most_the_limit_of_routes(sessions: Sessions) -> None:
    await fill(sessions, ADA, MAX_ROUTES_PER_OWNER)
    with pytest.raises(TaskRouteLimit):
        await save_route(sessions, ADA, route("one-too-many"), AUTHOR)
    assert await history(sessions, ADA, "one-too-many") == []
    changed = await save_route(sessions, ADA, route("r000", model="org/changed"), AUTHOR)
    assert changed.version == 2
    await save_route(sessions, BOB, route("bobs-first"), AUTHOR)  # another owner has room
    await delete_route(sessions, ADA, "r050", AUTHOR)
    assert (await save_route(sessions, ADA, route("one-too-many"), AUTHOR)).version == 1
    assert len(await names(sessions, ADA)) == MAX_ROUTES_PER_OWNER


@pytest.mark.parametrize(
    "database_url",
    [
        "sqlite",  # BEGIN IMMEDIATE: writers take turns, and never collide
        "postgresql",  # a lock per owner: writers take turns
    ],
    indirect=True,
)
async def test_concurrent_writers_of_one_name_each_get_their_own_version(
    sessions: Sessions,
) -> None:
    saved = await asyncio.gather(
        *(save_route(sessions, ADA, route(model=f"org/m{i}"), AUTHOR) for i in range(8))
    )
    assert sorted(s.version for s in saved) == list(range(1, 9))
    assert await history(sessions, ADA, "support") == list(range(8, 0, -1))
    async with sessions() as session:
        count = await session.scalar(select(func.count()).select_from(TaskRouteVersion))
    assert count == 8


_ARRIVAL_S = 0.5
"""How long a committing writer waits for the others before it concludes they are blocked."""


class Lockstep:
    """Holds each committing writer until every writer still writing is committing too.

    The worst interleaving, every time instead of by chance: all writers have read (the latest
    version, the number of routes) before any of them writes, unless the store makes them wait
    for each other (then a writer stops waiting after ``_ARRIVAL_S``). PostgreSQL only: on SQLite
    a writer holds the database from BEGIN IMMEDIATE, so the others could never arrive.
    """

    def __init__(self, writers: int) -> None:
        self._active = writers
        self._waiting = 0
        self._round = 0
        self._changed = asyncio.Condition()

    def _release_if_all_here(self) -> None:
        if self._waiting and self._waiting >= self._active:
            self._round += 1
            self._waiting = 0
            self._changed.notify_all()

    async def _arrive(self) -> None:
        async with self._changed:
            self._waiting += 1
            my_round = self._round
            self._release_if_all_here()
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self._round != my_round), _ARRIVAL_S
                )
            except TimeoutError:
                # The others cannot arrive: the store made them wait for this writer's commit
                # (what a lock per owner does). Commit, and let the next one through.
                self._waiting -= 1

    async def write(self, sessions: Sessions, name: str, model: str) -> StoredRoute:
        """``save_route`` of ``name`` as one of the writers in lockstep."""
        try:
            return await save_route(sessions, ADA, route(name, model=model), AUTHOR)
        finally:
            async with self._changed:
                self._active -= 1
                self._release_if_all_here()

    @contextmanager
    def holding_commits(self) -> Iterator[None]:
        def arrive(_session: Session) -> None:
            await_only(self._arrive())  # runs inside SQLAlchemy's greenlet: may await

        event.listen(Session, "before_commit", arrive)
        try:
            yield
        finally:
            event.remove(Session, "before_commit", arrive)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_writers_racing_in_lockstep_each_get_their_own_version(sessions: Sessions) -> None:
    lockstep = Lockstep(8)
    with lockstep.holding_commits():
        results = await asyncio.gather(
            *(lockstep.write(sessions, "support", f"org/m{i}") for i in range(8)),
            return_exceptions=True,
        )
    assert Counter(type(r).__name__ for r in results) == {"StoredRoute": 8}
    assert await history(sessions, ADA, "support") == list(range(8, 0, -1))


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_as_many_writers_as_attempts_all_win_even_in_lockstep(sessions: Sessions) -> None:
    lockstep = Lockstep(5)  # each loses at most once to each of the 4 others
    with lockstep.holding_commits():
        saved = await asyncio.gather(
            *(lockstep.write(sessions, "support", f"org/m{i}") for i in range(5))
        )
    assert sorted(s.version for s in saved) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_concurrent_creators_cannot_pass_the_limit_together(sessions: Sessions) -> None:
    await fill(sessions, ADA, MAX_ROUTES_PER_OWNER - 1)
    lockstep = Lockstep(2)
    with lockstep.holding_commits():
        results = await asyncio.gather(
            lockstep.write(sessions, "new-a", "org/a"),
            lockstep.write(sessions, "new-b", "org/b"),
            return_exceptions=True,
        )
    assert sorted(type(r).__name__ for r in results) == ["StoredRoute", "TaskRouteLimit"]
    assert len(await names(sessions, ADA)) == MAX_ROUTES_PER_OWNER
