"""Hardware inventory of the Provider's machine, as announced in the node's ``hello``.

CPU and memory come from psutil and ``/proc/cpuinfo``; NVIDIA GPUs from ``nvidia-smi`` when it is
installed. A machine without GPUs reports an empty GPU list, never a guess.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import psutil

from protocol import GpuInfo, Hardware

__all__ = ["detect_gpus", "detect_hardware", "parse_nvidia_smi"]

_NVIDIA_SMI_QUERY = ["--query-gpu=name,memory.total", "--format=csv,noheader,nounits"]
_NVIDIA_SMI_TIMEOUT_S = 10.0
_MAX_GPUS = 64
_MAX_NAME_CHARS = 256


def detect_hardware() -> Hardware:
    """What this machine has: CPU model and cores, memory, OS, GPUs."""
    return Hardware(
        cpu_model=_cpu_model()[:_MAX_NAME_CHARS],
        cpu_cores=max(1, psutil.cpu_count(logical=True) or os.cpu_count() or 1),
        memory_mib=psutil.virtual_memory().total // (1024 * 1024),
        os=f"{platform.system()} {platform.release()}"[:_MAX_NAME_CHARS],
        gpus=detect_gpus(),
    )


def detect_gpus() -> list[GpuInfo]:
    """NVIDIA GPUs reported by ``nvidia-smi``; an empty list when it is absent or fails."""
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return []
    try:
        completed = subprocess.run(  # noqa: S603 - fixed arguments, resolved executable
            [executable, *_NVIDIA_SMI_QUERY],
            capture_output=True,
            text=True,
            timeout=_NVIDIA_SMI_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if completed.returncode != 0:
        return []
    return parse_nvidia_smi(completed.stdout)


def parse_nvidia_smi(output: str) -> list[GpuInfo]:
    """Parse ``nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits`` output.

    Lines that do not parse (for example "[N/A]" memory) are skipped rather than guessed.
    """
    gpus: list[GpuInfo] = []
    for line in output.splitlines():
        name, _, memory = line.rpartition(",")
        name, memory = name.strip(), memory.strip()
        if not name or not memory.isdigit():
            continue
        gpus.append(GpuInfo(name=name[:_MAX_NAME_CHARS], memory_mib=int(memory)))
    return gpus[:_MAX_GPUS]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"
