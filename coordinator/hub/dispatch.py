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
    ├── NoRoute             the scheduler excluded every node (reasons given)  (503)
    ├── JobRejected         the node says the request itself is bad, or every  (400)
    │                       node tried said it cannot serve such a request
    ├── NodesFailed         every node tried failed before its first token     (502)
    └── DeadlineExceeded    the request's deadline passed before output        (504)

Node choice is :func:`scheduler.route` over the :class:`~coordinator.routing.Router`'s snapshot:
the decision's candidates (primary, then fallbacks) are tried in order, skipping a node whose
circuit is open or that has no free slot any more, at most ``max_attempts`` of them. Each
attempt's outcome (TTFT and tokens/s, or failure, timeout, disconnect) goes back to the router.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from coordinator.hub.nodes import LiveNode, NodeGone, NodeRegistry
from coordinator.routing import AttemptFailure, RouteInput, Router
from protocol import Chunk, Done, Failed, Job, JobAccepted, JobRefused
from scheduler import RouteDecision, RouteRequest, RoutingPreferences, ScoredCandidate

__all__ = [
    "DeadlineExceeded",
    "DispatchError",
    "Dispatcher",
    "JobRejected",
    "NoCapacity",
    "NoRoute",
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


class NoRoute(DispatchError):
    """Nodes serve the model but the scheduler excluded every one; the message says why."""


class Dispatcher:
    def __init__(
        self, registry: NodeRegistry, *, max_attempts: int = 3, router: Router | None = None
    ) -> None:
        self.registry = registry
        self.max_attempts = max_attempts
        self.router = router if router is not None else Router(registry)

    async def stream(
        self, job: Job, routing: RouteInput | None = None
    ) -> AsyncGenerator[tuple[str, Output], None]:
        """Yield ``(node_id, event)`` for ``job`` until a Done or StreamBroken (see module doc).

        ``routing`` carries the customer's preferences and the request's routing facts; without
        it the job is routed with default preferences. ``routing.attempts`` counts the nodes tried.
        """
        if routing is None:
            routing = RouteInput(
                RoutingPreferences(job.model),
                RouteRequest(prompt_tokens=0, max_tokens=job.sampling.max_tokens),
            )
        decision = self.router.decide(routing.prefs, routing.request)
        routing.decision = decision
        candidates = list(decision.candidates)
        failures: list[str] = []
        unsupported: list[JobRejected] = []
        while True:
            candidate = self._next(candidates, decision, failures)
            if candidate is None:
                raise _gave_up(NodesFailed("; ".join(failures)), failures, unsupported)
            node = self._usable(candidate)
            if node is None:
                continue
            routing.attempts += 1
            attempt_job = (
                job
                if candidate.state.model == job.model
                else job.model_copy(update={"model": candidate.state.model})
            )
            outcome = _Attempt(node, attempt_job)
            recorder = _Recorder(self.router, node.node_id, candidate.state.model)
            try:
                try:
                    first = await outcome.start()
                except DeadlineExceeded:
                    recorder.failure("timeout")
                    raise
                if isinstance(first, JobRejected):
                    unsupported.append(first)
                    first = f"failed ({first.code}): {first}"
                elif isinstance(first, str):
                    recorder.failure("disconnect" if first.startswith(_DISCONNECTS) else "failure")
                if isinstance(first, str):
                    failures.append(f"{node.node_id}: {first}")
                    if routing.attempts >= self.max_attempts:
                        raise _gave_up(NodesFailed("; ".join(failures)), failures, unsupported)
                    continue
                recorder.first_output()
                async for output in self._output(node.node_id, outcome, first, recorder):
                    yield output
                if routing.prefs.session_id and recorder.succeeded:
                    self.router.remember_session(routing.prefs.session_id, node.node_id)
                return
            finally:
                await outcome.release()

    def _usable(self, candidate: ScoredCandidate) -> LiveNode | None:
        """The candidate's node, unless it left, filled up or its circuit refuses it now."""
        node = self.registry.get(candidate.state.node_id)
        if node is None or node.free_slots(candidate.state.model) <= 0:
            return None
        if not self.router.may_try(node.node_id, candidate.state.model):
            return None
        return node

    @staticmethod
    async def _output(
        node_id: str, outcome: _Attempt, first: Chunk | Done, recorder: _Recorder
    ) -> AsyncIterator[tuple[str, Output]]:
        yield node_id, first
        if isinstance(first, Done):
            recorder.done(first)
            return
        async for event in outcome.rest():
            if isinstance(event, Done):
                recorder.done(event)
            elif isinstance(event, StreamBroken):
                recorder.broken(event)
            yield node_id, event

    def _next(
        self, candidates: list[ScoredCandidate], decision: RouteDecision, failures: list[str]
    ) -> ScoredCandidate | None:
        if candidates:
            return candidates.pop(0)
        if failures:
            return None
        if not any(self.registry.serves(model) for model in decision.models_tried):
            raise UnknownModel(f"no node serves the model {decision.models_tried[0]!r}")
        reasons = "; ".join(f"{e.node_id}: {e.reason}" for e in decision.excluded)
        if decision.excluded and all(e.reason.startswith(_BUSY) for e in decision.excluded):
            raise NoCapacity(f"every node serving the model is busy; retry shortly ({reasons})")
        if decision.excluded and all(e.reason.startswith("context") for e in decision.excluded):
            raise JobRejected("request_too_large", f"the request is too large: {reasons}")
        if not decision.excluded:
            raise NoCapacity("every node serving the model is busy or cooling down; retry shortly")
        raise NoRoute(f"no node qualifies for this request: {reasons}")


_DISCONNECTS = ("disconnected", "send failed")
_BUSY = ("no free slot", "circuit")


class _Recorder:
    """Turns one attempt's events into the router's measurements (once per attempt)."""

    def __init__(self, router: Router, node_id: str, model: str) -> None:
        self.router = router
        self.node_id = node_id
        self.model = model
        self.started_s = time.monotonic()
        self.first_s: float | None = None
        self.recorded = False
        self.succeeded = False

    def first_output(self) -> None:
        self.first_s = time.monotonic()

    def failure(self, kind: AttemptFailure) -> None:
        if not self.recorded:
            self.recorded = True
            self.router.record_failure(self.node_id, self.model, kind)

    def done(self, done: Done) -> None:
        if self.recorded or self.first_s is None:
            return
        self.recorded = self.succeeded = True
        ttft_ms = (self.first_s - self.started_s) * 1000
        generating_s = time.monotonic() - self.first_s
        tokens = done.usage.completion_tokens
        tokens_per_s = (tokens - 1) / generating_s if tokens > 1 and generating_s > 0 else None
        self.router.record_success(
            self.node_id, self.model, ttft_ms=ttft_ms, tokens_per_s=tokens_per_s
        )

    def broken(self, event: StreamBroken) -> None:
        kinds: dict[str, AttemptFailure] = {"timeout": "timeout", "node_disconnected": "disconnect"}
        self.failure(kinds.get(event.code, "failure"))


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
