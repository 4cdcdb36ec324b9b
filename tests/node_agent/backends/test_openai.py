"""The openai backend against a real (fake) OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from node_agent.backends import BackendError, OpenAIBackend, TextDelta, make_backend
from protocol import KNOWN_PARAMETERS, ChatMessage, ManualClock, ToolCallDelta

from .fake_upstream import (
    DropReply,
    ErrorReply,
    FakeToolCall,
    FakeUpstream,
    HangReply,
    StreamReply,
)
from .helpers import MODEL, chat_job, collect, collect_until_error, completion_job, config

UPSTREAM_MODEL = "meta-llama/Llama-3.1-8B-Instruct"


@pytest_asyncio.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as server:
        yield server


def openai_backend(base_url: str, **fields: Any) -> OpenAIBackend:
    fields.setdefault("upstream_model", UPSTREAM_MODEL)
    return OpenAIBackend(config("openai", base_url=base_url, **fields))


@pytest_asyncio.fixture
async def backend(upstream: FakeUpstream) -> AsyncIterator[OpenAIBackend]:
    backend = openai_backend(upstream.base_url, read_timeout_s=5.0)
    yield backend
    await backend.aclose()


async def failure(backend: OpenAIBackend, job: Any = None) -> tuple[list[TextDelta], BackendError]:
    """Run a job that must fail: the deltas streamed before the error, and the error."""
    events, error = await collect_until_error(backend.generate(job or chat_job()))
    deltas = [event for event in events if isinstance(event, TextDelta)]
    assert deltas == events, "nothing but text may come before the error"
    return deltas, error


# --- streaming and usage --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_chat_streams_each_delta_and_the_upstreams_usage(
    upstream: FakeUpstream, backend: OpenAIBackend
) -> None:
    upstream.replies.append(StreamReply(pieces=("Hel", "lo", " there"), completion_tokens=4))
    deltas, finished = await collect(backend.generate(chat_job()))
    assert [(d.text, d.tokens, d.token_ids) for d in deltas] == [
        ("Hel", 1, None),
        ("lo", 1, None),
        (" there", 1, None),
    ]
    assert (finished.prompt_tokens, finished.completion_tokens) == (7, 4)
    assert finished.finish_reason == "stop"


@pytest.mark.asyncio
async def test_the_request_maps_the_job(upstream: FakeUpstream) -> None:
    backend = openai_backend(upstream.base_url + "/v1/", api_key="sk-upstream")
    job = chat_job(
        messages=[
            ChatMessage(role="developer", content="Be brief."),
            ChatMessage(role="user", content="Hi", name="ada"),
        ],
        max_tokens=64,
        temperature=0.2,
        top_p=0.9,
        stop=["\n\n"],
        seed=42,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
    )
    await collect(backend.generate(job))
    await backend.aclose()
    (request,) = upstream.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == "Bearer sk-upstream"
    assert request.body == {
        "model": UPSTREAM_MODEL,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi", "name": "ada"},
        ],
        "max_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "stop": ["\n\n"],
        "seed": 42,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


@pytest.mark.asyncio
async def test_completion_jobs_use_the_completions_endpoint(
    upstream: FakeUpstream, backend: OpenAIBackend
) -> None:
    upstream.replies.append(StreamReply(pieces=(" there", " was", " a"), finish_reason="length"))
    deltas, finished = await collect(backend.generate(completion_job("Once upon a time")))
    assert "".join(d.text for d in deltas) == " there was a"
    assert finished.finish_reason == "length"
    (request,) = upstream.requests
    assert request.path == "/v1/completions"
    assert request.body["prompt"] == "Once upon a time"
    assert "authorization" not in request.headers
    assert "messages" not in request.body
    assert "stop" not in request.body
    assert "seed" not in request.body


@pytest.mark.asyncio
async def test_without_usage_completion_tokens_are_the_content_deltas(
    upstream: FakeUpstream, backend: OpenAIBackend
) -> None:
    upstream.replies.append(StreamReply(pieces=("a", "b", "c", "d", "e"), send_usage=False))
    deltas, finished = await collect(backend.generate(chat_job()))
    assert len(deltas) == 5
    assert (finished.prompt_tokens, finished.completion_tokens) == (0, 5)


@pytest.mark.parametrize(
    "quirks",
    [
        {"line_ending": "\r\n"},
        {"split_data_lines": True},
        {"comments": True},
        {"write_size": 7},
        {"line_ending": "\r", "split_data_lines": True, "comments": True, "write_size": 3},
    ],
)
@pytest.mark.asyncio
async def test_event_stream_quirks_change_nothing(
    upstream: FakeUpstream, backend: OpenAIBackend, quirks: dict[str, Any]
) -> None:
    upstream.replies.append(StreamReply(pieces=("x, y", " é", "\nz"), **quirks))
    deltas, finished = await collect(backend.generate(chat_job()))
    assert [d.text for d in deltas] == ["x, y", " é", "\nz"]
    assert finished.completion_tokens == 3


# --- tools and structured output --------------------------------------------------------------

TOOLS_JSON = (
    '[{"type":"function","function":{"name":"get_weather","description":"Weather now",'
    '"parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]'
)


@pytest.mark.asyncio
async def test_tools_tool_choice_and_response_format_are_sent_upstream(
    upstream: FakeUpstream, backend: OpenAIBackend
) -> None:
    job = chat_job(max_tokens=32).model_copy(
        update={
            "messages": [
                ChatMessage(role="user", content="Weather in Paris?"),
                ChatMessage(
                    role="assistant",
                    content="",
                    tool_calls_json='[{"id":"call_1","type":"function","function":'
                    '{"name":"get_weather","arguments":"{\\"city\\":\\"Paris\\"}"}}]',
                ),
                ChatMessage(role="tool", content='{"celsius":21}', tool_call_id="call_1"),
            ],
            "tools_json": TOOLS_JSON,
            "tool_choice_json": '{"type":"function","function":{"name":"get_weather"}}',
            "parallel_tool_calls": False,
            "response_format_json": '{"type":"json_object"}',
        }
    )
    await collect(backend.generate(job))
    body = upstream.requests[-1].body
    assert body["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": '{"celsius":21}', "tool_call_id": "call_1"},
    ]
    assert body["tools"][0]["function"]["parameters"]["required"] == ["city"]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False
    assert body["response_format"] == {"type": "json_object"}


@pytest.mark.asyncio
async def test_without_tools_no_tool_fields_are_sent(
    upstream: FakeUpstream, backend: OpenAIBackend
) -> None:
    await collect(backend.generate(chat_job()))
    body = upstream.requests[-1].body
    assert not body.keys() & {"tools", "tool_choice", "parallel_tool_calls", "response_format"}


@pytest.mark.asyncio
async def test_streamed_tool_calls_become_tool_call_deltas(
    upstream: FakeUpstream, backend: OpenAIBackend
) -> None:
    upstream.replies.append(
        StreamReply(
            pieces=("Let me look.",),
            tool_calls=(
                FakeToolCall("get_weather", ('{"city": ', '"Paris"}'), id="call_a"),
                FakeToolCall("get_time", ("{}",), id="call_b"),
            ),
            finish_reason="tool_calls",
        )
    )
    job = chat_job().model_copy(update={"tools_json": TOOLS_JSON})
    deltas, finished = await collect(backend.generate(job))
    assert deltas[0] == TextDelta("Let me look.", 1)
    assert [d.tool_calls for d in deltas[1:]] == [
        (ToolCallDelta(0, id="call_a", name="get_weather"),),
        (ToolCallDelta(0, arguments='{"city": '),),
        (ToolCallDelta(0, arguments='"Paris"}'),),
        (ToolCallDelta(1, id="call_b", name="get_time"),),
        (ToolCallDelta(1, arguments="{}"),),
    ]
    assert all(d.text == "" and d.tokens == 1 for d in deltas[1:])
    assert finished.finish_reason == "tool_calls"
    assert finished.completion_tokens == 6


@pytest.mark.asyncio
async def test_a_call_without_an_id_gets_one_and_repeated_ids_are_dropped(
    upstream: FakeUpstream, backend: OpenAIBackend
) -> None:
    upstream.replies.append(
        StreamReply(
            pieces=(),
            tool_calls=(
                FakeToolCall("f", ("{", "}"), id=None),
                FakeToolCall("g", ("{", "}"), id="call_g", repeat_id=True),
            ),
            finish_reason="tool_calls",
            send_usage=False,
        )
    )
    deltas, finished = await collect(backend.generate(chat_job()))
    calls = [call for d in deltas for call in d.tool_calls]
    assert calls[0].id is not None
    assert calls[0].id.startswith("call_")
    assert calls[0].name == "f"
    assert [(c.index, c.id, c.name, c.arguments) for c in calls[1:]] == [
        (0, None, None, "{"),
        (0, None, None, "}"),
        (1, "call_g", "g", ""),
        (1, None, None, "{"),
        (1, None, None, "}"),
    ]
    assert finished.completion_tokens == 6  # counted as deltas without usage


@pytest.mark.parametrize(
    "function_call_reason", [("function_call", "tool_calls"), ("tool_calls", "tool_calls")]
)
@pytest.mark.asyncio
async def test_tool_finish_reasons_map_to_tool_calls(
    upstream: FakeUpstream, backend: OpenAIBackend, function_call_reason: tuple[str, str]
) -> None:
    upstream_reason, reason = function_call_reason
    upstream.replies.append(StreamReply(pieces=("x",), finish_reason=upstream_reason))
    _, finished = await collect(backend.generate(chat_job()))
    assert finished.finish_reason == reason


@pytest.mark.parametrize(
    "changes",
    [
        {"tools_json": "[{not json"},
        {"response_format_json": "NaN"},
        {"messages": [ChatMessage(role="assistant", content="", tool_calls_json="[")]},
    ],
)
@pytest.mark.asyncio
async def test_job_json_that_is_not_json_is_an_invalid_request(
    upstream: FakeUpstream, backend: OpenAIBackend, changes: dict[str, Any]
) -> None:
    _, error = await failure(backend, chat_job().model_copy(update=changes))
    assert (error.code, error.retryable) == ("invalid_request", False)
    assert upstream.requests == []


@pytest.mark.parametrize(
    "tool_calls",
    [
        {"index": 0},  # not a list
        ["call"],
        [{"index": "0", "function": {"arguments": ""}}],
        [{"index": 0, "id": "", "function": {"arguments": ""}}],
        [{"index": 0, "function": {"arguments": 5}}],
    ],
)
@pytest.mark.asyncio
async def test_malformed_upstream_tool_calls_are_a_backend_error(
    upstream: FakeUpstream, backend: OpenAIBackend, tool_calls: Any
) -> None:
    upstream.replies.append(
        StreamReply(pieces=("a",), raw_deltas=({"tool_calls": tool_calls},), finish_reason="stop")
    )
    deltas, error = await failure(backend)
    assert [d.text for d in deltas] == ["a"]
    assert (error.code, error.retryable) == ("backend_error", True)
    assert "tool_call" in str(error).replace(" ", "_")


@pytest.mark.asyncio
async def test_one_connection_serves_job_after_job(
    upstream: FakeUpstream, backend: OpenAIBackend
) -> None:
    for n in range(3):
        _, finished = await collect(backend.generate(chat_job(job_id=f"job-{n}")))
        assert finished.finish_reason == "stop"
    assert len(upstream.requests) == 3
    assert upstream.connections == 1


@pytest.mark.asyncio
async def test_the_offer_lists_every_parameter_unless_the_provider_narrows_it() -> None:
    # The backend passes every parameter on, so by default it offers them all.
    assert OpenAIBackend.SUPPORTED_PARAMETERS == KNOWN_PARAMETERS
    default = openai_backend("http://127.0.0.1:9")
    narrowed = openai_backend(
        "http://127.0.0.1:9", supported_parameters=["temperature", "max_tokens", "stop"]
    )
    try:
        assert default.offers()[0].supported_parameters == sorted(KNOWN_PARAMETERS)
        assert narrowed.offers()[0].supported_parameters == ["max_tokens", "stop", "temperature"]
    finally:
        await default.aclose()
        await narrowed.aclose()


@pytest.mark.asyncio
async def test_offers_and_kind() -> None:
    backend = openai_backend(
        "http://127.0.0.1:9", weights_hash="sha256:abc", price_input_micro_usd_per_1m=100_000
    )
    assert backend.kind == "openai"
    (offer,) = backend.offers()
    assert (offer.model, offer.weights_hash, offer.price_input_micro_usd_per_1m) == (
        MODEL,
        "sha256:abc",
        100_000,
    )
    await backend.aclose()


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "code", "retryable"),
    [
        (ErrorReply(429, "rate limited"), "overloaded", True),
        (ErrorReply(503, "warming up"), "overloaded", True),
        (ErrorReply(500, "CUDA error"), "backend_error", True),
        (ErrorReply(502, "bad gateway"), "backend_error", True),
        (
            ErrorReply(
                400,
                "This model's maximum context length is 8192 tokens. However, you requested "
                "9000 tokens (8800 in the messages, 200 in the completion).",
            ),
            "context_length_exceeded",
            False,
        ),
        (
            ErrorReply(400, "the request exceeds the available context size, try increasing it"),
            "context_length_exceeded",
            False,
        ),
        (ErrorReply(400, "temperature must be positive"), "invalid_request", False),
        (ErrorReply(422, "unprocessable"), "invalid_request", False),
        (ErrorReply(404, "model not found"), "model_unavailable", True),
        (ErrorReply(401, "bad key"), "backend_error", True),
    ],
)
@pytest.mark.asyncio
async def test_http_errors_map_to_failure_codes(
    upstream: FakeUpstream,
    backend: OpenAIBackend,
    reply: ErrorReply,
    code: str,
    retryable: bool,
) -> None:
    upstream.replies.append(reply)
    deltas, error = await failure(backend)
    assert deltas == []
    assert (error.code, error.retryable) == (code, retryable)
    assert str(reply.status) in str(error)
    assert reply.message[:20] in str(error)


@pytest.mark.asyncio
async def test_connection_refused_is_a_retryable_backend_error() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = openai_backend(f"http://127.0.0.1:{port}")
    _, error = await failure(backend)
    await backend.aclose()
    assert (error.code, error.retryable) == ("backend_error", True)


@pytest.mark.asyncio
async def test_a_connection_closed_before_any_answer_is_a_backend_error(
    upstream: FakeUpstream, backend: OpenAIBackend
) -> None:
    upstream.replies.append(DropReply())
    _, error = await failure(backend)
    assert (error.code, error.retryable) == ("backend_error", True)


@pytest.mark.asyncio
async def test_a_connection_dropped_mid_stream_is_a_backend_error_after_the_deltas(
    upstream: FakeUpstream, backend: OpenAIBackend
) -> None:
    upstream.replies.append(StreamReply(pieces=("a", "b", "c", "d"), drop_after=2))
    deltas, error = await failure(backend)
    assert [d.text for d in deltas] == ["a", "b"]
    assert (error.code, error.retryable) == ("backend_error", True)


@pytest.mark.parametrize(
    "reply",
    [
        StreamReply(send_done=False),
        StreamReply(finish_reason=None),
    ],
    ids=["no-done", "no-finish-reason"],
)
@pytest.mark.asyncio
async def test_a_truncated_stream_is_a_backend_error(
    upstream: FakeUpstream, backend: OpenAIBackend, reply: StreamReply
) -> None:
    upstream.replies.append(reply)
    deltas, error = await failure(backend)
    assert len(deltas) == len(reply.pieces)
    assert (error.code, error.retryable) == ("backend_error", True)


@pytest.mark.asyncio
async def test_an_error_event_in_the_stream_is_a_backend_error(
    upstream: FakeUpstream, backend: OpenAIBackend
) -> None:
    upstream.replies.append(StreamReply(error_event_after=1, error_message="engine died"))
    deltas, error = await failure(backend)
    assert len(deltas) == 1
    assert (error.code, error.retryable) == ("backend_error", True)
    assert "engine died" in str(error)


@pytest.mark.asyncio
async def test_a_silent_upstream_is_a_read_timeout_and_is_hung_up_on(
    upstream: FakeUpstream,
) -> None:
    upstream.replies.append(HangReply())
    backend = openai_backend(upstream.base_url, read_timeout_s=0.2)
    _, error = await failure(backend)
    await backend.aclose()
    assert (error.code, error.retryable) == ("timeout", True)
    async with asyncio.timeout(5):
        await upstream.client_gone.wait()


@pytest.mark.asyncio
async def test_silence_mid_stream_is_a_timeout_too(upstream: FakeUpstream) -> None:
    upstream.replies.append(StreamReply(pieces=("a", "b", "c"), hang_after=1))
    backend = openai_backend(upstream.base_url, read_timeout_s=0.2)
    deltas, error = await failure(backend)
    await backend.aclose()
    assert [d.text for d in deltas] == ["a"]
    assert error.code == "timeout"


@pytest.mark.asyncio
async def test_the_jobs_deadline_ends_a_hanging_request(
    upstream: FakeUpstream, backend: OpenAIBackend
) -> None:
    upstream.replies.append(HangReply())
    job = chat_job(deadline_ms=int(time.time() * 1000) + 300)
    _, error = await failure(backend, job)
    assert (error.code, error.retryable) == ("timeout", False)
    async with asyncio.timeout(5):
        await upstream.client_gone.wait()


@pytest.mark.asyncio
async def test_a_passed_deadline_sends_nothing(upstream: FakeUpstream) -> None:
    clock = ManualClock(wall_s=2_000_000_000.0)
    backend = OpenAIBackend(config("openai", base_url=upstream.base_url), clock=clock)
    _, error = await failure(backend, chat_job(deadline_ms=1_999_999_999_000))
    await backend.aclose()
    assert error.code == "timeout"
    assert upstream.requests == []


@pytest.mark.asyncio
async def test_a_job_for_another_model_is_refused(backend: OpenAIBackend) -> None:
    _, error = await failure(backend, chat_job(model="gpt-oss-120b"))
    assert (error.code, error.retryable) == ("model_unavailable", True)


@pytest.mark.asyncio
async def test_a_chat_only_upstream_refuses_completion_jobs(upstream: FakeUpstream) -> None:
    backend = openai_backend(upstream.base_url, endpoint="chat")
    _, error = await failure(backend, completion_job())
    await backend.aclose()
    assert error.code == "invalid_request"
    assert upstream.requests == []


# --- cancellation ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_cancelling_the_consumer_closes_the_upstream_connection(
    upstream: FakeUpstream, backend: OpenAIBackend
) -> None:
    upstream.replies.append(StreamReply(pieces=tuple("abcdefghij" * 10), delay_s=0.05))
    first = asyncio.Event()

    async def consume() -> None:
        events = backend.generate(chat_job())
        async with contextlib.aclosing(events):
            async for _ in events:
                first.set()

    task = asyncio.create_task(consume())
    async with asyncio.timeout(5):
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await upstream.client_gone.wait()
    assert upstream.disconnects == 1


@pytest.mark.asyncio
async def test_closing_the_stream_early_closes_the_upstream_connection(
    upstream: FakeUpstream, backend: OpenAIBackend
) -> None:
    upstream.replies.append(StreamReply(pieces=tuple("abcdefghij" * 10), delay_s=0.05))
    events = backend.generate(chat_job())
    async with contextlib.aclosing(events):
        async for _ in events:
            break
    async with asyncio.timeout(5):
        await upstream.client_gone.wait()
    # and the backend still serves the next job, on a new connection
    upstream.replies.append(StreamReply())
    _, finished = await collect(backend.generate(chat_job()))
    assert finished.finish_reason == "stop"


@pytest.mark.asyncio
async def test_make_backend_builds_an_openai_backend(upstream: FakeUpstream) -> None:
    backend = make_backend(config("openai", base_url=upstream.base_url))
    assert isinstance(backend, OpenAIBackend)
    _, finished = await collect(backend.generate(chat_job()))
    await backend.aclose()
    assert finished.completion_tokens == 4
    assert upstream.requests[0].body["model"] == MODEL  # no upstream_model: the offered name
