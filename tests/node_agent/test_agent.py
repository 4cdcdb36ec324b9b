"""The agent's session loop against a real websocket hub speaking protocol v1 on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from node_agent import AgentOptions, AgentStopped, NodeAgent
from node_agent.backends import BackendConfig, MockBackend, OpenAIBackend, VllmBackend
from node_agent.backends.base import BackendError, InferenceBackend, TextDelta
from protocol import (
    KNOWN_PARAMETERS,
    MAX_JSON_CHARS,
    Cancel,
    Chunk,
    Done,
    Drain,
    Failed,
    Heartbeat,
    Identity,
    JobAccepted,
    JobRefused,
    SessionConfig,
    ToolCallDelta,
    UsageReceipt,
    decode_tool_call_deltas,
)
from protocol.framing import DecodeLimits
from protocol.messages import RejectCode
from tests.node_agent.backends.fake_vllm import FakeEngine
from tests.node_agent.fake_hub import WAIT_S, FakeHub, HubSide
from tests.node_agent.scripted import WORDS, ScriptedBackend, hardware, job, offer

pytestmark = pytest.mark.asyncio

FAST_RECONNECT: dict[str, Any] = {
    "reconnect_min_s": 0.01,
    "reconnect_max_s": 0.05,
    "drain_grace_s": 5.0,
}


@pytest_asyncio.fixture
async def hub() -> AsyncIterator[FakeHub]:
    hub = FakeHub(heartbeat_interval_ms=5_000)
    await hub.start()
    yield hub
    await hub.stop()


def make_agent(
    hub: FakeHub,
    backend: InferenceBackend,
    *,
    identity: Identity | None = None,
    **options: Any,
) -> NodeAgent:
    return NodeAgent(
        identity=identity or Identity.generate(),
        coordinator_key=hub.identity.public_key,
        hub_url=hub.hub_url,
        backends=[backend],
        options=AgentOptions(**(FAST_RECONNECT | options)),
        hardware=hardware(),
    )


@contextlib.asynccontextmanager
async def running(agent: NodeAgent) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``agent`` for the block; then stop it at once (two shutdown requests)."""
    task = asyncio.create_task(agent.run())
    try:
        yield task
    finally:
        if not task.done():
            agent.request_shutdown()
            agent.request_shutdown()
        with contextlib.suppress(AgentStopped):
            await asyncio.wait_for(task, WAIT_S)


async def stream(side: HubSide, job_id: str) -> tuple[list[Chunk], Done | Failed]:
    """The chunks of ``job_id`` up to its terminal message (heartbeats skipped)."""
    chunks: list[Chunk] = []
    while True:
        message = await side.next_message()
        if isinstance(message, Heartbeat):
            continue
        assert getattr(message, "job_id", None) == job_id, message
        if isinstance(message, Chunk):
            chunks.append(message)
        elif isinstance(message, Done | Failed):
            return chunks, message
        else:
            pytest.fail(f"unexpected {message!r}")


async def terminal(side: HubSide) -> Done | Failed:
    """The next done or failed of any job, skipping heartbeats and chunks."""
    while True:
        message = await side.next_message()
        if isinstance(message, Done | Failed):
            return message
        assert isinstance(message, Heartbeat | Chunk), message


async def test_handshake_announces_the_hardware_and_the_backends_offers(hub: FakeHub) -> None:
    backend = ScriptedBackend([offer("a/one"), offer("a/two", max_concurrency=2)])
    identity = Identity.generate()
    agent = make_agent(hub, backend, identity=identity)
    async with running(agent):
        side = await hub.next_side()
        assert side.hello.node_key == identity.public_key.raw
        assert side.hello.offers == backend.offers()
        assert side.hello.hardware == hardware()
        assert side.hello.agent_version.startswith("shareai-node/")
        assert side.session.node_id == identity.public_key.node_id


async def test_the_hello_offers_each_backends_supported_parameters(hub: FakeHub) -> None:
    def settings(kind: str, model: str, **fields: Any) -> BackendConfig:
        return BackendConfig.model_validate(
            {"kind": kind, "model": model, "context_length": 4096, **fields}
        )

    openai = OpenAIBackend(
        settings("openai", "b/openai", base_url="http://127.0.0.1:9", supported_parameters=[])
    )
    backends: list[InferenceBackend] = [
        MockBackend(settings("mock", "b/mock")),
        openai,
        VllmBackend(settings("vllm", "b/vllm"), engine=FakeEngine(), sampling_params=dict),
        MockBackend(settings("mock", "b/narrowed", supported_parameters=["tools", "seed"])),
    ]
    agent = NodeAgent(
        identity=Identity.generate(),
        coordinator_key=hub.identity.public_key,
        hub_url=hub.hub_url,
        backends=backends,
        options=AgentOptions(**FAST_RECONNECT),
        hardware=hardware(),
    )
    try:
        async with running(agent):
            side = await hub.next_side()
    finally:
        await openai.aclose()
    offered = {offer.model: offer.supported_parameters for offer in side.hello.offers}
    tools_and_format = {"tools", "tool_choice", "parallel_tool_calls", "response_format"}
    assert offered == {
        "b/mock": sorted(KNOWN_PARAMETERS),
        "b/openai": [],
        "b/vllm": sorted(KNOWN_PARAMETERS - tools_and_format),
        "b/narrowed": ["seed", "tools"],
    }


async def test_heartbeats_arrive_on_the_interval_the_welcome_sets() -> None:
    hub = FakeHub(heartbeat_interval_ms=100)
    await hub.start()
    try:
        backend = ScriptedBackend([offer("a/one", max_concurrency=3), offer("a/two")])
        async with running(make_agent(hub, backend)):
            side = await hub.next_side()
            beats = [await side.expect(Heartbeat, skip=()) for _ in range(3)]
    finally:
        await hub.stop()
    for beat in beats:
        assert beat.active_jobs == 0
        assert beat.queued_jobs == 0
        assert beat.free_slots == 3 + 4
        assert 0.0 <= beat.cpu_pct <= 100.0
        assert beat.memory_used_mib > 0
        assert beat.gpus == []


async def test_a_job_streams_its_chunks_then_a_done_with_a_receipt_that_verifies(
    hub: FakeHub,
) -> None:
    backend = ScriptedBackend()
    identity = Identity.generate()
    async with running(make_agent(hub, backend, identity=identity)):
        side = await hub.next_side()
        await side.send(job("job_a"))
        assert await side.expect(JobAccepted) == JobAccepted(job_id="job_a")
        chunks, done = await stream(side, "job_a")

    assert isinstance(done, Done)
    assert "".join(chunk.text for chunk in chunks) == "".join(WORDS)
    assert [chunk.index for chunk in chunks] == list(range(len(chunks)))
    assert sum(chunk.tokens for chunk in chunks) == len(WORDS)
    assert done.model == "test/model"
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (5, len(WORDS))
    assert done.finish_reason == "stop"
    assert done.timings.time_to_first_token_ms is not None
    assert done.timings.total_ms >= done.timings.time_to_first_token_ms
    # The hub's session verified it already; the stored evidence verifies on its own too.
    receipt = UsageReceipt.from_done(done, hub.identity.public_key.raw)
    receipt.verify(identity.public_key, done.receipt_signature)
    assert backend.outcomes["job_a"] == "finished"


async def test_a_backend_error_becomes_failed_with_its_code(hub: FakeHub) -> None:
    backend = ScriptedBackend(fail=BackendError("timeout", "upstream too slow", retryable=False))
    async with running(make_agent(hub, backend)):
        side = await hub.next_side()
        await side.send(job("job_f"))
        await side.expect(JobAccepted)
        chunks, failed = await stream(side, "job_f")
    assert len(chunks) >= 1
    assert failed == Failed(
        job_id="job_f", code="timeout", message="upstream too slow", retryable=False
    )


async def test_an_error_inside_the_agent_fails_the_job_and_keeps_the_session(
    hub: FakeHub,
) -> None:
    backend = ScriptedBackend(prompt_tokens=10**9)  # over the protocol's token-count limit
    async with running(make_agent(hub, backend)):
        side = await hub.next_side()
        await side.send(job("job_bad"))
        await side.expect(JobAccepted)
        _, failed = await stream(side, "job_bad")
        assert isinstance(failed, Failed)
        assert (failed.code, failed.retryable) == ("internal_error", True)
        assert failed.message.startswith("node agent error: ValidationError")
        await side.send(job("job_next"))  # the same session goes on
        await side.expect(JobAccepted)


async def test_per_model_concurrency_is_enforced_with_job_refused(hub: FakeHub) -> None:
    backend = ScriptedBackend([offer("m/a", max_concurrency=1), offer("m/b")], hold_after=1)
    async with running(make_agent(hub, backend)):
        side = await hub.next_side()
        await side.send(job("first", "m/a"))
        await side.expect(JobAccepted)
        await side.expect(Chunk)  # the first job holds m/a's only slot now

        await side.send(job("second", "m/a"))
        refused = await side.expect(JobRefused)
        assert (refused.job_id, refused.reason) == ("second", "overloaded")

        await side.send(job("elsewhere", "m/unknown"))
        refused = await side.expect(JobRefused)
        assert (refused.job_id, refused.reason) == ("elsewhere", "model_unavailable")

        await side.send(job("other_model", "m/b"))  # another model's slots are its own
        assert await side.expect(JobAccepted) == JobAccepted(job_id="other_model")

        backend.gate.set()
        ended = [await terminal(side) for _ in range(2)]
        assert {type(message) for message in ended} == {Done}
        assert {message.job_id for message in ended} == {"first", "other_model"}

        await side.send(job("third", "m/a"))  # the slot is free again
        assert await side.expect(JobAccepted) == JobAccepted(job_id="third")
        _, done = await stream(side, "third")
        assert isinstance(done, Done)


async def test_cancel_stops_the_backend_and_reports_what_was_streamed(hub: FakeHub) -> None:
    backend = ScriptedBackend(hold_after=1)
    async with running(make_agent(hub, backend)):
        side = await hub.next_side()
        await side.send(job("job_c"))
        await side.expect(JobAccepted)
        first = await side.expect(Chunk)
        await side.send(Cancel(job_id="job_c", reason="the customer left"))
        assert await backend.outcome("job_c") == "cancelled"
        done = await side.expect(Done)
    assert first.tokens == 1
    assert done.finish_reason == "cancelled"
    assert done.usage.completion_tokens == 1
    assert not backend.gate.is_set()


async def test_cancel_before_the_first_token_reports_failed_cancelled(hub: FakeHub) -> None:
    backend = ScriptedBackend(hold_after=0)
    async with running(make_agent(hub, backend)):
        side = await hub.next_side()
        await side.send(job("job_early"))
        await side.expect(JobAccepted)
        assert await asyncio.wait_for(backend.started.get(), WAIT_S) == "job_early"
        await side.send(Cancel(job_id="job_early", reason="deadline"))
        failed = await side.expect(Failed)
        assert await backend.outcome("job_early") == "cancelled"
    assert (failed.code, failed.retryable) == ("cancelled", False)


async def test_reconnects_after_the_hub_drops_the_connection_cancelling_its_jobs(
    hub: FakeHub,
) -> None:
    backend = ScriptedBackend(hold_after=1)
    agent = make_agent(hub, backend)
    async with running(agent):
        side = await hub.next_side()
        await side.send(job("job_lost"))
        await side.expect(JobAccepted)
        await side.expect(Chunk)
        side.drop()
        assert await backend.outcome("job_lost") == "cancelled"
        again = await hub.next_side()
        assert again.hello.node_key == side.hello.node_key
        assert agent.sessions_established == 2
        # The new session serves jobs: the old one's slot was released.
        backend.gate.set()
        await again.send(job("job_new"))
        await again.expect(JobAccepted)
        _, done = await stream(again, "job_new")
        assert isinstance(done, Done)


async def test_reconnects_after_the_hub_restarts_on_the_same_port(hub: FakeHub) -> None:
    agent = make_agent(hub, ScriptedBackend())
    async with running(agent):
        await hub.next_side()
        port = hub.port
        await hub.restart()
        assert hub.port == port
        side = await hub.next_side()
        await side.expect(Heartbeat, skip=())
        assert agent.sessions_established == 2


async def test_a_revoked_reject_stops_the_agent_with_an_error() -> None:
    hub = FakeHub(admission=lambda hello: ("revoked", "key revoked by the operator"))
    await hub.start()
    try:
        agent = make_agent(hub, ScriptedBackend())
        with pytest.raises(AgentStopped) as stopped:
            await asyncio.wait_for(agent.run(), WAIT_S)
    finally:
        await hub.stop()
    assert stopped.value.code == "revoked"
    assert "revoked" in str(stopped.value)
    assert "key revoked by the operator" in str(stopped.value)
    assert "\n" not in str(stopped.value)
    assert hub.handshakes == 1


async def test_a_suspended_reject_stops_the_agent_at_once() -> None:
    hub = FakeHub(admission=lambda hello: ("suspended", "abuse report"))
    await hub.start()
    try:
        with pytest.raises(AgentStopped) as stopped:
            await asyncio.wait_for(make_agent(hub, ScriptedBackend()).run(), WAIT_S)
    finally:
        await hub.stop()
    assert stopped.value.code == "suspended"
    assert hub.handshakes == 1


async def test_unknown_node_is_retried_a_few_times_then_stops() -> None:
    hub = FakeHub(admission=lambda hello: ("unknown_node", "not enrolled"))
    await hub.start()
    try:
        agent = make_agent(hub, ScriptedBackend(), unknown_node_retries=2)
        with pytest.raises(AgentStopped) as stopped:
            await asyncio.wait_for(agent.run(), WAIT_S)
    finally:
        await hub.stop()
    assert stopped.value.code == "unknown_node"
    assert "shareai node init" in str(stopped.value)
    assert hub.handshakes == 3


async def test_unknown_node_right_after_enrolling_is_a_race_the_retry_wins() -> None:
    answers: list[tuple[RejectCode, str] | None] = [("unknown_node", "not yet"), None]
    hub = FakeHub(admission=lambda hello: answers.pop(0) if answers else None)
    await hub.start()
    try:
        async with running(make_agent(hub, ScriptedBackend(), unknown_node_retries=2)):
            side = await hub.next_side()
            await side.expect(Heartbeat, skip=())
    finally:
        await hub.stop()
    assert hub.rejected == ["unknown_node"]


async def test_a_coordinator_with_another_key_is_refused_for_good(hub: FakeHub) -> None:
    agent = NodeAgent(
        identity=Identity.generate(),
        coordinator_key=Identity.generate().public_key,  # pinned: not the hub's key
        hub_url=hub.hub_url,
        backends=[ScriptedBackend()],
        options=AgentOptions(**FAST_RECONNECT),
        hardware=hardware(),
    )
    with pytest.raises(AgentStopped) as stopped:
        await asyncio.wait_for(agent.run(), WAIT_S)
    assert stopped.value.code == "untrusted_coordinator"
    assert "coordinator_key" in str(stopped.value)
    assert hub.handshakes == 0


async def test_shutdown_drains_finishes_the_running_job_and_closes_going_away(
    hub: FakeHub,
) -> None:
    backend = ScriptedBackend(hold_after=1)
    agent = make_agent(hub, backend)
    task = asyncio.create_task(agent.run())
    side = await hub.next_side()
    await side.send(job("job_d"))
    await side.expect(JobAccepted)
    await side.expect(Chunk)

    agent.request_shutdown()
    drain = await side.expect(Drain)
    assert drain.grace_ms == 5_000
    await side.send(job("job_late"))
    refused = await side.expect(JobRefused)
    assert (refused.job_id, refused.reason) == ("job_late", "draining")

    backend.gate.set()
    _, done = await stream(side, "job_d")
    assert isinstance(done, Done)
    assert done.finish_reason == "stop"
    assert await side.wait_closed() == 1001
    await asyncio.wait_for(task, WAIT_S)  # returns: no error
    assert hub.sides.empty()  # and no reconnect


async def test_a_second_shutdown_request_cancels_running_jobs_at_once(hub: FakeHub) -> None:
    backend = ScriptedBackend(hold_after=1)
    agent = make_agent(hub, backend, drain_grace_s=3_600)
    task = asyncio.create_task(agent.run())
    side = await hub.next_side()
    await side.send(job("job_stuck"))
    await side.expect(JobAccepted)
    await side.expect(Chunk)
    agent.request_shutdown()
    await side.expect(Drain)
    agent.request_shutdown()
    done = await side.expect(Done)
    assert done.finish_reason == "cancelled"
    assert await side.wait_closed() == 1001
    await asyncio.wait_for(task, WAIT_S)


async def test_an_overloaded_reject_is_retried() -> None:
    answers: list[tuple[RejectCode, str] | None] = [("overloaded", "busy"), ("overloaded", "busy")]
    hub = FakeHub(admission=lambda hello: answers.pop(0) if answers else None)
    await hub.start()
    try:
        async with running(make_agent(hub, ScriptedBackend(), unknown_node_retries=0)):
            side = await hub.next_side()
            await side.expect(Heartbeat, skip=())
    finally:
        await hub.stop()
    assert hub.rejected == ["overloaded", "overloaded"]


async def test_the_drain_grace_period_bounds_the_wait_for_running_jobs(hub: FakeHub) -> None:
    backend = ScriptedBackend(hold_after=1)
    agent = make_agent(hub, backend, drain_grace_s=0.1)
    task = asyncio.create_task(agent.run())
    side = await hub.next_side()
    await side.send(job("job_slow"))
    await side.expect(JobAccepted)
    await side.expect(Chunk)
    agent.request_shutdown()
    await side.expect(Drain)
    done = await side.expect(Done)  # the gate never opens: the grace period ends the job
    assert done.finish_reason == "cancelled"
    assert await backend.outcome("job_slow") == "cancelled"
    assert await side.wait_closed() == 1001
    await asyncio.wait_for(task, WAIT_S)


async def test_a_coordinator_drain_finishes_jobs_closes_then_reconnects(hub: FakeHub) -> None:
    backend = ScriptedBackend(hold_after=1)
    agent = make_agent(hub, backend)
    async with running(agent):
        side = await hub.next_side()
        await side.send(job("job_x"))
        await side.expect(JobAccepted)
        await side.expect(Chunk)
        await side.send(Drain(reason="coordinator restarting", grace_ms=5_000))
        await side.send(job("job_y"))
        refused = await side.expect(JobRefused)
        assert refused.reason == "draining"
        backend.gate.set()
        _, done = await stream(side, "job_x")
        assert isinstance(done, Done)
        assert await side.wait_closed() == 1001
        again = await hub.next_side()
        await again.expect(Heartbeat, skip=())


async def test_output_larger_than_the_coordinators_frame_limit_is_split_into_chunks() -> None:
    limits = DecodeLimits(max_frame_bytes=1024)
    hub = FakeHub(session_config=SessionConfig(limits=limits))
    await hub.start()
    long_word = "".join(chr(0x3B1 + i % 20) for i in range(3_000))  # 2 UTF-8 bytes each
    backend = ScriptedBackend(words=("short ", long_word, " end"))
    try:
        async with running(make_agent(hub, backend)):
            side = await hub.next_side()
            await side.send(job("job_big"))
            await side.expect(JobAccepted)
            chunks, done = await stream(side, "job_big")
    finally:
        await hub.stop()
    assert isinstance(done, Done)
    assert "".join(chunk.text for chunk in chunks) == "short " + long_word + " end"
    assert sum(chunk.tokens for chunk in chunks) == 3
    assert len(chunks) > 3
    assert [chunk.index for chunk in chunks] == list(range(len(chunks)))


async def test_tool_calls_reach_the_hub_in_order_and_big_arguments_are_split() -> None:
    limits = DecodeLimits(max_frame_bytes=1024)
    hub = FakeHub(session_config=SessionConfig(limits=limits))
    await hub.start()
    arguments = '{"text":"' + "é" * 2_000 + '"}'
    backend = ScriptedBackend(
        deltas=(
            TextDelta("Checking.", 1),
            TextDelta("", 1, tool_calls=(ToolCallDelta(0, id="call_1", name="lookup"),)),
            TextDelta("", 1, tool_calls=(ToolCallDelta(0, arguments=arguments),)),
            TextDelta("", 1, tool_calls=(ToolCallDelta(1, id="call_2", name="now"),)),
        ),
        finish_reason="tool_calls",
    )
    try:
        async with running(make_agent(hub, backend)):
            side = await hub.next_side()
            await side.send(job("job_tools"))
            await side.expect(JobAccepted)
            chunks, done = await stream(side, "job_tools")
    finally:
        await hub.stop()
    assert isinstance(done, Done)
    assert done.finish_reason == "tool_calls"
    assert "".join(chunk.text for chunk in chunks) == "Checking."
    fragments = [
        fragment
        for chunk in chunks
        if chunk.tool_calls_json is not None
        for fragment in decode_tool_call_deltas(chunk.tool_calls_json)
    ]
    assert len(chunks) > 4  # the arguments did not fit one frame
    assert [(f.index, f.id, f.name) for f in fragments if f.id is not None] == [
        (0, "call_1", "lookup"),
        (1, "call_2", "now"),
    ]
    assert "".join(f.arguments for f in fragments if f.index == 0) == arguments
    assert sum(chunk.tokens for chunk in chunks) == 4


async def test_tool_call_arguments_over_the_fields_limit_are_split(hub: FakeHub) -> None:
    arguments = "a" * (MAX_JSON_CHARS + 10)  # fits a frame, not one tool_calls_json
    backend = ScriptedBackend(
        deltas=(
            TextDelta("", 1, tool_calls=(ToolCallDelta(0, id="call_1", name="f"),)),
            TextDelta("", 1, tool_calls=(ToolCallDelta(0, arguments=arguments),)),
        ),
        finish_reason="tool_calls",
    )
    async with running(make_agent(hub, backend)):
        side = await hub.next_side()
        await side.send(job("job_long"))
        await side.expect(JobAccepted)
        chunks, done = await stream(side, "job_long")
    assert isinstance(done, Done)
    texts = [chunk.tool_calls_json for chunk in chunks]
    assert all(text is not None and len(text) <= MAX_JSON_CHARS for text in texts)
    fragments = [f for text in texts if text for f in decode_tool_call_deltas(text)]
    assert "".join(f.arguments for f in fragments) == arguments


async def test_shutdown_while_the_hub_is_unreachable_returns_at_once() -> None:
    hub = FakeHub()
    await hub.start()
    await hub.stop()  # the port is known, nothing listens
    agent = make_agent(hub, ScriptedBackend(), reconnect_min_s=5.0, reconnect_max_s=5.0)
    task = asyncio.create_task(agent.run())
    await asyncio.sleep(0.05)
    agent.request_shutdown()
    await asyncio.wait_for(task, WAIT_S)
    assert agent.sessions_established == 0
