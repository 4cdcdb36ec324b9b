"""The models page benchmark runs end to end on a tiny network; figures must exist, not be fast."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from benchmarks.bench_models_page import (
    DOCS_END,
    DOCS_PATH,
    DOCS_START,
    QUICK,
    SCENARIOS,
    Result,
    main,
    render_markdown,
    run,
)

# create_app's older handlers declare path parameters in the style recent Litestar deprecates;
# the marketplace's handlers do not, and stay checked.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:\[paths='/v1/(?!market).*declared using deprecated inferred"
    " style:litestar.exceptions.LitestarDeprecationWarning"
)


@pytest.fixture(scope="module")
def results() -> list[Result]:
    return run(QUICK)


def test_a_quick_run_times_every_request(results: list[Result]) -> None:
    assert [r.label for r in results] == [label for label, _ in SCENARIOS]
    for result in results:
        assert len(result.samples_ms) == QUICK.renders
        assert result.median_ms > 0
        assert result.p99_ms >= result.median_ms
        assert result.bytes > 0
    section = render_markdown(results, QUICK, datetime(2026, 1, 2, 3, 4, tzinfo=UTC))
    assert "2026-01-02 03:04 UTC" in section
    assert "| GET /models |" in section


def test_quick_figures_are_never_written_to_the_docs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--quick", "--write-docs"]) == 2
    assert "not representative" in capsys.readouterr().err


def test_the_docs_page_has_the_markers_the_script_rewrites() -> None:
    text = Path(DOCS_PATH).read_text(encoding="utf-8")
    assert DOCS_START in text
    assert text.index(DOCS_START) < text.index(DOCS_END)
