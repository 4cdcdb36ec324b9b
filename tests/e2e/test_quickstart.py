"""The README's first command: `shareai up` brings up a network that serves the openai SDK."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import openai
import psutil

from tests.e2e.network import free_port, shareai_executable


def test_shareai_up_serves_requests_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [shareai_executable(), "up", "--port", str(port), "--data-dir", str(tmp_path / "net")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        printed = ""
        deadline = time.monotonic() + 90
        while "Press Ctrl-C" not in printed and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                break
            printed += line
        key = re.search(r"customer key  (sk-sai-\S+)", printed)
        assert key is not None, printed
        assert f"http://127.0.0.1:{port}/v1" in printed
        children = psutil.Process(process.pid).children(recursive=True)
        assert len(children) >= 3  # the coordinator and two nodes

        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key.group(1))
        reply = client.chat.completions.create(
            model="mock/echo", messages=[{"role": "user", "content": "Hello!"}], max_tokens=8
        )
        assert reply.choices[0].message.content
        models = {m.id: m.model_extra for m in client.models.list().data}
        assert (models["mock/echo"] or {})["nodes"] == 2

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        for child in children:
            assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
