"""Load readings for heartbeats: CPU and memory from psutil, GPU state from NVML.

:func:`read_load` makes blocking calls (NVML), so the agent runs it in a worker thread. GPU
readings keep the order and count of the hello's GPUs: a GPU whose values cannot be read is sent
with ``None`` fields rather than dropped or guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from node_agent.gpus import default_nvml
from protocol import GpuStats

__all__ = ["LoadReading", "read_load"]

_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class LoadReading:
    cpu_pct: float
    memory_used_mib: int
    gpus: list[GpuStats]


def read_load(gpu_count: int) -> LoadReading:
    """This machine's load now; ``gpu_count`` is how many GPUs the hello announced."""
    # interval=None: utilisation since the previous call (the previous heartbeat), no sleeping.
    cpu_pct = min(100.0, max(0.0, float(psutil.cpu_percent(interval=None))))
    memory = psutil.virtual_memory()
    return LoadReading(
        cpu_pct=cpu_pct,
        memory_used_mib=max(0, memory.total - memory.available) // _MIB,
        gpus=default_nvml().stats(gpu_count),
    )
