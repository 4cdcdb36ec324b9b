"""Metrics, health and the request log of a running coordinator with real nodes.

Every inference request is counted once, by model and outcome, whatever its path: a JSON
answer, a stream, a stream the customer leaves, an error before dispatch. Labels stay bounded:
an uncatalogued model name is ``uncatalogued``, and no customer or request appears in a label.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from tests.e2e.network import Network, network
from tests.e2e.test_network import MODEL, mock_model

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"

LLAMA_NODE = """[[models]]
name = "llama3.1:8b"
backend = "mock"
price_in_usd_per_1m = "0.10"
price_out_usd_per_1m = "0.20"
max_concurrency = 4
context_length = 8192
mock = { time_to_first_token_ms = 5, tokens_per_s = 2000, output_tokens = 6 }
"""


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    with network(tmp_path_factory.mktemp("observability")) as net:
        net.add_node("echo", mock_model(price_in="0.10", price_out="0.20", output_tokens=8))
        net.add_node("llama", LLAMA_NODE)
        net.wait_for_nodes(MODEL, 1)
        net.wait_for_nodes(LLAMA_8B, 1)
        yield net


def scrape(net: Network) -> dict[str, float]:
    """Every sample of ``/metrics`` by its full name with labels (labels sorted)."""
    response = httpx.get(net.url + "/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, float] = {}
    for line in response.text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    return samples


def sample(samples: dict[str, float], name: str, **labels: str) -> float:
    key = name + (
        "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else ""
    )
    return samples.get(key, 0.0)


def test_each_request_is_counted_once_with_bounded_labels(net: Network) -> None:
    before = scrape(net)
    client = OpenAI(base_url=net.base_url, api_key=net.customer_key, max_retries=0)
    client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "a"}], max_tokens=4
    )
    for _ in client.chat.completions.create(
        model="llama3.1", messages=[{"role": "user", "content": "b"}], max_tokens=4, stream=True
    ):
        pass
    unknown = httpx.post(
        net.base_url + "/chat/completions",
        headers={"authorization": f"Bearer {net.customer_key}"},
        json={"model": "no-such-model", "messages": [{"role": "user", "content": "c"}]},
        timeout=10,
    )
    assert unknown.status_code == 404
    anonymous = httpx.post(
        net.base_url + "/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "d"}]},
        timeout=10,
    )
    assert anonymous.status_code == 401
    after = scrape(net)

    def grew(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert grew("shareai_requests_total", model="uncatalogued", outcome="completed") == 1
    assert grew("shareai_requests_total", model=LLAMA_8B, outcome="completed") == 1
    assert grew("shareai_requests_total", model="none", outcome="model_not_found") == 1
    assert grew("shareai_requests_total", model="none", outcome="missing_api_key") == 1
    assert grew("shareai_request_duration_seconds_count", model=LLAMA_8B) == 1
    assert grew("shareai_time_to_first_token_seconds_count", model=LLAMA_8B) == 1
    assert grew("shareai_tokens_total", kind="completion", model=LLAMA_8B) > 0
    assert grew("shareai_scheduler_attempts_total", kind="first") == 2
    assert sample(after, "shareai_nodes_active") == 2
    assert sample(after, "shareai_node_sessions_open") == 2
    assert sample(after, "shareai_jobs_in_flight") == 0
    # Bounded: no label names a customer, a key, a request or a node.
    text = httpx.get(net.url + "/metrics", timeout=5).text
    assert not re.search(r"(req_|nd_|acct_|sk-sai)", text)
    assert "no-such-model" not in text


def test_a_stream_the_customer_leaves_is_counted_as_disconnected(net: Network) -> None:
    before = scrape(net)
    slow = {
        "model": MODEL,
        "stream": True,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "slow please"}],
    }
    with httpx.stream(
        "POST",
        net.base_url + "/chat/completions",
        headers={"authorization": f"Bearer {net.customer_key}"},
        json=slow,
        timeout=10,
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                break  # leave after the first chunk
    deadline = time.monotonic() + 10
    while True:
        after = scrape(net)
        done = sum(
            sample(after, "shareai_requests_total", model="uncatalogued", outcome=outcome)
            - sample(before, "shareai_requests_total", model="uncatalogued", outcome=outcome)
            for outcome in ("completed", "disconnected")
        )
        if done >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert done == 1  # once: completed if the node finished first, else disconnected


def test_credits_postings_and_refusals_are_counted(net: Network) -> None:
    poor = net.admin("create-account", "--role", "customer", "--name", "poor", "--credits", "0")
    refused = httpx.post(
        net.base_url + "/chat/completions",
        headers={"authorization": f"Bearer {poor['api_key']}"},
        json={"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 4},
        timeout=10,
    )
    assert refused.status_code == 402
    samples = scrape(net)
    assert samples["shareai_credit_refusals_total"] >= 1
    assert sample(samples, "shareai_requests_total", model="none", outcome="insufficient_credits")
    net.wait_until(
        lambda: scrape(net)["shareai_ledger_postings_total"] >= 1, "a lease to be posted", 15
    )


def test_ready_and_alive(net: Network) -> None:
    assert httpx.get(net.url + "/healthz", timeout=5).json()["status"] == "ok"
    ready = httpx.get(net.url + "/readyz", timeout=5)
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "migrations": "ok"}}


def test_one_structured_log_line_per_request(net: Network) -> None:
    client = OpenAI(base_url=net.base_url, api_key=net.customer_key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "log me"}], max_tokens=3
    )
    request_id = raw.headers["x-request-id"]
    log = net.root / "coordinator.log"
    net.wait_until(lambda: request_id in log.read_text(), "the request's log line", 5)
    lines = [line for line in log.read_text().splitlines() if request_id in line]
    assert len(lines) == 1
    record = json.loads(lines[0][lines[0].index("{") :])
    assert record["request_id"] == request_id
    assert record["outcome"] == "completed"
    assert record["model"] == MODEL
    assert record["node"].startswith("nd_")
    assert record["completion_tokens"] > 0
    assert record["cost_micro_usd"] >= 0
    assert record["latency_ms"] >= record["ttft_ms"] > 0


def test_readyz_says_not_ready_when_the_schema_is_behind(tmp_path: Path) -> None:
    with network(tmp_path) as net:
        assert httpx.get(net.url + "/readyz", timeout=5).status_code == 200
        database = net.data_dir / "coordinator.db"
        import sqlite3  # noqa: PLC0415 - only this test edits the file

        with sqlite3.connect(database) as connection:
            connection.execute("UPDATE alembic_version SET version_num = '0004'")
        behind = httpx.get(net.url + "/readyz", timeout=5)
        assert behind.status_code == 503
        assert behind.json()["checks"]["migrations"].startswith("at 0004")
        with sqlite3.connect(database) as connection:
            connection.execute("DROP TABLE alembic_version")
        broken = httpx.get(net.url + "/readyz", timeout=5)
        assert broken.status_code == 503
        assert broken.json()["checks"]["database"].startswith("unavailable")
        assert httpx.get(net.url + "/healthz", timeout=5).status_code == 200  # still alive


def test_the_public_network_status_has_the_numbers_and_no_secrets(net: Network) -> None:
    client = OpenAI(base_url=net.base_url, api_key=net.customer_key, max_retries=0)
    for _ in range(3):
        client.chat.completions.create(
            model="llama3.1:8b", messages=[{"role": "user", "content": "s"}], max_tokens=3
        )
    me = httpx.get(
        net.base_url + "/me", headers={"authorization": f"Bearer {net.customer_key}"}, timeout=5
    ).json()
    provider = httpx.get(
        net.base_url + "/me", headers={"authorization": f"Bearer {net.provider_key}"}, timeout=5
    ).json()

    def settled() -> bool:
        status = httpx.get(net.base_url + "/network/status", timeout=5).json()
        return bool(status["settlement"]["today"]["requests"] >= 3)

    net.wait_until(settled, "the requests to be posted", 15)
    response = httpx.get(net.base_url + "/network/status", timeout=5)  # no key needed
    assert response.status_code == 200
    status = response.json()
    nodes = status["nodes"]
    assert nodes["online"] == 2
    llama_node = next(n for n in nodes["live"] if n["models"][0]["model"] == LLAMA_8B)
    assert llama_node["provider"].startswith("pv_")
    assert llama_node["models"][0]["price_input_micro_usd_per_1m"] == 100_000
    assert 0 <= llama_node["reputation"] <= 1
    assert llama_node["last_heard_s"] >= 0
    models = {row["model"]: row for row in status["models"]}
    assert models[LLAMA_8B]["catalogued"] is True
    assert models[LLAMA_8B]["capacity"] == 4
    assert models[MODEL]["catalogued"] is False
    hour = status["traffic"]["last_hour"]
    assert hour["requests"] >= 3
    assert hour["by_outcome"]["completed"] >= 3
    assert hour["ttft_ms"]["p50"] > 0
    assert len(status["traffic"]["per_minute"]) == 60
    assert sum(minute["requests"] for minute in status["traffic"]["per_minute"]) == hour["requests"]
    money = status["settlement"]["today"]
    assert money["customer_spend"] == (
        money["provider_earnings"] + money["builder_earnings"] + money["platform_revenue"]
    )
    assert money["customer_spend"] > 0
    assert status["settlement"]["this_month"]["requests"] >= money["requests"]
    text = response.text
    for secret in (me["account_id"], provider["account_id"], net.customer_key, "sk-sai"):
        assert secret not in text
