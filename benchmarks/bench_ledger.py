"""Settled requests per second through the ledger, and what a hold adds to the request path.

For each database (SQLite, a file through aiosqlite; PostgreSQL through asyncpg) the benchmark
migrates a fresh database with :func:`coordinator.db.migrate`, creates a Provider, a Builder and
one customer per client with :func:`coordinator.accounts.create_account` and
:func:`coordinator.ledger.top_up`, and then measures, on one engine and session factory::

    latency      one request at a time: an empty transaction (BEGIN; SELECT 1; COMMIT, the
                 floor of any database work), place_hold in its own transaction, post_hold with
                 a provider / builder / platform split in its own transaction; interleaved
    throughput   N requests from K concurrent clients (each on its own sessions): an empty
                 transaction each (the baseline), a hold and a post each, or a hold each with
                 the settlements posted by one batch writer with post_holds, B at a time
    where the    the SQL statements and aiosqlite thread hand-offs of each operation (cProfile),
    time goes    the main thread's CPU time, and the very same SQL replayed through the bare
                 driver: aiosqlite and in-process sqlite3, or asyncpg

Every request is checked settled and the ledger's :func:`~coordinator.ledger.audit` must pass,
or the run fails. Nothing here asserts a timing.

    python -m benchmarks.bench_ledger                           # both databases, prints tables
    python -m benchmarks.bench_ledger --write                   # ... and updates the docs
    python -m benchmarks.bench_ledger --databases sqlite --profile
    python -m benchmarks.bench_ledger --quick                   # smoke test; figures mean nothing

PostgreSQL: a throwaway database is created on the server at ``--postgres-url`` (default
``SHAREAI_BENCH_POSTGRES_URL``, else the local server's ``postgres`` database) and dropped after.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import math
import os
import pstats
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

import aiosqlite
from sqlalchemy import event, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from benchmarks._machine import common_machine_facts, write_between_markers
from coordinator.accounts import Role, create_account
from coordinator.db import create_engine, create_session_factory, migrate
from coordinator.db.engine import SQLITE_BUSY_TIMEOUT_MS
from coordinator.db.models import LedgerHold
from coordinator.ledger import (
    Credit,
    HoldState,
    Posting,
    Pricing,
    Settlement,
    audit,
    charge_for,
    credits_for,
    hold_amount_for,
    place_hold,
    post_hold,
    post_holds,
    top_up,
)

__all__ = [
    "DATABASES",
    "DEFAULT_DOCS_PATH",
    "DEFAULT_POSTGRES_ADMIN_URL",
    "DOCS_END",
    "DOCS_START",
    "FULL",
    "OPERATIONS",
    "QUICK",
    "TARGET_REQUEST_PATH_MS",
    "DatabaseResult",
    "Machine",
    "OperationLatency",
    "OperationProfile",
    "Report",
    "Settings",
    "ThroughputResult",
    "Workload",
    "main",
    "render_markdown",
    "render_table",
    "run_benchmarks",
    "write_docs_section",
]

TARGET_REQUEST_PATH_MS = 0.5  # hold + settle, median, SQLite (the settlement issue)
DATABASES = ("sqlite", "postgresql")
DOCS_START = "<!-- bench-ledger:start -->"
DOCS_END = "<!-- bench-ledger:end -->"
DEFAULT_DOCS_PATH = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
DEFAULT_POSTGRES_ADMIN_URL = os.environ.get(
    "SHAREAI_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)

# A typical chat request: $0.20/M in, $0.60/M out, a 10 % Builder surcharge, a 5 % platform fee.
PRICING = Pricing(200_000, 600_000, surcharge_bps=1_000, platform_fee_bps=500)
PROMPT_TOKENS = 1_000
MAX_TOKENS = 512
COMPLETION_TOKENS = 300
CUSTOMER_CREDITS_MICRO_USD = 1_000_000_000  # 1,000 USD: about 1.7 million holds each
SELECT_ONE = text("SELECT 1")
_CAPTURE_ID = "bench-capture"  # the request whose SQL is captured for the replays
_DATABASE_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}

# (label, what one operation is)
OPERATIONS: dict[str, tuple[str, str]] = {
    "empty": ("empty transaction (baseline)", "BEGIN; SELECT 1; COMMIT"),
    "hold": ("place_hold", "place_hold in its own transaction"),
    "post": ("post_hold, 3-way split", "post_hold to provider, builder and platform"),
    "request": ("hold + post (one request)", "the two transactions above, back to back"),
}


class Workload(Enum):
    """What each client does per request in a throughput run."""

    EMPTY = "empty transaction (baseline)"
    PER_REQUEST = "hold + post_hold per request"
    BATCHED = "hold + post_holds batched"


@dataclass(frozen=True, slots=True)
class Settings:
    latency_requests: int  # sequential requests timed, after the warm-up
    warmup_requests: int
    throughput_requests: int  # per throughput run (split over the clients)
    batch_size: int  # holds per post_holds transaction
    clients: tuple[int, ...]  # concurrency levels of the throughput runs
    profile_requests: int  # requests profiled and replayed per operation


FULL = Settings(
    latency_requests=2_000,
    warmup_requests=200,
    throughput_requests=2_000,
    batch_size=100,
    clients=(1, 4, 16),
    profile_requests=300,
)
QUICK = Settings(
    latency_requests=10,
    warmup_requests=2,
    throughput_requests=12,
    batch_size=5,
    clients=(1, 3),
    profile_requests=3,
)


def _percentile_ms(samples_ns: Sequence[int], fraction: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    ordered = sorted(samples_ns)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)] / 1e6


@dataclass(frozen=True, slots=True)
class OperationLatency:
    """One operation's sequential timings: wall clock and this (main) thread's CPU time, ns."""

    key: str
    wall_ns: tuple[int, ...]
    cpu_ns: tuple[int, ...]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.wall_ns) / 1e6

    @property
    def p90_ms(self) -> float:
        return _percentile_ms(self.wall_ns, 0.90)

    @property
    def p99_ms(self) -> float:
        return _percentile_ms(self.wall_ns, 0.99)

    @property
    def cpu_median_ms(self) -> float:
        return statistics.median(self.cpu_ns) / 1e6


@dataclass(frozen=True, slots=True)
class ThroughputResult:
    """``requests`` requests from ``clients`` concurrent clients, start to all settled."""

    workload: Workload
    clients: int
    requests: int
    elapsed_ns: int
    on_path_ns: tuple[int, ...]  # per request: the hold's transaction (or the empty one)

    @property
    def per_s(self) -> float:
        return self.requests * 1e9 / self.elapsed_ns

    @property
    def on_path_median_ms(self) -> float:
        return statistics.median(self.on_path_ns) / 1e6

    @property
    def on_path_p99_ms(self) -> float:
        return _percentile_ms(self.on_path_ns, 0.99)


@dataclass(frozen=True, slots=True)
class OperationProfile:
    """What one operation (``empty``, ``hold``, ``post``) does, and the same SQL without the
    ledger: medians in ms of the captured statements replayed through the bare drivers."""

    key: str
    statements: int  # SQL statements besides BEGIN and COMMIT
    thread_hand_offs: float | None  # calls handed to the aiosqlite thread (None: PostgreSQL)
    bare_async_ms: float  # aiosqlite or asyncpg, no SQLAlchemy
    in_process_ms: float | None  # stdlib sqlite3 on this thread (None: PostgreSQL)


@dataclass(frozen=True, slots=True)
class DatabaseResult:
    database: str  # "sqlite" or "postgresql"
    server: str  # version and the settings that decide commit cost
    latency: tuple[OperationLatency, ...]
    throughput: tuple[ThroughputResult, ...]
    profile: tuple[OperationProfile, ...]
    time_shares: tuple[tuple[str, float], ...]  # cProfile of hold + post: (where, share)
    top_functions: str  # cProfile of hold + post, by own time
    holds_settled: int

    @property
    def name(self) -> str:
        return _DATABASE_NAMES[self.database]

    def latency_of(self, key: str) -> OperationLatency:
        for latency in self.latency:
            if latency.key == key:
                return latency
        raise KeyError(key)


@dataclass(frozen=True, slots=True)
class Machine:
    cpu_model: str
    logical_cpus: int
    system: str
    python: str
    packages: tuple[tuple[str, str], ...]

    @classmethod
    def describe(cls) -> Machine:
        return cls(
            **common_machine_facts(("SQLAlchemy", "aiosqlite", "asyncpg", "greenlet")),
        )


@dataclass(frozen=True, slots=True)
class Report:
    results: tuple[DatabaseResult, ...]
    settings: Settings
    machine: Machine
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    finished_at: datetime
    revision: str

    def result(self, database: str) -> DatabaseResult | None:
        return next((r for r in self.results if r.database == database), None)


# -- databases -----------------------------------------------------------------------------------


@asynccontextmanager
async def fresh_database(
    database: str, *, postgres_admin_url: str, sqlite_dir: Path | None = None
) -> AsyncIterator[str]:
    """The URL of an empty database, removed on exit: a SQLite file in a temporary directory
    (under ``sqlite_dir`` if given), or a PostgreSQL database created on the server at
    ``postgres_admin_url``, which must allow CREATE DATABASE."""
    if database == "sqlite":
        with tempfile.TemporaryDirectory(prefix="shareai-bench-", dir=sqlite_dir) as directory:
            yield f"sqlite+aiosqlite:///{Path(directory) / 'ledger.db'}"
        return
    if database != "postgresql":
        raise ValueError(f"unknown database {database!r}")
    name = f"shareai_bench_{uuid.uuid4().hex[:16]}"
    # CREATE and DROP DATABASE cannot run inside a transaction.
    admin = create_async_engine(
        postgres_admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield (
                make_url(postgres_admin_url)
                .set(database=name)
                .render_as_string(hide_password=False)
            )
        finally:
            async with admin.connect() as connection:
                await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


@dataclass(frozen=True, slots=True)
class _Ledger:
    """A migrated database with its accounts: customer ``i`` is client ``i``'s wallet."""

    url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    customers: tuple[str, ...]
    hold_micro_usd: int
    credits: tuple[Credit, ...]


async def _open_ledger(url: str, customers: int) -> _Ledger:
    await migrate(url)
    # One pooled connection per client, plus the batch writer's.
    engine = create_engine(url, pool_size=customers + 1, max_overflow=0)
    sessions = create_session_factory(engine)
    async with sessions.begin() as session:
        provider, _ = await create_account(session, Role.PROVIDER, "Bench Provider")
        builder, _ = await create_account(session, Role.BUILDER, "Bench Builder")
        ids = []
        for number in range(customers):
            customer, _ = await create_account(session, Role.CUSTOMER, f"Bench Customer {number}")
            await top_up(
                session,
                customer.id,
                CUSTOMER_CREDITS_MICRO_USD,
                transfer_id=f"bench-top-up-{number}",
            )
            ids.append(customer.id)
    charge = charge_for(PRICING, PROMPT_TOKENS, COMPLETION_TOKENS)
    return _Ledger(
        url=url,
        engine=engine,
        sessions=sessions,
        customers=tuple(ids),
        hold_micro_usd=hold_amount_for(PRICING, PROMPT_TOKENS, MAX_TOKENS),
        credits=credits_for(charge, provider_account_id=provider.id, builder_account_id=builder.id),
    )


async def _describe_server(ledger: _Ledger) -> str:
    async with ledger.sessions.begin() as session:
        if ledger.engine.dialect.name == "postgresql":
            version = await session.scalar(text("SHOW server_version"))
            synchronous_commit = await session.scalar(text("SHOW synchronous_commit"))
            return (
                f"PostgreSQL {version} via asyncpg, synchronous_commit={synchronous_commit},"
                f" server at {make_url(ledger.url).host}"
            )
        version = await session.scalar(text("SELECT sqlite_version()"))
        journal = await session.scalar(text("PRAGMA journal_mode"))
        synchronous = await session.scalar(text("PRAGMA synchronous"))
    database = make_url(ledger.url).database or ""
    modes = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    return (
        f"SQLite {version} via aiosqlite, a file in {Path(database).parent.parent},"
        f" journal_mode={journal}, synchronous={modes.get(int(synchronous or 0), synchronous)}"
    )


# -- latency -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Samples:
    wall_ns: list[int] = field(default_factory=list)
    cpu_ns: list[int] = field(default_factory=list)

    @contextmanager
    def timing(self) -> Iterator[None]:
        """Time the block (wall clock and this thread's CPU); nothing is kept if it raises."""
        cpu, wall = time.thread_time_ns(), time.perf_counter_ns()
        yield
        self.wall_ns.append(time.perf_counter_ns() - wall)
        self.cpu_ns.append(time.thread_time_ns() - cpu)


async def _empty_transaction(ledger: _Ledger) -> None:
    async with ledger.sessions.begin() as session:
        await session.execute(SELECT_ONE)


async def _hold(ledger: _Ledger, request_id: str, customer: int = 0) -> None:
    async with ledger.sessions.begin() as session:
        await place_hold(
            session,
            request_id,
            ledger.customers[customer],
            ledger.hold_micro_usd,
            reference=request_id,
        )


async def _post(ledger: _Ledger, request_id: str) -> None:
    async with ledger.sessions.begin() as session:
        await post_hold(session, request_id, ledger.credits)


async def measure_latency(ledger: _Ledger, settings: Settings) -> tuple[OperationLatency, ...]:
    """Sequential requests, each: an empty transaction, a hold, a post (interleaved)."""
    samples = {key: _Samples() for key in ("empty", "hold", "post")}
    for number in range(settings.warmup_requests + settings.latency_requests):
        if number == settings.warmup_requests:
            samples = {key: _Samples() for key in samples}
        request_id = f"latency-{number}"
        with samples["empty"].timing():
            await _empty_transaction(ledger)
        with samples["hold"].timing():
            await _hold(ledger, request_id)
        with samples["post"].timing():
            await _post(ledger, request_id)
    hold, post = samples["hold"], samples["post"]
    request = _Samples(
        [a + b for a, b in zip(hold.wall_ns, post.wall_ns, strict=True)],
        [a + b for a, b in zip(hold.cpu_ns, post.cpu_ns, strict=True)],
    )
    samples["request"] = request
    return tuple(
        OperationLatency(key, tuple(samples[key].wall_ns), tuple(samples[key].cpu_ns))
        for key in OPERATIONS
    )


# -- throughput ----------------------------------------------------------------------------------


async def measure_throughput(
    ledger: _Ledger, workload: Workload, clients: int, requests: int, batch_size: int
) -> ThroughputResult:
    """``requests`` (rounded down to a multiple of ``clients``) from ``clients`` concurrent
    clients, each on its own sessions and wallet; the wall time until every one is settled.

    Raises RuntimeError if a batched posting does not settle its hold.
    """
    per_client = requests // clients
    total = per_client * clients
    if per_client < 1:
        raise ValueError(f"{requests} requests cannot be split over {clients} clients")
    tag = f"{workload.name.lower()}-{clients}"
    on_path: list[int] = []
    postings: asyncio.Queue[Posting] = asyncio.Queue()

    async def client(number: int) -> None:
        for serial in range(per_client):
            request_id = f"{tag}-{number}-{serial}"
            started = time.perf_counter_ns()
            if workload is Workload.EMPTY:
                await _empty_transaction(ledger)
            else:
                await _hold(ledger, request_id, number)
            on_path.append(time.perf_counter_ns() - started)
            if workload is Workload.PER_REQUEST:
                await _post(ledger, request_id)
            elif workload is Workload.BATCHED:
                postings.put_nowait(Posting(request_id, ledger.credits))

    async def batch_writer() -> None:
        posted = 0
        while posted < total:
            batch = [await postings.get()]
            while len(batch) < min(batch_size, total - posted):
                batch.append(await postings.get())
            async with ledger.sessions.begin() as session:
                outcomes = await post_holds(session, batch)
            unsettled = [o for o in outcomes if not isinstance(o, Settlement)]
            if unsettled:
                raise RuntimeError(f"a batched posting failed: {unsettled[0]!r}")
            posted += len(batch)

    started = time.perf_counter_ns()
    async with asyncio.TaskGroup() as group:
        for number in range(clients):
            group.create_task(client(number))
        if workload is Workload.BATCHED:
            group.create_task(batch_writer())
    elapsed = time.perf_counter_ns() - started
    return ThroughputResult(workload, clients, total, max(elapsed, 1), tuple(on_path))


# -- where the time goes -------------------------------------------------------------------------

# (sql, parameters, executemany), as SQLAlchemy handed them to the driver
_Statement = tuple[str, Any, bool]


def _with_id(parameters: Any, request_id: str) -> Any:
    """The captured parameters with the captured request id (and the ids derived from it,
    such as ``<id>#hold``) replaced by ``request_id``."""
    if isinstance(parameters, str):
        return parameters.replace(_CAPTURE_ID, request_id)
    if isinstance(parameters, tuple):
        return tuple(_with_id(value, request_id) for value in parameters)
    if isinstance(parameters, list):
        return [_with_id(value, request_id) for value in parameters]
    return parameters


async def _capture_statements(ledger: _Ledger) -> dict[str, list[_Statement]]:
    """The SQL each operation sends, for the request ``_CAPTURE_ID`` (BEGIN left out)."""
    captured: list[_Statement] = []

    def capture(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, many: bool
    ) -> None:
        if not statement.startswith("BEGIN"):
            captured.append((statement, parameters, many))

    operations: dict[str, Callable[[], Awaitable[None]]] = {
        "empty": lambda: _empty_transaction(ledger),
        "hold": lambda: _hold(ledger, _CAPTURE_ID),
        "post": lambda: _post(ledger, _CAPTURE_ID),
    }
    statements: dict[str, list[_Statement]] = {}
    event.listen(ledger.engine.sync_engine, "before_cursor_execute", capture)
    try:
        for key, operation in operations.items():
            await operation()
            statements[key], captured[:] = list(captured), []
    finally:
        event.remove(ledger.engine.sync_engine, "before_cursor_execute", capture)
    return statements


def _time_group(code: Any) -> str:
    """Which part of the stack a cProfile entry belongs to."""
    if isinstance(code, str):  # a built-in
        if "epoll" in code or "select" in code:
            return "waiting in the event loop (for the thread or the server)"
        if "SimpleQueue" in code:
            return "aiosqlite (main-thread side)"
        if "greenlet" in code:
            return "SQLAlchemy"
        return "other built-ins"
    path = code.co_filename.replace("\\", "/")
    for marker, group in (
        ("/sqlalchemy/", "SQLAlchemy"),
        ("/aiosqlite/", "aiosqlite (main-thread side)"),
        ("/asyncpg/", "asyncpg"),
        ("/coordinator/", "ledger code"),
        ("/asyncio/", "asyncio event loop"),
        ("/selectors.py", "asyncio event loop"),
    ):
        if marker in path:
            return group
    return "other Python"


async def _profile_operations(
    ledger: _Ledger, count: int
) -> tuple[dict[str, float | None], tuple[tuple[str, float], ...], str]:
    """cProfile ``count`` requests on the main thread. Returns per operation the calls handed
    to the aiosqlite thread (None on PostgreSQL), and for hold + post the share of the time per
    part of the stack, largest first, and the top functions by own time."""
    profilers = {key: cProfile.Profile() for key in ("empty", "hold", "post")}

    @contextmanager
    def profiled(key: str) -> Iterator[None]:
        profilers[key].enable()
        try:
            yield
        finally:
            profilers[key].disable()

    for number in range(count):
        request_id = f"profile-{number}"
        with profiled("empty"):
            await _empty_transaction(ledger)
        with profiled("hold"):
            await _hold(ledger, request_id)
        with profiled("post"):
            await _post(ledger, request_id)
    on_sqlite = ledger.engine.dialect.name == "sqlite"
    hand_offs: dict[str, float | None] = {}
    for key, profiler in profilers.items():
        # aiosqlite hands each call to its connection's thread through a SimpleQueue.
        puts = sum(
            entry.callcount
            for entry in profiler.getstats()
            if isinstance(entry.code, str) and "SimpleQueue" in entry.code
        )
        hand_offs[key] = puts / count if on_sqlite else None
    seconds: dict[str, float] = defaultdict(float)
    for key in ("hold", "post"):
        for entry in profilers[key].getstats():
            seconds[_time_group(entry.code)] += entry.inlinetime
    total = sum(seconds.values()) or 1.0
    shares = tuple(
        (group, spent / total) for group, spent in sorted(seconds.items(), key=lambda i: -i[1])
    )
    stream = io.StringIO()
    stats = pstats.Stats(profilers["hold"], stream=stream)
    stats.add(profilers["post"])
    stats.sort_stats("tottime").print_stats(15)
    return hand_offs, shares, stream.getvalue()


_Replay = Callable[[Sequence[_Statement], str], Awaitable[None]]


@asynccontextmanager
async def _bare_drivers(ledger: _Ledger) -> AsyncIterator[dict[str, _Replay]]:
    """Replays of captured statements in one transaction on a connection of the bare driver:
    ``async`` (aiosqlite or asyncpg) and, for SQLite, ``in_process`` (sqlite3, this thread)."""
    async with AsyncExitStack() as stack:
        replays: dict[str, _Replay] = {}
        if ledger.engine.dialect.name == "sqlite":
            path = make_url(ledger.url).database or ""
            pragmas = (
                "PRAGMA foreign_keys = ON",
                f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}",
                "PRAGMA synchronous = NORMAL",
            )
            local = sqlite3.connect(path, isolation_level=None)
            stack.callback(local.close)
            threaded = await aiosqlite.connect(path, isolation_level=None)
            stack.push_async_callback(threaded.close)
            for pragma in pragmas:
                local.execute(pragma)
                await threaded.execute(pragma)

            async def in_process(statements: Sequence[_Statement], request_id: str) -> None:
                local.execute("BEGIN IMMEDIATE")
                for sql, parameters, many in statements:
                    if many:
                        local.executemany(sql, _with_id(parameters, request_id))
                    else:
                        local.execute(sql, _with_id(parameters, request_id)).fetchall()
                local.execute("COMMIT")

            async def through_thread(statements: Sequence[_Statement], request_id: str) -> None:
                await threaded.execute("BEGIN IMMEDIATE")
                for sql, parameters, many in statements:
                    if many:
                        await threaded.executemany(sql, _with_id(parameters, request_id))
                    else:
                        await threaded.execute_fetchall(sql, _with_id(parameters, request_id))
                await threaded.execute("COMMIT")

            replays["async"], replays["in_process"] = through_thread, in_process
        else:
            # asyncpg's own connection under a pooled one: SQLAlchemy is bypassed, not involved.
            pooled = await stack.enter_async_context(ledger.engine.connect())
            connection = (await pooled.get_raw_connection()).driver_connection
            assert connection is not None  # a live pooled connection has its driver's

            async def over_network(statements: Sequence[_Statement], request_id: str) -> None:
                async with connection.transaction():
                    for sql, parameters, many in statements:
                        if many:
                            await connection.executemany(sql, _with_id(parameters, request_id))
                        else:
                            await connection.fetch(sql, *_with_id(parameters, request_id))

            replays["async"] = over_network
        yield replays


async def measure_where_time_goes(
    ledger: _Ledger, count: int
) -> tuple[tuple[OperationProfile, ...], tuple[tuple[str, float], ...], str]:
    """Per operation: its SQL, its aiosqlite hand-offs (cProfile), and that SQL replayed
    ``count`` times through the bare drivers (medians); plus the profile of hold + post."""
    statements = await _capture_statements(ledger)
    hand_offs, shares, top = await _profile_operations(ledger, count)
    replayed: dict[tuple[str, str], list[int]] = defaultdict(list)
    async with _bare_drivers(ledger) as replays:
        for number in range(count):
            for driver, replay in replays.items():
                request_id = f"replay-{driver}-{number}"
                for key in ("empty", "hold", "post"):  # a post needs its hold first
                    started = time.perf_counter_ns()
                    await replay(statements[key], request_id)
                    replayed[key, driver].append(time.perf_counter_ns() - started)
    profiles = tuple(
        OperationProfile(
            key=key,
            statements=len(statements[key]),
            thread_hand_offs=hand_offs[key],
            bare_async_ms=statistics.median(replayed[key, "async"]) / 1e6,
            in_process_ms=(
                statistics.median(replayed[key, "in_process"]) / 1e6
                if (key, "in_process") in replayed
                else None
            ),
        )
        for key in ("empty", "hold", "post")
    )
    return profiles, shares, top


# -- one database, all databases -----------------------------------------------------------------


async def _settled_holds(ledger: _Ledger) -> int:
    async with ledger.sessions.begin() as session:
        count = await session.scalar(
            select(func.count()).select_from(LedgerHold).where(LedgerHold.state == HoldState.POSTED)
        )
    return int(count or 0)


async def bench_database(
    database: str,
    settings: Settings,
    *,
    postgres_admin_url: str = DEFAULT_POSTGRES_ADMIN_URL,
    sqlite_dir: Path | None = None,
) -> DatabaseResult:
    """Every measurement on a fresh ``database`` ("sqlite" or "postgresql").

    Raises RuntimeError if a request is left unsettled or the ledger's audit finds a violation.
    """
    async with fresh_database(
        database, postgres_admin_url=postgres_admin_url, sqlite_dir=sqlite_dir
    ) as url:
        ledger = await _open_ledger(url, max(settings.clients))
        try:
            server = await _describe_server(ledger)
            latency = await measure_latency(ledger, settings)
            throughput = [  # the workloads interleaved per concurrency level
                await measure_throughput(
                    ledger, workload, clients, settings.throughput_requests, settings.batch_size
                )
                for clients in settings.clients
                for workload in Workload
            ]
            profile, shares, top = await measure_where_time_goes(ledger, settings.profile_requests)
            settled = await _settled_holds(ledger)
            drivers = 2 if database == "sqlite" else 1  # replays: aiosqlite, sqlite3; asyncpg
            expected = (
                settings.warmup_requests
                + settings.latency_requests
                + sum(r.requests for r in throughput if r.workload is not Workload.EMPTY)
                + 1  # the captured request
                + settings.profile_requests * (1 + drivers)  # profiled, then replayed
            )
            if settled != expected:
                raise RuntimeError(f"{settled} holds settled on {database}, expected {expected}")
            async with ledger.sessions.begin() as session:
                violations = await audit(session)
            if violations:
                raise RuntimeError(f"the ledger audit failed on {database}: {violations[0]}")
        finally:
            await ledger.engine.dispose()
    return DatabaseResult(
        database=database,
        server=server,
        latency=latency,
        throughput=tuple(throughput),
        profile=profile,
        time_shares=shares,
        top_functions=top,
        holds_settled=settled,
    )


def run_benchmarks(
    settings: Settings,
    databases: Sequence[str] = DATABASES,
    *,
    postgres_admin_url: str = DEFAULT_POSTGRES_ADMIN_URL,
    sqlite_dir: Path | None = None,
) -> tuple[DatabaseResult, ...]:
    """Measure each database in turn (one event loop per database)."""
    return tuple(
        asyncio.run(
            bench_database(
                database,
                settings,
                postgres_admin_url=postgres_admin_url,
                sqlite_dir=sqlite_dir,
            )
        )
        for database in databases
    )


# -- output --------------------------------------------------------------------------------------

_LATENCY_HEADER = "Database|Operation|median ms|p90 ms|p99 ms|x empty txn|main-thread CPU ms"
_THROUGHPUT_HEADER = (
    "Database|Workload|Clients|Requests|Wall s|Settled / s|On-path ms median|On-path ms p99"
)
_PROFILE_HEADER = (
    "Database|Operation|SQL statements|aiosqlite thread hand-offs|through the ledger ms"
    "|main-thread CPU ms|same SQL, bare async driver ms|same SQL, sqlite3 in-process ms"
)


def _latency_rows(report: Report) -> list[list[str]]:
    return [
        [
            result.name,
            OPERATIONS[latency.key][0],
            *(f"{ms:.3f}" for ms in (latency.median_ms, latency.p90_ms, latency.p99_ms)),
            f"{latency.median_ms / result.latency_of('empty').median_ms:.1f}",
            f"{latency.cpu_median_ms:.3f}",
        ]
        for result in report.results
        for latency in result.latency
    ]


def _throughput_rows(report: Report) -> list[list[str]]:
    return [
        [
            result.name,
            (
                f"hold + post_holds, {report.settings.batch_size} a batch"
                if run.workload is Workload.BATCHED
                else str(run.workload.value)
            ),
            str(run.clients),
            f"{run.requests:,}",
            f"{run.elapsed_ns / 1e9:.2f}",
            f"{run.per_s:,.0f}",
            f"{run.on_path_median_ms:.2f}",
            f"{run.on_path_p99_ms:.2f}",
        ]
        for result in report.results
        for run in result.throughput
    ]


def _profile_rows(report: Report) -> list[list[str]]:
    def optional(value: float | None, decimals: int) -> str:
        return "-" if value is None else f"{value:.{decimals}f}"

    return [
        [
            result.name,
            OPERATIONS[profile.key][0],
            str(profile.statements),
            optional(profile.thread_hand_offs, 0),
            f"{result.latency_of(profile.key).median_ms:.3f}",
            f"{result.latency_of(profile.key).cpu_median_ms:.3f}",
            f"{profile.bare_async_ms:.3f}",
            optional(profile.in_process_ms, 3),
        ]
        for result in report.results
        for profile in result.profile
    ]


def _shares_line(result: DatabaseResult) -> str:
    shares = ", ".join(f"{group} {share:.0%}" for group, share in result.time_shares)
    return f"cProfile of hold + post on {result.name}, share of the main thread's time: {shares}."


def _aligned(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Plain-text columns: the first two left-aligned, the figures right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) if column < 2 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return lines


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def render_table(report: Report, *, top_functions: bool = False) -> str:
    """The results as plain-text tables, for the terminal."""
    lines = ["Latency, one request at a time", ""]
    lines += _aligned(_LATENCY_HEADER.split("|"), _latency_rows(report))
    lines += ["", "Throughput: settled requests (or empty transactions) per second", ""]
    lines += _aligned(_THROUGHPUT_HEADER.split("|"), _throughput_rows(report))
    lines += ["", "Where the time goes (medians)", ""]
    lines += _aligned(_PROFILE_HEADER.split("|"), _profile_rows(report))
    for result in report.results:
        lines += ["", _shares_line(result)]
        if top_functions:
            lines += [result.top_functions.rstrip()]
    lines += ["", _target_line(report)]
    lines += [f"{result.name}: {result.server}" for result in report.results]
    context = (
        f"{report.machine.cpu_model}, {report.machine.logical_cpus} logical CPUs,"
        f" {report.machine.python}, load {report.load_before[0]:.2f} -> {report.load_after[0]:.2f}"
    )
    if report.settings == QUICK:
        context += " (--quick: a smoke test, the figures mean nothing)"
    return "\n".join([*lines, context])


def render_markdown(report: Report) -> str:
    """The ledger section of docs/benchmarks.md (without the markers)."""
    machine = report.machine
    settings = report.settings
    packages = ", ".join(f"{name} {version}" for name, version in machine.packages)
    return "\n".join(
        [
            f"Measured {report.finished_at:%Y-%m-%d %H:%M} UTC with"
            f" `python -m benchmarks.bench_ledger --write`, at {report.revision}.",
            "",
            f"- CPU: {machine.cpu_model}, {machine.logical_cpus} logical CPUs, process not"
            " pinned (the aiosqlite threads and the PostgreSQL server need CPUs too)",
            f"- System: {machine.system}; {machine.python}; {packages}",
            *(f"- {result.name}: {result.server}" for result in report.results),
            f"- Method: latency: {settings.latency_requests:,} sequential requests after"
            f" {settings.warmup_requests:,} warm-up requests, the three transactions"
            f" interleaved; throughput: one run of {settings.throughput_requests:,} requests"
            " per row, each client on its own sessions and wallet, the workloads interleaved"
            f" per number of clients; where the time goes: {settings.profile_requests:,}"
            " requests profiled and replayed per operation. Garbage collector on. Every"
            " request checked settled, and the ledger audit passed.",
            f"- Load average (1 min) before / after: {report.load_before[0]:.2f} /"
            f" {report.load_after[0]:.2f}",
            "",
            "**Latency of one request, one at a time** (x empty txn: the median over the empty"
            " transaction's; main-thread CPU: the coordinator process's own Python work, the"
            " rest of the wall time is waiting):",
            "",
            *_markdown_table(_LATENCY_HEADER.split("|"), _latency_rows(report)),
            "",
            f"**{_target_line(report)}**",
            "",
            "**Throughput** (on-path: the latency of each request's hold transaction, or of"
            " the empty transaction, under that load):",
            "",
            *_markdown_table(_THROUGHPUT_HEADER.split("|"), _throughput_rows(report)),
            "",
            "**Where the time goes** (medians; the same statements replayed without"
            " SQLAlchemy, each in one transaction: aiosqlite one call per statement, sqlite3 on"
            " the calling thread, asyncpg on loopback):",
            "",
            *_markdown_table(_PROFILE_HEADER.split("|"), _profile_rows(report)),
            "",
            *(_shares_line(result) for result in report.results),
        ]
    )


def _target_line(report: Report) -> str:
    sqlite = report.result("sqlite")
    if sqlite is None:
        return f"Target: hold + post < {TARGET_REQUEST_PATH_MS} ms median with SQLite: not measured"
    request = sqlite.latency_of("request").median_ms
    empty = sqlite.latency_of("empty").median_ms
    verdict = "met" if request < TARGET_REQUEST_PATH_MS else "MISSED"
    return (
        f"Target: hold + post add < {TARGET_REQUEST_PATH_MS} ms median to the request path with"
        f" SQLite: {verdict} by the ledger alone ({request:.2f} ms,"
        f" {request / TARGET_REQUEST_PATH_MS:.1f}x the target; one empty transaction takes"
        f" {empty:.2f} ms)"
    )


def write_docs_section(path: Path, section: str) -> None:
    """Replace the text between the bench-ledger markers in ``path`` with ``section``.

    Raises ValueError if the file does not hold both markers, in order.
    """
    write_between_markers(path, DOCS_START, DOCS_END, section)


def source_revision() -> str:
    """The git commit of the measured tree, noting uncommitted changes to the ledger's code."""
    repo = Path(__file__).resolve().parent.parent
    paths = ["coordinator/ledger", "coordinator/db", "benchmarks/bench_ledger.py"]
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(repo), "status", "--porcelain", "--", *paths],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "an unknown revision (not a git checkout)"
    changed = sorted({line[3:].strip() for line in changes.splitlines()})
    return f"commit {commit}" + (
        f" with uncommitted changes ({', '.join(changed)})" if changed else ""
    )


# -- command line --------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_ledger",
        description="Settled requests per second through the ledger, and the hold's latency.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a few requests only (smoke test; meaningless)"
    )
    parser.add_argument(
        "--databases",
        default=",".join(DATABASES),
        help="comma-separated, of: %(default)s",
    )
    parser.add_argument("--write", action="store_true", help="rewrite the ledger's docs section")
    parser.add_argument("--docs", type=Path, default=DEFAULT_DOCS_PATH, help="%(default)s")
    parser.add_argument(
        "--requests",
        type=int,
        default=FULL.throughput_requests,
        help="requests per throughput run (%(default)s)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also print cProfile's top functions"
    )
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES_ADMIN_URL,
        help="a server database where a throwaway one may be created (%(default)s)",
    )
    parser.add_argument(
        "--sqlite-dir", type=Path, default=None, help="where the SQLite file goes (temp dir)"
    )
    args = parser.parse_args(argv)
    args.databases = tuple(name.strip() for name in args.databases.split(",") if name.strip())
    unknown = [name for name in args.databases if name not in DATABASES]
    if unknown or not args.databases:
        parser.error(f"--databases takes {', '.join(DATABASES)}; got {unknown or 'none'}")
    if args.quick and args.write:
        parser.error("--quick figures are not representative; refusing to write them to the docs")
    if args.requests < max(FULL.clients):
        parser.error(f"--requests must be at least {max(FULL.clients)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    settings = QUICK if args.quick else replace(FULL, throughput_requests=args.requests)
    load_before = os.getloadavg()
    results = run_benchmarks(
        settings,
        args.databases,
        postgres_admin_url=args.postgres_url,
        sqlite_dir=args.sqlite_dir,
    )
    report = Report(
        results=results,
        settings=settings,
        machine=Machine.describe(),
        load_before=load_before,
        load_after=os.getloadavg(),
        finished_at=datetime.now(UTC),
        revision=source_revision(),
    )
    print(render_table(report, top_functions=args.profile))
    if args.write:
        write_docs_section(args.docs, render_markdown(report))
        print(f"\nwrote {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
