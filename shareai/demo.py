"""A narrated run of protocol v1 between two in-process peers (no network, no coordinator yet).

The coordinator and the node each hold a real Ed25519 identity; they perform the signed
handshake, exchange an authenticated job, chunks and a signed usage receipt, and then show how
tampered, replayed and foreign frames are refused with their close codes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from node_agent import detect_hardware
from protocol import (
    Chunk,
    CoordinatorSession,
    Done,
    Identity,
    Job,
    JobAccepted,
    NodeSession,
    Offer,
    ProtocolError,
    SamplingParams,
    Timings,
    Usage,
    UsageReceipt,
)
from protocol.messages import ChatMessage

__all__ = ["run_demo"]

_MODEL = "demo/echo-1"
_REPLY = ("Hello", " from", " a", " ShareAI", " node", "!")


@dataclass
class _Peers:
    coordinator: CoordinatorSession
    node: NodeSession


def _offer() -> Offer:
    return Offer(
        model=_MODEL,
        weights_hash=None,
        context_length=4096,
        max_concurrency=4,
        price_input_micro_usd_per_1m=100_000,
        price_output_micro_usd_per_1m=300_000,
    )


def _handshake(
    coordinator_identity: Identity, node_identity: Identity, say: Callable[[str], None]
) -> _Peers:
    coordinator = CoordinatorSession(coordinator_identity)
    node = NodeSession(node_identity, coordinator_identity.public_key, agent_version="demo")
    challenge = coordinator.start()
    node.receive(challenge)
    say(f"  coordinator -> node   challenge  {len(challenge):4d} B  signed by the coordinator")
    hello = node.hello(detect_hardware(), [_offer()])
    coordinator.receive(hello)
    say(f"  node -> coordinator   hello      {len(hello):4d} B  signed by the node, nonce echoed")
    welcome = coordinator.accept(
        heartbeat_interval_ms=5_000,
        max_jobs_in_flight=64,
    )
    node.receive(welcome)
    say(f"  coordinator -> node   welcome    {len(welcome):4d} B  node id {coordinator.node_id}")
    return _Peers(coordinator, node)


def _attacks(
    coordinator_identity: Identity, node_identity: Identity
) -> dict[str, Callable[[], tuple[_Peers, bytes]]]:
    """Each attack gets its own fresh session: a refused frame closes the session it hit."""

    def fresh() -> _Peers:
        return _handshake(coordinator_identity, node_identity, lambda _: None)

    def chunk(peers: _Peers) -> bytes:
        return peers.node.send(Chunk(job_id="job_demo_1", index=0, text="x", tokens=1))

    def tampered() -> tuple[_Peers, bytes]:
        peers = fresh()
        frame = bytearray(chunk(peers))
        frame[20] ^= 0x01
        return peers, bytes(frame)

    def replayed() -> tuple[_Peers, bytes]:
        peers = fresh()
        frame = chunk(peers)
        peers.coordinator.receive(frame)
        return peers, frame

    def foreign() -> tuple[_Peers, bytes]:
        return fresh(), chunk(fresh())

    def oversized() -> tuple[_Peers, bytes]:
        return fresh(), b"\x02" + bytes(2 << 20)

    return {
        "one bit flipped in a chunk": tampered,
        "a chunk replayed": replayed,
        "a chunk from another session": foreign,
        "an oversized frame (2 MiB)": oversized,
    }


def run_demo(say: Callable[[str], None] = print) -> int:
    """Run the demonstration, narrating through ``say``; returns 0 when every check held."""
    coordinator_identity = Identity.generate()
    node_identity = Identity.generate()
    say("ShareAI protocol v1: two in-process peers, real keys, no network")
    say(f"  coordinator key {coordinator_identity.public_key.to_text()}")
    say(f"  node key        {node_identity.public_key.to_text()}")
    say("")
    say("1. Signed handshake (Ed25519 + ephemeral X25519, keys derived with HKDF-SHA256)")
    peers = _handshake(coordinator_identity, node_identity, say)
    hello = peers.coordinator.hello
    if hello is not None:
        gpus = ", ".join(g.name for g in hello.hardware.gpus) or "no GPU"
        say(
            f"  the node announced {hello.hardware.cpu_cores} CPU cores,"
            f" {hello.hardware.memory_mib} MiB, {gpus}; offer {_MODEL}"
        )
    say("")
    say("2. A job, streamed back in HMAC-authenticated frames")
    job = Job(
        job_id="job_demo_1",
        model=_MODEL,
        kind="chat",
        messages=[ChatMessage(role="user", content="Say hello.")],
        prompt=None,
        sampling=SamplingParams(max_tokens=16),
        deadline_ms=int((time.time() + 30) * 1000),
    )
    frame = peers.coordinator.send(job)
    received_job = peers.node.receive(frame)
    say(f"  coordinator -> node   job        {len(frame):4d} B  {received_job.TYPE} {job.job_id}")
    peers.coordinator.receive(peers.node.send(JobAccepted(job_id=job.job_id)))
    say("  node -> coordinator   job_accepted")
    text = ""
    chunk_frame = b""
    for index, piece in enumerate(_REPLY):
        chunk_frame = peers.node.send(Chunk(job_id=job.job_id, index=index, text=piece, tokens=1))
        chunk = peers.coordinator.receive(chunk_frame)
        if isinstance(chunk, Chunk):
            text += chunk.text
    say(f"  node -> coordinator   {len(_REPLY)} chunks, last {len(chunk_frame)} B: {text!r}")
    done_frame = peers.node.done(
        job_id=job.job_id,
        model=_MODEL,
        usage=Usage(prompt_tokens=4, completion_tokens=len(_REPLY)),
        finish_reason="stop",
        timings=Timings(queue_ms=0, time_to_first_token_ms=1, total_ms=2),
    )
    done = peers.coordinator.receive(done_frame)
    if not isinstance(done, Done):
        say("  FAILED: expected a done message")
        return 1
    receipt = UsageReceipt.from_done(done, coordinator_identity.public_key.raw)
    receipt.verify(node_identity.public_key, done.receipt_signature)
    say(
        f"  node -> coordinator   done       {len(done_frame):4d} B  usage"
        f" {done.usage.prompt_tokens}+{done.usage.completion_tokens} tokens,"
        " receipt signature verified with the node's public key"
    )
    say("")
    say("3. Frames an attacker might send are refused with a close code")
    failures = 0
    for label, attack in _attacks(coordinator_identity, node_identity).items():
        target, frame = attack()
        try:
            target.coordinator.receive(frame)
        except ProtocolError as error:
            say(f"  {label:<30} -> {type(error).__name__} (close {int(error.close_code)})")
        else:
            say(f"  {label:<30} -> ACCEPTED (this is a bug)")
            failures += 1
    say("")
    say("Every check held." if not failures else f"{failures} attack(s) got through.")
    return 1 if failures else 0
