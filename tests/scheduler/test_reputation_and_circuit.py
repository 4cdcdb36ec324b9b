from __future__ import annotations

import pytest

from scheduler import CircuitBook, CircuitBreaker, CircuitConfig, Reputation, ReputationBook


def test_new_node_starts_neutral_and_in_probation() -> None:
    r = Reputation()
    assert r.score(0.0) == 0.5
    assert r.in_probation


def test_completions_raise_and_failures_lower_reputation() -> None:
    good, bad = Reputation(), Reputation()
    for _ in range(30):
        good.record("completion", 0.0)
        bad.record("timeout", 0.0)
    assert good.score(0.0) == pytest.approx((30 + 5) / 40)
    assert bad.score(0.0) == pytest.approx(5 / 40)
    assert not good.in_probation
    assert bad.in_probation


def test_token_mismatch_weighs_three_failures() -> None:
    a, b = Reputation(), Reputation()
    a.record("token_mismatch", 0.0)
    for _ in range(3):
        b.record("failure", 0.0)
    assert a.score(0.0) == pytest.approx(b.score(0.0))


def test_reputation_decays_back_to_the_prior() -> None:
    r = Reputation(half_life_s=100.0)
    for _ in range(50):
        r.record("disconnect", 0.0)
    at_once = r.score(0.0)
    assert at_once < 0.2
    assert r.score(100.0) > at_once  # time only moves forward: reads are at increasing times
    assert r.score(10_000.0) == pytest.approx(0.5, abs=1e-3)


def test_reputation_book_keeps_one_entry_per_node() -> None:
    book = ReputationBook(probation_completions=1)
    book.of("n").record("completion", 0.0)
    assert not book.of("n").in_probation


CFG = CircuitConfig(consecutive_failures=3, base_cooldown_s=10.0, max_cooldown_s=40.0)


def test_opens_after_consecutive_failures() -> None:
    c = CircuitBreaker(CFG)
    c.record_failure(0.0)
    c.record_failure(0.0)
    c.record_success(0.0)
    c.record_failure(1.0)
    c.record_failure(1.0)
    assert c.state(1.0) == "closed"
    c.record_failure(1.0)
    assert c.state(1.0) == "open"
    assert not c.try_acquire_probe(5.0)


def test_opens_on_a_high_recent_failure_rate() -> None:
    c = CircuitBreaker(CircuitConfig(consecutive_failures=100, min_attempts_for_rate=10))
    for i in range(12):
        c.record_success(float(i)) if i % 2 else c.record_failure(float(i))
    assert c.state(12.0) == "open"


def test_half_open_lets_one_probe_and_success_closes() -> None:
    c = CircuitBreaker(CFG)
    for _ in range(3):
        c.record_failure(0.0)
    assert c.state(9.9) == "open"
    assert c.state(10.0) == "half_open"
    assert c.try_acquire_probe(10.0)
    assert not c.try_acquire_probe(10.0)
    c.record_success(11.0)
    assert c.state(11.0) == "closed"
    assert c.cooldown_s == 10.0


def test_a_probe_whose_outcome_never_arrives_lapses_after_a_cooldown() -> None:
    c = CircuitBreaker(CFG)
    for _ in range(3):
        c.record_failure(0.0)
    assert c.try_acquire_probe(10.0)  # the probe's customer walks away: nothing is recorded
    assert not c.try_acquire_probe(19.9)
    assert c.try_acquire_probe(20.0)  # the lease lapsed: the node is not blocked forever
    assert not c.try_acquire_probe(20.0)


def test_failed_probe_reopens_with_a_longer_capped_cooldown() -> None:
    c = CircuitBreaker(CFG)
    for _ in range(3):
        c.record_failure(0.0)
    now = 0.0
    for expected in (20.0, 40.0, 40.0):
        now += c.cooldown_s
        assert c.try_acquire_probe(now)
        c.record_failure(now)
        assert c.state(now) == "open"
        assert c.cooldown_s == expected


def test_circuit_book_is_per_node_and_model() -> None:
    book = CircuitBook(CFG)
    assert book.of("n", "a") is book.of("n", "a")
    assert book.of("n", "a") is not book.of("n", "b")
