"""A real network on loopback for end-to-end tests: coordinator and node agents as processes.

Everything goes through the ``shareai`` console script, exactly as an operator and a Provider
would run it; the customer side uses the official ``openai`` SDK.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

__all__ = ["Network", "NodeProcess", "free_port", "network", "shareai_executable"]


def shareai_executable() -> str:
    executable = shutil.which("shareai", path=str(Path(sys.executable).parent))
    if executable is None:
        raise RuntimeError("the shareai console script is not installed in this virtualenv")
    return executable


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def run_shareai(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [shareai_executable(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class NodeProcess:
    name: str
    config: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [shareai_executable(), "node", "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode


@dataclass
class Network:
    root: Path
    port: int = field(default_factory=free_port)
    coordinator: subprocess.Popen[bytes] | None = None
    nodes: dict[str, NodeProcess] = field(default_factory=dict)
    provider_key: str = ""
    customer_key: str = ""
    operator_key: str = ""
    database_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment settings of the coordinator process (``SHAREAI_SIGNUP=...``)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @property
    def data_dir(self) -> Path:
        return self.root / "coordinator"

    def admin(self, *args: str) -> dict[str, object]:
        database = ("--database-url", self.database_url) if self.database_url else ()
        result = run_shareai("admin", *args, "--data-dir", str(self.data_dir), *database, "--json")
        if result.returncode != 0:
            raise RuntimeError(f"shareai admin {args[0]} failed: {result.stderr.strip()}")
        parsed: dict[str, object] = json.loads(result.stdout)
        return parsed

    def start_coordinator(self) -> None:
        with (self.root / "coordinator.log").open("ab") as log:
            self.coordinator = subprocess.Popen(
                [
                    shareai_executable(),
                    "coordinator",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                    *(("--database-url", self.database_url) if self.database_url else ()),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env} if self.env else None,
            )
        self.wait_until(lambda: self._get("/healthz") is not None, "coordinator to start")

    def stop_coordinator(self, sig: int = signal.SIGTERM) -> None:
        if self.coordinator is not None and self.coordinator.poll() is None:
            self.coordinator.send_signal(sig)
            self.coordinator.wait(timeout=20)

    def add_node(self, name: str, *model_lines: str) -> NodeProcess:
        """Create a node key, enroll it, write its config with ``model_lines``, start it."""
        node_dir = self.root / name
        node_dir.mkdir()
        config = node_dir / "node.toml"
        result = run_shareai(
            "node",
            "init",
            "--coordinator",
            self.url,
            "--api-key",
            self.provider_key,
            "--key-file",
            str(node_dir / "node.key"),
            "--config",
            str(config),
        )
        if result.returncode != 0:
            raise RuntimeError(f"shareai node init failed: {result.stderr.strip()}")
        text = config.read_text()
        # Replace the models the skeleton suggests with this test's models.
        head = text.split("[[models]]")[0]
        config.write_text(head + "\n".join(model_lines) + "\n")
        node = NodeProcess(name, config, node_dir / "node.log")
        node.start()
        self.nodes[name] = node
        return node

    def _get(self, path: str) -> httpx.Response | None:
        try:
            return httpx.get(self.url + path, timeout=2)
        except httpx.HTTPError:
            return None

    def model_nodes(self, model: str) -> int:
        response = self._get("/v1/models")
        if response is None or response.status_code != 200:
            return 0
        for entry in response.json()["data"]:
            if entry["id"] == model:
                return int(entry["nodes"])
        return 0

    def wait_for_nodes(self, model: str, count: int, timeout: float = 30) -> None:
        self.wait_until(
            lambda: self.model_nodes(model) == count, f"{count} node(s) serving {model}", timeout
        )

    def wait_until(self, condition: object, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if callable(condition) and condition():
                return
            if self.coordinator is not None and self.coordinator.poll() is not None:
                raise RuntimeError(
                    f"the coordinator exited while waiting for {what}:\n{self.logs()}"
                )
            time.sleep(0.1)
        raise TimeoutError(f"timed out waiting for {what}:\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(
            f"--- {log.relative_to(self.root)} ---\n{log.read_text()[-3000:]}"
            for log in sorted(self.root.glob("**/*.log"))
        )

    def close(self) -> None:
        for node in self.nodes.values():
            node.stop()
        self.stop_coordinator()


@contextmanager
def network(
    root: Path, database_url: str | None = None, env: dict[str, str] | None = None
) -> Iterator[Network]:
    """A coordinator with a Provider, a customer and an operator account; nodes are added by
    the test.

    The coordinator uses its embedded SQLite default unless ``database_url`` is given; ``env``
    adds environment settings to its process.
    """
    net = Network(root, database_url=database_url, env=dict(env or {}))
    os.environ.setdefault("SHAREAI_LOG_LEVEL", "info")
    try:
        provider = net.admin("create-account", "--role", "provider", "--name", "provider")
        customer = net.admin(
            "create-account", "--role", "customer", "--name", "customer", "--credits", "100"
        )
        operator = net.admin("create-account", "--role", "operator", "--name", "operator")
        net.provider_key = str(provider["api_key"])
        net.customer_key = str(customer["api_key"])
        net.operator_key = str(operator["api_key"])
        net.start_coordinator()
        yield net
    finally:
        net.close()
