"""Chunk coalescing: merge a backend's small text deltas into fewer, larger protocol chunks.

An engine yields one delta per token; sending each as a frame would cost a frame (and an HMAC) per
token. :func:`coalesce` merges consecutive deltas into one until the batch holds ``max_tokens``
tokens or ``max_delay_ms`` has passed since the batch's first delta, whichever comes first, with
these guarantees:

- the first delta of a job is passed on at once, alone: time to first token does not suffer;
- a batch is never held past the end of the stream: ``Finished``, the end of the iterator or a
  ``BackendError`` first flushes what is pending, then passes the end on;
- the batch timer runs while the source is silent: a batch whose time is up is flushed even if no
  further delta arrives (the source is read by a helper task, never cancelled mid-read by a timer);
- a batch is flushed before it would pass ``max_chars`` characters (of text and of tool-call ids,
  names and arguments), so merged chunks stay well inside the protocol's chunk limits (a single
  delta larger than that passes through unmerged);
- tool-call fragments are merged in order, never into the text: a merged delta carries the text
  of its parts and their fragments, and consecutive fragments of one call (same ``index``, the
  later one carrying only ``arguments``) become one fragment with the arguments joined, which is
  what a client reading the fragments would rebuild anyway.

Time is read from an injectable :class:`~protocol.Clock` (its ``monotonic``), so tests decide
deterministically when a batch's time is up; only the wait on a silent source uses real time.

Closing or cancelling the coalescer cancels the pending read and closes the source (``aclose``),
which is how cancellation reaches the backend.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable
from typing import Final

from node_agent.backends.base import BackendEvent, TextDelta
from protocol import Clock, SystemClock, ToolCallDelta

__all__ = [
    "DEFAULT_MAX_CHARS",
    "DEFAULT_MAX_DELAY_MS",
    "DEFAULT_MAX_TOKENS",
    "coalesce",
    "delta_chars",
    "merge_deltas",
]

DEFAULT_MAX_TOKENS: Final = 16
DEFAULT_MAX_DELAY_MS: Final = 10.0
DEFAULT_MAX_CHARS: Final = 16_384


class _EndOfStream:
    pass


_END: Final = _EndOfStream()


async def _next_or_end(iterator: AsyncIterator[BackendEvent]) -> BackendEvent | _EndOfStream:
    # StopAsyncIteration must not escape into a Task: return a sentinel instead.
    try:
        return await anext(iterator)
    except StopAsyncIteration:
        return _END


def _join_tool_calls(calls: Iterable[ToolCallDelta]) -> tuple[ToolCallDelta, ...]:
    """``calls`` in order, each arguments-only fragment joined onto the one before of its call."""
    joined: list[ToolCallDelta] = []
    for call in calls:
        last = joined[-1] if joined else None
        if last is not None and last.index == call.index and call.id is None and call.name is None:
            joined[-1] = dataclasses.replace(last, arguments=last.arguments + call.arguments)
        else:
            joined.append(call)
    return tuple(joined)


def merge_deltas(deltas: list[TextDelta]) -> TextDelta:
    """One delta holding ``deltas`` in order (token ids kept only when every delta has them).

    Text is joined with text and tool-call fragments with fragments (see the module docstring).
    """
    if len(deltas) == 1:
        return deltas[0]
    token_ids: tuple[int, ...] | None = None
    if all(delta.token_ids is not None for delta in deltas):
        token_ids = tuple(token for delta in deltas for token in delta.token_ids or ())
    return TextDelta(
        text="".join(delta.text for delta in deltas),
        tokens=sum(delta.tokens for delta in deltas),
        token_ids=token_ids,
        tool_calls=_join_tool_calls(call for delta in deltas for call in delta.tool_calls),
    )


def delta_chars(delta: TextDelta) -> int:
    """The characters ``delta`` holds: its text, and its tool calls' ids, names and arguments."""
    chars = len(delta.text)
    for call in delta.tool_calls:
        chars += len(call.id or "") + len(call.name or "") + len(call.arguments)
    return chars


class _Batch:
    """The deltas waiting to be sent, with their totals and the time the first one came."""

    def __init__(self) -> None:
        self.deltas: list[TextDelta] = []
        self.tokens = 0
        self.chars = 0
        self.started_s = 0.0

    def __bool__(self) -> bool:
        return bool(self.deltas)

    def add(self, delta: TextDelta, now_s: float) -> None:
        if not self.deltas:
            self.started_s = now_s
        self.deltas.append(delta)
        self.tokens += delta.tokens
        self.chars += delta_chars(delta)

    def push(
        self, delta: TextDelta, now_s: float, *, max_tokens: int, max_delay_s: float, max_chars: int
    ) -> list[TextDelta]:
        """Add ``delta``; return the merged deltas now due (none, one or two of them)."""
        due: list[TextDelta] = []
        if self.deltas and (
            now_s - self.started_s >= max_delay_s or self.chars + delta_chars(delta) > max_chars
        ):
            due.append(self.take())
        self.add(delta, now_s)
        if self.tokens >= max_tokens:
            due.append(self.take())
        return due

    def take(self) -> TextDelta:
        merged = merge_deltas(self.deltas)
        self.deltas = []
        self.tokens = 0
        self.chars = 0
        return merged


async def _arrives(pending: asyncio.Task[BackendEvent | _EndOfStream], timeout_s: float) -> bool:
    """Whether the next event is there within ``timeout_s`` (the read goes on either way)."""
    if timeout_s > 0 and not pending.done():
        await asyncio.wait({pending}, timeout=timeout_s)
    return pending.done()


async def _close_source(
    iterator: AsyncIterator[BackendEvent],
    pending: asyncio.Task[BackendEvent | _EndOfStream] | None,
) -> None:
    if pending is not None:
        if not pending.done():
            pending.cancel()
            # wait() neither raises the task's error nor swallows our own cancellation.
            await asyncio.wait({pending})
        if not pending.cancelled():
            pending.exception()  # retrieved: the source's late error is not worth a warning
    closer = getattr(iterator, "aclose", None)
    if closer is not None:
        await closer()


def _check_limits(*, max_tokens: int, max_delay_ms: float, max_chars: int) -> None:
    if max_tokens < 1 or max_chars < 1:
        raise ValueError("max_tokens and max_chars must be at least 1")
    if max_delay_ms < 0:
        raise ValueError("max_delay_ms must not be negative")


async def coalesce(
    events: AsyncIterable[BackendEvent],
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_delay_ms: float = DEFAULT_MAX_DELAY_MS,
    max_chars: int = DEFAULT_MAX_CHARS,
    clock: Clock | None = None,
) -> AsyncGenerator[BackendEvent, None]:
    """Yield ``events`` with consecutive ``TextDelta`` merged (see the module docstring).

    ``Finished`` events pass through unchanged, after any pending batch. Errors raised by the
    source are re-raised after the pending batch has been yielded. Iterate it under
    ``contextlib.aclosing`` so that the source is closed however the consumer stops.
    """
    _check_limits(max_tokens=max_tokens, max_delay_ms=max_delay_ms, max_chars=max_chars)
    time = clock or SystemClock()
    max_delay_s = max_delay_ms / 1000.0
    iterator = aiter(events)
    pending: asyncio.Task[BackendEvent | _EndOfStream] | None = None
    batch = _Batch()
    first_delta = True
    try:
        while True:
            if not batch:
                # Nothing is waiting to be sent, so no timer: just wait for the next event.
                event = await (pending if pending is not None else _next_or_end(iterator))
                pending = None
            else:
                pending = pending or asyncio.create_task(_next_or_end(iterator))
                if not await _arrives(pending, batch.started_s + max_delay_s - time.monotonic()):
                    # The batch's time is up and the source is silent: send what we have.
                    yield batch.take()
                    continue
                task, pending = pending, None
                if task.exception() is not None:
                    yield batch.take()
                event = task.result()  # raises the source's error, after the flush above

            if isinstance(event, TextDelta) and first_delta:
                first_delta = False
                yield event
            elif isinstance(event, TextDelta):
                for merged in batch.push(
                    event,
                    time.monotonic(),
                    max_tokens=max_tokens,
                    max_delay_s=max_delay_s,
                    max_chars=max_chars,
                ):
                    yield merged
            else:
                if batch:
                    yield batch.take()
                if isinstance(event, _EndOfStream):
                    return
                yield event
    finally:
        await _close_source(iterator, pending)
