"""The public models page with a large network: server time per render, beside ``/v1/models``.

In process: the coordinator's app (``create_app``) over a registry of 1,000 simulated nodes
serving 200 models (5 models per node, so 25 nodes per model), every node measured (12
completions each, so out of probation), requests sent through ``httpx.ASGITransport``. Timed:

- **baseline**: ``GET /v1/models`` (the existing JSON listing of the same network);
- **models page**: ``GET /models`` (HTML, every model, sorted by name);
- **models page, sorted and filtered**: ``GET /models?sort=speed&q=family-1``;
- **models JSON**: ``GET /v1/market/models`` (what the page shows, as JSON);
- **model page**: ``GET /models/{model}`` (25 endpoints, its chart).

Each figure is the wall time of one request through the ASGI app (routing, handler, template,
serialisation; no sockets). Target: the models page under 300 ms.

    python -m benchmarks.bench_models_page [--quick] [--write-docs]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx

from benchmarks._machine import common_machine_facts, write_between_markers
from coordinator.api.context import Services
from coordinator.app import create_app
from coordinator.hub.dispatch import Dispatcher
from coordinator.hub.nodes import LiveNode, NodeLink, NodeRegistry
from coordinator.routing import Router
from protocol import Hardware, Offer

__all__ = ["SCENARIOS", "Settings", "build_services", "main", "run"]

DOCS_PATH = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
DOCS_START = "<!-- bench-models-page:start -->"
DOCS_END = "<!-- bench-models-page:end -->"
TARGET_MS = 300.0


@dataclass(frozen=True, slots=True)
class Settings:
    nodes: int
    models: int
    models_per_node: int
    renders: int


FULL = Settings(nodes=1_000, models=200, models_per_node=5, renders=200)
QUICK = Settings(nodes=50, models=10, models_per_node=2, renders=5)

SCENARIOS: tuple[tuple[str, str], ...] = (
    ("baseline: GET /v1/models", "/v1/models"),
    ("GET /models", "/models"),
    ("GET /models?sort=speed&q=family-1", "/models?sort=speed&q=family-1"),
    ("GET /v1/market/models", "/v1/market/models"),
    ("GET /models/{model}", "/models/family-0/model-0"),
)


def build_services(settings: Settings, seed: int = 7) -> Services:
    """A coordinator's services over a simulated network (no database, no sockets)."""
    rng = random.Random(seed)
    registry = NodeRegistry()
    router = Router(registry, rng=random.Random(seed))
    hardware = Hardware(cpu_model="bench", cpu_cores=8, memory_mib=16_384, os="linux", gpus=[])
    models = [f"family-{i % 20}/model-{i}" for i in range(settings.models)]
    for n in range(settings.nodes):
        offered = {
            models[(n * settings.models_per_node + k) % settings.models]
            for k in range(settings.models_per_node)
        }
        offers = {
            model: Offer(
                model=model,
                weights_hash=None,
                context_length=rng.choice([4096, 8192, 32768]),
                max_concurrency=4,
                price_input_micro_usd_per_1m=rng.randrange(50_000, 1_000_000),
                price_output_micro_usd_per_1m=rng.randrange(100_000, 2_000_000),
            )
            for model in sorted(offered)
        }
        node = LiveNode(
            node_id=f"nd_{n:05d}",
            provider_account_id=f"acc_bench_{n % 300}",
            session_id="s",
            agent_version="bench",
            hardware=hardware,
            offers=offers,
            link=cast("NodeLink", None),
        )
        registry.add(node)
        for model in offers:
            for _ in range(12):
                router.record_success(
                    node.node_id,
                    model,
                    ttft_ms=rng.uniform(100, 2000),
                    tokens_per_s=rng.uniform(10, 150),
                )
    router.snapshot()
    return Services(
        accounts=cast(Any, None),
        hub=cast(Any, None),
        registry=registry,
        dispatcher=Dispatcher(registry, router=router),
    )


@dataclass(frozen=True, slots=True)
class Result:
    label: str
    samples_ms: tuple[float, ...]
    bytes: int

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p99_ms(self) -> float:
        ordered = sorted(self.samples_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def _time(client: httpx.AsyncClient, path: str, renders: int) -> tuple[list[float], int]:
    response = await client.get(path)  # warm: templates compiled, caches filled
    if response.status_code != 200:
        raise RuntimeError(f"{path} answered {response.status_code}: {response.text[:300]}")
    samples = []
    for _ in range(renders):
        start = time.perf_counter()
        response = await client.get(path)
        samples.append((time.perf_counter() - start) * 1000)
        response.raise_for_status()
    return samples, len(response.content)


async def run_async(settings: Settings) -> list[Result]:
    app = create_app(build_services(settings))
    transport = httpx.ASGITransport(app=cast(Any, app))
    results = []
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for label, path in SCENARIOS:
            samples, size = await _time(client, path, settings.renders)
            results.append(Result(label, tuple(samples), size))
    return results


def run(settings: Settings) -> list[Result]:
    return asyncio.run(run_async(settings))


def render_markdown(results: Sequence[Result], settings: Settings, when: datetime) -> str:
    facts = common_machine_facts(("litestar", "jinja2"))
    packages = ", ".join(f"{name} {version}" for name, version in facts["packages"])
    lines = [
        f"{settings.nodes:,} nodes, {settings.models} models ({settings.models_per_node} per node),"
        f" {settings.renders} renders each; {when:%Y-%m-%d %H:%M} UTC on {facts['cpu_model']}"
        f" ({facts['logical_cpus']} logical CPUs), {facts['system']}, {facts['python']},"
        f" {packages}.",
        "",
        "| Request | Median ms | p99 ms | Response bytes |",
        "|---|---:|---:|---:|",
    ]
    lines.extend(
        f"| {r.label} | {r.median_ms:.1f} | {r.p99_ms:.1f} | {r.bytes:,} |" for r in results
    )
    lines += ["", f"Target: `GET /models` under {TARGET_MS:.0f} ms server time."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a tiny network (for tests)")
    parser.add_argument("--write-docs", action="store_true", help=f"update {DOCS_PATH.name}")
    args = parser.parse_args(argv)
    if args.quick and args.write_docs:
        print("--quick figures are not representative; not writing them", file=sys.stderr)
        return 2
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    settings = QUICK if args.quick else FULL
    results = run(settings)
    print(f"{'request':40} {'median ms':>10} {'p99 ms':>10} {'bytes':>10}")
    for result in results:
        print(
            f"{result.label:40} {result.median_ms:10.2f} {result.p99_ms:10.2f} {result.bytes:10,}"
        )
    if args.write_docs:
        section = render_markdown(results, settings, datetime.now(tz=UTC))
        write_between_markers(DOCS_PATH, DOCS_START, DOCS_END, section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
