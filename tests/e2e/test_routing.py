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
    failovers = 0
    for _ in range(10):  # the flaky node first: it fails 60% of jobs before the first token
        response = chat(net, provider={"order": [ids["flaky"], ids["good"]]})
        assert response.status_code == 200, response.text  # the customer never sees it
        if response.headers["x-shareai-node"] == ids["good"]:
            assert response.headers["x-shareai-attempts"] in {"1", "2"}
            failovers += response.headers["x-shareai-attempts"] == "2"
    assert failovers >= 1
    served: list[str] = []
    attempts: list[int] = []
    for _ in range(70):
        response = chat(net)
        assert response.status_code == 200, response.text
        served.append(names[response.headers["x-shareai-node"]])
        attempts.append(int(response.headers["x-shareai-attempts"]))
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
    # No secret and no account: node ids and pv_ handles are random text (one may even spell
    # "key"), so look for what must never be there rather than for a word.
    text = endpoints.text
    assert "sk-sai-" not in text
    assert "acc_" not in text
    assert net.provider_key not in text
    assert net.customer_key not in text
    assert not any("key" in name for row in endpoints.json()["data"] for name in row)


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


def test_an_operator_can_ask_why_a_request_went_where_it_went(
    fleet: tuple[Network, dict[str, str]],
) -> None:
    net, ids = fleet
    response = chat(net, provider={"ignore": [ids["flaky"]]})
    assert response.status_code == 200, response.text
    request_id = response.headers["x-request-id"]
    url = f"{net.base_url}/admin/routes/{request_id}"
    refused = httpx.get(url, headers={"authorization": f"Bearer {net.customer_key}"}, timeout=5)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "wrong_role"
    operator = {"authorization": f"Bearer {net.operator_key}"}
    explained = httpx.get(url, headers=operator, timeout=5)
    assert explained.status_code == 200, explained.text
    record = explained.json()
    assert record["request_id"] == request_id
    assert record["served_by"] == response.headers["x-shareai-node"]
    assert record["attempts"][-1]["outcome"] == "served"
    assert record["decision"]["excluded"] == [
        {"node": ids["flaky"], "model": MODEL, "reason": "in provider.ignore"}
    ]
    candidates = record["decision"]["candidates"]
    assert {c["node"] for c in candidates} == {ids["good"], ids["slow"]}
    assert all(c["provider"].startswith("pv_") and c["score"] > 0 for c in candidates)
    assert {"reputation", "ttft_p50_ms", "in_flight"} <= candidates[0]["inputs"].keys()

    recent = httpx.get(f"{net.base_url}/admin/routes?limit=3", headers=operator, timeout=5)
    assert recent.status_code == 200
    assert recent.json()["data"][0]["request_id"] == request_id
    bad_limit = httpx.get(f"{net.base_url}/admin/routes?limit=0", headers=operator, timeout=5)
    assert bad_limit.status_code == 400
    assert bad_limit.json()["error"]["param"] == "limit"
    unknown = httpx.get(f"{net.base_url}/admin/routes/req_nope", headers=operator, timeout=5)
    assert unknown.status_code == 404

    nodes = httpx.get(f"{net.base_url}/admin/nodes", headers=operator, timeout=5)
    assert nodes.status_code == 200
    reports = {r["node"]: r for r in nodes.json()["data"]}
    assert set(reports) == set(ids.values())
    good = reports[ids["good"]]
    assert good["live"] is True
    assert 0.9 <= good["uptime"] <= 1.0
    assert good["reputation"]["inputs"]["completion"] > 0
    assert good["models"][MODEL]["circuit"] in {"closed", "half_open", "open"}


def test_public_endpoints_show_uptime_handles_and_parameters_but_no_account_ids(
    fleet: tuple[Network, dict[str, str]],
) -> None:
    net, ids = fleet
    endpoints = httpx.get(f"{net.base_url}/models/{MODEL}/endpoints", timeout=5).json()
    rows = {row["node"]: row for row in endpoints["data"]}
    providers = {row["provider"] for row in rows.values()}
    assert len(providers) == 1  # one Provider account runs the three nodes
    (handle,) = providers
    assert handle.startswith("pv_")
    me = httpx.get(
        f"{net.base_url}/me", headers={"authorization": f"Bearer {net.provider_key}"}, timeout=5
    ).json()
    assert me["account_id"] not in str(endpoints)
    assert all(0.0 <= row["uptime"] <= 1.0 for row in rows.values())
    assert "tools" in rows[ids["good"]]["supported_parameters"]
    by_handle = chat(net, provider={"only": [handle]})
    assert by_handle.status_code == 200, by_handle.text


def test_a_hedged_request_is_served_by_whichever_node_answers_first(tmp_path: Path) -> None:
    with network(tmp_path) as net:
        stalling = net.add_node(
            "stalling",
            mock_model(
                price_in="0.05",
                price_out="0.10",
                ttft_ms=10,
                extra=", stall_rate = 1.0, stall_ms = 4000",
            ),
        )
        steady = net.add_node("steady", mock_model(price_in="0.10", price_out="0.20", ttft_ms=50))
        net.wait_for_nodes(MODEL, 2)
        stalling_id, steady_id = node_id(stalling), node_id(steady)
        order = [stalling_id, steady_id]

        # the stalling node has no TTFT history: it is hedged after the 2 s prior, not its 4 s
        hedged = chat(net, provider={"order": order, "hedge": True})
        assert hedged.status_code == 200, hedged.text
        assert hedged.headers["x-shareai-node"] == steady_id
        assert hedged.headers["x-shareai-hedged"] == "true"
        assert hedged.headers["x-shareai-attempts"] == "2"
        assert 1.9 < hedged.elapsed.total_seconds() < 3.9

        explained = httpx.get(
            f"{net.base_url}/admin/routes/{hedged.headers['x-request-id']}",
            headers={"authorization": f"Bearer {net.operator_key}"},
            timeout=5,
        ).json()
        assert [(a["node"], a["outcome"], a["hedge"]) for a in explained["attempts"]] == [
            (stalling_id, "hedge_lost", False),
            (steady_id, "served", True),
        ]

        waited = chat(net, provider={"order": order, "hedge": False})
        assert waited.status_code == 200, waited.text
        assert waited.headers["x-shareai-node"] == stalling_id
        assert "x-shareai-hedged" not in waited.headers
        assert waited.elapsed.total_seconds() > 3.9
