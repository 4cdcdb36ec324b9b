"""Uptime from heartbeats: on-time heartbeats count as up, silences and outages do not."""

from __future__ import annotations

import pytest

from scheduler import Uptime, UptimeBook


def test_a_node_never_seen_has_full_uptime() -> None:
    assert Uptime().ratio(100.0) == 1.0


def test_on_time_heartbeats_keep_uptime_at_one() -> None:
    u = Uptime()
    u.connected(0.0, interval_s=10.0)
    for t in range(10, 1001, 10):
        u.heartbeat(float(t))
    assert u.ratio(1000.0) == pytest.approx(1.0)


def beat(u: Uptime, start: int, stop: int, every: int = 10) -> None:
    for t in range(start, stop + 1, every):
        u.heartbeat(float(t))


def test_an_outage_counts_from_one_interval_after_the_last_contact() -> None:
    u = Uptime(half_life_s=1e12)  # no decay: exact arithmetic
    u.connected(0.0, interval_s=10.0)
    beat(u, 10, 100)
    u.disconnected(130.0)  # silent since 100: up until 110, down from there
    assert u.ratio(130.0) == pytest.approx(110.0 / 130.0)
    u.connected(210.0, interval_s=10.0)  # down 110..210
    u.heartbeat(310.0)  # a gap of 100 s > 2 intervals: 10 s up, 90 s down
    assert u.ratio(310.0) == pytest.approx((110.0 + 10.0) / 310.0)


def test_an_outage_still_going_on_lowers_uptime_as_time_passes() -> None:
    u = Uptime(half_life_s=1e12)
    u.connected(0.0, interval_s=10.0)
    beat(u, 10, 90)
    u.disconnected(90.0)  # the session closed cleanly: down from now on
    assert u.ratio(100.0) == pytest.approx(90.0 / 100.0)
    assert u.ratio(200.0) == pytest.approx(90.0 / 200.0)


def test_silence_while_connected_is_down_time_beyond_the_grace() -> None:
    u = Uptime(half_life_s=1e12)
    u.connected(0.0, interval_s=10.0)
    assert u.ratio(15.0) == pytest.approx(1.0)  # within two intervals
    assert u.ratio(100.0) == pytest.approx(10.0 / 100.0)


def test_old_outages_fade() -> None:
    u = Uptime(half_life_s=100.0)
    u.connected(0.0, interval_s=1.0)
    u.disconnected(0.0)
    u.connected(50.0, interval_s=1.0)  # 49 s down right at the start
    early = u.ratio(51.0)
    for t in range(52, 2000):
        u.heartbeat(float(t))
    assert early < 0.1
    assert u.ratio(2000.0) > 0.99


def test_the_book_forgets_nodes_gone_for_long() -> None:
    book = UptimeBook()
    book.of("nd_a").connected(0.0, interval_s=1.0)
    book.of("nd_b").connected(0.0, interval_s=1.0)
    book.of("nd_b").disconnected(10.0)
    assert book.idle_nodes(100.0, idle_s=1000.0) == []
    assert book.idle_nodes(2000.0, idle_s=1000.0) == ["nd_b"]  # nd_a is still connected
    book.forget_node("nd_b")
    assert book.get("nd_b") is None
    assert len(book) == 1
