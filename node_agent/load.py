"""Load readings for heartbeats: CPU and memory from psutil, GPU state from ``nvidia-smi``.

:func:`read_load` blocks (``nvidia-smi`` takes tens of milliseconds), so the agent runs it in a
worker thread. GPU readings keep the order and count of the hello's GPUs: a GPU whose values
cannot be read is sent with ``None`` fields rather than dropped or guessed.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

import psutil

from protocol import GpuStats

__all__ = ["LoadReading", "parse_nvidia_smi_stats", "read_load"]

_NVIDIA_SMI_STATS_QUERY = [
    "--query-gpu=utilization.gpu,memory.used,memory.total,temperature.gpu",
    "--format=csv,noheader,nounits",
]
_NVIDIA_SMI_TIMEOUT_S = 5.0
_MIB = 1024 * 1024
_NO_READING = GpuStats(
    utilization_pct=None, memory_used_mib=None, memory_total_mib=None, temperature_c=None
)


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
        gpus=_read_gpu_stats(gpu_count) if gpu_count > 0 else [],
    )


def _read_gpu_stats(gpu_count: int) -> list[GpuStats]:
    executable = shutil.which("nvidia-smi")
    output = ""
    if executable is not None:
        try:
            completed = subprocess.run(  # noqa: S603 - fixed arguments, resolved executable
                [executable, *_NVIDIA_SMI_STATS_QUERY],
                capture_output=True,
                text=True,
                timeout=_NVIDIA_SMI_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            completed = None
        if completed is not None and completed.returncode == 0:
            output = completed.stdout
    stats = parse_nvidia_smi_stats(output)[:gpu_count]
    return stats + [_NO_READING] * (gpu_count - len(stats))


def parse_nvidia_smi_stats(output: str) -> list[GpuStats]:
    """Parse ``utilization.gpu,memory.used,memory.total,temperature.gpu`` CSV lines.

    A value that is not a number (``[N/A]``, ``[Not Supported]``) or out of range becomes None.
    """
    gpus: list[GpuStats] = []
    for line in output.splitlines():
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split(",")]
        fields += [""] * (4 - len(fields))
        utilization, used, total, temperature = fields[:4]
        gpus.append(
            GpuStats(
                utilization_pct=_number(utilization, 0.0, 100.0),
                memory_used_mib=_whole(used),
                memory_total_mib=_whole(total),
                temperature_c=_number(temperature, -50.0, 200.0),
            )
        )
    return gpus


def _number(text: str, low: float, high: float) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if low <= value <= high else None


def _whole(text: str) -> int | None:
    return int(text) if text.isdigit() and int(text) <= 2**40 else None
