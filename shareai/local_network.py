"""``shareai up``: a whole network on this machine, for trying ShareAI in one command.

It starts a coordinator (SQLite in ``--data-dir``), creates a Provider and a customer account
with credits on first run, enrolls two node agents on the clearly labelled ``mock`` backend with
different prices and speeds, prints how to call the API, and stops everything on Ctrl-C (nodes
drain first). Each part is the real ``shareai`` command running as its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx

__all__ = ["register"]

_ParserT = TypeVar("_ParserT", bound=argparse.ArgumentParser)
_MODEL = "mock/echo"


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
        " print a customer key with examples. Ctrl-C stops everything.",
    )
    command.add_argument("--port", type=int, default=8000, help="coordinator port (default 8000)")
    command.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".shareai/local"),
        help="where the network keeps its state (default .shareai/local)",
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


def _wait_for(
    url: str, check: str, timeout_s: float, processes: list[subprocess.Popen[bytes]]
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise _Failed(f"a process exited early (code {process.returncode}); see the logs")
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200 and check in response.text:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise _Failed(f"timed out waiting for {url}")


def _examples(url: str, customer_key: str) -> str:
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


def _up(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{args.port}"
    processes: list[subprocess.Popen[bytes]] = []
    stopping = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    try:
        keys = _accounts(data_dir)
        with (data_dir / "coordinator.log").open("ab") as log:
            processes.append(
                subprocess.Popen(  # noqa: S603 - our own command
                    _shareai(
                        "coordinator",
                        "--port",
                        str(args.port),
                        "--data-dir",
                        str(data_dir / "coordinator"),
                    ),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches only us; we stop them in order
                )
            )
        _wait_for(url + "/healthz", "ok", 30, processes)
        for node in _NODES:
            node_dir = data_dir / node.name
            node_dir.mkdir(exist_ok=True)
            config = _node_config(node, node_dir, url, keys["provider_key"])
            with (node_dir / "node.log").open("ab") as log:
                processes.append(
                    subprocess.Popen(  # noqa: S603 - our own command
                        _shareai("node", "run", "--config", str(config)),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # Ctrl-C reaches only us; we stop them in order
                    )
                )
        _wait_for(url + "/v1/models", f'"nodes":{len(_NODES)}', 30, processes)
        print(_examples(url, keys["customer_key"]), flush=True)
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
