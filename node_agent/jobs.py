"""Jobs on the node: the models it serves with their free slots, and running one job to its end.

A job that was accepted ends with exactly one terminal message, whatever happens:

- the backend finished: ``done`` with the engine's usage and the signed receipt;
- the backend raised :class:`BackendError`: ``failed`` with its code and ``retryable``;
- the coordinator cancelled it (or a drain's grace period ran out): the backend is stopped, then
  ``done`` with ``finish_reason="cancelled"`` and the completion tokens already streamed, or
  ``failed`` with code ``cancelled`` when nothing was streamed yet. The node cannot know the
  prompt's token count before the engine finishes, so such a receipt says 0 prompt tokens;
- anything else (a bug): ``failed`` with ``internal_error``, logged with its traceback.

Only when the session itself is gone is nothing sent: the job's task is cancelled with the
session and the coordinator fails the job over.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from node_agent.backends.base import (
    BackendError,
    BackendEvent,
    Finished,
    InferenceBackend,
    TextDelta,
)
from node_agent.backends.coalesce import coalesce
from protocol import (
    Chunk,
    Failed,
    InvalidJsonText,
    Job,
    Message,
    Offer,
    Timings,
    ToolCallDelta,
    Usage,
    encode_tool_call_deltas,
)
from protocol.messages import FinishReason

__all__ = [
    "MAX_CHUNK_CHARS",
    "MAX_CHUNK_TOKENS",
    "LinkClosed",
    "MessageTooLarge",
    "ModelTable",
    "Outbox",
    "RunningJob",
    "ServedModel",
    "run_job",
]

logger = logging.getLogger(__name__)

MAX_CHUNK_CHARS = 65_536  # protocol limits of one chunk
MAX_CHUNK_TOKENS = 65_536
_MAX_MESSAGE_CHARS = 1_000  # failed.message holds 1,024 characters


class LinkClosed(Exception):
    """The session ended while sending: nothing more can be sent for any job."""


class MessageTooLarge(Exception):
    """The sealed frame would exceed the coordinator's frame limit; nothing was sent."""


class Outbox(Protocol):
    """Where a job's messages go (the established session). Both raise LinkClosed."""

    async def send(self, message: Message) -> None:
        """Seal and write ``message``; MessageTooLarge if it does not fit one frame."""
        ...

    async def send_done(
        self,
        *,
        job_id: str,
        model: str,
        usage: Usage,
        finish_reason: FinishReason,
        timings: Timings,
    ) -> None:
        """Seal and write a ``done`` with this node's signed usage receipt."""
        ...


@dataclass(eq=False)
class ServedModel:
    """A model this node offers, the backend serving it and how many of its jobs run now."""

    offer: Offer
    backend: InferenceBackend
    active_jobs: int = 0

    @property
    def free_slots(self) -> int:
        return max(0, self.offer.max_concurrency - self.active_jobs)


class ModelTable:
    """Every model the node's backends offer, by name. Raises ValueError on a repeated name."""

    def __init__(self, backends: Iterable[InferenceBackend]) -> None:
        self._models: dict[str, ServedModel] = {}
        for backend in backends:
            for offer in backend.offers():
                if offer.model in self._models:
                    raise ValueError(f"model {offer.model!r} is offered by two backends")
                self._models[offer.model] = ServedModel(offer, backend)

    def get(self, model: str) -> ServedModel | None:
        return self._models.get(model)

    def offers(self) -> list[Offer]:
        return [served.offer for served in self._models.values()]

    @property
    def active_jobs(self) -> int:
        return sum(served.active_jobs for served in self._models.values())

    @property
    def free_slots(self) -> int:
        return sum(served.free_slots for served in self._models.values())


@dataclass(eq=False)
class RunningJob:
    """An accepted job. ``received_s`` is monotonic time when its ``job`` frame arrived."""

    job: Job
    served: ServedModel
    received_s: float
    task: asyncio.Task[None] | None = None
    cancel_reason: str | None = None
    """Set before the task is cancelled on purpose (a ``cancel``, the end of a drain)."""
    next_index: int = 0
    streamed_tokens: int = 0
    terminal_sent: bool = False
    """Set as the terminal message is handed to the outbox: it must never be sent twice."""
    first_token_s: float | None = None

    def cancel(self, reason: str) -> None:
        """Stop the job; it still ends with its terminal message (see the module docstring)."""
        if self.task is not None and not self.task.done() and not self.terminal_sent:
            self.cancel_reason = self.cancel_reason or reason
            self.task.cancel()


async def run_job(
    running: RunningJob,
    outbox: Outbox,
    *,
    monotonic: Callable[[], float] = time.monotonic,
) -> None:
    """Run an accepted job to its terminal message. Raises only LinkClosed and CancelledError."""
    job = running.job
    started_s = monotonic()
    try:
        finished = await _stream(running, outbox, monotonic)
        usage = Usage(
            prompt_tokens=finished.prompt_tokens, completion_tokens=finished.completion_tokens
        )
        timings = _timings(running, started_s, monotonic())
        running.terminal_sent = True
        await outbox.send_done(
            job_id=job.job_id,
            model=job.model,
            usage=usage,
            finish_reason=finished.finish_reason,
            timings=timings,
        )
    except BackendError as error:
        failed = Failed(
            job_id=job.job_id,
            code=error.code,
            message=_one_line(str(error) or error.code),
            retryable=error.retryable,
        )
        running.terminal_sent = True
        await _send_failed(outbox, failed)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if (
            running.cancel_reason is None
            or running.terminal_sent
            or task is None
            or task.uncancel() > 0
        ):
            raise  # the session is going away, or the job already ended: nothing to send
        running.terminal_sent = True
        await _report_cancelled(running, outbox, started_s, monotonic())
    except LinkClosed:
        raise
    except Exception as error:
        logger.exception("job %s failed inside the agent", job.job_id)
        if running.terminal_sent:
            return
        running.terminal_sent = True
        await _send_failed(
            outbox,
            Failed(
                job_id=job.job_id,
                code="internal_error",
                message=_one_line(f"node agent error: {type(error).__name__}: {error}"),
                retryable=True,
            ),
        )


async def _stream(running: RunningJob, outbox: Outbox, monotonic: Callable[[], float]) -> Finished:
    events = coalesce(running.served.backend.generate(running.job))
    async with _closing(events):
        async for event in events:
            if isinstance(event, Finished):
                return event
            await _send_text(running, outbox, event, monotonic)
    raise BackendError("backend_error", "the backend ended without finishing", retryable=True)


@contextlib.asynccontextmanager
async def _closing(events: AsyncIterator[BackendEvent]) -> AsyncIterator[None]:
    # Closing the coalescer closes the backend's generator: a cancelled or failed job stops
    # the generation at once (see node_agent.backends.base).
    try:
        yield
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


async def _send_text(
    running: RunningJob, outbox: Outbox, delta: TextDelta, monotonic: Callable[[], float]
) -> None:
    """Send ``delta`` as one chunk, or as several when it exceeds a chunk or frame limit."""
    tool_calls_json: str | None = None
    too_big_for_a_chunk = (
        len(delta.text) > MAX_CHUNK_CHARS
        or delta.tokens > MAX_CHUNK_TOKENS
        or len(delta.token_ids or ()) > MAX_CHUNK_TOKENS
    )
    if delta.tool_calls and not too_big_for_a_chunk:
        try:
            tool_calls_json = encode_tool_call_deltas(delta.tool_calls)
        except InvalidJsonText:  # over the protocol's limit for the field
            too_big_for_a_chunk = True
    if not too_big_for_a_chunk:
        chunk = Chunk(
            job_id=running.job.job_id,
            index=running.next_index,
            text=delta.text,
            tokens=delta.tokens,
            token_ids=None if delta.token_ids is None else list(delta.token_ids),
            tool_calls_json=tool_calls_json,
        )
        try:
            await outbox.send(chunk)
        except MessageTooLarge:
            pass
        else:
            running.next_index += 1
            running.streamed_tokens += delta.tokens
            if running.first_token_s is None:
                running.first_token_s = monotonic()
            return
    halves = _halve(delta)
    if halves is None:
        raise BackendError(
            "internal_error", "one output token does not fit in a frame", retryable=False
        )
    for half in halves:
        await _send_text(running, outbox, half, monotonic)


def _split_output(
    delta: TextDelta,
) -> tuple[tuple[str, tuple[ToolCallDelta, ...]], tuple[str, tuple[ToolCallDelta, ...]]] | None:
    """``delta``'s text and tool calls cut in two, in order; None if neither can be cut."""
    text, calls = delta.text, delta.tool_calls
    if text and calls:
        return (text, ()), ("", calls)
    if len(calls) >= 2:
        cut = len(calls) // 2
        return ("", calls[:cut]), ("", calls[cut:])
    if len(calls) == 1 and len(calls[0].arguments) >= 2:
        call = calls[0]
        cut = len(call.arguments) // 2
        rest = ToolCallDelta(index=call.index, arguments=call.arguments[cut:])
        return ("", (dataclasses.replace(call, arguments=call.arguments[:cut]),)), ("", (rest,))
    if len(text) >= 2:
        cut = len(text) // 2
        return (text[:cut], ()), (text[cut:], ())
    return None


def _halve(delta: TextDelta) -> tuple[TextDelta, TextDelta] | None:
    """Two deltas holding ``delta``'s output, tokens and token ids in order; None if atomic."""
    ids = delta.token_ids
    parts = _split_output(delta)
    if parts is None and ((ids is not None and len(ids) >= 2) or delta.tokens >= 2):
        parts = (delta.text, delta.tool_calls), ("", ())
    if parts is None:
        return None
    first_ids: tuple[int, ...] | None = None
    second_ids = ids
    first_tokens = delta.tokens // 2
    if ids is not None:
        id_cut = len(ids) // 2
        first_ids, second_ids = ids[:id_cut], ids[id_cut:]
        first_tokens = min(delta.tokens, len(first_ids))
    (first_text, first_calls), (second_text, second_calls) = parts
    return (
        TextDelta(first_text, first_tokens, first_ids, first_calls),
        TextDelta(second_text, delta.tokens - first_tokens, second_ids, second_calls),
    )


async def _report_cancelled(
    running: RunningJob, outbox: Outbox, started_s: float, now_s: float
) -> None:
    job = running.job
    reason = running.cancel_reason or "cancelled"
    if running.streamed_tokens == 0 and running.next_index == 0:
        await _send_failed(
            outbox,
            Failed(job_id=job.job_id, code="cancelled", message=_one_line(reason), retryable=False),
        )
        return
    await outbox.send_done(
        job_id=job.job_id,
        model=job.model,
        usage=Usage(prompt_tokens=0, completion_tokens=running.streamed_tokens),
        finish_reason="cancelled",
        timings=_timings(running, started_s, now_s),
    )


async def _send_failed(outbox: Outbox, failed: Failed) -> None:
    try:
        await outbox.send(failed)
    except MessageTooLarge:
        # A long non-ASCII message can pass a small frame limit; the code alone always fits.
        await outbox.send(failed.model_copy(update={"message": failed.code}))


def _timings(running: RunningJob, started_s: float, ended_s: float) -> Timings:
    def ms(seconds: float) -> int:
        return max(0, min(2**31 - 1, round(seconds * 1000)))

    first = running.first_token_s
    return Timings(
        queue_ms=ms(started_s - running.received_s),
        time_to_first_token_ms=None if first is None else ms(first - running.received_s),
        total_ms=ms(ended_s - running.received_s),
    )


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_MESSAGE_CHARS else line[: _MAX_MESSAGE_CHARS - 3] + "..."
