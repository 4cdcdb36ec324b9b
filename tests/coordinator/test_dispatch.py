"""Failover in the dispatcher, with nodes played in-process through the real hub and sessions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from coordinator.hub.dispatch import Dispatcher, JobRejected
from coordinator.hub.hub import NodeHub
from coordinator.routing import RouteInput
from protocol import (
    Cancel,
    Chunk,
    Done,
    Failed,
    Identity,
    Job,
    JobAccepted,
    NodeSession,
    Timings,
    Usage,
)
from scheduler import ProviderPreferences, RouteRequest, RoutingPreferences
from tests.coordinator.test_hub import Pipe, heartbeat, make_hub
from tests.protocol.peers import sample_hardware, sample_job, sample_offer

pytestmark = pytest.mark.asyncio

MODEL = sample_offer().model


@dataclass
class Behaviour:
    """How a played node answers: fail, stop (a node-caused cancel), or answer after a delay."""

    fail: Failed | None = None
    delay_s: float = 0.0
    stop_before_output: bool = False
    cancelled: list[str] = field(default_factory=list)
    """Job ids the coordinator cancelled on this node."""


async def play_node(pipe: Pipe, node: NodeSession, *, fail: Failed | None) -> None:
    """Answer every job: with ``fail`` (its job id replaced), or with one chunk and a done."""
    await play(pipe, node, Behaviour(fail=fail))


async def play(pipe: Pipe, node: NodeSession, behaviour: Behaviour) -> None:
    jobs: set[asyncio.Task[None]] = set()
    while True:
        message = node.receive(await pipe.from_hub.get())
        if isinstance(message, Cancel):
            behaviour.cancelled.append(message.job_id)
        if not isinstance(message, Job):
            continue
        pipe.to_hub.put_nowait(node.send(JobAccepted(job_id=message.job_id)))
        task = asyncio.create_task(answer(pipe, node, message, behaviour))
        jobs.add(task)
        task.add_done_callback(jobs.discard)


async def answer(pipe: Pipe, node: NodeSession, job: Job, behaviour: Behaviour) -> None:
    if behaviour.fail is not None:
        pipe.to_hub.put_nowait(node.send(behaviour.fail.model_copy(update={"job_id": job.job_id})))
        return
    await asyncio.sleep(behaviour.delay_s)
    if job.job_id in behaviour.cancelled:
        return
    timings = Timings(queue_ms=0, time_to_first_token_ms=1, total_ms=2)
    if behaviour.stop_before_output:
        pipe.to_hub.put_nowait(
            node.done(
                job_id=job.job_id,
                model=job.model,
                usage=Usage(prompt_tokens=3, completion_tokens=0),
                finish_reason="cancelled",
                timings=timings,
            )
        )
        return
    pipe.to_hub.put_nowait(node.send(Chunk(job_id=job.job_id, index=0, text="served", tokens=1)))
    pipe.to_hub.put_nowait(
        node.done(
            job_id=job.job_id,
            model=job.model,
            usage=Usage(prompt_tokens=3, completion_tokens=1),
            finish_reason="stop",
            timings=timings,
        )
    )


@asynccontextmanager
async def node(
    hub: NodeHub, *, price: int, fail: Failed | None = None, behaviour: Behaviour | None = None
) -> AsyncIterator[str]:
    """A node offering MODEL at ``price`` that answers as :func:`play`; yields its id."""
    pipe = Pipe()
    serve = asyncio.create_task(hub.serve(pipe.receive, pipe.send, pipe.close))
    session = NodeSession(Identity.generate(), hub.identity.public_key, agent_version="test")
    session.receive(await pipe.from_hub.get())
    offer = sample_offer().model_copy(
        update={"price_input_micro_usd_per_1m": price, "price_output_micro_usd_per_1m": price}
    )
    pipe.to_hub.put_nowait(session.hello(sample_hardware(), [offer]))
    session.receive(await pipe.from_hub.get())
    pipe.to_hub.put_nowait(session.send(heartbeat()))
    player = asyncio.create_task(play(pipe, session, behaviour or Behaviour(fail=fail)))
    try:
        yield session.node_id
    finally:
        player.cancel()
        pipe.to_hub.put_nowait(None)
        await asyncio.wait_for(serve, 2)


def cannot_serve(retryable: bool) -> Failed:
    return Failed(
        job_id="job_x",
        code="invalid_request",
        message="tools are not supported by the vllm backend yet",
        retryable=retryable,
    )


async def run(
    dispatcher: Dispatcher,
    job: Job,
    order: tuple[str, ...] = (),
    *,
    hedge: bool | None = None,
    routing: RouteInput | None = None,
) -> list[tuple[str, object]]:
    job = job.model_copy(update={"deadline_ms": int((time.time() + 30) * 1000)})
    routing = routing or RouteInput(
        RoutingPreferences(job.model, provider=ProviderPreferences(order=order, hedge=hedge)),
        RouteRequest(prompt_tokens=1, max_tokens=job.sampling.max_tokens),
    )
    return [event async for event in dispatcher.stream(job, routing)]


async def test_a_node_that_cannot_serve_the_request_passes_it_to_the_next() -> None:
    hub = make_hub(interval_ms=5_000)
    async with (
        node(hub, price=1, fail=cannot_serve(retryable=True)),
        node(hub, price=9, fail=None) as able,
    ):
        events = await run(Dispatcher(hub.registry), sample_job("job_a"))
    assert [node_id for node_id, _ in events] == [able, able]
    chunk, done = (event for _, event in events)
    assert isinstance(chunk, Chunk)
    assert chunk.text == "served"
    assert isinstance(done, Done)


async def test_when_no_node_can_serve_the_request_it_is_rejected_not_failed() -> None:
    hub = make_hub(interval_ms=5_000)
    async with (
        node(hub, price=1, fail=cannot_serve(retryable=True)),
        node(hub, price=9, fail=cannot_serve(retryable=True)),
    ):
        with pytest.raises(JobRejected, match="no node could serve this request: tools") as caught:
            await run(Dispatcher(hub.registry), sample_job("job_b"))
    assert caught.value.code == "invalid_request"


async def test_a_request_the_node_calls_invalid_is_not_retried_elsewhere() -> None:
    hub = make_hub(interval_ms=5_000)
    async with (
        node(hub, price=1, fail=cannot_serve(retryable=False)) as refusing,
        node(hub, price=9, fail=None),
    ):
        with pytest.raises(JobRejected, match=r"^tools are not supported"):
            await run(Dispatcher(hub.registry), sample_job("job_c"), order=(refusing,))


def routed(order: tuple[str, ...], *, hedge: bool | None, request_id: str) -> RouteInput:
    return RouteInput(
        RoutingPreferences(MODEL, provider=ProviderPreferences(order=order, hedge=hedge)),
        RouteRequest(prompt_tokens=1, max_tokens=16),
        request_id=request_id,
    )


async def test_a_late_first_token_is_hedged_and_the_loser_cancelled() -> None:
    hub = make_hub(interval_ms=5_000)
    slow = Behaviour(delay_s=5.0)
    async with node(hub, price=1, behaviour=slow) as slow_id, node(hub, price=9) as fast_id:
        dispatcher = Dispatcher(hub.registry)
        for _ in range(3):  # the slow node's history says it answers within ~20 ms
            dispatcher.router.record_success(slow_id, MODEL, ttft_ms=20.0, tokens_per_s=50.0)
        routing = routed((slow_id, fast_id), hedge=True, request_id="req_hedge")
        started = time.monotonic()
        events = await run(dispatcher, sample_job("job_h"), routing=routing)
        elapsed = time.monotonic() - started
        await asyncio.sleep(0.05)  # let the cancel reach the slow node
    assert [node_id for node_id, _ in events] == [fast_id, fast_id]
    assert elapsed < 4.0  # it did not wait for the slow node
    assert routing.hedged
    assert routing.attempts == 2
    assert slow.cancelled == ["job_h"]
    record = dispatcher.router.routes.get("req_hedge")
    assert record is not None
    assert record.served_by == fast_id
    outcomes = [(a.node_id, a.outcome, a.hedge) for a in record.attempts]
    assert outcomes == [(slow_id, "hedge_lost", False), (fast_id, "served", True)]
    # the loser's wait counts as a (lower bound) TTFT sample: its p90 now shows the slowness
    summary = dispatcher.router.measurements.of(slow_id, MODEL).summary(time.monotonic())
    assert summary.ttft_p90_ms > 20.0


async def test_without_hedging_a_late_node_is_waited_for() -> None:
    hub = make_hub(interval_ms=5_000)
    slow = Behaviour(delay_s=0.3)
    async with node(hub, price=1, behaviour=slow) as slow_id, node(hub, price=9) as fast_id:
        dispatcher = Dispatcher(hub.registry)
        for _ in range(3):
            dispatcher.router.record_success(slow_id, MODEL, ttft_ms=20.0, tokens_per_s=50.0)
        routing = routed((slow_id, fast_id), hedge=False, request_id="req_plain")
        events = await run(dispatcher, sample_job("job_p"), routing=routing)
    assert [node_id for node_id, _ in events] == [slow_id, slow_id]
    assert not routing.hedged
    assert routing.attempts == 1


async def test_the_operator_default_hedges_requests_that_do_not_say() -> None:
    hub = make_hub(interval_ms=5_000)
    async with (
        node(hub, price=1, behaviour=Behaviour(delay_s=5.0)) as slow_id,
        node(hub, price=9) as fast_id,
    ):
        dispatcher = Dispatcher(hub.registry)
        dispatcher.router.hedge_default = True
        for _ in range(3):
            dispatcher.router.record_success(slow_id, MODEL, ttft_ms=20.0, tokens_per_s=50.0)
        routing = routed((slow_id, fast_id), hedge=None, request_id="req_default")
        events = await run(dispatcher, sample_job("job_d"), routing=routing)
    assert events[0][0] == fast_id
    assert routing.hedged


async def test_if_the_hedge_fails_the_first_node_still_answers() -> None:
    hub = make_hub(interval_ms=5_000)
    failing = Failed(job_id="job_x", code="backend_error", message="boom", retryable=True)
    async with (
        node(hub, price=1, behaviour=Behaviour(delay_s=0.3)) as slow_id,
        node(hub, price=9, fail=failing) as bad_id,
    ):
        dispatcher = Dispatcher(hub.registry)
        for _ in range(3):
            dispatcher.router.record_success(slow_id, MODEL, ttft_ms=20.0, tokens_per_s=50.0)
        routing = routed((slow_id, bad_id), hedge=True, request_id="req_hf")
        events = await run(dispatcher, sample_job("job_hf"), routing=routing)
    assert events[0][0] == slow_id
    record = dispatcher.router.routes.get("req_hf")
    assert record is not None
    assert [(a.node_id, a.outcome) for a in record.attempts] == [
        (slow_id, "served"),
        (bad_id, "failed"),
    ]


async def test_a_node_that_stops_a_job_on_its_own_loses_reputation_as_a_node_cancel() -> None:
    hub = make_hub(interval_ms=5_000)
    async with (
        node(hub, price=1, behaviour=Behaviour(stop_before_output=True)) as quitter,
        node(hub, price=9) as able,
    ):
        dispatcher = Dispatcher(hub.registry)
        routing = routed((quitter, able), hedge=False, request_id="req_q")
        events = await run(dispatcher, sample_job("job_q"), routing=routing)
    assert events[0][0] == able
    inputs = dispatcher.router.reputation.of(quitter).inputs(time.monotonic())
    assert inputs["node_cancel"] == pytest.approx(1.0, abs=1e-3)
    record = dispatcher.router.routes.get("req_q")
    assert record is not None
    assert record.attempts[0].outcome == "node_cancel"
