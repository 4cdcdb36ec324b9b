"""Hardware inventory: real readings of this machine and parsing of nvidia-smi output."""

from __future__ import annotations

import os

import psutil

from node_agent import detect_hardware, parse_nvidia_smi
from protocol import GpuInfo


def test_detects_this_machines_cpu_and_memory() -> None:
    hardware = detect_hardware()
    assert hardware.cpu_cores == os.cpu_count()
    total_mib = psutil.virtual_memory().total // (1024 * 1024)
    assert hardware.memory_mib == total_mib
    assert hardware.cpu_model
    assert hardware.os.startswith("Linux")


def test_parses_nvidia_smi_csv() -> None:
    output = "NVIDIA H100 80GB HBM3, 81559\nNVIDIA GeForce RTX 4090, 24564\n"
    assert parse_nvidia_smi(output) == [
        GpuInfo(name="NVIDIA H100 80GB HBM3", memory_mib=81_559),
        GpuInfo(name="NVIDIA GeForce RTX 4090", memory_mib=24_564),
    ]


def test_skips_lines_it_cannot_read_instead_of_guessing() -> None:
    output = "NVIDIA A100-SXM4-40GB, [N/A]\n\ngarbage\nTesla T4, 15360\n"
    assert parse_nvidia_smi(output) == [GpuInfo(name="Tesla T4", memory_mib=15_360)]
