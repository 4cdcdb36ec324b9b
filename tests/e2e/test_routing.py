"""The scheduler through the coordinator: a slow, a flaky and a good node on the mock backend."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from protocol import Identity
from tests.e2e.network import Network, NodeProcess, network
from tests.e2e.test_network import MODEL, mock_model


def node_id(node: NodeProcess) -> str:
    return Identity.load(node.config.parent / "node.key").public_key.node_id


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Network, dict[str, str]]]:
    root: Path = tmp_path_factory.mktemp("routing")
    with network(root) as net:
        nodes = {
            "good": net.add_node(
                "good", mock_model(price_in="0.10", price_out="0.20", ttft_ms=10, tokens_per_s=500)
            ),
            "slow": net.add_node(
                "slow", mock_model(price_in="0.10", price_out="0.20", ttft_ms=300, tokens_per_s=20)
            ),
            "flaky": net.add_node(
                "flaky",
                mock_model(
                    price_in="0.10",
                    price_out="0.20",
                    ttft_ms=10,
                    tokens_per_s=500,
                    extra=", failure_rate = 0.6",
                ),
            ),
        }
        net.wait_for_nodes(MODEL, 3)
        yield net, {name: node_id(node) for name, node in nodes.items()}


def chat(net: Network, **extra: object) -> httpx.Response:
    return httpx.post(
        net.base_url + "/chat/completions",
        headers={"authorization": f"Bearer {net.customer_key}"},
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": "route me"}],
            "max_tokens": 6,
            **extra,
        },
        timeout=30,
    )


def test_good_node_wins_and_failover_hides_the_flaky_one(
    fleet: tuple[Network, dict[str, str]],
) -> None:
    net, ids = fleet
    names = {v: k for k, v in ids.items()}
    served: list[str] = []
    attempts: list[int] = []
    for _ in range(70):
        response = chat(net)
        assert response.status_code == 200, response.text
        served.append(names[response.headers["x-shareai-node"]])
        attempts.append(int(response.headers["x-shareai-attempts"]))
    assert max(attempts) >= 2  # the flaky node failed before its first token, and was replaced
    assert all(1 <= a <= 3 for a in attempts)
    late = Counter(served[-20:])
    assert late["good"] >= 12, (late, Counter(served))

    endpoints = httpx.get(f"{net.base_url}/models/{MODEL}/endpoints", timeout=5)
    assert endpoints.status_code == 200
    rows = {row["node"]: row for row in endpoints.json()["data"]}
    assert set(rows) == set(ids.values())
    good, flaky = rows[ids["good"]], rows[ids["flaky"]]
    assert good["pricing"]["input"] == 100_000
    assert good["latency_ms"]["p50"] is not None
    assert good["throughput_tokens_per_s"]["p50"] is not None
    assert good["reputation"] > flaky["reputation"]
    assert flaky["error_rate"] > 0
    assert {"circuit", "in_flight", "max_concurrency"} <= good.keys()
    assert "key" not in str(endpoints.json()).lower()


def test_provider_only_and_ignore_are_respected(fleet: tuple[Network, dict[str, str]]) -> None:
    net, ids = fleet
    for _ in range(5):
        only = chat(net, provider={"only": [ids["slow"]]})
        assert only.status_code == 200, only.text
        assert only.headers["x-shareai-node"] == ids["slow"]
        ignored = chat(net, provider={"ignore": [ids["good"], ids["flaky"]]})
        assert ignored.headers["x-shareai-node"] == ids["slow"]
    floor = chat(net, model=MODEL + ":floor", session_id="s1")
    assert floor.status_code == 200, floor.text


def test_invalid_preferences_and_no_route(fleet: tuple[Network, dict[str, str]]) -> None:
    net, ids = fleet
    bad = chat(net, provider={"sort": "fastest"})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "provider.sort"
    none_left = chat(net, provider={"only": ["nd_nobody"]})
    assert none_left.status_code == 503
    assert (
        "not in provider.only" in none_left.json()["error"]["message"]
        or ids["good"] in (none_left.json()["error"]["message"])
    )
    unknown = chat(net, model="mock/none")
    assert unknown.status_code == 404
    missing = httpx.get(f"{net.base_url}/models/mock/none/endpoints", timeout=5)
    assert missing.status_code == 404
