from __future__ import annotations

import pytest

from scheduler import DecayingCount, DecayingQuantiles, MeasurementBook


def test_decaying_count_halves_every_half_life() -> None:
    c = DecayingCount(half_life_s=10.0)
    c.add(8.0, now_s=0.0)
    assert c.value(10.0) == pytest.approx(4.0)
    assert c.value(30.0) == pytest.approx(1.0)
    c.add(1.0, now_s=30.0)
    assert c.value(30.0) == pytest.approx(2.0)


def test_decaying_count_ignores_time_going_backwards() -> None:
    c = DecayingCount(half_life_s=10.0)
    c.add(1.0, now_s=10.0)
    assert c.value(5.0) == pytest.approx(1.0)


def test_quantiles_are_exact_on_small_uniform_sets() -> None:
    q = DecayingQuantiles(half_life_s=1e9, capacity=100)
    for v in range(1, 101):
        q.add(float(v), now_s=0.0)
    assert q.quantile(0.5, 0.0) == 50.0
    assert q.quantile(0.9, 0.0) == 90.0


def test_recent_samples_dominate_old_ones() -> None:
    q = DecayingQuantiles(half_life_s=10.0, capacity=100)
    for _ in range(20):
        q.add(1000.0, now_s=0.0)
    for _ in range(5):
        q.add(100.0, now_s=100.0)
    assert q.quantile(0.5, 100.0) == 100.0
    assert q.quantile(0.5, 0.0) is not None


def test_empty_quantile_is_none() -> None:
    assert DecayingQuantiles(10.0).quantile(0.5, 0.0) is None


def test_summary_reports_rates_and_unknowns_as_zero() -> None:
    book = MeasurementBook(half_life_s=1e9)  # no decay: exact figures
    m = book.of("n1", "llama")
    empty = m.summary(0.0)
    assert (empty.ttft_p50_ms, empty.tokens_per_s_p50, empty.error_rate) == (0.0, 0.0, 0.0)
    for i in range(5):
        m.record_success(float(i), ttft_ms=200.0 + i, tokens_per_s=50.0)
    m.record_failure(5.0, "error")
    m.record_failure(5.0, "timeout")
    s = m.summary(5.0)
    assert s.ttft_p50_ms == 202.0
    assert s.ttft_p90_ms == 204.0
    assert s.tokens_per_s_p50 == 50.0
    assert s.error_rate == pytest.approx(1 / 7)
    assert s.timeout_rate == pytest.approx(1 / 7)
    assert s.samples == 5
    assert book.of("n1", "llama") is m
    book.forget_node("n1")
    assert book.of("n1", "llama") is not m
