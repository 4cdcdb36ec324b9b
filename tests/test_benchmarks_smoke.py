"""The protocol benchmark runs end to end in --quick mode; figures must exist, not be fast."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from benchmarks.bench_protocol import (
    DEFAULT_DOCS_PATH,
    DOCS_END,
    DOCS_START,
    QUICK,
    SCENARIOS,
    Machine,
    Report,
    Result,
    main,
    render_markdown,
    run_benchmarks,
    write_docs_section,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quick_results() -> tuple[Result, ...]:
    return run_benchmarks(QUICK)


def quick_report(results: tuple[Result, ...]) -> Report:
    return Report(
        results=results,
        settings=QUICK,
        machine=Machine.describe(),
        cpu=None,
        load_before=(0.5, 0.4, 0.3),
        load_after=(0.6, 0.4, 0.3),
        finished_at=datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
        revision="commit abc1234",
    )


def test_quick_run_times_every_scenario(quick_results: tuple[Result, ...]) -> None:
    assert [r.scenario for r in quick_results] == list(SCENARIOS)
    for result in quick_results:
        assert result.ops_per_run == QUICK.ops_per_run
        assert len(result.elapsed_ns) == QUICK.runs
        assert all(ns > 0 for ns in result.elapsed_ns)
        assert result.min_ops_per_s <= result.median_ops_per_s <= result.max_ops_per_s
        assert result.median_us_per_op > 0


def test_main_quick_prints_a_figure_per_scenario_and_unpins(
    capsys: pytest.CaptureFixture[str],
) -> None:
    affinity = os.sched_getaffinity(0)

    assert main(["--quick"]) == 0

    out = capsys.readouterr().out
    for scenario in SCENARIOS:
        (row,) = [line for line in out.splitlines() if line.startswith(scenario.label)]
        assert any(char.isdigit() for char in row.removeprefix(scenario.label))
    assert "chunk frames/s each way" in out
    assert "--quick" in out
    assert os.sched_getaffinity(0) == affinity


def test_runs_as_a_module_in_a_fresh_interpreter() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_protocol", "--quick"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert all(scenario.label in result.stdout for scenario in SCENARIOS)


def test_quick_figures_are_never_written_to_the_docs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--quick", "--write-docs"])
    assert exited.value.code == 2
    assert "not representative" in capsys.readouterr().err


def test_write_docs_replaces_only_the_marked_section(
    tmp_path: Path, quick_results: tuple[Result, ...]
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
    assert text.count(DOCS_START) == text.count(DOCS_END) == 1
    section = text[text.index(DOCS_START) : text.index(DOCS_END)]
    for scenario in SCENARIOS:
        assert f"| {scenario.label} |" in section
    assert "2026-01-02 03:04 UTC at commit abc1234" in section
    assert "Target >= 50,000 chunk frames/s" in section


def test_write_docs_refuses_a_file_without_markers(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n", encoding="utf-8")

    with pytest.raises(ValueError, match="lacks the markers"):
        write_docs_section(docs, "figures")
    assert docs.read_text(encoding="utf-8") == "# Benchmarks\n"


def test_the_docs_page_has_the_markers_the_script_rewrites() -> None:
    text = DEFAULT_DOCS_PATH.read_text(encoding="utf-8")
    assert DOCS_START in text
    assert text.index(DOCS_START) < text.index(DOCS_END)
