"""Hardware inventory of the Provider's machine, as announced in the node's ``hello``.

CPU and memory come from psutil and ``/proc/cpuinfo``; NVIDIA GPUs from NVML
(:mod:`node_agent.gpus`). A machine without NVIDIA GPUs reports an empty GPU list, never a guess.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import psutil

from node_agent.gpus import Nvml, default_nvml
from protocol import Hardware

__all__ = ["detect_hardware"]

_MAX_NAME_CHARS = 256


def detect_hardware(nvml: Nvml | None = None) -> Hardware:
    """What this machine has: CPU model and cores, memory, OS, GPUs."""
    return Hardware(
        cpu_model=_cpu_model()[:_MAX_NAME_CHARS],
        cpu_cores=max(1, psutil.cpu_count(logical=True) or os.cpu_count() or 1),
        memory_mib=psutil.virtual_memory().total // (1024 * 1024),
        os=f"{platform.system()} {platform.release()}"[:_MAX_NAME_CHARS],
        gpus=(nvml or default_nvml()).inventory(),
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"
