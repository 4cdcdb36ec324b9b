"""The observer: one end per request, bounded labels, the log line, live figures at scrape."""

from __future__ import annotations

import json
import logging

import pytest

from coordinator.catalogue import LiveCatalogue, starter_catalogue
from coordinator.observe import UNCATALOGUED, Observer

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
