"""NVIDIA GPUs through NVML (the ``nvidia-ml-py`` package, imported as ``pynvml``).

NVML is the library ``nvidia-smi`` itself uses: one in-process call per reading, no subprocess.
On a machine without an NVIDIA driver, NVML fails to load and this module reports no GPUs (an
empty inventory, no stats): cleanly absent, never guessed. The NVML binding is a seam: tests pass
a fake object with the same functions.
"""

from __future__ import annotations

import logging
import threading
from types import ModuleType
from typing import Any

from protocol import GpuInfo, GpuStats

__all__ = ["NO_READING", "Nvml", "default_nvml"]

logger = logging.getLogger(__name__)

NO_READING = GpuStats(
    utilization_pct=None, memory_used_mib=None, memory_total_mib=None, temperature_c=None
)
_MIB = 1024 * 1024
_MAX_GPUS = 64
_MAX_NAME_CHARS = 256


class Nvml:
    """GPU inventory and live stats from an NVML binding (``pynvml`` or a fake of it)."""

    def __init__(self, binding: Any) -> None:
        """``binding``: ``pynvml`` (untyped C bindings, hence Any), a fake of it, or None."""
        self._nvml: Any = binding
        self._lock = threading.Lock()
        self._initialised = False
        self._unavailable = binding is None

    def _ready(self) -> bool:
        """Initialise NVML once; False (and quiet from then on) where there is no driver."""
        with self._lock:
            if self._unavailable:
                return False
            if not self._initialised:
                try:
                    self._nvml.nvmlInit()
                except Exception as error:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
                    logger.info("no NVIDIA GPU management library (%s): reporting no GPUs", error)
                    self._unavailable = True
                    return False
                self._initialised = True
            return True

    def inventory(self) -> list[GpuInfo]:
        """Every GPU's name and total memory, in NVML's index order."""
        if not self._ready():
            return []
        nvml = self._nvml
        try:
            count = min(int(nvml.nvmlDeviceGetCount()), _MAX_GPUS)
            gpus = []
            for index in range(count):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                name = nvml.nvmlDeviceGetName(handle)
                if isinstance(name, bytes):  # older bindings return bytes
                    name = name.decode("utf-8", "replace")
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                gpus.append(
                    GpuInfo(name=str(name)[:_MAX_NAME_CHARS], memory_mib=int(memory.total) // _MIB)
                )
        except Exception as error:  # a GPU that fell off the bus: report what we cannot read
            logger.warning("reading the GPU inventory failed: %s", error)
            return []
        return gpus

    def stats(self, gpu_count: int) -> list[GpuStats]:
        """``gpu_count`` readings in inventory order; an unreadable value is None, not a guess."""
        if gpu_count <= 0:
            return []
        if not self._ready():
            return [NO_READING] * gpu_count
        return [self._stats_of(index) for index in range(gpu_count)]

    def _stats_of(self, index: int) -> GpuStats:
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
        except Exception:
            return NO_READING
        return GpuStats(
            utilization_pct=_bounded(
                _read(lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu), 0.0, 100.0
            ),
            memory_used_mib=_mib(_read(lambda: nvml.nvmlDeviceGetMemoryInfo(handle).used)),
            memory_total_mib=_mib(_read(lambda: nvml.nvmlDeviceGetMemoryInfo(handle).total)),
            temperature_c=_bounded(
                _read(lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
                -50.0,
                200.0,
            ),
        )


def _read(call: Any) -> float | None:
    try:
        return float(call())
    except Exception:  # NVMLError_NotSupported and friends: this value is unknown
        return None


def _bounded(value: float | None, low: float, high: float) -> float | None:
    return value if value is not None and low <= value <= high else None


def _mib(value: float | None) -> int | None:
    return int(value) // _MIB if value is not None and 0 <= value <= 2**60 else None


def _import_pynvml() -> ModuleType | None:
    try:
        import pynvml  # noqa: PLC0415 - loaded on first use, so importing the agent stays cheap
    except ImportError:
        return None
    module: ModuleType = pynvml
    return module


_default: Nvml | None = None
_default_lock = threading.Lock()


def default_nvml() -> Nvml:
    """The process-wide NVML reader (initialised on first use)."""
    global _default  # noqa: PLW0603 - one NVML session per process, as NVML expects
    with _default_lock:
        if _default is None:
            _default = Nvml(_import_pynvml())
        return _default
