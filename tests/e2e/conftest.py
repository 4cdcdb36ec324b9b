"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.network import Network, network
from tests.node_agent.backends.fake_upstream import FakeUpstream, StreamReply

UPSTREAM_MODEL = "mock/echo"  # the public name the openai-backend node serves


class UpstreamThread:
    """The fake upstream on its own event loop, so the synchronous test can drive the network."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.upstream = FakeUpstream(default_reply=StreamReply(pieces=("Hi", " from", " upstream")))
        self._stop = asyncio.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(),))

    async def _run(self) -> None:
        async with self.upstream:
            self._started.set()
            await self._stop.wait()

    def __enter__(self) -> FakeUpstream:
        self._thread.start()
        assert self._started.wait(10)
        return self.upstream

    def __exit__(self, *_: object) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture
def upstream_network(tmp_path: Path) -> Iterator[tuple[Network, FakeUpstream]]:
    with UpstreamThread() as upstream, network(tmp_path) as net:
        net.add_node(
            "proxy",
            f"""[[models]]
name = "{UPSTREAM_MODEL}"
backend = "openai"
upstream_url = "{upstream.base_url}/v1"
upstream_model = "tiny-upstream-model"
price_in_usd_per_1m = "0.01"
price_out_usd_per_1m = "0.01"
max_concurrency = 4
context_length = 4096
""",
        )
        net.wait_for_nodes(UPSTREAM_MODEL, 1)
        yield net, upstream
