"""Tools and structured output end to end: the openai SDK, the coordinator, a node, an upstream.

The ``openai``-backend node sits in front of the fake OpenAI-compatible upstream, which streams
tool calls the way vLLM does; the mock node shows the mock's documented tool and JSON answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCall,
)
from openai.types.shared_params import ResponseFormatJSONSchema

from tests.e2e.conftest import UPSTREAM_MODEL as MODEL
from tests.e2e.network import Network, network
from tests.e2e.test_network import mock_model
from tests.node_agent.backends.fake_upstream import FakeToolCall, FakeUpstream, StreamReply

WEATHER_TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather now in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME_TOOL: ChatCompletionFunctionToolParam = {"type": "function", "function": {"name": "get_time"}}
WEATHER_CALL = StreamReply(
    pieces=(),
    tool_calls=(FakeToolCall("get_weather", ('{"city": ', '"Paris"}'), id="call_weather_1"),),
    finish_reason="tool_calls",
)


def sdk(net: Network) -> openai.OpenAI:
    return openai.OpenAI(base_url=net.base_url, api_key=net.customer_key, max_retries=0)


def function_calls(reply: ChatCompletion) -> list[ChatCompletionMessageFunctionToolCall]:
    calls = reply.choices[0].message.tool_calls or []
    assert all(isinstance(call, ChatCompletionMessageFunctionToolCall) for call in calls)
    return [call for call in calls if isinstance(call, ChatCompletionMessageFunctionToolCall)]


def test_a_tool_call_comes_back_as_message_tool_calls(
    upstream_network: tuple[Network, FakeUpstream],
) -> None:
    net, upstream = upstream_network
    upstream.replies.append(WEATHER_CALL)
    reply = sdk(net).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice="auto",
        parallel_tool_calls=False,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = function_calls(reply)
    assert call.type == "function"
    assert call.id == "call_weather_1"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    sent = upstream.requests[-1].body
    assert sent["tools"] == [WEATHER_TOOL, TIME_TOOL]
    assert sent["tool_choice"] == "auto"
    assert sent["parallel_tool_calls"] is False


def test_streamed_tool_call_deltas_are_reassembled_by_the_sdk(
    upstream_network: tuple[Network, FakeUpstream],
) -> None:
    net, upstream = upstream_network
    upstream.replies.append(
        StreamReply(
            pieces=("Checking", " both."),
            tool_calls=(
                FakeToolCall("get_weather", ('{"ci', 'ty": "Pa', 'ris"}'), id="call_w"),
                FakeToolCall("get_time", ("{}",), id="call_t"),
            ),
            finish_reason="tool_calls",
        )
    )
    with sdk(net).chat.completions.stream(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather and time?"}],
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    ) as stream:
        events = list(stream)
        final = stream.get_final_completion()
    argument_events = [e for e in events if e.type == "tool_calls.function.arguments.done"]
    assert [e.name for e in argument_events] == ["get_weather", "get_time"]
    message = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls"
    assert message.content == "Checking both."
    calls = [(c.id, c.function.name, c.function.arguments) for c in function_calls(final)]
    assert calls == [("call_w", "get_weather", '{"city": "Paris"}'), ("call_t", "get_time", "{}")]
    assert upstream.requests[-1].body["tool_choice"] == {
        "type": "function",
        "function": {"name": "get_weather"},
    }


def test_the_raw_stream_carries_openai_tool_call_chunks(
    upstream_network: tuple[Network, FakeUpstream],
) -> None:
    net, upstream = upstream_network
    upstream.replies.append(WEATHER_CALL)
    with httpx.stream(
        "POST",
        net.base_url + "/chat/completions",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": "Weather in Paris?"}],
            "tools": [WEATHER_TOOL],
            "stream": True,
        },
        headers={"authorization": f"Bearer {net.customer_key}"},
        timeout=30,
    ) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: {")]
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines]
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks]
    first = deltas[0]
    assert first["role"] == "assistant"
    assert first["content"] is None
    assert first["tool_calls"][0] == {
        "index": 0,
        "id": "call_weather_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    arguments = "".join(
        call["function"]["arguments"] for delta in deltas for call in delta.get("tool_calls", ())
    )
    assert json.loads(arguments) == {"city": "Paris"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_response_format_is_forwarded_as_sent_however_deeply_nested(
    upstream_network: tuple[Network, FakeUpstream],
) -> None:
    net, upstream = upstream_network
    upstream.replies.append(StreamReply(pieces=('{"ok": ', "true}")))
    reply = sdk(net).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Answer in JSON"}],
        response_format={"type": "json_object"},
    )
    assert json.loads(reply.choices[0].message.content or "") == {"ok": True}
    assert upstream.requests[-1].body["response_format"] == {"type": "json_object"}

    schema: dict[str, Any] = {"type": "string"}
    for _ in range(20):  # far deeper than msgpack's depth limit on the wire
        schema = {"type": "object", "properties": {"inner": schema}, "required": ["inner"]}
    response_format: ResponseFormatJSONSchema = {
        "type": "json_schema",
        "json_schema": {"name": "nested", "schema": schema, "strict": True},
    }
    sdk(net).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Answer in JSON"}],
        response_format=response_format,
    )
    assert upstream.requests[-1].body["response_format"] == response_format


def test_a_follow_up_with_the_tool_call_and_its_result_is_forwarded(
    upstream_network: tuple[Network, FakeUpstream],
) -> None:
    net, upstream = upstream_network
    client = sdk(net)
    upstream.replies.append(WEATHER_CALL)
    # Any: the SDK's docs put the returned message object itself back into the list.
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
    assistant = first.choices[0].message
    assert assistant.tool_calls is not None
    messages += [
        assistant,
        {"role": "tool", "tool_call_id": assistant.tool_calls[0].id, "content": '{"celsius": 21}'},
    ]
    upstream.replies.append(StreamReply(pieces=("It is 21 °C.",)))
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content == "It is 21 °C."
    assert second.choices[0].finish_reason == "stop"
    sent = upstream.requests[-1].body["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_weather_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    }
    assert sent[2] == {
        "role": "tool",
        "content": '{"celsius": 21}',
        "tool_call_id": "call_weather_1",
    }


BAD_REQUESTS: list[tuple[dict[str, Any], str, str]] = [
    ({"tools": [{"type": "function", "function": {}}]}, "tools.0.function.name", "missing"),
    ({"tools": [{"type": "retrieval"}]}, "tools.0.type", "invalid_value"),
    (
        {"tools": [{"type": "function", "function": {"name": "get weather"}}]},
        "tools.0.function.name",
        "invalid_value",
    ),
    ({"tools": [WEATHER_TOOL, WEATHER_TOOL]}, "tools", "invalid_value"),
    ({"tools": []}, "tools", "invalid_value"),
    ({"tools": [WEATHER_TOOL], "tool_choice": "maybe"}, "tool_choice", "invalid_value"),
    (
        {"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "x"}}},
        "tool_choice",
        "invalid_value",
    ),
    ({"tool_choice": "required"}, "tool_choice", "invalid_value"),
    ({"response_format": {"type": "yaml"}}, "response_format.type", "invalid_value"),
    ({"response_format": {"type": "json_schema"}}, "response_format", "invalid_value"),
    (
        {"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
        "response_format.json_schema.name",
        "missing",
    ),
    ({"functions": [{"name": "f"}]}, "functions", "unsupported_parameter"),
    (
        {"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "21"}]},
        "messages.1",
        "invalid_value",
    ),
    (
        {"messages": [{"role": "user", "content": None}]},
        "messages.0",
        "invalid_value",
    ),
    (
        {"messages": [{"role": "user", "content": "x", "tool_call_id": "call_1"}]},
        "messages.0",
        "invalid_value",
    ),
    (
        {"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function"}]}]},
        "messages.0.tool_calls.0.function",
        "missing",
    ),
]


@pytest.fixture
def mock_network(tmp_path: Path) -> Iterator[Network]:
    with network(tmp_path) as net:
        net.add_node("mock", mock_model(price_in="0.10", price_out="0.20", output_tokens=6))
        net.wait_for_nodes(MODEL, 1)
        yield net


def test_bad_tool_shapes_are_400s_naming_the_parameter(mock_network: Network) -> None:
    for changes, param, code in BAD_REQUESTS:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], **changes}
        response = httpx.post(
            mock_network.base_url + "/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {mock_network.customer_key}"},
        )
        assert response.status_code == 400, (changes, response.text)
        error = response.json()["error"]
        assert error["param"] == param, (changes, error)
        assert error["code"].startswith(code), (changes, error)


def test_the_mock_calls_a_required_tool_and_answers_json_when_asked(mock_network: Network) -> None:
    client = sdk(mock_network)
    called = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather?"}],
        tools=[TIME_TOOL, WEATHER_TOOL],
        tool_choice="required",
    )
    assert called.choices[0].finish_reason == "tool_calls"
    (call,) = function_calls(called)
    assert (call.function.name, call.function.arguments) == ("get_time", "{}")
    assert called.usage is not None
    assert called.usage.completion_tokens == 2

    chatted = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather?"}],
        tools=[WEATHER_TOOL],
    )
    assert chatted.choices[0].message.tool_calls is None
    assert chatted.choices[0].message.content

    answered = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "JSON please"}],
        response_format={"type": "json_object"},
    )
    assert list(json.loads(answered.choices[0].message.content or "")) == ["mock"]
