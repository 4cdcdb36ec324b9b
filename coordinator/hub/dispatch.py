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
attempt's outcome (TTFT and tokens/s, or failure, timeout, disconnect, node-caused cancel) goes
back to the router, and the decision and every attempt are kept in the router's route log.

Hedging (opt-in per request, or the operator's default): when the first attempt has no output
after its node's TTFT p90, the next candidate races it; the first to produce output wins and the
other is cancelled, so only the winner's output (and usage) ever reaches the customer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from coordinator.hub.nodes import LiveNode, NodeGone, NodeRegistry
from coordinator.routing import AttemptFailure, AttemptRecord, RouteInput, Router, RouteRecord
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
        it the job is routed with default preferences. The dispatcher fills in ``attempts``
        (nodes tried), ``hedged``, the ``decision`` and its ``record`` (kept in the router's
        :class:`~coordinator.routing.RouteLog` under ``routing.request_id``).
        """
        if routing is None:
            routing = RouteInput(
                RoutingPreferences(job.model),
                RouteRequest(prompt_tokens=0, max_tokens=job.sampling.max_tokens),
            )
        decision = (
            routing.decision
            if routing.decision is not None
            else self.router.decide(routing.prefs, routing.request)
        )
        record = RouteRecord(
            request_id=routing.request_id or job.job_id,
            customer_account_id=routing.request.customer_account_id,
            model=job.model,
            decision=decision,
            hedging=self.router.hedging(routing.prefs),
        )
        routing.decision, routing.record = decision, record
        self.router.routes.add(record)
        search = _Search(self, job, routing, record)
        try:
            winner = await search.first_output()
        except DispatchError as error:
            record.error = f"{type(error).__name__}: {error}"
            raise
        try:
            async for output in self._output(winner, record):
                yield output
            if routing.prefs.session_id and winner.recorder.succeeded:
                self.router.remember_session(routing.prefs.session_id, winner.node.node_id)
        finally:
            if winner.entry.outcome == "running":
                winner.entry.outcome = "cancelled"
                winner.entry.detail = "the customer went away"
            await winner.attempt.release()

    def usable(self, candidate: ScoredCandidate) -> LiveNode | None:
        """The candidate's node, unless it left, filled up or its circuit refuses it now."""
        node = self.registry.get(candidate.state.node_id)
        if node is None or node.free_slots(candidate.state.model) <= 0:
            return None
        if not self.router.may_try(node.node_id, candidate.state.model):
            return None
        return node

    @staticmethod
    async def _output(winner: _Racer, record: RouteRecord) -> AsyncIterator[tuple[str, Output]]:
        node_id, first, recorder, entry = (
            winner.node.node_id,
            winner.first,
            winner.recorder,
            winner.entry,
        )
        assert first is not None
        record.served_by = node_id
        yield node_id, first
        if isinstance(first, Done):
            recorder.done(first)
            entry.outcome = "served"
            return
        async for event in winner.attempt.rest():
            if isinstance(event, Done):
                recorder.done(event)
                entry.outcome = "served"
            elif isinstance(event, StreamBroken):
                recorder.broken(event)
                entry.outcome, entry.detail = "broken", f"{event.code}: {event.message}"
                record.error = f"stream broken after output: {event.code}"
            yield node_id, event

    def no_route(self, decision: RouteDecision) -> DispatchError:
        """Why no node could even be tried (nothing was left of the decision's candidates)."""
        if not any(self.registry.serves(model) for model in decision.models_tried):
            return UnknownModel(f"no node serves the model {decision.models_tried[0]!r}")
        reasons = "; ".join(f"{e.node_id}: {e.reason}" for e in decision.excluded)
        if decision.excluded and all(e.reason.startswith(_BUSY) for e in decision.excluded):
            return NoCapacity(f"every node serving the model is busy; retry shortly ({reasons})")
        if decision.excluded and all(e.reason.startswith("context") for e in decision.excluded):
            return JobRejected("request_too_large", f"the request is too large: {reasons}")
        if not decision.excluded:
            return NoCapacity("every node serving the model is busy or cooling down; retry shortly")
        return NoRoute(f"no node qualifies for this request: {reasons}")


@dataclass
class _Racer:
    """One attempt waiting for its first output (a hedged request has two at once)."""

    candidate: ScoredCandidate
    node: LiveNode
    attempt: _Attempt
    recorder: _Recorder
    entry: AttemptRecord
    task: asyncio.Task[Chunk | Done | str | JobRejected]
    first: Chunk | Done | None = None


class _Search:
    """Finds the node whose first output reaches the customer: failover, and hedging if asked.

    Candidates are launched one at a time; a failure before output launches the next (at most
    ``max_attempts`` in all). With hedging on, a first attempt still silent after its node's
    TTFT p90 gets one racer beside it: the first of the two to produce output wins and the other
    is cancelled (and never billed: its output is never seen). One hedge per request at most.
    """

    def __init__(
        self, dispatcher: Dispatcher, job: Job, routing: RouteInput, record: RouteRecord
    ) -> None:
        self.dispatcher = dispatcher
        self.router = dispatcher.router
        self.job = job
        self.routing = routing
        self.record = record
        assert routing.decision is not None
        self.decision = routing.decision
        self.candidates = list(self.decision.candidates)
        self.failures: list[str] = []
        self.unsupported: list[JobRejected] = []
        self.racers: list[_Racer] = []

    async def first_output(self) -> _Racer:
        """The racer that produced output first; raises a DispatchError if none will."""
        try:
            return await self._race()
        except BaseException:
            await self._cancel_racers(lost_to=None)
            raise

    async def _race(self) -> _Racer:
        hedge_left = self.record.hedging
        while True:
            if not self.racers and self._launch(hedge=False) is None:
                raise self._gave_up() if self.failures else self.dispatcher.no_route(self.decision)
            timeout = self._hedge_wait_s() if hedge_left and len(self.racers) == 1 else None
            done, _ = await asyncio.wait(
                [r.task for r in self.racers], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:  # the first attempt is late against its node's p90: race another
                hedge_left = False
                if self._may_attempt() and self._launch(hedge=True) is not None:
                    self.routing.hedged = True
                continue
            for racer in [r for r in self.racers if r.task in done]:
                self.racers.remove(racer)
                if await self._settle(racer):
                    await self._cancel_racers(lost_to=racer)
                    return racer
            if not self.racers and not self._may_attempt():
                raise self._gave_up()

    def _may_attempt(self) -> bool:
        return self.routing.attempts < self.dispatcher.max_attempts

    def _hedge_wait_s(self) -> float:
        racer = self.racers[0]
        after_s = self.router.hedge_after_ms(racer.candidate.state) / 1000
        return max(0.0, racer.recorder.started_s + after_s - time.monotonic())

    def _launch(self, *, hedge: bool) -> _Racer | None:
        """Start the next usable candidate; None when none is left."""
        while self.candidates:
            candidate = self.candidates.pop(0)
            node = self.dispatcher.usable(candidate)
            if node is None:
                continue
            self.routing.attempts += 1
            model = candidate.state.model
            offer = node.offers.get(model)
            local = offer.model if offer is not None else model  # the node's own name for it
            job = (
                self.job
                if local == self.job.model
                else self.job.model_copy(update={"model": local})
            )
            attempt = _Attempt(node, job, model)
            entry = AttemptRecord(node.node_id, model, "running", hedge=hedge)
            self.record.attempts.append(entry)
            racer = _Racer(
                candidate,
                node,
                attempt,
                _Recorder(self.router, node.node_id, model),
                entry,
                asyncio.create_task(attempt.start()),
            )
            self.racers.append(racer)
            return racer
        return None

    async def _settle(self, racer: _Racer) -> bool:
        """Take a finished racer's start: True if it produced output (it wins)."""
        recorder, entry = racer.recorder, racer.entry
        try:
            first = racer.task.result()
        except DeadlineExceeded:
            recorder.failure("timeout")
            entry.outcome, entry.detail = "timeout", "no output before the request deadline"
            await racer.attempt.release()
            raise
        except JobRejected as error:
            entry.outcome, entry.detail = "rejected", f"{error.code}: {error}"
            await racer.attempt.release()
            raise
        if isinstance(first, (Chunk, Done)):
            recorder.first_output()
            racer.first = first
            entry.outcome = "running"
            return True
        if isinstance(first, JobRejected):
            self.unsupported.append(first)
            entry.outcome, entry.detail = "rejected", f"{first.code}: {first}"
            first = f"failed ({first.code}): {first}"
        elif first.startswith(_DISCONNECTS):
            recorder.failure("disconnect")
            entry.outcome, entry.detail = "disconnected", first
        elif first.startswith(_NODE_CANCELLED):
            recorder.failure("node_cancel")
            entry.outcome, entry.detail = "node_cancel", first
        else:
            recorder.failure("failure")
            entry.outcome, entry.detail = "failed", first
        self.failures.append(f"{racer.node.node_id}: {first}")
        await racer.attempt.release()
        return False

    async def _cancel_racers(self, *, lost_to: _Racer | None) -> None:
        """Stop every racer still running (the race is won, or the request is over)."""
        racers, self.racers = self.racers, []
        for racer in racers:
            racer.task.cancel()
        if racers:
            await asyncio.wait([r.task for r in racers])
        for racer in racers:
            if not racer.task.cancelled():
                racer.task.exception()  # retrieved: its outcome no longer matters
            if lost_to is not None:
                waited_ms = (time.monotonic() - racer.recorder.started_s) * 1000
                self.router.record_lost_hedge(
                    racer.node.node_id, racer.entry.model, waited_ms=waited_ms
                )
                racer.entry.outcome = "hedge_lost"
                racer.entry.detail = f"{lost_to.node.node_id} answered first"
            elif racer.entry.outcome == "running":
                racer.entry.outcome = "cancelled"
            await racer.attempt.release()

    def _gave_up(self) -> DispatchError:
        return _gave_up(NodesFailed("; ".join(self.failures)), self.failures, self.unsupported)


_DISCONNECTS = ("disconnected", "send failed")
_NODE_CANCELLED = "stopped the job before any output"
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
        kinds: dict[str, AttemptFailure] = {
            "timeout": "timeout",
            "node_disconnected": "disconnect",
            "cancelled": "node_cancel",
        }
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
    """One job on one node; ``model`` is the network id, ``job.model`` the node's own name."""

    def __init__(self, node: LiveNode, job: Job, model: str) -> None:
        self.node = node
        self.job = job
        self.model = model
        self.finished = False
        node.in_flight[model] = node.in_flight.get(model, 0) + 1
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
        # A catalogue change while the job ran may have re-named the model on this node.
        model = self.node.key_of(self.job.model) or self.model
        self.node.in_flight[model] = max(0, self.node.in_flight.get(model, 0) - 1)
        if self.finished:
            self.node.link.finish_job(self.job.job_id)
        else:
            try:
                await self.node.link.cancel_job(self.job.job_id, "request ended")
            except Exception:
                self.node.link.finish_job(self.job.job_id)
