"""A node on the ``openai`` backend, in front of a local OpenAI-compatible fake upstream."""

from __future__ import annotations

import httpx
import openai

from tests.e2e.conftest import UPSTREAM_MODEL as MODEL  # served by the openai node and a mock
from tests.e2e.network import Network
from tests.e2e.test_network import mock_model
from tests.node_agent.backends.fake_upstream import ErrorReply, FakeUpstream


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
    # The scheduler spreads new nodes' traffic at random: ask for the (cheaper) openai node first.
    rows = httpx.get(f"{net.base_url}/models/{MODEL}/endpoints", timeout=5).json()["data"]
    first = min(rows, key=lambda row: row["pricing"]["input"])["node"]
    response = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hello"}],
        extra_body={"provider": {"order": [first]}},
    )
    assert response.headers["x-shareai-attempts"] == "2"
    completion = response.parse()
    assert completion.choices[0].message.content
    assert completion.choices[0].message.content != "Hi from upstream"  # the mock node answered
    assert len(upstream.requests) == 1
