"""The node hub driven in-process through its three I/O callables, with a real NodeSession."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from coordinator.hub.hub import (
    HEARTBEAT_TIMEOUT_CLOSE_CODE,
    Admission,
    HubSettings,
    NodeHub,
    PeerGone,
)
from coordinator.hub.nodes import NodeRegistry
from protocol import (
    Chunk,
    CloseCode,
    Heartbeat,
    Identity,
    NodeSession,
    PublicKey,
    Reject,
)
from tests.protocol.peers import sample_hardware, sample_offer

pytestmark = pytest.mark.asyncio


@dataclass
class Pipe:
    """The hub's side of a websocket, as queues."""

    to_hub: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    from_hub: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    closed: list[int] = field(default_factory=list)

    async def receive(self) -> bytes:
        frame = await self.to_hub.get()
        if frame is None:
            raise PeerGone
        return frame

    async def send(self, frame: bytes) -> None:
        self.from_hub.put_nowait(frame)

    async def close(self, code: int, reason: str) -> None:
        self.closed.append(code)


async def connect(
    hub: NodeHub, node_identity: Identity
) -> tuple[Pipe, NodeSession, asyncio.Task[None]]:
    pipe = Pipe()
    task = asyncio.create_task(hub.serve(pipe.receive, pipe.send, pipe.close))
    node = NodeSession(node_identity, hub.identity.public_key, agent_version="test")
    node.receive(await pipe.from_hub.get())
    pipe.to_hub.put_nowait(node.hello(sample_hardware(), [sample_offer()]))
    node.receive(await pipe.from_hub.get())
    return pipe, node, task


def make_hub(admit_as: str | None = "acc_provider", interval_ms: int = 100) -> NodeHub:
    async def admit(key: PublicKey) -> Admission:
        if admit_as is None:
            return Admission(None, "unknown_node", "enroll first")
        return Admission(admit_as)

    return NodeHub(
        Identity.generate(),
        NodeRegistry(),
        admit,
        HubSettings(heartbeat_interval_ms=interval_ms, heartbeat_timeout_factor=3),
    )


def heartbeat() -> Heartbeat:
    return Heartbeat(
        active_jobs=0, queued_jobs=0, free_slots=4, cpu_pct=1.0, memory_used_mib=1, gpus=[]
    )


async def test_a_node_is_registered_with_its_offers_while_it_heartbeats() -> None:
    hub = make_hub()
    pipe, node, task = await connect(hub, Identity.generate())
    assert node.established
    for _ in range(6):  # 600 ms: twice the silence limit, kept alive by heartbeats
        await asyncio.sleep(0.1)
        pipe.to_hub.put_nowait(node.send(heartbeat()))
    entry = hub.registry.get(node.node_id)
    assert entry is not None
    assert list(entry.offers) == [sample_offer().model]
    assert entry.heartbeat == heartbeat()
    pipe.to_hub.put_nowait(None)
    await asyncio.wait_for(task, 2)
    assert hub.registry.get(node.node_id) is None


async def test_a_silent_node_is_closed_at_its_heartbeat_deadline() -> None:
    hub = make_hub()
    pipe, _node, task = await connect(hub, Identity.generate())
    await asyncio.wait_for(task, 2)
    assert pipe.closed == [HEARTBEAT_TIMEOUT_CLOSE_CODE]
    assert len(hub.registry) == 0


async def test_an_unenrolled_node_is_rejected_with_4011() -> None:
    hub = make_hub(admit_as=None)
    pipe = Pipe()
    task = asyncio.create_task(hub.serve(pipe.receive, pipe.send, pipe.close))
    node = NodeSession(Identity.generate(), hub.identity.public_key, agent_version="test")
    node.receive(await pipe.from_hub.get())
    pipe.to_hub.put_nowait(node.hello(sample_hardware(), []))
    reject = node.receive(await pipe.from_hub.get())
    await asyncio.wait_for(task, 2)
    assert isinstance(reject, Reject)
    assert reject.code == "unknown_node"
    assert pipe.closed == [CloseCode.REJECTED]


async def test_output_for_a_job_never_given_closes_the_session() -> None:
    hub = make_hub(interval_ms=5_000)
    pipe, node, task = await connect(hub, Identity.generate())
    pipe.to_hub.put_nowait(node.send(Chunk(job_id="job_forged", index=0, text="$$$", tokens=99)))
    await asyncio.wait_for(task, 2)
    assert pipe.closed == [CloseCode.UNEXPECTED_MESSAGE]


async def test_a_garbage_frame_closes_with_its_protocol_close_code() -> None:
    hub = make_hub(interval_ms=5_000)
    pipe, node, task = await connect(hub, Identity.generate())
    frame = bytearray(node.send(heartbeat()))
    frame[-1] ^= 1
    pipe.to_hub.put_nowait(bytes(frame))
    await asyncio.wait_for(task, 2)
    assert pipe.closed == [CloseCode.AUTHENTICATION_FAILED]


async def test_a_second_session_of_the_same_node_supersedes_the_first() -> None:
    hub = make_hub(interval_ms=5_000)
    identity = Identity.generate()
    first_pipe, _, first_task = await connect(hub, identity)
    second_pipe, node, second_task = await connect(hub, identity)
    assert first_pipe.closed == [4014]
    first_pipe.to_hub.put_nowait(None)  # the old socket finally notices
    await asyncio.wait_for(first_task, 2)
    assert hub.registry.get(node.node_id) is not None  # the new session stays registered
    second_pipe.to_hub.put_nowait(None)
    await asyncio.wait_for(second_task, 2)


async def test_a_node_suspended_in_its_admission_is_connected_but_marked() -> None:
    async def admit(key: PublicKey) -> Admission:
        return Admission("acc_provider", suspended=True)

    hub = NodeHub(
        Identity.generate(), NodeRegistry(), admit, HubSettings(heartbeat_interval_ms=5_000)
    )
    pipe, node, task = await connect(hub, Identity.generate())
    assert node.established  # admitted: it stays connected and heartbeats
    entry = hub.registry.get(node.node_id)
    assert entry is not None
    assert entry.suspended
    pipe.to_hub.put_nowait(None)
    await asyncio.wait_for(task, 2)
