"""A simulated fleet driving the full loop: snapshot -> route -> outcome -> books -> snapshot.

Each node has hidden truths (TTFT, tokens/s, failure probability, price). The scheduler only sees
what the measurement, reputation and circuit books learned from outcomes. An oracle that knows the
truths picks the node with the best expected latency among reliable nodes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from scheduler import (
    CircuitBook,
    MeasurementBook,
    NetworkSnapshot,
    NodeModelState,
    ReputationBook,
    RouteRequest,
    RoutingPreferences,
    route,
)

MODEL = "llama-3-8b"
REQUEST = RouteRequest(prompt_tokens=500, max_tokens=200, customer_account_id="customer")
SECONDS_PER_REQUEST = 0.5


@dataclass
class SimNode:
    node_id: str
    ttft_ms: float
    tokens_per_s: float
    failure_p: float
    price_in: int
    price_out: int

    def true_latency_ms(self) -> float:
        return self.ttft_ms + REQUEST.max_tokens * 1000.0 / self.tokens_per_s


@dataclass
class Fleet:
    nodes: list[SimNode]
    rng: random.Random
    measurements: MeasurementBook = field(default_factory=MeasurementBook)
    reputation: ReputationBook = field(default_factory=ReputationBook)
    circuits: CircuitBook = field(default_factory=CircuitBook)
    now_s: float = 0.0
    picks: list[str] = field(default_factory=list)
    served_latency_ms: list[float] = field(default_factory=list)
    oracle_latency_ms: list[float] = field(default_factory=list)
    attempts: int = 0

    def snapshot(self) -> NetworkSnapshot:
        states = []
        for n in self.nodes:
            m = self.measurements.of(n.node_id, MODEL).summary(self.now_s)
            rep = self.reputation.of(n.node_id)
            states.append(
                NodeModelState(
                    node_id=n.node_id,
                    owner_account_id=f"owner-{n.node_id}",
                    model=MODEL,
                    provider=n.node_id,
                    price_input_micro_usd_per_1m=n.price_in,
                    price_output_micro_usd_per_1m=n.price_out,
                    max_concurrency=4,
                    in_flight=0,
                    context_length=8192,
                    ttft_p50_ms=m.ttft_p50_ms,
                    ttft_p90_ms=m.ttft_p90_ms,
                    tokens_per_s_p50=m.tokens_per_s_p50,
                    error_rate=m.error_rate,
                    timeout_rate=m.timeout_rate,
                    reputation=rep.score(self.now_s),
                    circuit=self.circuits.of(n.node_id, MODEL).state(self.now_s),
                    probation=rep.in_probation,
                )
            )
        return NetworkSnapshot.build(states)

    def oracle(self) -> SimNode:
        reliable = [n for n in self.nodes if n.failure_p < 0.05] or self.nodes
        return min(reliable, key=SimNode.true_latency_ms)

    def step(self) -> None:
        """One customer request, with failover down the candidate list before the first token."""
        self.now_s += SECONDS_PER_REQUEST
        decision = route(self.snapshot(), RoutingPreferences(MODEL), REQUEST, rng=self.rng)
        by_id = {n.node_id: n for n in self.nodes}
        self.oracle_latency_ms.append(self.oracle().true_latency_ms())
        self.picks.append(decision.candidates[0].state.node_id if decision.candidates else "")
        waited_ms = 0.0
        for candidate in decision.candidates:
            node = by_id[candidate.state.node_id]
            circuit = self.circuits.of(node.node_id, MODEL)
            if not circuit.try_acquire_probe(self.now_s):
                continue
            self.attempts += 1
            if self.rng.random() < node.failure_p:
                waited_ms += node.ttft_ms  # it failed before the first token
                self.measurements.of(node.node_id, MODEL).record_failure(self.now_s, "error")
                self.reputation.of(node.node_id).record("failure", self.now_s)
                circuit.record_failure(self.now_s)
                continue
            ttft = node.ttft_ms * self.rng.uniform(0.8, 1.3)
            tps = node.tokens_per_s * self.rng.uniform(0.85, 1.15)
            self.measurements.of(node.node_id, MODEL).record_success(
                self.now_s, ttft_ms=ttft, tokens_per_s=tps
            )
            self.reputation.of(node.node_id).record("completion", self.now_s)
            circuit.record_success(self.now_s)
            self.served_latency_ms.append(waited_ms + ttft + REQUEST.max_tokens * 1000.0 / tps)
            return
        self.served_latency_ms.append(waited_ms + 30_000.0)  # gave up: count as a 30 s timeout


def make_fleet(seed: int, size: int = 50) -> Fleet:
    """A mixed fleet: a fifth fast and reliable, the rest slower, flaky or pricier."""
    rng = random.Random(seed)
    nodes = []
    for i in range(size):
        kind = i % 5
        if kind == 0:  # good: fast, reliable, fairly priced
            node = SimNode(
                f"good-{i}", rng.uniform(150, 250), rng.uniform(80, 120), 0.005, 200_000, 400_000
            )
        elif kind == 1:  # slow
            node = SimNode(
                f"slow-{i}", rng.uniform(800, 1500), rng.uniform(10, 25), 0.01, 150_000, 300_000
            )
        elif kind == 2:  # flaky
            node = SimNode(
                f"flaky-{i}", rng.uniform(150, 250), rng.uniform(80, 120), 0.4, 150_000, 300_000
            )
        elif kind == 3:  # expensive but fast
            node = SimNode(
                f"pricey-{i}",
                rng.uniform(150, 250),
                rng.uniform(80, 120),
                0.005,
                2_000_000,
                4_000_000,
            )
        else:  # mediocre
            node = SimNode(
                f"meh-{i}", rng.uniform(400, 700), rng.uniform(30, 50), 0.03, 200_000, 400_000
            )
        nodes.append(node)
    return Fleet(nodes, random.Random(seed + 1))


def share(picks: list[str], prefix: str) -> float:
    return sum(p.startswith(prefix) for p in picks) / len(picks)


if __name__ == "__main__":  # pragma: no cover - prints the figures for docs/scheduling.md
    warm_up = 1500
    fleet = make_fleet(7)
    for _ in range(warm_up + 1000):
        fleet.step()
    window = fleet.picks[warm_up:]
    for prefix in ("good", "slow", "flaky", "pricey", "meh"):
        print(f"{prefix:7} {share(window, prefix):.3f}")
    served = sorted(fleet.served_latency_ms[warm_up:])
    oracle = sorted(fleet.oracle_latency_ms[warm_up:])
    for q in (0.5, 0.9):
        at_served, at_oracle = served[int(len(served) * q)], oracle[int(len(oracle) * q)]
        print(f"p{int(q * 100)} served {at_served:.0f} ms, oracle {at_oracle:.0f} ms")
    print(f"attempts per request {fleet.attempts / len(fleet.picks):.3f}")
