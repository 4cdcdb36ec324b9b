"""A sans-I/O decoder for ``text/event-stream`` (server-sent events), per the WHATWG HTML spec.

Feed it bytes as they arrive; it returns the events completed so far. It handles what real
OpenAI-compatible servers send: ``\\n``, ``\\r\\n`` and lone ``\\r`` line endings (also split across
network reads), comment lines (``: keep-alive``), multi-line ``data`` fields (joined with ``\\n``),
``event`` and ``id`` fields, a leading byte-order mark and UTF-8 split across reads. An event is
dispatched only at a blank line; an unterminated event at the end of the stream is discarded, as
the spec says, so a truncated stream cannot pass for a complete one.

A peer that never ends a line or an event could make the buffer grow without bound, so both are
capped (``max_event_chars``); going over raises :class:`SSEError`.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

__all__ = ["SSEDecoder", "SSEError", "ServerSentEvent"]

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event: ``event`` is ``"message"`` unless the stream named another type."""

    data: str
    event: str = "message"
    id: str | None = None


class SSEError(ValueError):
    """The stream broke the limits (a line or an event longer than ``max_event_chars``)."""


class SSEDecoder:
    """Incremental event-stream decoder: ``feed(bytes) -> [events]``, then ``end()`` at EOF."""

    def __init__(self, *, max_event_chars: int = 4 * 1024 * 1024) -> None:
        self._max_event_chars = max_event_chars
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""  # text after the last complete line
        self._started = False  # whether the byte-order mark check has run
        self._data: list[str] = []
        self._data_chars = 0
        self._event_type = ""
        self._last_id: str | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode ``chunk`` and return the events it completed (possibly none)."""
        return self._feed_text(self._utf8.decode(chunk))

    def end(self) -> list[ServerSentEvent]:
        """The stream ended: process a final line; an event without its blank line is dropped."""
        events = self._feed_text(self._utf8.decode(b"", final=True))
        if self._pending.endswith("\r"):
            # The "\r" held back in case "\n" followed: it was a line ending after all.
            event = self._process_line(self._pending[:-1])
            if event is not None:
                events.append(event)
        self._pending = ""
        self._data.clear()
        self._data_chars = 0
        self._event_type = ""
        return events

    def _feed_text(self, text: str) -> list[ServerSentEvent]:
        if not text:
            return []
        if not self._started:
            self._started = True
            text = text.removeprefix("\ufeff")
        buffer = self._pending + text
        events: list[ServerSentEvent] = []
        start = 0
        for match in _LINE_END.finditer(buffer):
            if match.group() == "\r" and match.end() == len(buffer):
                break  # a "\r" at the very end may be the first half of "\r\n": wait for more
            event = self._process_line(buffer[start : match.start()])
            if event is not None:
                events.append(event)
            start = match.end()
        self._pending = buffer[start:]
        if len(self._pending) > self._max_event_chars:
            raise SSEError(f"an event-stream line is longer than {self._max_event_chars} chars")
        return events

    def _process_line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment, e.g. a keep-alive
        field, colon, value = line.partition(":")
        if colon:
            value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
            self._data_chars += len(value) + 1
            if self._data_chars > self._max_event_chars:
                raise SSEError(f"an event is longer than {self._max_event_chars} chars")
        elif field == "event":
            self._event_type = value
        elif field == "id" and "\0" not in value:
            self._last_id = value
        # "retry" and unknown fields are ignored, as the spec says.
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._data:
            self._event_type = ""
            return None
        event = ServerSentEvent(
            data="\n".join(self._data), event=self._event_type or "message", id=self._last_id
        )
        self._data.clear()
        self._data_chars = 0
        self._event_type = ""
        return event
