"""Shared by the benchmarks' reports: facts about the machine, and writing the docs section."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["common_machine_facts", "cpu_model", "write_between_markers"]


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def common_machine_facts(packages: tuple[str, ...]) -> dict[str, Any]:
    """The facts every benchmark's ``Machine`` records, with the versions of ``packages``."""
    return {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count() or 0,
        "system": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": tuple((name, metadata.version(name)) for name in packages),
    }


def write_between_markers(path: Path, start_marker: str, end_marker: str, section: str) -> None:
    """Replace the text between ``start_marker`` and ``end_marker`` in ``path`` with ``section``.

    Raises ValueError if the file does not hold both markers, in order.
    """
    text = path.read_text(encoding="utf-8")
    start = text.find(start_marker)
    end = text.find(end_marker)
    if start < 0 or end < start:
        raise ValueError(f"{path} lacks the markers {start_marker} ... {end_marker}")
    head = text[: start + len(start_marker)]
    path.write_text(f"{head}\n{section}\n{text[end:]}", encoding="utf-8")
