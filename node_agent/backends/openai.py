"""The ``openai`` backend: any OpenAI-compatible server the Provider already runs.

vLLM's and SGLang's servers, llama.cpp's ``llama-server``, Ollama and TGI all speak the same
streaming API. A chat job becomes ``POST {base_url}/v1/chat/completions``, a completion job
``POST {base_url}/v1/completions``, both with ``stream: true`` and
``stream_options: {include_usage: true}``; the answer is read as server-sent events (see
:mod:`node_agent.backends.sse`) until ``data: [DONE]``.

Mapping:

- **Names.** Jobs name the offered model (``config.model``); the upstream is asked for
  ``config.upstream_model`` (defaults to the same name). ``developer`` messages are sent as
  ``system``, which every compatible server understands.
- **Sampling.** ``max_tokens``, ``temperature``, ``top_p``, ``stop`` (when not empty), ``seed``
  (when set), ``presence_penalty`` and ``frequency_penalty`` are passed through.
- **Tools and structured output.** ``tools``, ``tool_choice``, ``parallel_tool_calls`` and
  ``response_format`` are passed through as the job carries them (when set), and so are an
  assistant message's ``tool_calls`` (its empty ``content`` then sent as ``null``) and a tool
  message's ``tool_call_id``. JSON text in the job that is not JSON is an ``invalid_request``
  (not retryable). Streamed ``delta.tool_calls`` become the ``tool_calls`` of the backend's
  deltas, fragment by fragment; a call whose first fragment has no ``id`` gets one
  (``call_<24 hex>``), because a client needs it to answer the call, and an id or name repeated
  on a later fragment of the same call is dropped (clients would join the copies). An upstream
  that cannot do tools answers with an HTTP 4xx, which is an ``invalid_request`` as below.
- **Offer.** The backend passes every request parameter the protocol carries, so its offer lists
  them all (:data:`~protocol.KNOWN_PARAMETERS`) unless the Provider narrows the list to what the
  upstream honours (``BackendConfig.supported_parameters``, ``supported_parameters`` in
  ``node.toml``).
- **Usage.** Taken from the upstream's final usage chunk. An upstream that sends none (an old
  server ignoring ``stream_options``) gets its completion tokens counted as the number of content
  and tool-call deltas (servers stream one token per delta, so this is close but not exact), and
  its prompt tokens reported as 0, because they cannot be known without the model's tokenizer; a
  warning is logged once per backend. The coordinator counts tokens itself where it has the
  tokenizer.
- **Errors** (all :class:`~node_agent.backends.base.BackendError`; retryable means another node
  may succeed):

  ========================================================  ===========================  =========
  upstream                                                  code                         retryable
  ========================================================  ===========================  =========
  connection refused, reset or dropped; connect timeout     ``backend_error``            yes
  HTTP 429, 503                                             ``overloaded``               yes
  an error whose text speaks of the context length          ``context_length_exceeded``  no
  HTTP 401, 403 (this node's upstream key is wrong)          ``backend_error``            yes
  HTTP 404 (the upstream does not have the model)           ``model_unavailable``        yes
  HTTP 408, a read timeout (``read_timeout_s`` of silence)  ``timeout``                  yes
  other HTTP 4xx                                            ``invalid_request``          no
  HTTP 5xx, an error event in the stream, bad JSON          ``backend_error``            yes
  a stream that ends without ``finish_reason`` or [DONE]    ``backend_error``            yes
  ``job.deadline_ms`` passes                                ``timeout``                  no
  ========================================================  ===========================  =========

Cancellation (of the consuming task, or closing the generator) closes the upstream response at
once, which drops the HTTP connection, so the upstream server stops generating.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, ClassVar, Literal

import httpx

from node_agent.backends._common import check_model, job_json, loop_deadline, short_message
from node_agent.backends.base import (
    BackendError,
    BackendEvent,
    FailureCode,
    Finished,
    TextDelta,
)
from node_agent.backends.config import BackendConfig
from node_agent.backends.sse import SSEDecoder, SSEError
from protocol import (
    KNOWN_PARAMETERS,
    ChatMessage,
    Clock,
    Job,
    Offer,
    RequestParameter,
    SystemClock,
    ToolCallDelta,
)

__all__ = [
    "OpenAIBackend",
    "build_request_body",
    "error_for_status",
    "is_context_length_error",
]

logger = logging.getLogger(__name__)

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
_MAX_ERROR_BODY_BYTES = 64 * 1024

_CONTEXT_WORDING = re.compile(
    r"context[ _-]?(length|size|window)"
    r"|max(imum)?[ _-]?model[ _-]?len"
    r"|maximum context"
    r"|(prompt|input) is too long"
    r"|too many tokens"
    r"|`max_new_tokens` must be <=",
    re.IGNORECASE,
)

_FINISH_REASONS: dict[str, Literal["stop", "length", "tool_calls", "content_filter"]] = {
    "stop": "stop",
    "eos": "stop",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "length": "length",
    "max_tokens": "length",
    "content_filter": "content_filter",
}


def is_context_length_error(text: str) -> bool:
    """Whether an upstream error text says the request did not fit the model's context."""
    return _CONTEXT_WORDING.search(text) is not None


def _upstream_message(message: ChatMessage) -> dict[str, Any]:
    item: dict[str, Any] = {
        "role": "system" if message.role == "developer" else message.role,
        "content": message.content,
    }
    if message.name is not None:
        item["name"] = message.name
    if message.tool_calls_json is not None:
        item["tool_calls"] = job_json(message.tool_calls_json, "tool_calls_json")
        if not message.content:
            item["content"] = None  # what OpenAI's API writes for a message of calls only
    if message.tool_call_id is not None:
        item["tool_call_id"] = message.tool_call_id
    return item


def build_request_body(job: Job, upstream_model: str) -> tuple[str, dict[str, Any]]:
    """The path and JSON body of the streaming request for ``job``.

    Raises ``invalid_request`` when the job's JSON text (tools, tool calls...) is not JSON.
    """
    sampling = job.sampling
    body: dict[str, Any] = {"model": upstream_model}
    if job.messages is not None:
        path = CHAT_PATH
        body["messages"] = [_upstream_message(message) for message in job.messages]
        if job.tools_json is not None:
            body["tools"] = job_json(job.tools_json, "tools_json")
        if job.tool_choice_json is not None:
            body["tool_choice"] = job_json(job.tool_choice_json, "tool_choice_json")
        if job.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = job.parallel_tool_calls
        if job.response_format_json is not None:
            body["response_format"] = job_json(job.response_format_json, "response_format_json")
    else:
        path = COMPLETIONS_PATH
        body["prompt"] = job.prompt or ""
    body.update(
        max_tokens=sampling.max_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        presence_penalty=sampling.presence_penalty,
        frequency_penalty=sampling.frequency_penalty,
        stream=True,
        stream_options={"include_usage": True},
    )
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    return path, body


def _error_text(payload: object) -> tuple[str, str]:
    """(message, code or type) from an OpenAI-style error object, as well as it can be read."""
    if isinstance(payload, dict):
        inner = payload.get("error", payload)
        if isinstance(inner, str):
            return inner, ""
        if isinstance(inner, dict):
            message = inner.get("message") or inner.get("detail") or ""
            code = inner.get("code") or inner.get("type") or ""
            return str(message), str(code)
    return "", ""


_STATUS_ERRORS: dict[int, tuple[FailureCode, bool]] = {
    429: ("overloaded", True),
    503: ("overloaded", True),
    401: ("backend_error", True),  # this node's upstream key is wrong: not the customer's fault
    403: ("backend_error", True),
    404: ("model_unavailable", True),
    408: ("timeout", True),
}


def error_for_status(status: int, body: str) -> BackendError:
    """The :class:`BackendError` for an upstream HTTP error ``status`` with response ``body``."""
    try:
        message, code = _error_text(json.loads(body))
    except ValueError:
        message, code = "", ""
    message = message or body or httpx.codes.get_reason_phrase(status)
    detail = short_message(f"upstream HTTP {status}: {message}")
    failure, retryable = _STATUS_ERRORS.get(status, ("backend_error", True))
    if failure != "overloaded" and is_context_length_error(f"{code} {message}"):
        failure, retryable = "context_length_exceeded", False
    elif status not in _STATUS_ERRORS and 400 <= status < 500:
        failure, retryable = "invalid_request", False
    return BackendError(failure, detail, retryable=retryable)


def _error_for_transport(error: httpx.TransportError) -> BackendError:
    detail = short_message(f"upstream {type(error).__name__}: {error}")
    if isinstance(error, httpx.ConnectTimeout):
        return BackendError("backend_error", detail, retryable=True)
    if isinstance(error, httpx.PoolTimeout):
        return BackendError("overloaded", detail, retryable=True)
    if isinstance(error, httpx.TimeoutException):
        return BackendError("timeout", detail, retryable=True)
    return BackendError("backend_error", detail, retryable=True)


class _StreamReader:
    """Turns the upstream's SSE events into backend events and remembers how the stream ended."""

    def __init__(self, *, chat: bool) -> None:
        self.chat = chat
        self.content_deltas = 0
        self.tool_calls: dict[int, tuple[str, str | None]] = {}
        """The id and name passed on for each tool call, by index."""
        self.finish_reason: str | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.done = False

    def read(self, data: str) -> list[TextDelta]:
        if data.strip() == "[DONE]":
            self.done = True
            return []
        try:
            chunk = json.loads(data)
        except ValueError as error:
            raise BackendError(
                "backend_error",
                short_message(f"upstream sent invalid JSON: {data}"),
                retryable=True,
            ) from error
        if not isinstance(chunk, dict):
            raise BackendError("backend_error", "upstream sent a non-object chunk", retryable=True)
        if chunk.get("error") or chunk.get("object") == "error":
            message, code = _error_text(chunk)
            text = short_message(f"upstream error in stream: {message or data}")
            if is_context_length_error(f"{code} {message}"):
                raise BackendError("context_length_exceeded", text, retryable=False)
            raise BackendError("backend_error", text, retryable=True)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            prompt_tokens = usage.get("prompt_tokens")
            completion_tokens = usage.get("completion_tokens")
            if isinstance(prompt_tokens, int) and isinstance(completion_tokens, int):
                self.prompt_tokens = prompt_tokens
                self.completion_tokens = completion_tokens
        choices = chunk.get("choices")
        deltas: list[TextDelta] = []
        for choice in choices if isinstance(choices, list) else []:
            # n is always 1: only the first choice is ours.
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                delta = self._read_choice(choice)
                if delta is not None:
                    deltas.append(delta)
        return deltas

    def _read_choice(self, choice: dict[str, Any]) -> TextDelta | None:
        tool_calls: tuple[ToolCallDelta, ...] = ()
        if self.chat:
            delta = choice.get("delta")
            delta = delta if isinstance(delta, dict) else {}
            content = delta.get("content")
            tool_calls = self._read_tool_calls(delta.get("tool_calls"))
        else:
            content = choice.get("text")
        finish_reason = choice.get("finish_reason")
        if isinstance(finish_reason, str) and finish_reason:
            self.finish_reason = finish_reason
        text = content if isinstance(content, str) else ""
        if text or tool_calls:
            self.content_deltas += 1
            return TextDelta(text=text, tokens=1, tool_calls=tool_calls)
        return None

    def _read_tool_calls(self, items: object) -> tuple[ToolCallDelta, ...]:
        if items is None:
            return ()
        if not isinstance(items, list):
            raise BackendError(
                "backend_error", "upstream sent tool_calls that are not a list", retryable=True
            )
        return tuple(self._read_tool_call(position, item) for position, item in enumerate(items))

    def _read_tool_call(self, position: int, item: object) -> ToolCallDelta:
        """One upstream ``delta.tool_calls`` item, checked as the protocol will check it."""
        if not isinstance(item, dict):
            raise BackendError(
                "backend_error", "upstream sent a tool call that is not an object", retryable=True
            )
        index = item.get("index", position)
        function = item.get("function")
        function = function if isinstance(function, dict) else {}
        call_id, name, arguments = item.get("id"), function.get("name"), function.get("arguments")
        if (
            type(index) is not int
            or not 0 <= index < 2**31
            or not _optional_text(call_id)
            or not _optional_text(name)
            or not isinstance(arguments, str | None)
        ):
            raise BackendError(
                "backend_error",
                short_message(f"upstream sent a malformed tool call: {json.dumps(item)}"),
                retryable=True,
            )
        seen = self.tool_calls.get(index)
        if seen is None:
            call_id = call_id or f"call_{secrets.token_hex(12)}"
            self.tool_calls[index] = (call_id, name)
        else:
            # Some servers repeat the id (and name) on every fragment; clients would join them.
            known_id, known_name = seen
            call_id = None if call_id == known_id else call_id
            name = None if name == known_name else name
            self.tool_calls[index] = (known_id, known_name or name)
        return ToolCallDelta(index=index, id=call_id, name=name, arguments=arguments or "")


class OpenAIBackend:
    """Serves ``config.model`` from the OpenAI-compatible server at ``config.base_url``.

    ``http_client`` replaces the client this backend would build (it is then not closed by
    :meth:`aclose`); ``clock`` gives the wall time that ``job.deadline_ms`` is compared with.
    The backend's own client ignores proxy environment variables (``trust_env=False``): the
    upstream is normally on the same machine or network.
    """

    SUPPORTED_PARAMETERS: ClassVar[frozenset[RequestParameter]] = KNOWN_PARAMETERS

    def __init__(
        self,
        config: BackendConfig,
        *,
        http_client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
    ) -> None:
        if config.kind != "openai" or config.base_url is None:
            raise ValueError("OpenAIBackend needs a config of kind 'openai' with a base_url")
        self._config = config
        self._offer = config.offer(self.SUPPORTED_PARAMETERS)
        self._clock: Clock = clock or SystemClock()
        self._owns_client = http_client is None
        base_url = config.base_url.rstrip("/").removesuffix("/v1")
        self._client = http_client or httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(
                connect=config.connect_timeout_s,
                read=config.read_timeout_s,
                write=config.read_timeout_s,
                pool=config.read_timeout_s,
            ),
            limits=httpx.Limits(
                max_connections=2 * config.max_concurrency,
                max_keepalive_connections=config.max_concurrency,
            ),
            trust_env=False,
        )
        self._headers = {"Accept": "text/event-stream"}
        if config.api_key is not None:
            self._headers["Authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        self._warned_no_usage = False

    @property
    def kind(self) -> str:
        return "openai"

    def offers(self) -> list[Offer]:
        return [self._offer]

    async def generate(self, job: Job) -> AsyncGenerator[BackendEvent, None]:
        check_model(job, self._config.model)
        if job.kind == "completion" and self._config.endpoint == "chat":
            raise BackendError(
                "invalid_request", "this node's upstream serves chat only", retryable=True
            )
        deadline = loop_deadline(job, self._clock)
        path, body = build_request_body(job, self._config.upstream_name)
        request = self._client.build_request("POST", path, json=body, headers=self._headers)
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._client.send(request, stream=True)
        except TimeoutError as error:
            raise _deadline_passed() from error
        except httpx.TransportError as error:
            raise _error_for_transport(error) from error

        try:
            if response.status_code != 200:
                raise error_for_status(response.status_code, await _read_some(response, deadline))
            reader = _StreamReader(chat=job.messages is not None)
            chunks = response.aiter_bytes()
            events = _event_data(chunks, deadline)
            async with contextlib.aclosing(events):
                async for data in events:
                    for delta in reader.read(data):
                        yield delta
                    if reader.done:
                        break
            finished = self._finish(reader)
            await _drain(chunks, deadline)
            yield finished
        finally:
            await response.aclose()

    def _finish(self, reader: _StreamReader) -> Finished:
        if not reader.done:
            raise BackendError(
                "backend_error", "the upstream stream ended before [DONE]", retryable=True
            )
        if reader.finish_reason is None:
            raise BackendError(
                "backend_error", "the upstream stream ended without a finish_reason", retryable=True
            )
        if reader.prompt_tokens is None or reader.completion_tokens is None:
            if not self._warned_no_usage:
                self._warned_no_usage = True
                logger.warning(
                    "upstream %s sent no usage: counting completion tokens as content deltas "
                    "and reporting 0 prompt tokens",
                    self._config.base_url,
                )
            prompt_tokens, completion_tokens = 0, reader.content_deltas
        else:
            prompt_tokens, completion_tokens = reader.prompt_tokens, reader.completion_tokens
        return Finished(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finish_reason=_FINISH_REASONS.get(reader.finish_reason, "stop"),
        )

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def _optional_text(value: object) -> bool:
    """Whether ``value`` is None or a string the protocol carries as an id or a name."""
    return value is None or (isinstance(value, str) and 1 <= len(value) <= 256)


def _deadline_passed() -> BackendError:
    return BackendError("timeout", "the job's deadline passed", retryable=False)


async def _event_data(chunks: AsyncIterator[bytes], deadline: float) -> AsyncGenerator[str, None]:
    """The ``data`` of each ``message`` event in the body ``chunks``, until the body ends."""
    decoder = SSEDecoder()
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                chunk = await anext(chunks, None)
        except TimeoutError as error:
            raise _deadline_passed() from error
        except httpx.TransportError as error:
            raise _error_for_transport(error) from error
        try:
            events = decoder.feed(chunk) if chunk is not None else decoder.end()
        except SSEError as error:
            raise BackendError("backend_error", str(error), retryable=True) from error
        for event in events:
            if event.event == "message":
                yield event.data
        if chunk is None:
            return


async def _drain(chunks: AsyncIterator[bytes], deadline: float) -> None:
    """Read what follows ``[DONE]`` (normally just the end of the chunked body).

    A response read to its end returns its connection to the pool; one closed early closes the
    connection, and the next job would pay for a new one. A server that sends more, or keeps
    the body open, only costs that: after 64 KiB or half a second the response is closed anyway.
    """
    drained = 0
    with contextlib.suppress(TimeoutError, httpx.TransportError):
        async with asyncio.timeout_at(min(deadline, asyncio.get_running_loop().time() + 0.5)):
            async for chunk in chunks:
                drained += len(chunk)
                if drained > _MAX_ERROR_BODY_BYTES:
                    return


async def _read_some(response: httpx.Response, deadline: float) -> str:
    """Up to 64 KiB of an error response's body, as text (errors are rarely larger)."""
    body = bytearray()
    try:
        async with asyncio.timeout_at(deadline):
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) >= _MAX_ERROR_BODY_BYTES:
                    break
    except (TimeoutError, httpx.TransportError):
        pass  # the status code alone still says what went wrong
    return body[:_MAX_ERROR_BODY_BYTES].decode("utf-8", errors="replace")
