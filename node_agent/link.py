"""One established session with the hub: heartbeats, the receive loop, jobs and drain.

:class:`HubLink` runs under one :class:`asyncio.TaskGroup`: the heartbeat loop, the receive loop,
the shutdown watcher and one task per accepted job. The link ends when the websocket closes, on a
protocol violation (closed with its code), or after a drain (closed with 1001); leaving the task
group cancels whatever still runs, so no job outlives its session.

Frames leave in sequence order: a frame is sealed (which takes the next sequence number) and
written under one lock. ``websockets`` writes an unfragmented message to the transport before its
first ``await``, so a task cancelled inside ``send`` never leaves a sealed frame unwritten.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from typing import Literal

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from node_agent.jobs import (
    LinkClosed,
    MessageTooLarge,
    ModelTable,
    RunningJob,
    ServedModel,
    run_job,
)
from node_agent.load import LoadReading, read_load
from protocol import (
    Cancel,
    CloseCode,
    Drain,
    Hardware,
    Heartbeat,
    Job,
    JobAccepted,
    JobRefused,
    MalformedFrame,
    Message,
    NodeSession,
    ProtocolError,
    Timings,
    Usage,
    Welcome,
)
from protocol.messages import FinishReason

__all__ = ["HubLink", "LinkEnd"]

logger = logging.getLogger(__name__)

# After the grace period, cancelled jobs still send their terminal message; this bounds the wait.
_CANCELLED_JOBS_WAIT_S = 5.0


_RefusalReason = Literal["overloaded", "model_unavailable", "draining", "invalid_request"]


class LinkEnd(enum.Enum):
    """Why an established session ended."""

    PEER_CLOSED = "the coordinator closed the connection or the network dropped it"
    PROTOCOL_ERROR = "a protocol violation closed the session"
    COORDINATOR_DRAIN = "the coordinator drained the session"
    SHUTDOWN = "this node shut down"


class _LinkEnded(Exception):
    """Raised inside the task group to end the session (the reason is in ``HubLink.end``)."""


class HubLink:
    """The established session over ``websocket``; :meth:`run` serves it to its end."""

    def __init__(
        self,
        websocket: ClientConnection,
        session: NodeSession,
        welcome: Welcome,
        models: ModelTable,
        hardware: Hardware,
        *,
        drain_grace_s: float,
        load_reader: Callable[[int], LoadReading] = read_load,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._websocket = websocket
        self._session = session
        self._welcome = welcome
        self._models = models
        self._gpu_count = len(hardware.gpus)
        self._drain_grace_s = drain_grace_s
        self._read_load = load_reader
        self._monotonic = monotonic
        self._send_lock = asyncio.Lock()
        self._jobs: dict[str, RunningJob] = {}
        self._draining = False
        self._task_group: asyncio.TaskGroup | None = None
        self.end: LinkEnd | None = None

    # -- Outbox (used by the job tasks) ------------------------------------------------------

    async def send(self, message: Message) -> None:
        """Seal and write ``message``; MessageTooLarge (nothing sent) or LinkClosed."""
        async with self._send_lock:
            try:
                frame = self._session.send(message)
            except ProtocolError as error:  # SessionClosed
                raise LinkClosed(str(error)) from None
            except ValueError as error:  # over the coordinator's frame limit; nothing consumed
                raise MessageTooLarge(str(error)) from None
            await self._write(frame)

    async def send_done(
        self,
        *,
        job_id: str,
        model: str,
        usage: Usage,
        finish_reason: FinishReason,
        timings: Timings,
    ) -> None:
        """Seal and write a ``done`` with the signed receipt; LinkClosed if the session is gone."""
        async with self._send_lock:
            try:
                frame = self._session.done(
                    job_id=job_id,
                    model=model,
                    usage=usage,
                    finish_reason=finish_reason,
                    timings=timings,
                )
            except ProtocolError as error:
                raise LinkClosed(str(error)) from None
            await self._write(frame)

    async def _write(self, frame: bytes) -> None:
        try:
            await self._websocket.send(frame)
        except ConnectionClosed as error:
            raise LinkClosed(str(error)) from None

    # -- the session -------------------------------------------------------------------------

    async def run(self, shutdown: asyncio.Event, force: asyncio.Event) -> LinkEnd:
        """Serve the session until it ends; returns why. ``shutdown`` starts a drain."""
        try:
            async with asyncio.TaskGroup() as task_group:
                self._task_group = task_group
                task_group.create_task(self._receive_loop(), name="receive")
                task_group.create_task(self._heartbeat_loop(), name="heartbeat")
                task_group.create_task(self._watch_shutdown(shutdown, force), name="shutdown")
        except* (_LinkEnded, LinkClosed):
            pass
        finally:
            self._task_group = None
            self._session.close()
        return self.end or LinkEnd.PEER_CLOSED

    def _finish(self, end: LinkEnd) -> _LinkEnded:
        if self.end is None:
            self.end = end
        return _LinkEnded()

    async def _receive_loop(self) -> None:
        while True:
            try:
                frame = await self._websocket.recv()
            except ConnectionClosed as closed:
                logger.info("hub connection closed: %s", closed)
                raise self._finish(LinkEnd.PEER_CLOSED) from None
            try:
                if isinstance(frame, str):
                    raise MalformedFrame("a text message: protocol frames are binary")
                message = self._session.receive(frame)
            except ProtocolError as error:
                logger.warning(
                    "closing the session: %s (close code %d)", error, int(error.close_code)
                )
                await self._websocket.close(int(error.close_code), error.reason)
                raise self._finish(LinkEnd.PROTOCOL_ERROR) from None
            await self._dispatch(message)

    async def _dispatch(self, message: Message) -> None:
        if isinstance(message, Job):
            await self._start_job(message)
        elif isinstance(message, Cancel):
            running = self._jobs.get(message.job_id)
            if running is not None:  # else it already ended: its terminal message is on its way
                logger.info(
                    "job %s cancelled by the coordinator: %s", message.job_id, message.reason
                )
                running.cancel(message.reason or "cancelled by the coordinator")
        elif isinstance(message, Drain):
            logger.info("the coordinator asks to drain: %s", message.reason)
            self._start_drain(message.grace_ms / 1000, LinkEnd.COORDINATOR_DRAIN, announce=None)

    def _admit(self, job: Job) -> ServedModel | JobRefused:
        def refuse(reason: _RefusalReason, text: str) -> JobRefused:
            return JobRefused(job_id=job.job_id, reason=reason, message=text)

        if self._draining:
            return refuse("draining", "the node is draining and takes no new jobs")
        if job.job_id in self._jobs:
            return refuse("invalid_request", f"job {job.job_id} is already running here")
        served = self._models.get(job.model)
        if served is None:
            return refuse("model_unavailable", f"this node does not serve {job.model!r}")
        if served.free_slots == 0:
            return refuse(
                "overloaded",
                f"all {served.offer.max_concurrency} slots for {job.model!r} are busy",
            )
        if len(self._jobs) >= self._welcome.limits.max_jobs_in_flight:
            return refuse("overloaded", "the session's max_jobs_in_flight is reached")
        return served

    async def _start_job(self, job: Job) -> None:
        received_s = self._monotonic()
        admitted = self._admit(job)
        if isinstance(admitted, JobRefused):
            logger.info("job %s refused: %s", job.job_id, admitted.reason)
            await self.send(admitted)
            return
        running = RunningJob(job=job, served=admitted, received_s=received_s)
        admitted.active_jobs += 1  # the slot is taken before any await
        self._jobs[job.job_id] = running
        try:
            await self.send(JobAccepted(job_id=job.job_id))
        except BaseException:
            self._release(running)
            raise
        if self._task_group is None:  # pragma: no cover - the link is running
            self._release(running)
            return
        running.task = self._task_group.create_task(self._run_job(running), name=job.job_id)

    async def _run_job(self, running: RunningJob) -> None:
        try:
            await run_job(running, self, monotonic=self._monotonic)
        finally:
            self._release(running)

    def _release(self, running: RunningJob) -> None:
        if self._jobs.get(running.job.job_id) is running:
            del self._jobs[running.job.job_id]
            running.served.active_jobs -= 1

    async def _heartbeat_loop(self) -> None:
        interval_s = self._welcome.heartbeat_interval_ms / 1000
        loop = asyncio.get_running_loop()
        next_beat = loop.time()
        reading = LoadReading(cpu_pct=0.0, memory_used_mib=0, gpus=[])
        while True:
            try:
                reading = await asyncio.to_thread(self._read_load, self._gpu_count)
            except Exception:
                # A failed reading must not end the session: the last one is sent again.
                logger.exception("reading this machine's load failed")
            await self.send(self._heartbeat(reading))
            # A fixed schedule: a slow GPU reading does not push every later beat back.
            next_beat += interval_s
            next_beat = max(next_beat, loop.time())
            await asyncio.sleep(next_beat - loop.time())

    def _heartbeat(self, reading: LoadReading) -> Heartbeat:
        active = len(self._jobs)
        if self._draining:
            free = 0
        else:
            free = min(
                self._models.free_slots,
                max(0, self._welcome.limits.max_jobs_in_flight - active),
            )
        return Heartbeat(
            active_jobs=active,
            queued_jobs=0,  # the node never queues: it refuses a job it has no slot for
            free_slots=free,
            cpu_pct=reading.cpu_pct,
            memory_used_mib=reading.memory_used_mib,
            gpus=reading.gpus,
        )

    async def _watch_shutdown(self, shutdown: asyncio.Event, force: asyncio.Event) -> None:
        await shutdown.wait()
        if self.end is None:
            self.end = LinkEnd.SHUTDOWN  # even if a coordinator drain is already under way
        self._start_drain(self._drain_grace_s, LinkEnd.SHUTDOWN, announce="node shutting down")
        await force.wait()
        self._cancel_jobs("the node was stopped")

    def _start_drain(self, grace_s: float, end: LinkEnd, *, announce: str | None) -> None:
        # Refuse new jobs from this moment on, not from when the drain task first runs.
        if self._draining or self._task_group is None:
            return
        self._draining = True
        self._task_group.create_task(self._drain(grace_s, end, announce=announce), name="drain")

    async def _drain(self, grace_s: float, end: LinkEnd, *, announce: str | None) -> None:
        """Take no new jobs, let running ones finish within ``grace_s``, then close with 1001."""
        if announce is not None:
            await self.send(Drain(reason=announce, grace_ms=min(2**31 - 1, round(grace_s * 1000))))
        logger.info("draining: %d job(s) running, waiting up to %.1f s", len(self._jobs), grace_s)
        await self._wait_for_jobs(grace_s)
        if self._jobs:
            logger.warning("drain grace period over: cancelling %d job(s)", len(self._jobs))
            self._cancel_jobs("the node's drain grace period ended")
            await self._wait_for_jobs(_CANCELLED_JOBS_WAIT_S)
        # Record why before closing: the receive loop sees the close and ends the link too.
        ended = self._finish(end)
        await self._websocket.close(int(CloseCode.GOING_AWAY), end.value[:120])
        raise ended

    async def _wait_for_jobs(self, timeout_s: float) -> None:
        tasks = [job.task for job in self._jobs.values() if job.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)

    def _cancel_jobs(self, reason: str) -> None:
        for running in list(self._jobs.values()):
            running.cancel(reason)
