"""Builders for protocol tests: identities, sample messages and a handshaken session pair."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from protocol import (
    ChatMessage,
    CoordinatorSession,
    GpuInfo,
    Hardware,
    Identity,
    Job,
    ManualClock,
    NodeSession,
    Offer,
    SamplingParams,
    SessionConfig,
)

AGENT_VERSION = "0.1.0-test"


def counter_random_bytes(seed: int = 0) -> Callable[[int], bytes]:
    """Deterministic, distinct 'random' bytes for reproducible sessions."""
    counter = itertools.count(seed)

    def random_bytes(n: int) -> bytes:
        block = next(counter).to_bytes(8, "big")
        return (block * (n // len(block) + 1))[:n]

    return random_bytes


def sample_hardware() -> Hardware:
    return Hardware(
        cpu_model="AMD EPYC 9454",
        cpu_cores=48,
        memory_mib=256 * 1024,
        os="Linux 6.8",
        gpus=[GpuInfo(name="NVIDIA H100 80GB HBM3", memory_mib=81_559)],
    )


def sample_offer(model: str = "meta-llama/Llama-3.1-8B-Instruct") -> Offer:
    return Offer(
        model=model,
        weights_hash=None,
        context_length=131_072,
        max_concurrency=16,
        price_input_micro_usd_per_1m=50_000,
        price_output_micro_usd_per_1m=150_000,
    )


def sample_job(job_id: str = "job_01") -> Job:
    return Job(
        job_id=job_id,
        model="meta-llama/Llama-3.1-8B-Instruct",
        kind="chat",
        messages=[
            ChatMessage(role="system", content="You are terse."),
            ChatMessage(role="user", content="Say hello."),
        ],
        prompt=None,
        sampling=SamplingParams(max_tokens=64, temperature=0.0, seed=7),
        deadline_ms=1_767_225_700_000,
    )


def sample_tool_job(job_id: str = "job_05") -> Job:
    """A chat job with tools, a tool choice, a response format and a tool-call round trip."""
    return Job(
        job_id=job_id,
        model="meta-llama/Llama-3.1-8B-Instruct",
        kind="chat",
        messages=[
            ChatMessage(role="user", content="Weather in Paris?"),
            ChatMessage(
                role="assistant",
                content="",
                tool_calls_json='[{"id":"call_1","type":"function","function":'
                '{"name":"get_weather","arguments":"{\\"city\\":\\"Paris\\"}"}}]',
            ),
            ChatMessage(role="tool", content='{"celsius":21}', tool_call_id="call_1"),
        ],
        prompt=None,
        sampling=SamplingParams(max_tokens=64),
        deadline_ms=1_767_225_700_000,
        tools_json='[{"type":"function","function":{"name":"get_weather",'
        '"parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]',
        tool_choice_json='"auto"',
        parallel_tool_calls=False,
        response_format_json='{"type":"json_object"}',
    )


@dataclass
class Pair:
    coordinator: CoordinatorSession
    node: NodeSession
    clock: ManualClock
    coordinator_identity: Identity
    node_identity: Identity


def new_pair(
    *,
    clock: ManualClock | None = None,
    coordinator_identity: Identity | None = None,
    node_identity: Identity | None = None,
    pinned: Identity | None = None,
    config: SessionConfig | None = None,
    seed: int = 0,
) -> Pair:
    """Two fresh sessions sharing one manual clock, not yet handshaken."""
    clock = clock or ManualClock()
    coordinator_identity = coordinator_identity or Identity.generate()
    node_identity = node_identity or Identity.generate()
    coordinator = CoordinatorSession(
        coordinator_identity,
        clock=clock,
        config=config,
        random_bytes=counter_random_bytes(seed),
    )
    node = NodeSession(
        node_identity,
        (pinned or coordinator_identity).public_key,
        agent_version=AGENT_VERSION,
        clock=clock,
        config=config,
        random_bytes=counter_random_bytes(seed + 1000),
    )
    return Pair(coordinator, node, clock, coordinator_identity, node_identity)


def handshake(pair: Pair) -> Pair:
    """Run challenge -> hello -> welcome; both sides end established."""
    pair.node.receive(pair.coordinator.start())
    pair.coordinator.receive(pair.node.hello(sample_hardware(), [sample_offer()]))
    pair.node.receive(pair.coordinator.accept(heartbeat_interval_ms=5_000, max_jobs_in_flight=64))
    return pair


def established_pair() -> Pair:
    return handshake(new_pair())
