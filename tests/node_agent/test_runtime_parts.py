"""The agent's small parts: backoff delays, load readings, the model table."""

from __future__ import annotations

import random

import pytest

from node_agent import ConfigError, NodeAgent
from node_agent.backoff import Backoff
from node_agent.jobs import ModelTable
from node_agent.load import read_load
from protocol import Identity
from tests.node_agent.scripted import ScriptedBackend, hardware, offer


def test_backoff_ceiling_doubles_to_the_maximum_and_delays_are_jittered_below_it() -> None:
    backoff = Backoff(0.5, 8.0, rng=random.Random(7))
    ceilings = []
    for _ in range(8):
        ceiling = backoff.ceiling_s()
        delay = backoff.next_delay_s()
        assert 0.0 <= delay <= ceiling
        ceilings.append(ceiling)
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    backoff.reset()
    assert backoff.ceiling_s() == 0.5


def test_backoff_delays_are_spread_not_synchronised() -> None:
    backoff = Backoff(1.0, 1.0, rng=random.Random(1))
    delays = {round(backoff.next_delay_s(), 6) for _ in range(50)}
    assert len(delays) == 50


def test_backoff_survives_very_many_attempts() -> None:
    backoff = Backoff(0.1, 60.0)
    backoff.attempts = 10_000
    assert backoff.ceiling_s() == 60.0


@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (2.0, 1.0), (-1.0, 1.0)])
def test_backoff_refuses_bad_bounds(low: float, high: float) -> None:
    with pytest.raises(ValueError, match="0 < min_s <= max_s"):
        Backoff(low, high)


def test_a_load_reading_has_one_gpu_entry_per_announced_gpu() -> None:
    reading = read_load(0)
    assert reading.gpus == []
    assert 0.0 <= reading.cpu_pct <= 100.0
    assert reading.memory_used_mib > 0
    # Whatever NVML says (or if it is absent), the count matches the hello's GPUs.
    assert len(read_load(2).gpus) == 2


def test_the_model_table_counts_slots_per_model() -> None:
    table = ModelTable([ScriptedBackend([offer("a", max_concurrency=2), offer("b")])])
    served = table.get("a")
    assert served is not None
    served.active_jobs = 2
    assert served.free_slots == 0
    assert table.free_slots == 4
    assert table.active_jobs == 2
    assert table.get("c") is None


@pytest.mark.asyncio
async def test_two_backends_offering_one_model_is_a_config_error() -> None:
    agent = NodeAgent(
        identity=Identity.generate(),
        coordinator_key=Identity.generate().public_key,
        hub_url="ws://127.0.0.1:9/v1/hub",
        backends=[ScriptedBackend([offer("same")]), ScriptedBackend([offer("same")])],
        hardware=hardware(),
    )
    with pytest.raises(ConfigError, match="'same' is offered by two backends"):
        await agent.run()
