"""Hardware inventory: real readings of this machine, and GPUs through a fake NVML binding."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import psutil
import pytest

from node_agent import Nvml, detect_hardware
from node_agent.gpus import NO_READING
from protocol import GpuInfo, GpuStats


def test_detects_this_machines_cpu_and_memory() -> None:
    hardware = detect_hardware()
    assert hardware.cpu_cores == os.cpu_count()
    total_mib = psutil.virtual_memory().total // (1024 * 1024)
    assert hardware.memory_mib == total_mib
    assert hardware.cpu_model
    assert hardware.os.startswith("Linux")


class NVMLError(Exception):
    pass


@dataclass
class Memory:
    total: int
    used: int


@dataclass
class Utilization:
    gpu: int


class FakeNvml:
    """The functions of ``pynvml`` the agent uses, over a scripted list of GPUs."""

    NVML_TEMPERATURE_GPU = 0

    def __init__(self, gpus: list[dict[str, Any]], *, init_error: bool = False) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.init_calls = 0

    def nvmlInit(self) -> None:  # noqa: N802 - NVML's spelling
        self.init_calls += 1
        if self.init_error:
            raise NVMLError("NVML Shared Library Not Found")

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict[str, Any]:  # noqa: N802
        return self.gpus[index]

    def nvmlDeviceGetName(self, handle: dict[str, Any]) -> str | bytes:  # noqa: N802
        name: str | bytes = handle["name"]
        return name

    def nvmlDeviceGetMemoryInfo(self, handle: dict[str, Any]) -> Memory:  # noqa: N802
        return Memory(total=handle["total"], used=handle["used"])

    def nvmlDeviceGetUtilizationRates(self, handle: dict[str, Any]) -> Utilization:  # noqa: N802
        if handle.get("utilization") is None:
            raise NVMLError("Not Supported")
        return Utilization(gpu=handle["utilization"])

    def nvmlDeviceGetTemperature(self, handle: dict[str, Any], sensor: int) -> int:  # noqa: N802
        temperature: int = handle["temperature"]
        return temperature


MIB = 1024 * 1024
H100 = {"name": "NVIDIA H100 80GB HBM3", "total": 81_559 * MIB, "used": 1_234 * MIB,
        "utilization": 45, "temperature": 56}  # fmt: skip
OLD = {"name": b"Tesla T4", "total": 15_360 * MIB, "used": 10 * MIB,
       "utilization": None, "temperature": 999}  # fmt: skip


def test_inventory_lists_every_gpu_in_nvml_order() -> None:
    nvml = Nvml(FakeNvml([H100, OLD]))
    assert nvml.inventory() == [
        GpuInfo(name="NVIDIA H100 80GB HBM3", memory_mib=81_559),
        GpuInfo(name="Tesla T4", memory_mib=15_360),
    ]
    assert detect_hardware(nvml).gpus == nvml.inventory()


def test_stats_keep_unreadable_values_as_none() -> None:
    nvml = Nvml(FakeNvml([H100, OLD]))
    assert nvml.stats(2) == [
        GpuStats(utilization_pct=45.0, memory_used_mib=1_234, memory_total_mib=81_559,
                 temperature_c=56.0),
        GpuStats(utilization_pct=None, memory_used_mib=10, memory_total_mib=15_360,
                 temperature_c=None),
    ]  # fmt: skip


def test_a_gpu_that_disappeared_reads_as_no_reading() -> None:
    nvml = Nvml(FakeNvml([H100]))
    assert nvml.stats(2) == [nvml.stats(1)[0], NO_READING]


@pytest.mark.parametrize("binding", [None, FakeNvml([H100], init_error=True)])
def test_no_driver_means_no_gpus_cleanly(binding: FakeNvml | None) -> None:
    nvml = Nvml(binding)
    assert nvml.inventory() == []
    assert nvml.stats(0) == []
    assert nvml.stats(1) == [NO_READING]
    if binding is not None:
        nvml.inventory()
        assert binding.init_calls == 1  # tried once, then quiet


def test_this_machine_without_an_nvidia_driver_reports_no_gpus() -> None:
    assert detect_hardware().gpus == []
