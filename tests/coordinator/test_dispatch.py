"""Failover in the dispatcher, with nodes played in-process through the real hub and sessions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from coordinator.hub.dispatch import Dispatcher, JobRejected
from coordinator.hub.hub import NodeHub
from coordinator.routing import RouteInput
from protocol import (
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


async def play_node(pipe: Pipe, node: NodeSession, *, fail: Failed | None) -> None:
    """Answer every job: with ``fail`` (its job id replaced), or with one chunk and a done."""
    while True:
        message = node.receive(await pipe.from_hub.get())
        if not isinstance(message, Job):
            continue
        pipe.to_hub.put_nowait(node.send(JobAccepted(job_id=message.job_id)))
        if fail is not None:
            pipe.to_hub.put_nowait(node.send(fail.model_copy(update={"job_id": message.job_id})))
            continue
        pipe.to_hub.put_nowait(
            node.send(Chunk(job_id=message.job_id, index=0, text="served", tokens=1))
        )
        pipe.to_hub.put_nowait(
            node.done(
                job_id=message.job_id,
                model=message.model,
                usage=Usage(prompt_tokens=3, completion_tokens=1),
                finish_reason="stop",
                timings=Timings(queue_ms=0, time_to_first_token_ms=1, total_ms=2),
            )
        )


@asynccontextmanager
async def node(hub: NodeHub, *, price: int, fail: Failed | None) -> AsyncIterator[str]:
    """A node offering MODEL at ``price`` that answers as :func:`play_node`; yields its id."""
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
    player = asyncio.create_task(play_node(pipe, session, fail=fail))
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
    dispatcher: Dispatcher, job: Job, order: tuple[str, ...] = ()
) -> list[tuple[str, object]]:
    job = job.model_copy(update={"deadline_ms": int((time.time() + 30) * 1000)})
    routing = RouteInput(
        RoutingPreferences(job.model, provider=ProviderPreferences(order=order)),
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
