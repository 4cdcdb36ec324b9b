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
from protocol import ChatMessage, ManualClock

from .fake_upstream import DropReply, ErrorReply, FakeUpstream, HangReply, StreamReply
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
