"""One routing decision over 10,000 live nodes serving the requested model, on one CPU core.

The snapshot (built once, as the coordinator will do on each network change) holds 10,000 nodes
for the requested model with varied prices, measurements, load, reputations and owners, plus
10,000 nodes of other models (which an index by model must make irrelevant). Each timed call is
one :func:`scheduler.route` with a default request: a customer account, ``max_price`` on both
sides and ``min_reputation`` set, so every filter runs. Scenarios::

    default         no sort, no lists
    sort=price      provider.sort = "price"
    only (2 prov.)  provider.only names two providers (uses the provider index)
    full scan       99.95% of nodes full: the sample finds too few eligible, so all 10,000 are
                    filtered
    router          the coordinator's whole path, Router.decide over a NodeRegistry of 10,000 +
                    10,000 live nodes: the snapshot upkeep and the live overlay of jobs in flight
                    and circuits. Traffic is simulated at 1,000 decisions per (simulated) second,
                    and between two decisions one outcome is recorded, so each decision first
                    recomputes that node's state and the states due for their decay refresh:
                    that upkeep is inside the timings

    python -m benchmarks.bench_scheduler            # full run, prints a table
    python -m benchmarks.bench_scheduler --quick    # a few iterations: a smoke test only
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
import time
from dataclasses import replace
from typing import cast

from coordinator.hub.nodes import LiveNode, NodeLink, NodeRegistry
from coordinator.routing import Router
from protocol import Hardware, Offer
from scheduler import (
    MaxPrice,
    NetworkSnapshot,
    NodeModelState,
    ProviderPreferences,
    RouteRequest,
    RoutingPreferences,
    route,
)

MODEL = "llama-3-8b"
NODES = 10_000
REQUEST = RouteRequest(
    prompt_tokens=800, max_tokens=300, parameters=frozenset({"tools"}), customer_account_id="c1"
)
BASE = ProviderPreferences(max_price=MaxPrice(900_000, 1_800_000), min_reputation=0.2)


def make_states(
    model: str, count: int, rng: random.Random, *, full_share: float
) -> list[NodeModelState]:
    return [
        NodeModelState(
            node_id=f"{model}-n{i}",
            owner_account_id=f"o{i % 3000}",
            model=model,
            provider=f"p{i % 500}",
            price_input_micro_usd_per_1m=rng.randrange(50_000, 1_000_000),
            price_output_micro_usd_per_1m=rng.randrange(100_000, 2_000_000),
            max_concurrency=4,
            in_flight=4 if rng.random() < full_share else rng.randrange(0, 4),
            context_length=rng.choice([4096, 8192, 32768]),
            supported_parameters=frozenset({"tools", "response_format"}),
            ttft_p50_ms=rng.uniform(100, 2000),
            ttft_p90_ms=rng.uniform(2000, 4000),
            tokens_per_s_p50=rng.uniform(10, 150),
            error_rate=rng.uniform(0, 0.1),
            timeout_rate=rng.uniform(0, 0.05),
            reputation=rng.uniform(0.1, 1.0),
            circuit="open" if rng.random() < 0.02 else "closed",
            probation=rng.random() < 0.05,
        )
        for i in range(count)
    ]


def measure(snapshot: NetworkSnapshot, prefs: RoutingPreferences, iterations: int) -> list[float]:
    rng = random.Random(1)
    samples = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(iterations):
            start = time.perf_counter_ns()
            decision = route(snapshot, prefs, REQUEST, rng=rng)
            samples.append((time.perf_counter_ns() - start) / 1000.0)
            assert decision.candidates
    finally:
        gc.enable()
    return samples


class Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def make_router(rng: random.Random) -> tuple[Router, Clock]:
    """A router over 10,000 nodes of MODEL and 10,000 of another model, each measured."""
    registry = NodeRegistry()
    hardware = Hardware(cpu_model="bench", cpu_cores=8, memory_mib=16_384, os="linux", gpus=[])
    clock = Clock()
    router = Router(registry, clock=clock, rng=random.Random(3))
    for model in (MODEL, "other-model"):
        for i in range(NODES):
            offer = Offer(
                model=model,
                weights_hash=None,
                context_length=rng.choice([4096, 8192, 32768]),
                max_concurrency=4,
                price_input_micro_usd_per_1m=rng.randrange(50_000, 1_000_000),
                price_output_micro_usd_per_1m=rng.randrange(100_000, 2_000_000),
            )
            node = LiveNode(
                node_id=f"{model}-n{i}",
                provider_account_id=f"o{i % 3000}",
                session_id="s",
                agent_version="bench",
                hardware=hardware,
                offers={model: offer},
                link=cast("NodeLink", None),
            )
            node.in_flight[model] = rng.randrange(0, 5)
            registry.add(node)
            for _ in range(12):  # out of probation, with measurements
                router.record_success(
                    node.node_id,
                    model,
                    ttft_ms=rng.uniform(100, 2000),
                    tokens_per_s=rng.uniform(10, 150),
                )
    router.snapshot()
    return router, clock


def measure_router(
    router: Router, clock: Clock, prefs: RoutingPreferences, iterations: int
) -> list[float]:
    rng = random.Random(2)
    samples = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(iterations):
            clock.now_s += 0.001
            start = time.perf_counter_ns()
            decision = router.decide(prefs, REQUEST)
            samples.append((time.perf_counter_ns() - start) / 1000.0)
            assert decision.candidates
            # traffic: an outcome arrives before the next decision
            router.record_success(
                f"{MODEL}-n{rng.randrange(NODES)}", MODEL, ttft_ms=300.0, tokens_per_s=50.0
            )
    finally:
        gc.enable()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    iterations = 20 if args.quick else 2000
    rng = random.Random(42)
    other = make_states("other-model", NODES, rng, full_share=0.3)
    normal = NetworkSnapshot.build(make_states(MODEL, NODES, rng, full_share=0.3) + other)
    crowded = NetworkSnapshot.build(make_states(MODEL, NODES, rng, full_share=0.9995) + other)
    scenarios = [
        ("default", normal, RoutingPreferences(MODEL, provider=BASE)),
        ("sort=price", normal, RoutingPreferences(MODEL, provider=replace(BASE, sort="price"))),
        (
            "only (2 prov.)",
            normal,
            RoutingPreferences(MODEL, provider=replace(BASE, only=frozenset({"p7", "p8"}))),
        ),
        ("full scan", crowded, RoutingPreferences(MODEL, provider=BASE)),
    ]
    print(f"python {platform.python_version()} on {platform.machine()}, one pinned core")
    print(f"{'scenario':16} {'median µs':>10} {'p90 µs':>8} {'p99 µs':>8}")
    for name, snapshot, prefs in scenarios:
        report(name, measure(snapshot, prefs, iterations))
    router, clock = make_router(random.Random(43))
    computed = router.states_computed
    prefs = RoutingPreferences(MODEL, provider=BASE)
    report("router", measure_router(router, clock, prefs, iterations))
    print(
        f"router: {router.states_computed - computed} node-model states recomputed"
        f" in {iterations} decisions"
    )


def report(name: str, samples: list[float]) -> None:
    ordered = sorted(samples)
    p90 = ordered[int(len(ordered) * 0.9)]
    p99 = ordered[int(len(ordered) * 0.99)]
    print(f"{name:16} {statistics.median(ordered):10.1f} {p90:8.1f} {p99:8.1f}")


if __name__ == "__main__":
    main()
