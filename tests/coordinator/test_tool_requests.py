"""Tools and response_format in the customer API: request to Job, node output to OpenAI shapes.

In-process and fast; ``tests/e2e/test_tools.py`` runs the same journeys over a real network.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator
from typing import Any, cast

import pytest

from coordinator.api.completions import CompletionSettings, build_job, respond
from coordinator.api.errors import ApiError
from coordinator.api.schemas import ChatCompletionRequest, parse_body
from coordinator.hub.dispatch import Dispatcher, Output
from protocol import (
    MAX_JSON_CHARS,
    Chunk,
    Done,
    Job,
    Timings,
    ToolCallDelta,
    Usage,
    encode_tool_call_deltas,
)

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": None,  # explicit nulls are dropped, not forwarded
        "parameters": {"type": "object", "properties": {"city": {"default": None}}},
    },
}


def job_for(**body: Any) -> Job:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}
    request = parse_body(json.dumps(body).encode(), ChatCompletionRequest)
    return build_job(request, CompletionSettings())


def test_tools_choice_and_format_become_compact_json_text_in_the_job() -> None:
    job = job_for(
        tools=[TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=True,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
        },
    )
    assert job.tools_json == (
        '[{"type":"function","function":{"name":"get_weather",'
        '"parameters":{"type":"object","properties":{"city":{"default":null}}}}}]'
    )
    assert job.tool_choice_json == '{"type":"function","function":{"name":"get_weather"}}'
    assert job.parallel_tool_calls is True
    assert job.response_format_json == (
        '{"type":"json_schema","json_schema":{"name":"out","schema":{"type":"object"},'
        '"strict":true}}'
    )


def test_tool_choice_and_parallel_tool_calls_without_tools_are_not_forwarded() -> None:
    job = job_for(tool_choice="none", parallel_tool_calls=False)
    assert (job.tools_json, job.tool_choice_json, job.parallel_tool_calls) == (None, None, None)
    plain = job_for()
    assert (plain.tools_json, plain.tool_choice_json, plain.response_format_json) == (
        None,
        None,
        None,
    )


def test_a_tool_round_trip_in_the_messages_reaches_the_job() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    job = job_for(
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None},
            {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "42"}]},
        ]
    )
    assert job.messages is not None
    _, assistant, tool = job.messages
    assert (assistant.role, assistant.content) == ("assistant", "")
    assert assistant.tool_calls_json is not None
    assert json.loads(assistant.tool_calls_json) == [call]
    assert (tool.role, tool.content, tool.tool_call_id) == ("tool", "42", "call_1")


def test_json_over_the_wire_limit_is_a_400_naming_the_parameter() -> None:
    huge = {"type": "function", "function": {"name": "f", "description": "x" * MAX_JSON_CHARS}}
    with pytest.raises(ApiError) as caught:
        job_for(tools=[huge])
    assert (caught.value.status, caught.value.param) == (400, "tools")


class FakeDispatcher:
    """Yields the given node output for any job, as one node would."""

    def __init__(self, *events: Output) -> None:
        self.events = events

    async def stream(self, job: Job) -> AsyncGenerator[tuple[str, Output], None]:
        for event in self.events:
            yield "nd_test", event


def chunk(index: int, text: str = "", *calls: ToolCallDelta) -> Chunk:
    return Chunk(
        job_id="job_1",
        index=index,
        text=text,
        tokens=1,
        tool_calls_json=encode_tool_call_deltas(calls) if calls else None,
    )


def done(finish_reason: Any = "tool_calls") -> Done:
    return Done(
        job_id="job_1",
        model="m",
        usage=Usage(prompt_tokens=5, completion_tokens=4),
        finish_reason=finish_reason,
        timings=Timings(queue_ms=0, time_to_first_token_ms=1, total_ms=2),
        receipt_signature=b"\0" * 64,
    )


def a_job() -> Job:
    return job_for().model_copy(update={"deadline_ms": int((time.time() + 30) * 1000)})


async def answer(*events: Output, stream: bool = False) -> Any:
    response = await respond(
        cast(Dispatcher, FakeDispatcher(*events)),
        a_job(),
        chat=True,
        stream=stream,
        include_usage=False,
        settings=CompletionSettings(first_output_grace_s=1.0),
        headers={},
    )
    if not stream:
        return response.content
    frames = [frame async for frame in response.iterator]  # type: ignore[attr-defined]
    text = b"".join(frames).decode()
    return [json.loads(line[6:]) for line in text.split("\n\n") if line.startswith("data: {")]


OUTPUT = (
    chunk(0, "", ToolCallDelta(0, id="call_a", name="get_weather")),
    chunk(1, "", ToolCallDelta(0, arguments='{"city":'), ToolCallDelta(1, id="call_b", name="t")),
    chunk(2, "", ToolCallDelta(0, arguments='"Paris"}'), ToolCallDelta(1, arguments="{}")),
    done(),
)


@pytest.mark.asyncio
async def test_a_whole_answer_joins_the_fragments_of_each_call() -> None:
    body = await answer(*OUTPUT)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {
                "id": "call_a",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            },
            {"id": "call_b", "type": "function", "function": {"name": "t", "arguments": "{}"}},
        ],
    }


@pytest.mark.asyncio
async def test_text_and_calls_together_keep_the_text_and_a_call_without_id_gets_one() -> None:
    body = await answer(chunk(0, "Sure."), chunk(1, "", ToolCallDelta(0, name="f")), done())
    message = body["choices"][0]["message"]
    assert message["content"] == "Sure."
    (call,) = message["tool_calls"]
    assert call["id"].startswith("call_")
    assert call["function"] == {"name": "f", "arguments": ""}


@pytest.mark.asyncio
async def test_a_stream_passes_tool_call_fragments_on_in_openai_shape() -> None:
    chunks = await answer(*OUTPUT, stream=True)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "index": 0,
                "id": "call_a",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ],
    }
    assert deltas[1] == {
        "content": None,
        "tool_calls": [
            {"index": 0, "function": {"arguments": '{"city":'}},
            {
                "index": 1,
                "id": "call_b",
                "type": "function",
                "function": {"name": "t", "arguments": ""},
            },
        ],
    }
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "tool_calls",
    }


@pytest.mark.asyncio
async def test_unreadable_tool_calls_from_a_node_fail_the_answer() -> None:
    bad = Chunk(job_id="job_1", index=0, text="", tokens=1, tool_calls_json='[{"index":"zero"}]')
    with pytest.raises(ApiError) as caught:
        await answer(bad, done())
    assert (caught.value.status, caught.value.code) == (502, "invalid_node_output")
    chunks = await answer(chunk(0, "Hi"), bad, done(), stream=True)
    assert chunks[0]["choices"][0]["delta"]["content"] == "Hi"
    assert chunks[-1]["error"]["code"] == "invalid_node_output"
