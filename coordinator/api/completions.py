"""``/v1/chat/completions`` and ``/v1/completions``: requests in, node output out (JSON or SSE).

Streaming responses wait a short grace period for the first output before sending headers, so
a request that cannot start (unknown model, no capacity, every node failed) still gets its real
HTTP status. If the first token takes longer, headers go out and SSE keep-alive comments follow
until output arrives; a failure after that is an ``error`` event, then ``[DONE]``.

Tool calls come from the node as fragments (``Chunk.tool_calls_json``): a stream passes them on
as OpenAI ``delta.tool_calls``; a whole answer joins the fragments of each call (arguments
concatenated, id and name from the first fragment that has them) into ``message.tool_calls``,
with ``content`` null when there was no text. A node whose fragments cannot be read has failed
the answer (``invalid_node_output``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from litestar.response import Response, Stream

from coordinator.api.errors import ApiError, error_body
from coordinator.api.schemas import ChatCompletionRequest, CompletionRequest
from coordinator.hub.dispatch import (
    DeadlineExceeded,
    Dispatcher,
    DispatchError,
    JobRejected,
    NoCapacity,
    NodesFailed,
    NoRoute,
    Output,
    UnknownModel,
)
from coordinator.routing import RouteInput
from protocol import (
    ChatMessage,
    Chunk,
    Done,
    InvalidJsonText,
    Job,
    SamplingParams,
    ToolCallDelta,
    decode_tool_call_deltas,
)
from scheduler import InvalidPreferences, RouteRequest, parse_routing_preferences

__all__ = ["CompletionSettings", "build_job", "estimate_prompt_tokens", "respond", "route_input"]

_KEEPALIVE = b": keep-alive\n\n"
_DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True, slots=True)
class CompletionSettings:
    default_max_tokens: int = 1024
    request_timeout_s: float = 300.0
    first_output_grace_s: float = 10.0
    keepalive_interval_s: float = 5.0


def build_job(body: ChatCompletionRequest | CompletionRequest, settings: CompletionSettings) -> Job:
    sampling = SamplingParams(
        max_tokens=body.output_limit(settings.default_max_tokens),
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        stop=body.stop_list(),
        seed=body.seed,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
    )
    common: dict[str, Any] = {
        "job_id": f"job_{secrets.token_hex(12)}",
        "model": body.model,
        "sampling": sampling,
        "deadline_ms": int((time.time() + settings.request_timeout_s) * 1000),
    }
    if isinstance(body, ChatCompletionRequest):
        messages = [
            ChatMessage(
                role=m.role,
                content=m.text(),
                name=m.name,
                tool_calls_json=m.tool_calls_json(position),
                tool_call_id=m.tool_call_id,
            )
            for position, m in enumerate(body.messages)
        ]
        tools_json = body.tools_json()
        return Job(
            kind="chat",
            messages=messages,
            prompt=None,
            tools_json=tools_json,
            tool_choice_json=body.tool_choice_json(),
            parallel_tool_calls=None if tools_json is None else body.parallel_tool_calls,
            response_format_json=body.response_format_json(),
            **common,
        )
    return Job(kind="completion", messages=None, prompt=body.prompt, **common)


def estimate_prompt_tokens(job: Job) -> int:
    """A rough prompt size for routing: characters / 4 (no tokenizer at the coordinator yet)."""
    chars = len(job.prompt or "") + sum(len(m.content) for m in job.messages or ())
    chars += len(job.tools_json or "") + len(job.response_format_json or "")
    return max(1, chars // 4)


def route_input(
    body: ChatCompletionRequest | CompletionRequest, job: Job, customer_account_id: str
) -> RouteInput:
    """The routing side of a request; raises ApiError 400 naming a malformed preference."""
    try:
        prefs = parse_routing_preferences(body.routing_body())
    except InvalidPreferences as error:
        raise ApiError(
            400, f"invalid value for {error}", code="invalid_value", param=error.field
        ) from None
    parameters = {
        name
        for name in ("tools", "response_format", "seed", "stop", "presence_penalty")
        if getattr(body, name, None)
    }
    request = RouteRequest(
        prompt_tokens=estimate_prompt_tokens(job),
        max_tokens=job.sampling.max_tokens,
        parameters=frozenset(parameters),
        customer_account_id=customer_account_id,
    )
    return RouteInput(prefs, request)


def _as_api_error(error: DispatchError) -> ApiError:
    if isinstance(error, UnknownModel):
        return ApiError(404, str(error), code="model_not_found", param="model")
    if isinstance(error, NoCapacity | NoRoute):
        code = "no_capacity" if isinstance(error, NoCapacity) else "no_route"
        return ApiError(503, str(error), code=code)
    if isinstance(error, JobRejected):
        status = 413 if error.code == "request_too_large" else 400
        return ApiError(status, str(error), code=error.code)
    if isinstance(error, DeadlineExceeded):
        return ApiError(504, str(error), code="timeout")
    if isinstance(error, NodesFailed):
        return ApiError(502, f"every node tried failed: {error}", code="upstream_failed")
    return ApiError(500, str(error))


class _BadNodeOutput(Exception):
    """The node sent output the coordinator cannot read; the answer has failed."""


def _tool_calls(chunk: Chunk) -> tuple[ToolCallDelta, ...]:
    if chunk.tool_calls_json is None:
        return ()
    try:
        return decode_tool_call_deltas(chunk.tool_calls_json)
    except InvalidJsonText as error:
        raise _BadNodeOutput(f"the node sent unreadable tool calls: {error}") from None


class _ToolCallsBuilder:
    """Joins streamed tool-call fragments into whole OpenAI ``tool_calls``, by index."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, Any]] = {}

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, fragment: ToolCallDelta) -> None:
        call = self._calls.setdefault(fragment.index, {"id": None, "name": None, "arguments": []})
        if call["id"] is None:
            call["id"] = fragment.id
        if call["name"] is None:
            call["name"] = fragment.name
        call["arguments"].append(fragment.arguments)

    def build(self) -> list[dict[str, Any]]:
        return [
            {
                # A node should name every call; one that did not still gets an answerable id.
                "id": call["id"] or f"call_{secrets.token_hex(12)}",
                "type": "function",
                "function": {"name": call["name"] or "", "arguments": "".join(call["arguments"])},
            }
            for _, call in sorted(self._calls.items())
        ]


class _Shape:
    """How a chat or a text completion looks on the wire."""

    def __init__(self, job: Job, chat: bool) -> None:
        self.chat = chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + job.job_id.removeprefix("job_")
        self.model = job.model
        self.created = int(time.time())

    def _envelope(self, streaming: bool) -> dict[str, Any]:
        kind = "chat.completion" if self.chat else "text_completion"
        return {
            "id": self.id,
            "object": kind + (".chunk" if streaming and self.chat else ""),
            "created": self.created,
            "model": self.model,
        }

    def delta(
        self, text: str, first: bool, tool_calls: tuple[ToolCallDelta, ...] = ()
    ) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {"content": text if text or not tool_calls else None}
            if first:
                delta["role"] = "assistant"
            if tool_calls:
                delta["tool_calls"] = [call.to_openai() for call in tool_calls]
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": None}
        return {**self._envelope(True), "choices": [choice]}

    def finish(self, finish_reason: str) -> dict[str, Any]:
        body = self.delta("", first=False)
        body["choices"][0]["finish_reason"] = finish_reason
        if self.chat:
            body["choices"][0]["delta"] = {}
        return body

    def usage_chunk(self, done: Done) -> dict[str, Any]:
        return {**self._envelope(True), "choices": [], "usage": _usage(done)}

    def whole(self, text: str, tool_calls: _ToolCallsBuilder, done: Done) -> dict[str, Any]:
        if self.chat:
            message: dict[str, Any] = {
                "role": "assistant",
                "content": text if text or not tool_calls else None,
                "refusal": None,
            }
            if tool_calls:
                message["tool_calls"] = tool_calls.build()
            choice: dict[str, Any] = {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": done.finish_reason,
            }
        else:
            choice = {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": done.finish_reason,
            }
        return {**self._envelope(False), "choices": [choice], "usage": _usage(done)}


def _usage(done: Done) -> dict[str, int]:
    prompt, completion = done.usage.prompt_tokens, done.usage.completion_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


async def respond(
    dispatcher: Dispatcher,
    job: Job,
    *,
    chat: bool,
    stream: bool,
    include_usage: bool,
    settings: CompletionSettings,
    headers: dict[str, str],
    routing: RouteInput | None = None,
) -> Response[Any]:
    shape = _Shape(job, chat)
    events = dispatcher.stream(job) if routing is None else dispatcher.stream(job, routing)
    if not stream:
        return await _whole_response(events, shape, headers, routing)
    first = asyncio.ensure_future(anext(events))
    try:
        await asyncio.wait_for(asyncio.shield(first), settings.first_output_grace_s)
    except TimeoutError:
        pass  # slow first token: commit headers now, keep the connection alive while waiting
    except DispatchError as error:
        await events.aclose()
        raise _as_api_error(error) from None
    except BaseException:
        first.cancel()
        await events.aclose()
        raise
    stream_headers = {**headers, "cache-control": "no-cache", "x-accel-buffering": "no"}
    if first.done() and first.exception() is None:
        stream_headers["x-shareai-node"] = first.result()[0]
    if routing is not None:
        stream_headers["x-shareai-attempts"] = str(routing.attempts)
    return Stream(
        _sse_stream(events, first, shape, include_usage, settings),
        media_type="text/event-stream",
        headers=stream_headers,
    )


async def _whole_response(
    events: AsyncGenerator[tuple[str, Output], None],
    shape: _Shape,
    headers: dict[str, str],
    routing: RouteInput | None = None,
) -> Response[Any]:
    parts: list[str] = []
    tool_calls = _ToolCallsBuilder()
    try:
        async for node_id, event in events:
            headers["x-shareai-node"] = node_id
            if routing is not None:
                headers["x-shareai-attempts"] = str(routing.attempts)
            if isinstance(event, Chunk):
                parts.append(event.text)
                for fragment in _tool_calls(event) if shape.chat else ():
                    tool_calls.add(fragment)
            elif isinstance(event, Done):
                return Response(shape.whole("".join(parts), tool_calls, event), headers=headers)
            else:
                raise ApiError(502, f"the node failed mid-answer: {event.message}", code=event.code)
    except DispatchError as error:
        raise _as_api_error(error) from None
    except _BadNodeOutput as error:
        raise ApiError(502, str(error), code="invalid_node_output") from None
    finally:
        await events.aclose()
    raise ApiError(502, "the node ended the answer without finishing it", code="upstream_failed")


def _render(
    event: Output, shape: _Shape, include_usage: bool, *, first: bool
) -> tuple[list[bytes], bool]:
    """The SSE frames for one event, and whether the stream ends with it."""
    if isinstance(event, Chunk):
        try:
            tool_calls = _tool_calls(event) if shape.chat else ()
        except _BadNodeOutput as error:
            return [_sse(error_body(502, str(error), "invalid_node_output", None))], True
        if not event.text and not tool_calls:
            return [], False
        return [_sse(shape.delta(event.text, first=first, tool_calls=tool_calls))], False
    if isinstance(event, Done):
        frames = [_sse(shape.finish(event.finish_reason))]
        if include_usage:
            frames.append(_sse(shape.usage_chunk(event)))
        return frames, True
    message = f"the node failed mid-answer: {event.message}"
    return [_sse(error_body(502, message, event.code, None))], True


async def _sse_stream(
    events: AsyncGenerator[tuple[str, Output], None],
    first: asyncio.Future[tuple[str, Output]],
    shape: _Shape,
    include_usage: bool,
    settings: CompletionSettings,
) -> AsyncIterator[bytes]:
    sent_first = False
    pending: asyncio.Future[tuple[str, Output]] | None = first
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            while True:
                done, _ = await asyncio.wait({pending}, timeout=settings.keepalive_interval_s)
                if done:
                    break
                yield _KEEPALIVE
            try:
                _, event = pending.result()
            except StopAsyncIteration:
                break
            except DispatchError as error:
                api_error = _as_api_error(error)
                yield _sse(error_body(api_error.status, api_error.message, api_error.code, None))
                break
            pending = None
            frames, finished = _render(event, shape, include_usage, first=not sent_first)
            for frame in frames:
                yield frame
            sent_first = sent_first or bool(frames)
            if finished:
                break
        yield _DONE
    finally:
        # The customer may have gone away mid-wait: stop waiting, then close the dispatch, which
        # cancels the job on its node.
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        await events.aclose()
