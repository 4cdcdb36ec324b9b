"""Sending one request to a node, with failover before the first token.

:meth:`Dispatcher.stream` yields the job's output events. Before anything is yielded it may try
several nodes: a node that refuses, fails or disconnects before its first chunk is replaced by
the next candidate (transparent to the customer). An ``invalid_request`` or
``context_length_exceeded`` ends the search at once (another node would say the same), unless the
node marks its ``failed`` as retryable: it cannot serve such a request (a backend without tool
calling, say) but another node may. Once output has been yielded, a failure ends
the stream with :class:`StreamBroken`. Closing the generator early (the customer went away)
cancels the job on its node.

Errors raised before the first event::

    DispatchError
    ├── UnknownModel        no live node offers the model                      (404)
    ├── NoCapacity          nodes offer it but none has a free slot            (503)
    ├── JobRejected         the node says the request itself is bad, or every  (400)
    │                       node tried said it cannot serve such a request
    ├── NodesFailed         every node tried failed before its first token     (502)
    └── DeadlineExceeded    the request's deadline passed before output        (504)

Node choice is deliberately simple for now (cheapest live node with a free slot); the scheduler
issue replaces :meth:`NodeRegistry.candidates` with the real policy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from coordinator.hub.nodes import LiveNode, NodeGone, NodeRegistry
from protocol import Chunk, Done, Failed, Job, JobAccepted, JobRefused

__all__ = [
    "DeadlineExceeded",
    "DispatchError",
    "Dispatcher",
    "JobRejected",
    "NoCapacity",
    "NodesFailed",
    "Output",
    "StreamBroken",
    "UnknownModel",
]

_NOT_RETRYABLE_FAILURES = frozenset({"invalid_request", "context_length_exceeded"})
_NOT_RETRYABLE_REFUSALS = frozenset({"invalid_request", "context_length_exceeded"})


class DispatchError(Exception):
    """A request could not be started on any node."""


class UnknownModel(DispatchError):
    pass


class NoCapacity(DispatchError):
    pass


class JobRejected(DispatchError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class NodesFailed(DispatchError):
    pass


class DeadlineExceeded(DispatchError):
    pass


@dataclass(frozen=True, slots=True)
class StreamBroken:
    """The node failed after output reached the customer; the stream ends here."""

    code: str
    message: str


Output = Chunk | Done | StreamBroken


class Dispatcher:
    def __init__(self, registry: NodeRegistry, *, max_attempts: int = 3) -> None:
        self.registry = registry
        self.max_attempts = max_attempts

    async def stream(self, job: Job) -> AsyncGenerator[tuple[str, Output], None]:
        """Yield ``(node_id, event)`` for ``job`` until a Done or StreamBroken (see module doc)."""
        tried: set[str] = set()
        failures: list[str] = []
        unsupported: list[JobRejected] = []
        while True:
            try:
                node = self._next_node(job.model, tried, failures)
            except NodesFailed as error:
                raise _gave_up(error, failures, unsupported) from None
            tried.add(node.node_id)
            outcome = _Attempt(node, job)
            try:
                first = await outcome.start()
                if isinstance(first, JobRejected):
                    unsupported.append(first)
                    first = f"failed ({first.code}): {first}"
                if isinstance(first, str):
                    failures.append(f"{node.node_id}: {first}")
                    if len(tried) >= self.max_attempts:
                        raise _gave_up(NodesFailed("; ".join(failures)), failures, unsupported)
                    continue
                yield node.node_id, first
                if isinstance(first, Done):
                    return
                async for event in outcome.rest():
                    yield node.node_id, event
                return
            finally:
                await outcome.release()

    def _next_node(self, model: str, tried: set[str], failures: list[str]) -> LiveNode:
        candidates = self.registry.candidates(model, tried)
        if candidates:
            return candidates[0]
        if failures:
            raise NodesFailed("; ".join(failures))
        if not self.registry.serves(model):
            raise UnknownModel(f"no node serves the model {model!r}")
        raise NoCapacity(f"every node serving {model!r} is busy; retry shortly")


def _gave_up(
    error: NodesFailed, failures: list[str], unsupported: list[JobRejected]
) -> DispatchError:
    """What to raise when no node is left: a rejection when every node said it cannot serve."""
    if unsupported and len(unsupported) == len(failures):
        last = unsupported[-1]
        return JobRejected(last.code, f"no node could serve this request: {last}")
    return error


def _failover_or_reject(failed: Failed) -> str | JobRejected:
    """Why a node failed before its first output (to fail over), or raise JobRejected."""
    if failed.code not in _NOT_RETRYABLE_FAILURES:
        return f"failed ({failed.code}): {failed.message}"
    if not failed.retryable:
        raise JobRejected(failed.code, failed.message)
    return JobRejected(failed.code, failed.message)  # this node cannot; another node may


class _Attempt:
    """One job on one node."""

    def __init__(self, node: LiveNode, job: Job) -> None:
        self.node = node
        self.job = job
        self.finished = False
        node.in_flight[job.model] = node.in_flight.get(job.model, 0) + 1
        self.stream = node.link.open_job(job.job_id)

    def _remaining_s(self) -> float:
        return max(0.0, self.job.deadline_ms / 1000 - time.time())

    async def start(self) -> Chunk | Done | str | JobRejected:
        """Send the job and wait for its first output; a string says why it failed over.

        A returned (not raised) JobRejected is a node that cannot serve this request while
        another node may: the caller fails over, and reports it if no node can.
        """
        try:
            await self.node.link.send(self.job)
        except ValueError as error:  # the job frame is over the node's frame limit
            self.finished = True
            raise JobRejected("request_too_large", str(error)) from None
        except Exception as error:  # a dead socket means: try another node
            self.finished = True
            return f"send failed: {error}"
        while True:
            try:
                async with asyncio.timeout(self._remaining_s()):
                    event = await self.stream.next()
            except TimeoutError:
                raise DeadlineExceeded("no output before the request deadline") from None
            if isinstance(event, JobAccepted):
                continue
            if isinstance(event, Done) and event.finish_reason == "cancelled":
                self.finished = True
                return "stopped the job before any output (cancelled)"
            if isinstance(event, (Chunk, Done)):
                self.finished = isinstance(event, Done)
                return event
            self.finished = True
            if isinstance(event, JobRefused):
                if event.reason in _NOT_RETRYABLE_REFUSALS:
                    raise JobRejected(event.reason, event.message)
                return f"refused ({event.reason}): {event.message}"
            if isinstance(event, Failed):
                return _failover_or_reject(event)
            return f"disconnected: {event.reason}"

    async def rest(self) -> AsyncIterator[Output]:
        while True:
            try:
                async with asyncio.timeout(self._remaining_s()):
                    event = await self.stream.next()
            except TimeoutError:
                yield StreamBroken("timeout", "the request deadline passed during generation")
                return
            if isinstance(event, Chunk):
                yield event
            elif isinstance(event, Done):
                self.finished = True
                if event.finish_reason == "cancelled":  # the node stopped (e.g. its drain ran out)
                    yield StreamBroken("cancelled", "the node stopped before finishing the answer")
                else:
                    yield event
                return
            elif isinstance(event, Failed):
                self.finished = True
                yield StreamBroken(event.code, event.message)
                return
            elif isinstance(event, NodeGone):
                self.finished = True
                yield StreamBroken("node_disconnected", event.reason)
                return

    async def release(self) -> None:
        model = self.job.model
        self.node.in_flight[model] = max(0, self.node.in_flight.get(model, 0) - 1)
        if self.finished:
            self.node.link.finish_job(self.job.job_id)
        else:
            try:
                await self.node.link.cancel_job(self.job.job_id, "request ended")
            except Exception:
                self.node.link.finish_job(self.job.job_id)
