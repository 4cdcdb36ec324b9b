"""The model catalogue and task routes through a real coordinator, real nodes and the openai SDK.

Three nodes call Llama 3.1 8B three different ways (an Ollama tag, the Hugging Face id, a local
folder): the network serves them as one canonical model, a request may use any alias, and
failover crosses the spellings. A support-bot route sends short classification requests to a
cheap model and tool-using requests to a strong one, and falls back when the strong model has no
live node.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import NotFoundError, OpenAI

from protocol import Identity
from tests.e2e.network import Network, NodeProcess, network, run_shareai

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
LLAMA_70B = "meta-llama/Llama-3.1-70B-Instruct"
QWEN_7B = "Qwen/Qwen2.5-7B-Instruct"
UNCATALOGUED = "acme/tiny-sentiment"

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}

SUPPORT_BOT = {
    "description": "cheap triage, strong model for tools",
    "rules": [
        {
            "name": "triage",
            "when": {"task": ["classification"], "max_prompt_tokens": 500},
            "models": ["qwen2.5:7b"],
            "provider": {"sort": "price"},
        },
        {"name": "tools", "when": {"tools": True}, "models": [LLAMA_70B, "llama3.1:8b"]},
    ],
    "default": {"models": [LLAMA_8B]},
}


def served(name: str, *, price_in: str = "0.10", extra: str = "") -> str:
    return f"""[[models]]
name = "{name}"
backend = "mock"
price_in_usd_per_1m = "{price_in}"
price_out_usd_per_1m = "0.20"
max_concurrency = 8
context_length = 200000
mock = {{ time_to_first_token_ms = 10, tokens_per_s = 500, output_tokens = 8{extra} }}
"""


def node_id(node: NodeProcess) -> str:
    return Identity.load(node.config.parent / "node.key").public_key.node_id


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    with network(tmp_path_factory.mktemp("catalogue")) as net:
        net.add_node("ollama", served("llama3.1:8b", extra=", failure_rate = 1.0"))
        net.add_node("hf", served(LLAMA_8B))
        net.add_node("folder", served("/srv/models/Meta-Llama-3.1-8B-Instruct/"))
        net.add_node("cheap", served("qwen2.5:7b", price_in="0.01"))
        net.add_node("strong", served("llama3.1:70b", price_in="0.90"))
        net.add_node("odd", served(UNCATALOGUED))
        net.wait_for_nodes(LLAMA_8B, 3)
        for model in (QWEN_7B, LLAMA_70B, UNCATALOGUED):
            net.wait_for_nodes(model, 1)
        yield net


def models_by_id(net: Network) -> dict[str, dict[str, Any]]:
    listing = httpx.get(net.base_url + "/models", timeout=5).json()
    return {item["id"]: item for item in listing["data"]}


def test_one_model_three_spellings_is_one_canonical_model(net: Network) -> None:
    models = models_by_id(net)
    llama = models[LLAMA_8B]
    assert llama["catalogued"] is True
    assert llama["nodes"] == 3
    assert "llama3.1:8b" in llama["aliases"]
    assert sorted(llama["served_as"]) == sorted(
        ["/srv/models/Meta-Llama-3.1-8B-Instruct/", LLAMA_8B, "llama3.1:8b"]
    )
    assert llama["context_length"] == 131072  # the catalogue's, not the nodes' claimed 200,000
    assert not any(name in models for name in ("llama3.1:8b", "qwen2.5:7b", "llama3.1:70b"))
    odd = models[UNCATALOGUED]
    assert odd["catalogued"] is False
    assert odd["aliases"] == []
    endpoints = httpx.get(f"{net.base_url}/models/llama3.1/endpoints", timeout=5).json()
    assert endpoints["model"] == LLAMA_8B
    assert endpoints["catalogued"] is True
    assert {row["served_as"] for row in endpoints["data"]} == set(llama["served_as"])
    assert {row["fingerprint"] for row in endpoints["data"]} == {"unknown"}


def test_any_alias_reaches_the_model_and_failover_crosses_spellings(net: Network) -> None:
    client = OpenAI(base_url=net.base_url, api_key=net.customer_key, max_retries=0)
    broken = node_id(net.nodes["ollama"])  # fails every job before its first token
    for alias in ("llama3.1", "Meta-Llama-3.1-8B-Instruct", "META-LLAMA/llama-3.1-8b-instruct"):
        raw = client.chat.completions.with_raw_response.create(
            model=alias,
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=5,
            extra_body={"provider": {"order": [broken], "hedge": False}},
        )
        reply = raw.parse()
        assert reply.model == LLAMA_8B
        assert raw.headers["x-shareai-model"] == LLAMA_8B
        assert raw.headers["x-shareai-node"] != broken
    generation = wait_for_generation(net, reply.id)
    assert generation["model"] == LLAMA_8B
    assert generation["requested_model"] == "META-LLAMA/llama-3.1-8b-instruct"
    assert generation["route"] is None
    odd = client.chat.completions.create(
        model=UNCATALOGUED, messages=[{"role": "user", "content": "great"}], max_tokens=3
    )
    assert odd.model == UNCATALOGUED


def test_a_task_route_picks_the_model_per_request(net: Network) -> None:
    put = httpx.put(
        net.base_url + "/routes/support-bot",
        headers=bearer(net.customer_key),
        json=SUPPORT_BOT,
        timeout=5,
    )
    assert put.status_code == 200, put.text
    assert put.json()["version"] >= 1
    version = put.json()["version"]
    client = OpenAI(base_url=net.base_url, api_key=net.customer_key, max_retries=0)

    triage = client.chat.completions.with_raw_response.create(
        model="route:support-bot",
        messages=[{"role": "user", "content": "Is this email spam? 'You won a prize'"}],
        max_tokens=4,
        metadata={"task": "classification"},
    )
    assert triage.parse().model == QWEN_7B
    assert triage.headers["x-shareai-route"] == f"support-bot@v{version}"
    assert triage.headers["x-shareai-route-rule"] == "triage"
    assert triage.headers["x-shareai-node"] == node_id(net.nodes["cheap"])

    tools = client.chat.completions.with_raw_response.create(
        model="route:support-bot",
        messages=[{"role": "user", "content": "weather in Lyon?"}],
        max_tokens=6,
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    )
    assert tools.parse().model == LLAMA_70B
    assert tools.headers["x-shareai-route-rule"] == "tools"

    chat = client.chat.completions.create(
        model="route:support-bot",
        messages=[{"role": "user", "content": "tell me about your plans " * 10}],
        max_tokens=4,
        stream=True,
    )
    chunks = list(chat)
    assert {chunk.model for chunk in chunks} == {LLAMA_8B}
    generation = wait_for_generation(net, tools.parse().id)
    assert generation["route"] == {"name": "support-bot", "version": version, "rule": "tools"}
    assert generation["requested_model"] == "route:support-bot"


def test_a_dry_run_explains_without_running(net: Network) -> None:
    httpx.put(
        net.base_url + "/routes/support-bot",
        headers=bearer(net.customer_key),
        json=SUPPORT_BOT,
        timeout=5,
    ).raise_for_status()
    before = routes_logged(net)
    dry = httpx.post(
        net.base_url + "/routes/support-bot/dry-run",
        headers=bearer(net.customer_key),
        json={
            "messages": [{"role": "user", "content": "x " * 4000}],
            "metadata": {"task": "classification"},
        },
        timeout=5,
    )
    assert dry.status_code == 200, dry.text
    result = dry.json()
    assert result["rule"] == "default"  # too long for triage
    assert result["evaluated"][0]["rule"] == "triage"
    assert "max_prompt_tokens 500" in result["evaluated"][0]["reason"]
    assert result["features"]["task"] == "classification"
    assert result["availability"] == [{"model": LLAMA_8B, "catalogued": True, "nodes": 3}]
    assert routes_logged(net) == before  # nothing was sent to a node


def test_the_fallback_serves_when_the_strong_model_has_no_live_node(
    tmp_path: Path,
) -> None:
    with network(tmp_path) as net:
        strong = net.add_node("strong", served("llama3.1:70b", price_in="0.90"))
        net.add_node("small", served("Meta-Llama-3.1-8B-Instruct"))
        net.add_node("cheap", served("qwen2.5:7b", price_in="0.01"))
        net.wait_for_nodes(LLAMA_70B, 1)
        net.wait_for_nodes(LLAMA_8B, 1)
        httpx.put(
            net.base_url + "/routes/support-bot",
            headers=bearer(net.customer_key),
            json=SUPPORT_BOT,
            timeout=5,
        ).raise_for_status()
        client = OpenAI(base_url=net.base_url, api_key=net.customer_key, max_retries=0)

        def ask_with_tools() -> Any:
            return client.chat.completions.with_raw_response.create(
                model="route:support-bot",
                messages=[{"role": "user", "content": "weather in Oslo?"}],
                max_tokens=5,
                tools=[WEATHER_TOOL],  # type: ignore[list-item]
            )

        assert ask_with_tools().parse().model == LLAMA_70B
        strong.kill()
        net.wait_for_nodes(LLAMA_70B, 0)
        fallback = ask_with_tools()
        assert fallback.parse().model == LLAMA_8B
        assert fallback.headers["x-shareai-route-rule"] == "tools"


def test_routes_are_validated_versioned_and_owned(net: Network) -> None:
    url = net.base_url + "/routes/coder"
    headers = bearer(net.customer_key)
    unknown = httpx.put(
        url, headers=headers, json={"default": {"models": ["gpt-17-ultra"]}}, timeout=5
    )
    assert unknown.status_code == 400
    assert unknown.json()["error"]["param"] == "default.models[0]"
    shadowed = httpx.put(
        url,
        headers=headers,
        json={
            "rules": [
                {"name": "any-tools", "when": {"tools": True}, "models": [LLAMA_70B]},
                {
                    "name": "small-tools",
                    "when": {"tools": True, "max_prompt_tokens": 100},
                    "models": [LLAMA_8B],
                },
            ],
            "default": {"models": [LLAMA_8B]},
        },
        timeout=5,
    )
    assert shadowed.status_code == 400
    assert shadowed.json()["error"]["param"] == "rules[1]"
    assert "can never match" in shadowed.json()["error"]["message"]

    first = httpx.put(url, headers=headers, json={"default": {"models": [LLAMA_8B]}}, timeout=5)
    second = httpx.put(url, headers=headers, json={"default": {"models": [QWEN_7B]}}, timeout=5)
    assert (first.json()["version"], second.json()["version"]) == (1, 2)
    old = httpx.get(url + "?version=1", headers=headers, timeout=5).json()
    assert old["default"]["models"] == [LLAMA_8B]
    client = OpenAI(base_url=net.base_url, api_key=net.customer_key, max_retries=0)
    reply = client.completions.create(model="route:coder", prompt="def f():", max_tokens=3)
    assert reply.model == QWEN_7B  # the newest version serves new requests
    versions = httpx.get(url + "/versions", headers=headers, timeout=5).json()["data"]
    assert [v["version"] for v in versions] == [2, 1]

    other = net.admin("create-account", "--role", "customer", "--name", "other", "--credits", "1")
    theirs = httpx.post(
        net.base_url + "/chat/completions",
        headers=bearer(str(other["api_key"])),
        json={"model": "route:coder", "messages": [{"role": "user", "content": "hi"}]},
        timeout=5,
    )
    assert theirs.status_code == 404
    assert theirs.json()["error"]["code"] == "route_not_found"
    deleted = httpx.delete(url, headers=headers, timeout=5)
    assert deleted.json()["deleted"] is True
    with pytest.raises(NotFoundError) as gone:
        client.completions.create(model="route:coder", prompt="x", max_tokens=2)
    assert gone.value.code == "route_not_found"


def test_a_builder_routes_its_apps_traffic(net: Network) -> None:
    builder = net.admin("create-account", "--role", "builder", "--name", "router-builder")
    builder_key = str(builder["api_key"])
    app = httpx.post(
        net.base_url + "/apps",
        headers=bearer(builder_key),
        json={"name": "classifier-app", "surcharge_percent": "5"},
        timeout=5,
    ).json()
    route = httpx.put(
        f"{net.base_url}/apps/{app['id']}/routes/main",
        headers=bearer(builder_key),
        json={"default": {"models": ["qwen2.5:7b"]}},
        timeout=5,
    )
    assert route.status_code == 200, route.text
    assert route.json()["owner"] == {"kind": "app", "id": app["id"]}
    stranger = httpx.get(
        f"{net.base_url}/apps/{app['id']}/routes", headers=bearer(net.customer_key), timeout=5
    )
    assert stranger.status_code == 403
    authorized = httpx.post(
        f"{net.base_url}/apps/{app['id']}/authorizations",
        headers=bearer(net.customer_key),
        timeout=5,
    ).json()
    client = OpenAI(base_url=net.base_url, api_key=authorized["api_key"], max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="route:main", messages=[{"role": "user", "content": "label: positive?"}], max_tokens=3
    )
    assert raw.parse().model == QWEN_7B
    assert raw.headers["x-shareai-route"] == "main@v1"


def test_an_operator_changes_the_catalogue_live(net: Network) -> None:
    operator = bearer(net.operator_key)
    added = httpx.put(
        f"{net.base_url}/admin/catalogue/acme/Tiny-Sentiment-v2",
        headers=operator,
        json={
            "name": "Acme Tiny Sentiment v2",
            "aliases": [UNCATALOGUED],
            "context_length": 4096,
            "description": "a sentiment classifier",
        },
        timeout=5,
    )
    assert added.status_code == 200, added.text
    assert added.json()["created"] is True
    net.wait_until(
        lambda: "acme/Tiny-Sentiment-v2" in models_by_id(net), "the node's offer to be renamed"
    )
    renamed = models_by_id(net)["acme/Tiny-Sentiment-v2"]
    assert renamed["catalogued"] is True
    assert renamed["served_as"] == [UNCATALOGUED]
    assert renamed["context_length"] == 4096
    public = httpx.get(net.base_url + "/catalogue", timeout=5).json()
    entry = next(e for e in public["data"] if e["id"] == "acme/Tiny-Sentiment-v2")
    assert entry["nodes"] == 1
    assert "tokenizer" not in entry
    removed = httpx.delete(
        f"{net.base_url}/admin/catalogue/acme/Tiny-Sentiment-v2", headers=operator, timeout=5
    )
    assert removed.status_code == 200
    assert models_by_id(net)[UNCATALOGUED]["catalogued"] is False


def test_a_cli_change_reaches_a_running_coordinator(net: Network) -> None:
    net.admin("catalogue", "alias", "qwen2.5", "Qwen2.5-7B-Instruct-AWQ")
    net.admin("catalogue", "unalias", "qwen2.5", "Qwen2.5-7B-Instruct-AWQ")
    net.admin("catalogue", "alias", QWEN_7B, "my-qwen")

    def alias_live() -> bool:
        return "my-qwen" in models_by_id(net)[QWEN_7B]["aliases"]

    net.wait_until(alias_live, "the CLI's catalogue change to reach the coordinator", 10)
    client = OpenAI(base_url=net.base_url, api_key=net.customer_key, max_retries=0)
    reply = client.chat.completions.create(
        model="my-qwen", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert reply.model == QWEN_7B


def routes_logged(net: Network) -> list[str]:
    recent = httpx.get(
        f"{net.base_url}/admin/routes?limit=200", headers=bearer(net.operator_key), timeout=5
    ).json()["data"]
    return [record["request_id"] for record in recent]


def wait_for_generation(net: Network, generation_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        record: dict[str, Any] = httpx.get(
            f"{net.base_url}/generations/{generation_id}",
            headers=bearer(net.customer_key),
            timeout=5,
        ).json()
        if record.get("settled") or time.monotonic() > deadline:
            assert record.get("settled"), record
            return record
        time.sleep(0.2)


def test_the_routes_cli_manages_routes_through_the_api(net: Network, tmp_path: Path) -> None:
    connection = ("--coordinator", net.url, "--api-key", net.customer_key)
    route_file = tmp_path / "faq.toml"
    route_file.write_text(
        'description = "short answers"\n'
        "[[rules]]\n"
        'name = "short"\n'
        "when = { max_output_tokens = 64 }\n"
        'models = ["qwen2.5:7b"]\n'
        "[default]\n"
        f'models = ["{LLAMA_8B}"]\n'
    )
    stored = run_shareai("routes", "put", "faq", str(route_file), *connection)
    assert stored.returncode == 0, stored.stderr
    assert json.loads(stored.stdout)["rules"][0]["name"] == "short"
    listed = run_shareai("routes", "list", *connection)
    assert "faq" in {route["name"] for route in json.loads(listed.stdout)["data"]}
    sample = tmp_path / "sample.json"
    sample.write_text(json.dumps({"prompt": "Q: capital of France? A:", "max_tokens": 16}))
    dry = run_shareai("routes", "dry-run", "faq", str(sample), *connection)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["rule"] == "short"

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"default": {"models": []}}))
    refused = run_shareai("routes", "put", "faq", str(bad), *connection)
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1
    assert refused.stderr.startswith("shareai: error: ")
    assert "(default.models)" in refused.stderr
    missing = run_shareai("routes", "show", "nope", *connection)
    assert missing.returncode == 1
    assert "no route 'nope'" in missing.stderr
