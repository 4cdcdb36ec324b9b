"""The credit-gate benchmark runs end to end in --quick mode (figures exist; speed not asserted)."""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.bench_gate import main_async


def test_the_gate_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(main_async(["sqlite", "postgresql"], 20))
    out = capsys.readouterr().out
    for database in ("sqlite", "postgresql"):
        assert f"{database:12} ledger hold + post" in out
        assert f"{database:12} gate reserve + settle" in out
