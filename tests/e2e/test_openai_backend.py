"""A node on the ``openai`` backend, in front of a local OpenAI-compatible fake upstream."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.e2e.network import Network, network
from tests.e2e.test_network import mock_model
from tests.node_agent.backends.fake_upstream import ErrorReply, FakeUpstream, StreamReply

MODEL = "mock/echo"  # the same public name, served by an openai-backend node and a mock node


class UpstreamThread:
    """The fake upstream on its own event loop, so the synchronous test can drive the network."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.upstream = FakeUpstream(default_reply=StreamReply(pieces=("Hi", " from", " upstream")))
        self._stop = asyncio.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(),))

    async def _run(self) -> None:
        async with self.upstream:
            self._started.set()
            await self._stop.wait()

    def __enter__(self) -> FakeUpstream:
        self._thread.start()
        assert self._started.wait(10)
        return self.upstream

    def __exit__(self, *_: object) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture
def upstream_network(tmp_path: Path) -> Iterator[tuple[Network, FakeUpstream]]:
    with UpstreamThread() as upstream, network(tmp_path) as net:
        net.add_node(
            "proxy",
            f"""[[models]]
name = "{MODEL}"
backend = "openai"
upstream_url = "{upstream.base_url}/v1"
upstream_model = "tiny-upstream-model"
price_in_usd_per_1m = "0.01"
price_out_usd_per_1m = "0.01"
max_concurrency = 4
context_length = 4096
""",
        )
        net.wait_for_nodes(MODEL, 1)
        yield net, upstream


def test_requests_reach_the_upstream_and_stream_back(
    upstream_network: tuple[Network, FakeUpstream],
) -> None:
    net, upstream = upstream_network
    client = openai.OpenAI(base_url=net.base_url, api_key=net.customer_key, max_retries=0)
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello"}], temperature=0.3, seed=5
    )
    assert reply.choices[0].message.content == "Hi from upstream"
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == 7
    assert reply.usage.completion_tokens == 3
    sent = upstream.requests[-1].body
    assert sent["model"] == "tiny-upstream-model"
    assert sent["stream"] is True
    assert sent["temperature"] == 0.3
    assert sent["seed"] == 5

    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "again"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Hi from upstream"


def test_an_upstream_error_fails_over_to_another_node(
    upstream_network: tuple[Network, FakeUpstream],
) -> None:
    net, upstream = upstream_network
    net.add_node("backup", mock_model(price_in="5", price_out="5"))
    net.wait_for_nodes(MODEL, 2)
    upstream.replies.append(ErrorReply(503, "upstream overloaded"))
    client = openai.OpenAI(base_url=net.base_url, api_key=net.customer_key, max_retries=0)
    response = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hello"}]
    )
    completion = response.parse()
    assert completion.choices[0].message.content
    assert completion.choices[0].message.content != "Hi from upstream"  # the mock node answered
    assert len(upstream.requests) == 1
