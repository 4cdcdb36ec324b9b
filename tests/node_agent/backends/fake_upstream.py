"""A small but honest OpenAI-compatible server for tests, on 127.0.0.1 over real sockets.

It speaks HTTP/1.1 (keep-alive, ``Content-Length`` request bodies, chunked responses) with
``asyncio.start_server`` and nothing else, and streams ``/v1/chat/completions`` and
``/v1/completions`` as server-sent events the way vLLM's server does: a role delta first (chat),
one content delta per piece, then for each tool call (chat) a delta with its id, type, name and
empty arguments followed by one delta per arguments fragment, a delta carrying
``finish_reason``, a usage chunk with empty ``choices`` when ``stream_options.include_usage``
asked for it, then ``data: [DONE]``.

Each request takes the next queued reply (``upstream.replies``), or ``default_reply``:

- :class:`StreamReply` streams, with switches to bend the stream: delays, CRLF line endings,
  JSON split over several ``data:`` lines, keep-alive comments, tiny writes, no usage, no
  ``finish_reason``, no ``[DONE]``, a dropped connection or a silence part-way, an error event;
- :class:`ErrorReply` answers an HTTP error with an OpenAI-style error body;
- :class:`HangReply` reads the request and never answers;
- :class:`DropReply` closes the connection without answering.

What the server saw is kept: ``requests`` (path, headers, JSON body) and ``disconnects``, the
number of times a client went away while a reply was still being sent (or awaited), with the
event ``client_gone`` set at each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

__all__ = [
    "DropReply",
    "ErrorReply",
    "FakeToolCall",
    "FakeUpstream",
    "HangReply",
    "RecordedRequest",
    "Reply",
    "StreamReply",
]


@dataclass(frozen=True)
class FakeToolCall:
    """A tool call the fake model makes: streamed as its name, then its arguments fragments."""

    name: str
    arguments: Sequence[str] = ("{}",)
    id: str | None = "call_fake"
    """Sent on the first fragment; ``None`` sends no id at all (some servers do not)."""
    repeat_id: bool = False
    """Send the id and name again on every fragment (as some servers do)."""


@dataclass(frozen=True)
class StreamReply:
    pieces: Sequence[str] = ("Hello", ",", " world", "!")
    finish_reason: str | None = "stop"
    prompt_tokens: int = 7
    completion_tokens: int | None = None
    """Reported in the usage chunk; defaults to the number of content and tool-call deltas."""
    tool_calls: Sequence[FakeToolCall] = ()
    """Streamed after the pieces (chat only)."""
    raw_deltas: Sequence[Any] = ()
    """Chat deltas sent exactly as given after the tool calls (to send malformed ones)."""
    send_usage: bool = True
    """Send the usage chunk (when the request asked for it)."""
    send_done: bool = True
    delay_s: float = 0.0
    """Pause before each content event."""
    drop_after: int | None = None
    """Close the connection abruptly after this many content events."""
    hang_after: int | None = None
    """Go silent (connection open) after this many content events."""
    line_ending: str = "\n"
    split_data_lines: bool = False
    """Send each JSON object over several ``data:`` lines (the spec joins them with newlines)."""
    comments: bool = False
    """Send a ``: keep-alive`` comment line before each event."""
    write_size: int | None = None
    """Write the body in HTTP chunks of at most this many bytes."""
    error_event_after: int | None = None
    """After this many content events, send an error event (as vLLM does) and stop."""
    error_message: str = "engine failure"


@dataclass(frozen=True)
class ErrorReply:
    status: int
    message: str
    code: str | None = None


@dataclass(frozen=True)
class HangReply:
    pass


@dataclass(frozen=True)
class DropReply:
    pass


Reply = StreamReply | ErrorReply | HangReply | DropReply

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class _ClientGone(Exception):
    pass


@dataclass
class FakeUpstream:
    """``async with FakeUpstream() as upstream:`` serves on ``upstream.base_url`` until exit."""

    default_reply: Reply = field(default_factory=StreamReply)
    replies: deque[Reply] = field(default_factory=deque)
    requests: list[RecordedRequest] = field(default_factory=list)
    disconnects: int = 0
    client_gone: asyncio.Event = field(default_factory=asyncio.Event)
    connections: int = 0
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        assert self._server is not None, "the server is not running"
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aenter__(self) -> FakeUpstream:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(self._handlers)
        await self._server.wait_closed()

    # --- connection handling -------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        leftover: bytes | None = None
        try:
            while True:
                request = await self._read_request(reader, leftover)
                if request is None:
                    return
                self.requests.append(request)
                reply = self.replies.popleft() if self.replies else self.default_reply
                # Watch for the client going away while we answer: it sends nothing else on
                # this connection until the response is complete, so any read is EOF (or the
                # first byte of its next request, kept for the next parse).
                watcher = asyncio.create_task(reader.read(1))
                try:
                    keep_open = await self._answer(request, reply, writer, watcher)
                except (_ClientGone, ConnectionError):
                    self._client_went_away()
                    return
                finally:
                    leftover = await _stop_watching(watcher)
                if not keep_open or leftover == b"":
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    def _client_went_away(self) -> None:
        self.disconnects += 1
        self.client_gone.set()

    async def _read_request(
        self, reader: asyncio.StreamReader, leftover: bytes | None
    ) -> RecordedRequest | None:
        try:
            head = (leftover or b"") + await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, path, _version = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        raw = await reader.readexactly(length) if length else b""
        body = json.loads(raw) if raw else {}
        return RecordedRequest(method=method, path=path, headers=headers, body=body)

    async def _answer(
        self,
        request: RecordedRequest,
        reply: Reply,
        writer: asyncio.StreamWriter,
        watcher: asyncio.Task[bytes],
    ) -> bool:
        """Send ``reply``; return whether the connection may serve another request."""
        if isinstance(reply, DropReply):
            writer.transport.abort()
            return False
        if isinstance(reply, HangReply):
            await watcher
            raise _ClientGone
        if isinstance(reply, ErrorReply):
            error: dict[str, Any] = {"message": reply.message, "type": "BadRequestError"}
            if reply.code is not None:
                error["code"] = reply.code
            payload = json.dumps({"error": error}).encode()
            writer.write(
                f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Error')}\r\n"
                f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
            return True
        await self._stream(request, reply, writer, watcher)
        return reply.drop_after is None and reply.hang_after is None

    async def _stream(
        self,
        request: RecordedRequest,
        reply: StreamReply,
        writer: asyncio.StreamWriter,
        watcher: asyncio.Task[bytes],
    ) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        chat = request.path.endswith("/chat/completions")
        model = request.body.get("model", "")
        end = reply.line_ending

        async def send(data: str) -> None:
            if watcher.done():
                raise _ClientGone
            text = f": keep-alive{end}" if reply.comments else ""
            lines = _split_json(data) if reply.split_data_lines else [data]
            text += "".join(f"data: {line}{end}" for line in lines) + end
            body = text.encode()
            size = reply.write_size or len(body)
            for start in range(0, len(body), size):
                part = body[start : start + size]
                writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                await writer.drain()

        if chat:
            await send(_chunk(model, chat, {"role": "assistant", "content": ""}, None))
        for index, piece in enumerate(reply.pieces):
            if index == reply.drop_after:
                writer.transport.abort()
                return
            if index == reply.hang_after:
                await watcher
                raise _ClientGone
            if index == reply.error_event_after:
                await send(json.dumps({"error": {"message": reply.error_message, "code": 500}}))
                return
            if reply.delay_s:
                await asyncio.wait({watcher}, timeout=reply.delay_s)
            content: Any = {"content": piece} if chat else piece
            await send(_chunk(model, chat, content, None))
        tool_deltas = 0
        for index, call in enumerate(reply.tool_calls if chat else ()):
            for fragment in _tool_call_fragments(index, call):
                await send(_chunk(model, chat, {"tool_calls": [fragment]}, None))
                tool_deltas += 1
        for raw in reply.raw_deltas if chat else ():
            await send(_chunk(model, chat, raw, None))
        if reply.finish_reason is not None:
            await send(_chunk(model, chat, {} if chat else "", reply.finish_reason))
        options = request.body.get("stream_options") or {}
        if reply.send_usage and options.get("include_usage"):
            completion_tokens = reply.completion_tokens
            if completion_tokens is None:
                completion_tokens = len(reply.pieces) + tool_deltas
            usage = {
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": reply.prompt_tokens + completion_tokens,
            }
            await send(json.dumps({"id": "cmpl-1", "model": model, "choices": [], "usage": usage}))
        if reply.send_done:
            await send("[DONE]")
        writer.write(b"0\r\n\r\n")
        await writer.drain()


def _tool_call_fragments(index: int, call: FakeToolCall) -> list[dict[str, Any]]:
    """The ``delta.tool_calls`` items of one call, as vLLM streams them."""
    named: dict[str, Any] = {"index": index, "type": "function"}
    if call.id is not None:
        named["id"] = call.id
    first = {**named, "function": {"name": call.name, "arguments": ""}}
    fragments = [first]
    for piece in call.arguments:
        if call.repeat_id:
            fragments.append({**named, "function": {"name": call.name, "arguments": piece}})
        else:
            fragments.append({"index": index, "function": {"arguments": piece}})
    return fragments


def _chunk(model: str, chat: bool, content: Any, finish_reason: str | None) -> str:
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish_reason}
    if chat:
        choice["delta"] = content
        kind = "chat.completion.chunk"
    else:
        choice["text"] = content
        kind = "text_completion"
    return json.dumps(
        {"id": "cmpl-1", "object": kind, "created": 0, "model": model, "choices": [choice]}
    )


def _split_json(data: str) -> list[str]:
    """``data`` as several lines that join (with newlines) into equivalent JSON."""
    if not data.startswith("{"):
        return [data]
    return json.dumps(json.loads(data), indent=1).split("\n")


async def _stop_watching(watcher: asyncio.Task[bytes]) -> bytes | None:
    """What the watcher read (b"" at EOF), or None when it read nothing and was stopped."""
    if watcher.done():
        if watcher.cancelled() or watcher.exception() is not None:
            return b""
        return watcher.result()
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    return None
