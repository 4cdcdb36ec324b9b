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
from dataclasses import dataclass, replace
from typing import Any

from litestar.response import Response, Stream

from coordinator.api.errors import ApiError, error_body
from coordinator.api.schemas import ChatCompletionRequest, CompletionRequest
from coordinator.billing import Answer, Ticket, cost_json
from coordinator.catalogue import Catalogue
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
from coordinator.observe import RequestObservation
from coordinator.routing import RouteInput
from protocol import (
    KNOWN_PARAMETERS,
    ChatMessage,
    Chunk,
    Done,
    InvalidJsonText,
    Job,
    SamplingParams,
    ToolCallDelta,
    decode_tool_call_deltas,
)
from scheduler import (
    InvalidPreferences,
    RouteRequest,
    RoutingPreferences,
    parse_routing_preferences,
)

__all__ = [
    "CompletionSettings",
    "build_job",
    "estimate_prompt_tokens",
    "name_models",
    "respond",
    "route_input",
    "task_route_headers",
]

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
    parameters = {name for name in KNOWN_PARAMETERS if getattr(body, name, None) is not None}
    if getattr(body, "max_completion_tokens", None) is not None:
        parameters.add("max_tokens")
    request = RouteRequest(
        prompt_tokens=estimate_prompt_tokens(job),
        max_tokens=job.sampling.max_tokens,
        parameters=frozenset(parameters),
        customer_account_id=customer_account_id,
    )
    return RouteInput(prefs, request)


def name_models(prefs: RoutingPreferences, catalogue: Catalogue) -> RoutingPreferences:
    """``prefs`` with every model named by its network id (an alias becomes the canonical id)."""
    model = catalogue.network_id(prefs.model)
    models = tuple(catalogue.network_id(m) for m in prefs.models)
    if model == prefs.model and models == prefs.models:
        return prefs
    return replace(prefs, model=model, models=models)


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

    def served(self, routing: RouteInput | None) -> None:
        """Name the model that actually serves (a fallback of a list or a task route)."""
        record = routing.record if routing is not None else None
        model = record.served_model if record is not None else None
        if model is not None:
            self.model = model

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

    def usage_chunk(self, done: Done, cost: Billed | None) -> dict[str, Any]:
        return {**self._envelope(True), "choices": [], "usage": _usage(done, cost)}

    def whole(
        self, text: str, tool_calls: _ToolCallsBuilder, done: Done, cost: Billed | None
    ) -> dict[str, Any]:
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
        return {**self._envelope(False), "choices": [choice], "usage": _usage(done, cost)}


@dataclass(frozen=True, slots=True)
class Billed:
    """What a request was billed: the metered token counts and the itemised cost."""

    prompt_tokens: int
    completion_tokens: int
    provider_micro_usd: int
    builder_micro_usd: int
    platform_micro_usd: int


def _usage(done: Done, cost: Billed | None) -> dict[str, Any]:
    """OpenAI's usage object; with billing, the billed (metered) counts and the cost.

    ``cost`` is in USD (as OpenRouter reports it); ``cost_details`` itemises it exactly in
    integer micro-USD.
    """
    if cost is None:
        prompt, completion = done.usage.prompt_tokens, done.usage.completion_tokens
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
    details = cost_json(cost.provider_micro_usd, cost.builder_micro_usd, cost.platform_micro_usd)
    return {
        "prompt_tokens": cost.prompt_tokens,
        "completion_tokens": cost.completion_tokens,
        "total_tokens": cost.prompt_tokens + cost.completion_tokens,
        "cost": details["total_micro_usd"] / 1_000_000,
        "cost_details": details,
    }


class _Delivery:
    """Follows what reached the customer, bills it through the request's ticket (once) and
    ends the request's observation (once; an error raised as ApiError is ended by the caller).
    """

    def __init__(
        self,
        ticket: Ticket | None,
        routing: RouteInput | None,
        observation: RequestObservation | None = None,
    ) -> None:
        self.ticket = ticket
        self.routing = routing
        self.observation = observation
        self.streaming = False
        """The answer is an SSE stream: its end is observed here, not by an ApiError."""
        self.node_id: str | None = None
        self.texts: list[str] = []
        self.tool_calls: list[ToolCallDelta] = []
        self.tokens = 0

    def chunk(self, node_id: str, chunk: Chunk, fragments: tuple[ToolCallDelta, ...]) -> None:
        if self.node_id is None:
            if self.ticket is not None:
                self.ticket.first_output()
            if self.observation is not None:
                self.observation.first_output()
        self.node_id = node_id
        self.texts.append(chunk.text)
        self.tool_calls.extend(fragments)
        self.tokens += chunk.tokens

    def done(self, done: Done) -> Billed | None:
        return self._finish(done, "completed")

    def cut(self, outcome: str) -> None:
        self._finish(None, outcome)

    def release(self) -> None:
        """Nothing reached the customer (a JSON answer that failed): no charge."""
        if self.ticket is not None and not self.ticket.finished:
            self.ticket.release()

    def failed(self, error: ApiError) -> None:
        """The stream ends with an error event before any output."""
        self._observe(error.code or "error", error.status, None)

    def close(self) -> None:
        """A stream is over: anything not billed yet was cut short (or never started)."""
        if self.ticket is not None and not self.ticket.finished:
            if self.node_id is None:
                self.ticket.release()
            else:
                self._finish(None, "disconnected")
        if self.streaming:  # the customer left; an answer or error was observed already
            self._observe("disconnected", 200, None)

    def _finish(self, done: Done | None, outcome: str) -> Billed | None:
        if self.ticket is None:
            self._observe(outcome, 200, None, done)
            return None
        if self.node_id is None and done is not None:
            self.ticket.first_output()
        record = self.ticket.finish(
            Answer(
                node_id=self.node_id if self.node_id is not None else self._serving_node(),
                text="".join(self.texts),
                tool_calls=self.tool_calls,
                done=done,
                streamed_tokens=self.tokens,
                attempts=self.routing.attempts if self.routing is not None else 1,
                hedged=self.routing.hedged if self.routing is not None else False,
                outcome=outcome,
            )
        )
        if record is None:
            billed = Billed(0, 0, 0, 0, 0)
        else:
            charge = record.charge
            billed = Billed(
                record.prompt_tokens,
                record.completion_tokens,
                charge.provider_micro_usd,
                charge.builder_micro_usd,
                charge.platform_micro_usd,
            )
        self._observe(outcome, 200, billed, done)
        return billed

    def _observe(
        self, outcome: str, status: int, billed: Billed | None, done: Done | None = None
    ) -> None:
        """End the observation: billed counts, else the node's report (no billing here)."""
        if self.observation is None or self.observation.ended:
            return
        record = self.routing.record if self.routing is not None else None
        if billed is not None:
            prompt, completion = billed.prompt_tokens, billed.completion_tokens
            cost = billed.provider_micro_usd + billed.builder_micro_usd + billed.platform_micro_usd
        elif done is not None:
            prompt, completion, cost = done.usage.prompt_tokens, done.usage.completion_tokens, 0
        else:
            prompt, completion, cost = 0, self.tokens, 0
        self.observation.end(
            outcome,
            status=status,
            model=record.served_model if record is not None else None,
            node=self.node_id if self.node_id is not None else self._serving_node(),
            attempts=self.routing.attempts if self.routing is not None else 1,
            hedged=self.routing.hedged if self.routing is not None else False,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_micro_usd=cost,
        )

    def _serving_node(self) -> str | None:
        record = self.routing.record if self.routing is not None else None
        return record.served_by if record is not None else None


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
    ticket: Ticket | None = None,
    observation: RequestObservation | None = None,
) -> Response[Any]:
    """Run ``job`` and answer in the OpenAI shape; with a ``ticket``, bill what was delivered.

    ``observation`` is ended here for an answer (JSON or stream); an ApiError raised from here
    is the caller's to observe.
    """
    shape = _Shape(job, chat)
    events = dispatcher.stream(job) if routing is None else dispatcher.stream(job, routing)
    meter = _Delivery(ticket, routing, observation)
    if not stream:
        return await _whole_response(events, shape, headers, routing, meter)
    first = asyncio.ensure_future(anext(events))
    try:
        await asyncio.wait_for(asyncio.shield(first), settings.first_output_grace_s)
    except TimeoutError:
        pass  # slow first token: commit headers now, keep the connection alive while waiting
    except DispatchError as error:
        await events.aclose()
        meter.close()
        raise _as_api_error(error) from None
    except BaseException:
        first.cancel()
        await events.aclose()
        meter.close()
        raise
    stream_headers = {**headers, "cache-control": "no-cache", "x-accel-buffering": "no"}
    if first.done() and first.exception() is None:
        stream_headers["x-shareai-node"] = first.result()[0]
    if routing is not None:
        stream_headers.update(_routing_headers(routing))
    meter.streaming = True
    return Stream(
        _sse_stream(events, first, shape, include_usage, settings, meter=meter, routing=routing),
        media_type="text/event-stream",
        headers=stream_headers,
    )


def _routing_headers(routing: RouteInput) -> dict[str, str]:
    headers = {"x-shareai-attempts": str(routing.attempts)}
    if routing.hedged:
        headers["x-shareai-hedged"] = "true"
    served = routing.record.served_model if routing.record is not None else None
    if served is not None:
        headers["x-shareai-model"] = served
    return headers


def task_route_headers(routing: RouteInput) -> dict[str, str]:
    """``x-shareai-route`` (``NAME@vVERSION``), ``x-shareai-route-rule`` and
    ``x-shareai-route-owner`` (``account`` or ``app``) for a request sent to a task route."""
    choice = routing.task_route
    if choice is None:
        return {}
    return {
        "x-shareai-route": f"{choice.name}@v{choice.version}",
        "x-shareai-route-rule": choice.rule,
        "x-shareai-route-owner": choice.owner,
    }


async def _whole_response(
    events: AsyncGenerator[tuple[str, Output], None],
    shape: _Shape,
    headers: dict[str, str],
    routing: RouteInput | None,
    meter: _Delivery,
) -> Response[Any]:
    parts: list[str] = []
    tool_calls = _ToolCallsBuilder()
    try:
        async for node_id, event in events:
            headers["x-shareai-node"] = node_id
            shape.served(routing)
            if routing is not None:
                headers.update(_routing_headers(routing))
            if isinstance(event, Chunk):
                fragments = _tool_calls(event) if shape.chat else ()
                meter.chunk(node_id, event, fragments)
                parts.append(event.text)
                for fragment in fragments:
                    tool_calls.add(fragment)
            elif isinstance(event, Done):
                cost = meter.done(event)
                body = shape.whole("".join(parts), tool_calls, event, cost)
                return Response(body, headers=headers)
            else:
                raise ApiError(502, f"the node failed mid-answer: {event.message}", code=event.code)
    except DispatchError as error:
        raise _as_api_error(error) from None
    except _BadNodeOutput as error:
        raise ApiError(502, str(error), code="invalid_node_output") from None
    finally:
        await events.aclose()
        # Not finished: an error (or the customer gone) before the whole answer was sent, so
        # nothing reached the customer and nothing is billed.
        meter.release()
    raise ApiError(502, "the node ended the answer without finishing it", code="upstream_failed")


def _render(
    node_id: str,
    event: Output,
    shape: _Shape,
    include_usage: bool,
    meter: _Delivery,
    *,
    first: bool,
) -> tuple[list[bytes], bool]:
    """The SSE frames for one event, and whether the stream ends with it."""
    if isinstance(event, Chunk):
        try:
            tool_calls = _tool_calls(event) if shape.chat else ()
        except _BadNodeOutput as error:
            meter.cut("cut")
            return [_sse(error_body(502, str(error), "invalid_node_output", None))], True
        meter.chunk(node_id, event, tool_calls)
        if not event.text and not tool_calls:
            return [], False
        return [_sse(shape.delta(event.text, first=first, tool_calls=tool_calls))], False
    if isinstance(event, Done):
        cost = meter.done(event)
        frames = [_sse(shape.finish(event.finish_reason))]
        if include_usage:
            frames.append(_sse(shape.usage_chunk(event, cost)))
        return frames, True
    meter.cut("cut")
    message = f"the node failed mid-answer: {event.message}"
    return [_sse(error_body(502, message, event.code, None))], True


async def _sse_stream(
    events: AsyncGenerator[tuple[str, Output], None],
    first: asyncio.Future[tuple[str, Output]],
    shape: _Shape,
    include_usage: bool,
    settings: CompletionSettings,
    *,
    meter: _Delivery,
    routing: RouteInput | None,
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
                node_id, event = pending.result()
            except StopAsyncIteration:
                break
            except DispatchError as error:
                api_error = _as_api_error(error)
                meter.failed(api_error)
                yield _sse(error_body(api_error.status, api_error.message, api_error.code, None))
                break
            pending = None
            if not sent_first:
                shape.served(routing)
            frames, finished = _render(
                node_id, event, shape, include_usage, meter, first=not sent_first
            )
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
        meter.close()
