"""The observer: one end per request, bounded labels, the log line, live figures at scrape."""

from __future__ import annotations

import json
import logging

import pytest

from coordinator.catalogue import LiveCatalogue, starter_catalogue
from coordinator.observe import UNCATALOGUED, Observer, TrafficWindow

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"


def value(observer: Observer, name: str, **labels: str) -> float:
    found = observer.registry.get_sample_value(name, labels or None)
    return 0.0 if found is None else found


def test_a_request_ends_once_and_later_ends_change_nothing() -> None:
    observer = Observer(catalogue=LiveCatalogue(starter_catalogue(), 1))
    observation = observer.start("req_1", "llama3.1")
    observation.first_output()
    observation.end(
        "completed",
        status=200,
        model=LLAMA,
        attempts=2,
        prompt_tokens=3,
        completion_tokens=5,
        hedged=True,
    )
    observation.end("disconnected", status=200, model=LLAMA)
    assert value(observer, "shareai_requests_total", model=LLAMA, outcome="completed") == 1
    assert value(observer, "shareai_requests_total", model=LLAMA, outcome="disconnected") == 0
    assert value(observer, "shareai_tokens_total", model=LLAMA, kind="completion") == 5
    assert value(observer, "shareai_scheduler_attempts_total", kind="failover") == 1
    assert value(observer, "shareai_hedged_requests_total") == 1
    assert value(observer, "shareai_time_to_first_token_seconds_count", model=LLAMA) == 1


@pytest.mark.parametrize(
    ("model", "label"),
    [(LLAMA, LLAMA), ("someones/odd-name", UNCATALOGUED), (None, "none")],
)
def test_the_model_label_is_a_catalogued_id_or_a_fixed_word(model: str | None, label: str) -> None:
    observer = Observer(catalogue=LiveCatalogue(starter_catalogue(), 1))
    observer.start("req_2", "x").end("completed", status=200, model=model)
    assert value(observer, "shareai_requests_total", model=label, outcome="completed") == 1


def test_each_end_writes_one_json_log_line(caplog: pytest.LogCaptureFixture) -> None:
    observer = Observer()
    with caplog.at_level(logging.INFO, logger="shareai.requests"):
        observer.start("req_3", "m").end("model_not_found", status=404)
    (record,) = caplog.records
    line = json.loads(record.getMessage())
    assert line["request_id"] == "req_3"
    assert line["outcome"] == "model_not_found"
    assert line["status"] == 404
    assert line["ttft_ms"] is None


def test_two_observers_do_not_share_counts() -> None:
    first, second = Observer(), Observer()
    first.start("req_4", "m").end("completed", status=200)
    assert value(second, "shareai_requests_total", model="none", outcome="completed") == 0
    assert b"shareai_requests_total" in first.exposition()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_traffic_window_keeps_an_hour_of_minutes() -> None:
    clock = Clock(1_000_020.0)  # 20 s into a minute
    window = TrafficWindow(clock)
    window.add("completed", 10, 100.0, 150.0)
    window.add("completed", 30, 300.0, 320.0)
    window.add("model_not_found", 0, None, 2.0)
    summary = window.summary()
    recent = summary["last_2_minutes"]
    assert isinstance(recent, dict)
    assert recent["requests"] == 3
    assert recent["requests_per_minute"] == 1.5
    assert recent["tokens_per_minute"] == 20.0
    assert recent["error_rate"] == round(1 / 3, 4)
    assert recent["ttft_ms"] == {"p50": 300.0, "p90": 300.0}
    assert recent["by_outcome"] == {"completed": 2, "model_not_found": 1}
    series = summary["per_minute"]
    assert isinstance(series, list)
    assert len(series) == 60
    assert series[-1]["requests"] == 3
    assert series[-1]["latency_ms_mean"] == round((150 + 320 + 2) / 3, 1)

    clock.now += 30 * 60  # half an hour later: out of the last two minutes, still in the hour
    window.add("cut", 5, 50.0, 60.0)
    later = window.summary()
    assert later["last_2_minutes"]["requests"] == 1  # type: ignore[index]
    assert later["last_hour"]["requests"] == 4  # type: ignore[index]
    clock.now += 61 * 60  # more than an hour after the first minute
    assert window.summary()["last_hour"]["requests"] == 0  # type: ignore[index]


def test_an_ended_request_reaches_the_window() -> None:
    observer = Observer()
    observation = observer.start("req_5", "m")
    observation.first_output()
    observation.end("completed", status=200, completion_tokens=4)
    hour = observer.window.summary()["last_hour"]
    assert isinstance(hour, dict)
    assert hour["requests"] == 1
    assert hour["ttft_ms"]["p50"] is not None
