"""``shareai up``: a whole network on this machine, for trying ShareAI in one command.

It starts a coordinator (SQLite in ``--data-dir``), creates a Provider and a customer account
with credits on first run, enrolls two node agents on the clearly labelled ``mock`` backend with
different prices and speeds, prints how to call the API, and stops everything on Ctrl-C (nodes
drain first). Each part is the real ``shareai`` command running as its own process.

With ``--with-local-model`` it also runs a real small model: ``python -m llama_cpp.server`` with
SmolLM2-135M-Instruct (the ``local-model`` extra, see :mod:`shareai.local_model`) on a free
loopback port, and a third node, ``node-local``, on the ``openai`` backend in front of it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx

from shareai import local_model

__all__ = ["register"]

_ParserT = TypeVar("_ParserT", bound=argparse.ArgumentParser)
_MODEL = "mock/echo"
_LOCAL_NODE = "node-local"
_LOCAL_PRICE_IN = "0.01"
_LOCAL_PRICE_OUT = "0.02"
_LOCAL_CONTEXT = 2048  # llama.cpp's n_ctx and the offer's context_length


@dataclass(frozen=True, slots=True)
class _MockNode:
    name: str
    price_in: str
    price_out: str
    time_to_first_token_ms: int
    tokens_per_s: int


_NODES = (
    _MockNode(
        "node-fast", price_in="0.20", price_out="0.60", time_to_first_token_ms=30, tokens_per_s=120
    ),
    _MockNode(
        "node-cheap", price_in="0.05", price_out="0.15", time_to_first_token_ms=250, tokens_per_s=25
    ),
)


def register(subparsers: argparse._SubParsersAction[_ParserT]) -> None:
    command = subparsers.add_parser(
        "up",
        help="run a local network: coordinator, two mock nodes and a customer account",
        description="Start a coordinator and two node agents (mock backend) on this machine and"
        " print a customer key with examples; --with-local-model adds a real small model on a"
        " third node. Ctrl-C stops everything.",
    )
    command.add_argument("--port", type=int, default=8000, help="coordinator port (default 8000)")
    command.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".shareai/local"),
        help="where the network keeps its state (default .shareai/local)",
    )
    command.add_argument(
        "--with-local-model",
        action="store_true",
        help=f"also serve a real small model ({local_model.SMOLLM2_MODEL}) with llama.cpp on a"
        " third node (needs the local-model extra)",
    )
    command.set_defaults(handler=_up)


def _shareai(*args: str) -> list[str]:
    return [sys.executable, "-m", "shareai", *args]


def _run(*args: str) -> str:
    result = subprocess.run(_shareai(*args), capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise _Failed(f"shareai {' '.join(args[:2])} failed: {result.stderr.strip()}")
    return result.stdout


class _Failed(Exception):
    pass


def _accounts(data_dir: Path) -> dict[str, str]:
    """The Provider's and the customer's keys, created once and kept (mode 0600)."""
    path = data_dir / "accounts.json"
    if path.exists():
        stored: dict[str, str] = json.loads(path.read_text())
        return stored
    common = ("--data-dir", str(data_dir / "coordinator"), "--json")
    provider = json.loads(
        _run("admin", "create-account", "--role", "provider", "--name", "local provider", *common)
    )
    customer = json.loads(
        _run(
            "admin",
            "create-account",
            "--role",
            "customer",
            "--name",
            "local customer",
            "--credits",
            "25",
            *common,
        )
    )
    keys = {"provider_key": provider["api_key"], "customer_key": customer["api_key"]}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(keys, handle)
    return keys


def _node_config(node: _MockNode, node_dir: Path, url: str, provider_key: str) -> Path:
    config = node_dir / "node.toml"
    if config.exists():
        return config
    _run(
        "node", "init", "--coordinator", url, "--api-key", provider_key,
        "--key-file", str(node_dir / "node.key"), "--config", str(config),
        "--backend", "mock", "--model", _MODEL,
        "--price-in", node.price_in, "--price-out", node.price_out,
    )  # fmt: skip
    text = config.read_text().replace(
        f'name = "{_MODEL}"',
        f'name = "{_MODEL}"\nmock = {{ time_to_first_token_ms = {node.time_to_first_token_ms},'
        f" tokens_per_s = {node.tokens_per_s} }}",
        1,
    )
    config.write_text(text)
    return config


def _local_node_config(node_dir: Path, url: str, provider_key: str, upstream_url: str) -> Path:
    """``node-local``'s config: the ``openai`` backend in front of this run's llama.cpp server.

    The server gets a free port on every run, so ``upstream_url`` is rewritten each time.
    """
    config = node_dir / "node.toml"
    if not config.exists():
        _run(
            "node", "init", "--coordinator", url, "--api-key", provider_key,
            "--key-file", str(node_dir / "node.key"), "--config", str(config),
            "--backend", "openai", "--model", local_model.SMOLLM2_MODEL,
            "--upstream-url", upstream_url, "--upstream-model", local_model.SMOLLM2_MODEL,
            "--price-in", _LOCAL_PRICE_IN, "--price-out", _LOCAL_PRICE_OUT,
            # llama.cpp's server runs one request at a time
            "--max-concurrency", "1", "--context-length", str(_LOCAL_CONTEXT),
        )  # fmt: skip
        return config
    text, count = re.subn(
        r'^upstream_url = ".*"$',
        f'upstream_url = "{upstream_url}"',
        config.read_text(),
        count=1,
        flags=re.MULTILINE,
    )
    if count != 1:
        raise _Failed(f"{config} has no upstream_url line; delete {node_dir} to recreate it")
    config.write_text(text)
    return config


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for(
    url: str, check: str, timeout_s: float, processes: list[subprocess.Popen[bytes]]
) -> None:
    _wait_until(url, lambda text: check in text, timeout_s, processes)


def _wait_until(
    url: str,
    check: Callable[[str], bool],
    timeout_s: float,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise _Failed(f"a process exited early (code {process.returncode}); see the logs")
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200 and check(response.text):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise _Failed(f"timed out waiting for {url}")


def _serving(expected: dict[str, int]) -> Callable[[str], bool]:
    """A check of ``GET /v1/models``: each model has exactly its expected number of nodes."""

    def check(text: str) -> bool:
        try:
            nodes = {entry["id"]: entry["nodes"] for entry in json.loads(text)["data"]}
        except (ValueError, KeyError, TypeError):
            return False
        return all(nodes.get(model) == count for model, count in expected.items())

    return check


def _examples(url: str, customer_key: str, *, with_local_model: bool) -> str:
    local = ""
    if with_local_model:
        local = f"""
Real model: node-local serves "{local_model.SMOLLM2_MODEL}" (llama.cpp on this CPU, 135M
parameters: fast, small, often wrong). Ask for it by name:

  reply = client.chat.completions.create(
      model="{local_model.SMOLLM2_MODEL}",
      messages=[{{"role": "user", "content": "What is the capital of France?"}}],
      max_tokens=32,
  )
"""
    return f"""
ShareAI is running: a coordinator and two mock nodes ("{_MODEL}", labelled mock: not a real model).

  base URL      {url}/v1
  customer key  {customer_key}

Python (pip install openai):

  from openai import OpenAI
  client = OpenAI(base_url="{url}/v1", api_key="{customer_key}")
  reply = client.chat.completions.create(
      model="{_MODEL}", messages=[{{"role": "user", "content": "Hello!"}}]
  )
  print(reply.choices[0].message.content)

curl:

  curl {url}/v1/chat/completions \\
    -H "Authorization: Bearer {customer_key}" -H "Content-Type: application/json" \\
    -d '{{"model": "{_MODEL}", "stream": true,
         "messages": [{{"role": "user", "content": "Hello!"}}]}}'
{local}
Logs are in the data directory. Press Ctrl-C to stop everything.
"""


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in reversed(processes):  # nodes first (they drain), the coordinator last
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()


def _start(command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(  # noqa: S603 - our own command
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches only us; we stop them in order
        )


def _launch(
    port: int, data_dir: Path, gguf: Path | None, processes: list[subprocess.Popen[bytes]]
) -> dict[str, str]:
    """Start every process (appended to ``processes`` as it starts), wait until all serve."""
    url = f"http://127.0.0.1:{port}"
    keys = _accounts(data_dir)
    llama: local_model.LlamaCppServer | None = None
    if gguf is not None:  # it loads while the coordinator starts
        llama = local_model.LlamaCppServer(
            model_path=gguf,
            port=_free_port(),
            log=data_dir / "llama-server.log",
            n_ctx=_LOCAL_CONTEXT,
        )
        processes.append(llama.start(new_session=True))
    coordinator = ("coordinator", "--port", str(port), "--data-dir", str(data_dir / "coordinator"))
    processes.append(_start(_shareai(*coordinator), data_dir / "coordinator.log"))
    _wait_for(url + "/healthz", "ok", 30, processes)
    expected = {_MODEL: len(_NODES)}
    configs: list[Path] = []
    for node in _NODES:
        node_dir = data_dir / node.name
        node_dir.mkdir(exist_ok=True)
        configs.append(_node_config(node, node_dir, url, keys["provider_key"]))
    if llama is not None:
        node_dir = data_dir / _LOCAL_NODE
        node_dir.mkdir(exist_ok=True)
        configs.append(_local_node_config(node_dir, url, keys["provider_key"], llama.base_url))
        expected[local_model.SMOLLM2_MODEL] = 1
    processes.extend(
        _start(_shareai("node", "run", "--config", str(config)), config.parent / "node.log")
        for config in configs
    )
    _wait_until(url + "/v1/models", _serving(expected), 30, processes)
    if llama is not None:
        alias = llama.alias
        _wait_until(llama.base_url + "/models", lambda text: alias in text, 60, processes)
    return keys


def _up(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir.resolve()
    gguf: Path | None = None
    if args.with_local_model:
        try:
            gguf = local_model.check_local_model()
        except local_model.LocalModelMissing as error:
            print(f"shareai: error: --with-local-model: {error}", file=sys.stderr)
            return 1
    data_dir.mkdir(parents=True, exist_ok=True)
    # Stopped in reverse order: nodes first (they drain), then the coordinator, and the llama.cpp
    # server (started first) last, so that node-local's running jobs can finish.
    processes: list[subprocess.Popen[bytes]] = []
    stopping = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    try:
        keys = _launch(args.port, data_dir, gguf, processes)
        url = f"http://127.0.0.1:{args.port}"
        print(_examples(url, keys["customer_key"], with_local_model=gguf is not None), flush=True)
        while not stopping:
            if any(process.poll() is not None for process in processes):
                print(
                    "shareai: error: a process of the network exited; see the logs", file=sys.stderr
                )
                return 1
            time.sleep(0.5)
    except _Failed as error:
        print(f"shareai: error: {error} (logs in {data_dir})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping the network...", file=sys.stderr)
        _stop(processes)
    return 0
