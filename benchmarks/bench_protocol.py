"""Throughput of the protocol's hot paths on one CPU core, through its public API.

Every scenario drives a real :class:`~protocol.CoordinatorSession` / :class:`~protocol.NodeSession`
pair that has completed the signed handshake, with the system clock, exactly as the coordinator
and the node agent do::

    chunk send      node.send(Chunk(...))          model construction, msgpack, HMAC-SHA256
    chunk receive   coordinator.receive(frame)     HMAC check, limited msgpack, strict schema
    job send        coordinator.send(Job(...))     a chat job: system + user message, sampling
    job receive     node.receive(frame)
    receipt sign    UsageReceipt.sign(identity)    Ed25519
    receipt verify  UsageReceipt.verify(key, sig)  Ed25519
    done send       node.done(...)                 receipt signature + frame
    done receive    coordinator.receive(frame)     frame path + receipt verification

A receiving session accepts each sequence number once, so every run first produces its frames on
the sender (timed as the send scenario) and then feeds them, in order, to the peer (timed as the
receive scenario). Runs interleave the scenarios, so noise from other processes spreads over all
of them. The process is pinned to one CPU for the whole measurement.

    python -m benchmarks.bench_protocol                  # full run, prints a table
    python -m benchmarks.bench_protocol --write-docs     # ... and updates docs/benchmarks.md
    python -m benchmarks.bench_protocol --quick          # a few iterations: a smoke test only
"""

from __future__ import annotations

import argparse
import gc
import os
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgpack
from cryptography.hazmat.backends.openssl import backend as openssl_backend

from benchmarks._machine import common_machine_facts, write_between_markers
from protocol import (
    ChatMessage,
    Chunk,
    CoordinatorSession,
    Done,
    Hardware,
    Identity,
    Job,
    Message,
    NodeSession,
    SamplingParams,
    Timings,
    Usage,
    UsageReceipt,
)

__all__ = [
    "DEFAULT_DOCS_PATH",
    "DOCS_END",
    "DOCS_START",
    "FULL",
    "QUICK",
    "SCENARIOS",
    "TARGET_CHUNK_FRAMES_PER_S",
    "Machine",
    "Report",
    "Result",
    "Scenario",
    "Settings",
    "establish_sessions",
    "main",
    "pinned_to_one_cpu",
    "render_markdown",
    "render_table",
    "run_benchmarks",
    "source_revision",
    "write_docs_section",
]

TARGET_CHUNK_FRAMES_PER_S = 50_000
DOCS_START = "<!-- bench-protocol:start -->"
DOCS_END = "<!-- bench-protocol:end -->"
DEFAULT_DOCS_PATH = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"

# A streamed chunk carries a few coalesced tokens: 16-24 characters, 4 tokens, no token ids.
CHUNK_TEXTS = (
    " the coordinator then",
    " routes each request",
    " to a node that serves",
    " the model at the best",
    " price, and streams the",
    " tokens straight back.",
)
CHUNK_TOKENS = 4
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
SYSTEM_PROMPT = (
    "You are a concise assistant. Answer in plain English, cite no sources you have not seen,"
    " and say so when you do not know."
)
USER_PROMPT = (
    "I run a small bakery and want to estimate how many loaves to bake each morning. Sales vary"
    " by weekday and weather, and unsold bread is wasted. Suggest a simple method I can keep in a"
    " spreadsheet, with an example for a rainy Tuesday."
)
JOB_DEADLINE_S = 120


@dataclass(frozen=True, slots=True)
class Scenario:
    key: str
    label: str
    call: str


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("chunk_send", "chunk: encode + authenticate", "NodeSession.send(Chunk(...))"),
    Scenario("chunk_receive", "chunk: verify + decode", "CoordinatorSession.receive"),
    Scenario("job_send", "job: encode + authenticate", "CoordinatorSession.send(Job(...))"),
    Scenario("job_receive", "job: verify + decode", "NodeSession.receive"),
    Scenario("receipt_sign", "usage receipt: sign", "UsageReceipt.sign"),
    Scenario("receipt_verify", "usage receipt: verify", "UsageReceipt.verify"),
    Scenario("done_send", "done: sign receipt + encode", "NodeSession.done(...)"),
    Scenario("done_receive", "done: verify + decode + receipt", "CoordinatorSession.receive"),
)
_TARGET_KEYS = ("chunk_send", "chunk_receive")


@dataclass(frozen=True, slots=True)
class Settings:
    ops_per_run: int
    runs: int
    warmup_ops: int


FULL = Settings(ops_per_run=20_000, runs=7, warmup_ops=2_000)
QUICK = Settings(ops_per_run=20, runs=2, warmup_ops=5)


@dataclass(frozen=True, slots=True)
class Result:
    """One scenario's timings: the elapsed nanoseconds of each run of ``ops_per_run`` calls."""

    scenario: Scenario
    ops_per_run: int
    elapsed_ns: tuple[int, ...]

    @property
    def ops_per_s(self) -> list[float]:
        return [self.ops_per_run * 1e9 / ns for ns in self.elapsed_ns]

    @property
    def median_ops_per_s(self) -> float:
        return statistics.median(self.ops_per_s)

    @property
    def min_ops_per_s(self) -> float:
        return min(self.ops_per_s)

    @property
    def max_ops_per_s(self) -> float:
        return max(self.ops_per_s)

    @property
    def median_us_per_op(self) -> float:
        return statistics.median(self.elapsed_ns) / self.ops_per_run / 1000


@dataclass(frozen=True, slots=True)
class Machine:
    cpu_model: str
    logical_cpus: int
    system: str
    python: str
    packages: tuple[tuple[str, str], ...]
    openssl_cryptography: str  # Ed25519, X25519, HKDF
    openssl_hashlib: str  # HMAC-SHA256 of every frame
    msgpack_c_extension: bool

    @classmethod
    def describe(cls) -> Machine:
        return cls(
            **common_machine_facts(("msgpack", "pydantic", "pydantic-core", "cryptography")),
            openssl_cryptography=openssl_backend.openssl_version_text(),
            openssl_hashlib=ssl.OPENSSL_VERSION,
            # The pure-Python fallback is ~10x slower; a wheel without the extension skews it all.
            msgpack_c_extension=msgpack.Packer.__module__ == "msgpack._cmsgpack",
        )


@dataclass(frozen=True, slots=True)
class Report:
    results: tuple[Result, ...]
    settings: Settings
    machine: Machine
    cpu: int | None
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    finished_at: datetime
    revision: str  # of the code measured: the git commit, and whether protocol/ was edited

    def result(self, key: str) -> Result:
        for result in self.results:
            if result.scenario.key == key:
                return result
        raise KeyError(key)

    @property
    def target_met(self) -> bool:
        return all(
            self.result(key).median_ops_per_s >= TARGET_CHUNK_FRAMES_PER_S for key in _TARGET_KEYS
        )


# -- sessions and workloads ----------------------------------------------------------------------


def establish_sessions() -> tuple[CoordinatorSession, NodeSession]:
    """A coordinator and a node session that have completed the real signed handshake."""
    coordinator_identity = Identity.generate()
    coordinator = CoordinatorSession(coordinator_identity)
    node = NodeSession(Identity.generate(), coordinator_identity.public_key, agent_version="bench")
    node.receive(coordinator.start())
    hardware = Hardware(cpu_model="bench", cpu_cores=1, memory_mib=1024, os="linux", gpus=[])
    coordinator.receive(node.hello(hardware, []))
    node.receive(coordinator.accept(heartbeat_interval_ms=5_000, max_jobs_in_flight=8))
    if not (coordinator.established and node.established):
        raise RuntimeError("handshake did not establish both sessions")
    return coordinator, node


class _Workload:
    """One established session pair; :meth:`run` times every scenario once."""

    def __init__(self) -> None:
        self.coordinator, self.node = establish_sessions()
        self._job_serial = 0

    def run(self, ops: int) -> dict[str, int]:
        elapsed: dict[str, int] = {}
        frames, elapsed["chunk_send"] = self._send_chunks(ops)
        elapsed["chunk_receive"] = _receive_all(self.coordinator, frames, Chunk)
        frames, elapsed["job_send"] = self._send_jobs(ops)
        elapsed["job_receive"] = _receive_all(self.node, frames, Job)
        coordinator_key = self.coordinator.identity.public_key.raw
        receipts = [self._receipt(coordinator_key, job_id) for job_id in self._job_ids(ops)]
        signatures, elapsed["receipt_sign"] = self._sign_receipts(receipts)
        elapsed["receipt_verify"] = self._verify_receipts(receipts, signatures)
        frames, elapsed["done_send"] = self._send_dones(ops)
        elapsed["done_receive"] = _receive_all(self.coordinator, frames, Done)
        return elapsed

    def _job_ids(self, count: int) -> list[str]:
        first = self._job_serial
        self._job_serial += count
        return [f"job_{serial:024x}" for serial in range(first, first + count)]

    def _send_chunks(self, ops: int) -> tuple[list[bytes], int]:
        # One job's stream: the agent builds a Chunk per coalesced group of tokens and sends it.
        (job_id,) = self._job_ids(1)
        texts = [CHUNK_TEXTS[i % len(CHUNK_TEXTS)] for i in range(ops)]
        send = self.node.send
        frames: list[bytes] = []
        append = frames.append
        gc.collect()
        started = time.perf_counter_ns()
        for index, text in enumerate(texts):
            append(send(Chunk(job_id=job_id, index=index, text=text, tokens=CHUNK_TOKENS)))
        return frames, time.perf_counter_ns() - started

    def _send_jobs(self, ops: int) -> tuple[list[bytes], int]:
        # The coordinator builds the whole job from the customer's request, then sends it.
        job_ids = self._job_ids(ops)
        deadline_ms = int((time.time() + JOB_DEADLINE_S) * 1000)
        send = self.coordinator.send
        frames: list[bytes] = []
        append = frames.append
        gc.collect()
        started = time.perf_counter_ns()
        for job_id in job_ids:
            job = Job(
                job_id=job_id,
                model=MODEL,
                kind="chat",
                messages=[
                    ChatMessage(role="system", content=SYSTEM_PROMPT),
                    ChatMessage(role="user", content=USER_PROMPT),
                ],
                prompt=None,
                sampling=SamplingParams(
                    max_tokens=512, temperature=0.7, top_p=0.95, stop=["\n\nUser:"]
                ),
                deadline_ms=deadline_ms,
            )
            append(send(job))
        return frames, time.perf_counter_ns() - started

    @staticmethod
    def _receipt(coordinator_key: bytes, job_id: str) -> UsageReceipt:
        return UsageReceipt(
            coordinator_key=coordinator_key,
            job_id=job_id,
            model=MODEL,
            prompt_tokens=87,
            completion_tokens=412,
            finish_reason="stop",
        )

    def _sign_receipts(self, receipts: list[UsageReceipt]) -> tuple[list[bytes], int]:
        identity = self.node.identity
        gc.collect()
        started = time.perf_counter_ns()
        signatures = [receipt.sign(identity) for receipt in receipts]
        return signatures, time.perf_counter_ns() - started

    def _verify_receipts(self, receipts: list[UsageReceipt], signatures: list[bytes]) -> int:
        node_key = self.node.identity.public_key
        gc.collect()
        started = time.perf_counter_ns()
        for receipt, signature in zip(receipts, signatures, strict=True):
            receipt.verify(node_key, signature)  # raises BadSignature: nothing to check after
        return time.perf_counter_ns() - started

    def _send_dones(self, ops: int) -> tuple[list[bytes], int]:
        job_ids = self._job_ids(ops)
        done = self.node.done
        frames: list[bytes] = []
        append = frames.append
        gc.collect()
        started = time.perf_counter_ns()
        for job_id in job_ids:
            frame = done(
                job_id=job_id,
                model=MODEL,
                usage=Usage(prompt_tokens=87, completion_tokens=412),
                finish_reason="stop",
                timings=Timings(queue_ms=3, time_to_first_token_ms=41, total_ms=5_120),
            )
            append(frame)
        return frames, time.perf_counter_ns() - started


def _receive_all(
    session: CoordinatorSession | NodeSession, frames: list[bytes], expected: type[Message]
) -> int:
    receive = session.receive
    message: Message | None = None
    gc.collect()
    started = time.perf_counter_ns()
    for frame in frames:
        message = receive(frame)
    elapsed = time.perf_counter_ns() - started
    if frames and type(message) is not expected:
        raise RuntimeError(f"expected {expected.TYPE} messages, received {message!r}")
    return elapsed


def run_benchmarks(settings: Settings) -> tuple[Result, ...]:
    """Time every scenario ``settings.runs`` times after one warm-up run (discarded)."""
    if settings.ops_per_run < 1 or settings.runs < 1:
        raise ValueError("ops_per_run and runs must be at least 1")
    workload = _Workload()
    if settings.warmup_ops > 0:
        workload.run(settings.warmup_ops)
    elapsed: dict[str, list[int]] = {scenario.key: [] for scenario in SCENARIOS}
    for _ in range(settings.runs):
        for key, ns in workload.run(settings.ops_per_run).items():
            elapsed[key].append(max(ns, 1))  # a coarse clock must not give a zero division
    return tuple(
        Result(scenario, settings.ops_per_run, tuple(elapsed[scenario.key]))
        for scenario in SCENARIOS
    )


@contextmanager
def pinned_to_one_cpu(cpu: int | None = None) -> Iterator[int]:
    """Restrict this thread to one CPU (``cpu``, else the highest allowed); restore on exit.

    Raises ValueError if ``cpu`` is not in the current affinity set.
    """
    allowed = os.sched_getaffinity(0)
    chosen = max(allowed) if cpu is None else cpu
    if chosen not in allowed:
        raise ValueError(f"CPU {chosen} is not available to this process ({sorted(allowed)})")
    os.sched_setaffinity(0, {chosen})
    try:
        yield chosen
    finally:
        os.sched_setaffinity(0, allowed)


# -- output ------------------------------------------------------------------------------------


def render_table(report: Report) -> str:
    """A plain-text table of the results, for the terminal."""
    header = ("scenario", "ops/s median", "min - max ops/s", "µs/op", "call")
    rows = [
        (
            r.scenario.label,
            f"{r.median_ops_per_s:,.0f}",
            f"{r.min_ops_per_s:,.0f} - {r.max_ops_per_s:,.0f}",
            f"{r.median_us_per_op:.2f}",
            r.scenario.call,
        )
        for r in report.results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    left_aligned = (0, len(header) - 1)  # labels and calls; the figures align right
    lines = [
        "  ".join(
            cell.ljust(width) if column in left_aligned else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join([*lines, "", _target_line(report), _context_line(report)])


def render_markdown(report: Report) -> str:
    """The protocol section of docs/benchmarks.md (without the markers)."""
    machine = report.machine
    settings = report.settings
    packages = ", ".join(f"{name} {version}" for name, version in machine.packages)
    extension = "C extension" if machine.msgpack_c_extension else "pure-Python fallback"
    pinned = f"pinned to CPU {report.cpu}" if report.cpu is not None else "not pinned"
    lines = [
        f"Measured {report.finished_at:%Y-%m-%d %H:%M} UTC at {report.revision} with"
        " `python -m benchmarks.bench_protocol --write-docs`.",
        "",
        f"- CPU: {machine.cpu_model}, {machine.logical_cpus} logical CPUs, process {pinned}",
        f"- System: {machine.system}; {machine.python}",
        f"- Packages: {packages} (msgpack {extension})",
        f"- OpenSSL: {machine.openssl_cryptography} in cryptography (Ed25519);"
        f" {machine.openssl_hashlib} in Python's hashlib (HMAC-SHA256)",
        f"- Method: {settings.runs} runs of {settings.ops_per_run:,} operations per scenario"
        f" after a {settings.warmup_ops:,}-operation warm-up; scenarios interleaved run by run;"
        " garbage collector on, collected before each timed loop",
        f"- Load average (1 min) before / after: {report.load_before[0]:.2f} /"
        f" {report.load_after[0]:.2f}",
        "",
        "| Scenario | Call | ops/s (median) | min - max ops/s | µs/op (median) |",
        "|---|---|---:|---:|---:|",
    ]
    lines.extend(
        f"| {r.scenario.label} | `{r.scenario.call}` | {r.median_ops_per_s:,.0f}"
        f" | {r.min_ops_per_s:,.0f} - {r.max_ops_per_s:,.0f} | {r.median_us_per_op:.2f} |"
        for r in report.results
    )
    lines.extend(["", f"**{_target_line(report)}**"])
    return "\n".join(lines)


def _target_line(report: Report) -> str:
    send = report.result("chunk_send").median_ops_per_s
    receive = report.result("chunk_receive").median_ops_per_s
    verdict = "met" if report.target_met else "MISSED"
    return (
        f"Target >= {TARGET_CHUNK_FRAMES_PER_S:,} chunk frames/s each way on one core: {verdict}"
        f" (send {send:,.0f}/s, receive {receive:,.0f}/s, medians)"
    )


def _context_line(report: Report) -> str:
    pinned = f"CPU {report.cpu}" if report.cpu is not None else "no CPU pinning"
    line = (
        f"{report.settings.runs} runs x {report.settings.ops_per_run:,} ops, {pinned},"
        f" load {report.load_before[0]:.2f} -> {report.load_after[0]:.2f},"
        f" {report.machine.python}"
    )
    if report.settings == QUICK:
        line += " (--quick: a smoke test, the figures mean nothing)"
    return line


def write_docs_section(path: Path, section: str) -> None:
    """Replace the text between the bench-protocol markers in ``path`` with ``section``.

    Raises ValueError if the file does not hold both markers, in order.
    """
    write_between_markers(path, DOCS_START, DOCS_END, section)


def source_revision() -> str:
    """The git commit of the measured tree, noting uncommitted changes under protocol/."""
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--", "protocol"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "an unknown revision (not a git checkout)"
    return f"commit {commit}" + (" with uncommitted changes to protocol/" if changes else "")


# -- command line ------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_protocol",
        description="Frames per second of the protocol's session hot paths on one CPU core.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a few iterations only (smoke test; meaningless)"
    )
    parser.add_argument(
        "--write-docs", action="store_true", help="rewrite the protocol section of the docs"
    )
    parser.add_argument("--docs", type=Path, default=DEFAULT_DOCS_PATH, help="%(default)s")
    parser.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: highest)")
    parser.add_argument("--runs", type=int, default=FULL.runs, help="timed runs (%(default)s)")
    parser.add_argument(
        "--ops", type=int, default=FULL.ops_per_run, help="operations per run (%(default)s)"
    )
    args = parser.parse_args(argv)
    if args.quick and args.write_docs:
        parser.error("--quick figures are not representative; refusing to write them to the docs")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    settings = (
        QUICK
        if args.quick
        else Settings(ops_per_run=args.ops, runs=args.runs, warmup_ops=FULL.warmup_ops)
    )
    load_before = os.getloadavg()
    with pinned_to_one_cpu(args.cpu) as cpu:
        results = run_benchmarks(settings)
    report = Report(
        results=results,
        settings=settings,
        machine=Machine.describe(),
        cpu=cpu,
        load_before=load_before,
        load_after=os.getloadavg(),
        finished_at=datetime.now(UTC),
        revision=source_revision(),
    )
    print(render_table(report))
    if args.write_docs:
        write_docs_section(args.docs, render_markdown(report))
        print(f"\nwrote {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
