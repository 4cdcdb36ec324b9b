"""The ledger benchmark runs end to end in --quick mode on SQLite and PostgreSQL; its figures
must exist and its requests must all be settled, never be fast."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from benchmarks.bench_ledger import (
    DATABASES,
    DEFAULT_DOCS_PATH,
    DOCS_END,
    DOCS_START,
    OPERATIONS,
    QUICK,
    DatabaseResult,
    Machine,
    Report,
    Workload,
    main,
    render_markdown,
    render_table,
    run_benchmarks,
    write_docs_section,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
SECTION_TITLE = "## Settlement: the ledger on the request path"


@pytest.fixture(scope="module")
def quick_results() -> tuple[DatabaseResult, ...]:
    # PostgreSQL is required, as for the storage tests: a throwaway database on the local server.
    return run_benchmarks(QUICK, DATABASES)


def quick_report(results: tuple[DatabaseResult, ...]) -> Report:
    return Report(
        results=results,
        settings=QUICK,
        machine=Machine.describe(),
        load_before=(0.5, 0.4, 0.3),
        load_after=(0.6, 0.4, 0.3),
        finished_at=datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
        revision="commit abc1234",
    )


def test_every_database_has_every_latency_figure(
    quick_results: tuple[DatabaseResult, ...],
) -> None:
    assert [result.database for result in quick_results] == list(DATABASES)
    for result in quick_results:
        assert [latency.key for latency in result.latency] == list(OPERATIONS)
        for latency in result.latency:
            assert len(latency.wall_ns) == len(latency.cpu_ns) == QUICK.latency_requests
            assert 0 < latency.median_ms <= latency.p90_ms <= latency.p99_ms
        request = result.latency_of("request")
        hold, post = result.latency_of("hold"), result.latency_of("post")
        assert request.wall_ns == tuple(
            a + b for a, b in zip(hold.wall_ns, post.wall_ns, strict=True)
        )


def test_every_throughput_run_settles_all_its_requests(
    quick_results: tuple[DatabaseResult, ...],
) -> None:
    for result in quick_results:
        runs = [(run.clients, run.workload) for run in result.throughput]
        assert runs == [(clients, workload) for clients in QUICK.clients for workload in Workload]
        for run in result.throughput:
            assert run.requests == QUICK.throughput_requests // run.clients * run.clients
            assert len(run.on_path_ns) == run.requests
            assert run.per_s > 0
        settled_by_throughput = sum(
            run.requests for run in result.throughput if run.workload is not Workload.EMPTY
        )
        assert result.holds_settled > QUICK.latency_requests + settled_by_throughput


def test_where_the_time_goes_counts_statements_and_replays_them(
    quick_results: tuple[DatabaseResult, ...],
) -> None:
    for result in quick_results:
        assert [profile.key for profile in result.profile] == ["empty", "hold", "post"]
        empty, hold, post = result.profile
        assert empty.statements == 1  # SELECT 1
        assert hold.statements >= 2
        assert post.statements >= 2
        assert all(profile.bare_async_ms > 0 for profile in result.profile)
        assert 0.99 < sum(share for _, share in result.time_shares) < 1.01
        assert "ncalls" in result.top_functions
        on_sqlite = result.database == "sqlite"
        for profile in result.profile:
            assert (profile.thread_hand_offs is not None) is on_sqlite
            assert (profile.in_process_ms is not None) is on_sqlite
        if on_sqlite:  # every statement, BEGIN and COMMIT cross to aiosqlite's thread
            assert hold.thread_hand_offs is not None
            assert hold.thread_hand_offs >= hold.statements + 2


def test_the_table_names_every_row_and_the_target(
    quick_results: tuple[DatabaseResult, ...],
) -> None:
    table = render_table(quick_report(quick_results), top_functions=True)

    for label, _ in OPERATIONS.values():
        assert table.count(label) >= len(DATABASES)
    assert "Target: hold + post add < 0.5 ms median" in table
    assert "--quick: a smoke test" in table
    assert "SQLite 3." in table
    assert "PostgreSQL 1" in table


def test_runs_as_a_module_in_a_fresh_interpreter() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_ledger", "--quick", "--databases", "sqlite"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "place_hold" in result.stdout
    assert "PostgreSQL" not in result.stdout


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--quick", "--write"], "not representative"),
        (["--databases", "sqlite,mysql"], "--databases takes"),
    ],
)
def test_bad_command_lines_are_refused(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert complaint in capsys.readouterr().err


def test_write_docs_replaces_only_the_marked_section(
    tmp_path: Path, quick_results: tuple[DatabaseResult, ...]
) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text(
        f"# Benchmarks\n\nIntro stays.\n\n{DOCS_START}\nstale figures\n{DOCS_END}\n"
        "\nOutro stays.\n",
        encoding="utf-8",
    )

    write_docs_section(docs, render_markdown(quick_report(quick_results)))

    text = docs.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks\n\nIntro stays.\n\n")
    assert text.endswith(f"{DOCS_END}\n\nOutro stays.\n")
    assert "stale figures" not in text
    section = text[text.index(DOCS_START) : text.index(DOCS_END)]
    assert "2026-01-02 03:04 UTC with" in section
    assert "at commit abc1234." in section
    assert "| SQLite | place_hold |" in section
    assert "| PostgreSQL | hold + post (one request) |" in section
    assert "Target: hold + post add < 0.5 ms median" in section


def test_write_docs_refuses_a_file_without_markers(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n", encoding="utf-8")

    with pytest.raises(ValueError, match="lacks the markers"):
        write_docs_section(docs, "figures")
    assert docs.read_text(encoding="utf-8") == "# Benchmarks\n"


def test_the_docs_page_has_the_markers_in_the_settlement_section() -> None:
    text = DEFAULT_DOCS_PATH.read_text(encoding="utf-8")
    assert text.count(DOCS_START) == text.count(DOCS_END) == 1
    assert text.index(SECTION_TITLE) < text.index(DOCS_START) < text.index(DOCS_END)
