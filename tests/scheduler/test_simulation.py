"""The full loop on a simulated fleet of 50 nodes with hidden truths (see ``simulation.py``).

Bounds are set well outside what seeds 1-12 produce (good share 0.905-0.926, median latency
1.02-1.22x the oracle's, at most 3 picks of a node that turned bad after its first 100 requests),
so the fixed-seed test is not a coin flip.
"""

from __future__ import annotations

from collections import Counter

from .simulation import MODEL, make_fleet, share

WARM_UP = 1500


def test_after_warm_up_most_traffic_goes_to_good_nodes() -> None:
    fleet = make_fleet(seed=7)
    for _ in range(WARM_UP + 1000):
        fleet.step()
    window = fleet.picks[WARM_UP:]
    assert share(window, "good") >= 0.80  # a fifth of the fleet
    assert share(window, "flaky") <= 0.06
    assert share(window, "pricey") <= 0.05
    served = sorted(fleet.served_latency_ms[WARM_UP:])
    oracle = sorted(fleet.oracle_latency_ms[WARM_UP:])
    assert served[len(served) // 2] <= 1.4 * oracle[len(oracle) // 2]
    assert fleet.attempts / len(fleet.picks) < 1.05


def test_a_node_that_turns_bad_loses_its_traffic_quickly() -> None:
    fleet = make_fleet(seed=11)
    for _ in range(WARM_UP):
        fleet.step()
    victim_id, before = Counter(fleet.picks[-300:]).most_common(1)[0]
    assert victim_id.startswith("good")
    assert before >= 60
    next(n for n in fleet.nodes if n.node_id == victim_id).failure_p = 1.0
    for _ in range(1000):
        fleet.step()
    after = fleet.picks[WARM_UP:]
    # Its consecutive failures open the circuit within its first few picks; after that it only
    # gets half-open probes, each after a doubled cool-down.
    assert after.count(victim_id) <= 12
    assert after[100:].count(victim_id) <= 6
    assert fleet.circuits.of(victim_id, MODEL).cooldown_s > 10.0
