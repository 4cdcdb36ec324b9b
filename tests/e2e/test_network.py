"""User journeys over a real network on loopback: coordinator and node agents as processes,
the official ``openai`` SDK as the customer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from protocol import Identity
from tests.coordinator.conftest import create_postgres_database, drop_postgres_database
from tests.e2e.network import Network, network

MODEL = "mock/echo"


def mock_model(
    *,
    price_in: str,
    price_out: str,
    ttft_ms: int = 20,
    tokens_per_s: int = 400,
    max_concurrency: int = 8,
    output_tokens: int = 24,
    extra: str = "",
) -> str:
    return f"""[[models]]
name = "{MODEL}"
backend = "mock"
price_in_usd_per_1m = "{price_in}"
price_out_usd_per_1m = "{price_out}"
max_concurrency = {max_concurrency}
context_length = 8192
mock = {{ time_to_first_token_ms = {ttft_ms}, tokens_per_s = {tokens_per_s}, \
output_tokens = {output_tokens}{extra} }}
"""


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[Network]:
    with network(tmp_path) as net:
        net.add_node("cheap", mock_model(price_in="0.10", price_out="0.20"))
        net.add_node("dear", mock_model(price_in="0.50", price_out="1.00", tokens_per_s=200))
        net.wait_for_nodes(MODEL, 2)
        yield net


def client(net: Network, **options: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=net.base_url, api_key=net.customer_key, max_retries=0, **options)  # type: ignore[arg-type]


def test_models_lists_the_served_model_with_prices(two_nodes: Network) -> None:
    models = client(two_nodes).models.list()
    entry = next(m for m in models.data if m.id == MODEL)
    extra = entry.model_extra or {}
    assert extra["nodes"] == 2
    assert extra["context_length"] == 8192
    assert extra["pricing"]["lowest"] == {"input": 100_000, "output": 200_000}


def test_chat_completion_non_streaming(two_nodes: Network) -> None:
    response = client(two_nodes).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello"}], max_tokens=50
    )
    assert response.headers["x-request-id"].startswith("req_")
    completion = response.parse()
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason in {"stop", "length"}
    assert completion.usage is not None
    assert completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_chat_completion_streaming_with_usage(two_nodes: Network) -> None:
    with client(two_nodes).chat.completions.with_streaming_response.create(
        model=MODEL, messages=[{"role": "user", "content": "which node?"}], stream=True
    ) as raw:
        assert raw.headers["x-shareai-node"].startswith("nd_")
        assert raw.headers["x-request-id"].startswith("req_")
    stream = client(two_nodes).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text = ""
    finish_reasons = []
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            if choice.finish_reason:
                finish_reasons.append(choice.finish_reason)
    assert text
    assert finish_reasons == ["stop"]
    assert usage is not None
    assert usage.completion_tokens > 0


def test_completions_endpoint(two_nodes: Network) -> None:
    completion = client(two_nodes).completions.create(model=MODEL, prompt="Once upon", max_tokens=5)
    assert completion.choices[0].text
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 5


def test_async_client_streams_concurrent_requests(two_nodes: Network) -> None:
    async def run() -> list[str]:
        async_client = openai.AsyncOpenAI(
            base_url=two_nodes.base_url, api_key=two_nodes.customer_key, max_retries=0
        )

        async def one(i: int) -> str:
            stream = await async_client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": f"request {i}"}], stream=True
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        try:
            return await asyncio.gather(*(one(i) for i in range(6)))
        finally:
            await async_client.close()

    answers = asyncio.run(run())
    assert len(answers) == 6
    assert all(answers)


def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(two_nodes: Network) -> None:
    sdk = client(two_nodes)
    with pytest.raises(openai.NotFoundError) as not_found:
        sdk.chat.completions.create(
            model="no/such-model", messages=[{"role": "user", "content": "x"}]
        )
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as too_many:
        sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=10_000_000
        )
    assert too_many.value.param == "max_tokens"
    with pytest.raises(openai.BadRequestError) as unsupported:
        sdk.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "x"}],
            extra_body={"frobnicate": True},
        )
    assert unsupported.value.code == "unsupported_parameter"
    stranger = openai.OpenAI(base_url=two_nodes.base_url, api_key="sk-sai-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])

    raw = httpx.post(
        two_nodes.base_url + "/chat/completions",
        content=b"{not json",
        headers={"authorization": f"Bearer {two_nodes.customer_key}"},
    )
    assert raw.status_code == 400
    assert raw.json()["error"]["code"] == "invalid_json"
    wrong_type = httpx.post(
        two_nodes.base_url + "/chat/completions",
        json={"model": MODEL, "messages": "hello"},
        headers={"authorization": f"Bearer {two_nodes.customer_key}"},
    )
    assert wrong_type.status_code == 400
    assert wrong_type.json()["error"]["param"].startswith("messages")
    huge = httpx.post(
        two_nodes.base_url + "/chat/completions",
        content=b'{"model": "x", "messages": [{"role": "user", "content": "'
        + b"a" * 5_000_000
        + b'"}]}',
        headers={"authorization": f"Bearer {two_nodes.customer_key}"},
    )
    assert huge.status_code == 413
    assert huge.json()["error"]["code"] == "request_too_large"
    with pytest.raises(openai.BadRequestError) as long_stop:
        sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], stop=["x" * 300]
        )
    assert str(long_stop.value.param).startswith("stop")
    with pytest.raises(openai.APIStatusError) as too_big_for_a_node:
        # Under the 4 MiB body limit, over the node's 1 MiB frame limit.
        sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "a" * 2_000_000}]
        )
    assert too_big_for_a_node.value.status_code == 413
    # Still serving.
    ok = sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert ok.choices[0].message.content


def test_missing_key_is_401(two_nodes: Network) -> None:
    response = httpx.post(two_nodes.base_url + "/chat/completions", json={"model": MODEL})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert response.headers["x-request-id"].startswith("req_")


def test_node_killed_before_first_token_fails_over(tmp_path: Path) -> None:
    with network(tmp_path) as net:
        slow = net.add_node(
            "slow-cheap", mock_model(price_in="0.01", price_out="0.01", ttft_ms=3_000)
        )
        net.add_node("backup", mock_model(price_in="0.90", price_out="0.90"))
        net.wait_for_nodes(MODEL, 2)

        async def request_then_kill() -> str:
            async_client = openai.AsyncOpenAI(
                base_url=net.base_url, api_key=net.customer_key, max_retries=0
            )
            try:
                task = asyncio.create_task(
                    async_client.chat.completions.create(
                        model=MODEL, messages=[{"role": "user", "content": "hi"}]
                    )
                )
                await asyncio.sleep(1.0)  # the job is on the cheap node, which is still thinking
                slow.kill()
                completion = await task
                return completion.choices[0].message.content or ""
            finally:
                await async_client.close()

        assert asyncio.run(request_then_kill())


def test_node_killed_after_first_token_ends_the_stream_with_an_error(tmp_path: Path) -> None:
    with network(tmp_path) as net:
        node = net.add_node(
            "only", mock_model(price_in="0.01", price_out="0.01", tokens_per_s=5, output_tokens=500)
        )
        net.wait_for_nodes(MODEL, 1)
        stream = client(net).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "long answer"}], stream=True
        )
        received: list[str] = []

        def read_and_kill_after_first_token() -> None:
            for chunk in stream:
                received.extend(choice.delta.content or "" for choice in chunk.choices)
                if "".join(received):
                    node.kill()

        with pytest.raises(openai.APIError) as broken:
            read_and_kill_after_first_token()
        assert "".join(received)
        assert "failed mid-answer" in str(broken.value)


def test_nodes_come_back_after_node_and_coordinator_restarts(tmp_path: Path) -> None:
    with network(tmp_path) as net:
        node = net.add_node("n1", mock_model(price_in="0.10", price_out="0.10"))
        net.wait_for_nodes(MODEL, 1)
        node.kill()
        net.wait_for_nodes(MODEL, 0)
        node.start()
        net.wait_for_nodes(MODEL, 1)
        net.stop_coordinator()
        time.sleep(0.5)
        net.start_coordinator()
        net.wait_for_nodes(MODEL, 1, timeout=90)
        answer = client(net).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "back?"}]
        )
        assert answer.choices[0].message.content


def test_revoking_a_node_closes_its_session_and_stops_the_agent(tmp_path: Path) -> None:
    with network(tmp_path) as net:
        node = net.add_node("doomed", mock_model(price_in="0.10", price_out="0.10"))
        net.wait_for_nodes(MODEL, 1)
        node_id = Identity.load(node.config.parent / "node.key").public_key.node_id
        revoked = net.admin("revoke-node", "--node-id", node_id)
        assert revoked["node_id"] == node_id
        net.wait_for_nodes(MODEL, 0, timeout=15)
        assert node.process is not None
        assert node.process.wait(timeout=30) == 1  # the agent stops: a revoked key never returns
        assert "revoked" in node.log.read_text()


def test_a_node_key_that_was_never_enrolled_is_refused(tmp_path: Path) -> None:
    with network(tmp_path) as net:
        node = net.add_node("stranger", mock_model(price_in="0.10", price_out="0.10"))
        net.wait_for_nodes(MODEL, 1)
        node.stop()
        # Swap in a fresh key the coordinator has never seen.
        key_file = node.config.parent / "node.key"
        key_file.unlink()
        Identity.generate().save(key_file)
        node.start()
        assert node.process is not None
        assert node.process.wait(timeout=60) == 1
        assert "unknown_node" in node.log.read_text()
        assert net.model_nodes(MODEL) == 0


def test_a_customer_who_disconnects_mid_stream_cancels_the_job_on_the_node(
    tmp_path: Path,
) -> None:
    with network(tmp_path) as net:
        # One slot, and an answer that would take minutes: the slot frees only if the job stops.
        net.add_node(
            "single-slot",
            mock_model(
                price_in="0.1",
                price_out="0.1",
                tokens_per_s=2,
                output_tokens=500,
                max_concurrency=1,
            ),
        )
        net.wait_for_nodes(MODEL, 1)
        body = {"model": MODEL, "messages": [{"role": "user", "content": "long"}], "stream": True}
        headers = {"authorization": f"Bearer {net.customer_key}"}
        with httpx.stream(
            "POST", net.base_url + "/chat/completions", json=body, headers=headers, timeout=30
        ) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    break  # the first token arrived; now walk away
        answer = client(net).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "next"}], max_tokens=2
        )
        assert answer.choices[0].message.content


def test_the_same_journey_on_postgresql(tmp_path: Path) -> None:
    database_url = asyncio.run(create_postgres_database())
    try:
        with network(tmp_path, database_url=database_url) as net:
            net.add_node("pg-node", mock_model(price_in="0.10", price_out="0.20"))
            net.wait_for_nodes(MODEL, 1)
            answer = client(net).chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "on postgres"}]
            )
            assert answer.choices[0].message.content
            assert not (net.data_dir / "coordinator.db").exists()  # nothing went to SQLite
    finally:
        asyncio.run(drop_postgres_database(database_url))
