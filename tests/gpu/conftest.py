"""GPU tests run only when asked for by path, on a machine with vLLM and a CUDA GPU.

``pytest`` (and ``scripts/test``, CI) collects ``tests/`` but skips this folder's tests without
importing them, and says so in one line at the end of the run. To run them::

    pip install -e '.[dev,vllm]'      # on Linux with an NVIDIA GPU
    pytest tests/gpu                  # or a file or test id inside it

Asked for on a machine without vLLM or without a GPU, the run stops at once with a usage error
saying which is missing, rather than skipping quietly.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _requested(config: pytest.Config) -> bool:
    """Whether the command line names this folder or something inside it."""
    base = config.invocation_params.dir
    for arg in config.args:
        path = (base / arg.split("::", 1)[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def _missing_requirement() -> str | None:
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed: pip install -e '.[dev,vllm]' (Linux, NVIDIA GPU)"
    torch = importlib.import_module("torch")
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to torch"
    return None


def pytest_configure(config: pytest.Config) -> None:
    if _requested(config) and (missing := _missing_requirement()) is not None:
        raise pytest.UsageError(f"tests/gpu needs vLLM and a CUDA GPU: {missing}")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.resolve() != HERE / "conftest.py" and not _requested(config):
        return True
    return None


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    if not _requested(config):
        terminalreporter.write_line(
            "tests/gpu not run: GPU tests run only when named (pytest tests/gpu, with vLLM and "
            "a CUDA GPU)"
        )
