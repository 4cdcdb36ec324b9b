"""A scripted InferenceBackend for the agent's tests, and sample protocol values."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Literal

from node_agent.backends.base import BackendError, BackendEvent, Finished, TextDelta
from protocol import ChatMessage, Hardware, Job, Offer, SamplingParams

WORDS = ("Hello", ",", " world", "!")


def offer(model: str = "test/model", *, max_concurrency: int = 4) -> Offer:
    return Offer(
        model=model,
        weights_hash=None,
        context_length=4096,
        max_concurrency=max_concurrency,
        price_input_micro_usd_per_1m=100_000,
        price_output_micro_usd_per_1m=300_000,
    )


def hardware() -> Hardware:
    return Hardware(
        cpu_model="Test CPU",
        cpu_cores=8,
        memory_mib=16_384,
        os="Linux test",
        gpus=[],
    )


def job(job_id: str = "job_1", model: str = "test/model") -> Job:
    return Job(
        job_id=job_id,
        model=model,
        kind="chat",
        messages=[ChatMessage(role="user", content="Say hello.")],
        prompt=None,
        sampling=SamplingParams(max_tokens=64),
        deadline_ms=int((time.time() + 600) * 1000),
    )


class ScriptedBackend:
    """Streams ``words`` (one token each) then finishes; records how each generation ended.

    With ``hold_after=n`` every generation stops before its ``n``-th word until :attr:`gate` is
    set. ``fail`` makes every generation raise that error after the held point. ``deltas``
    replaces the words with these exact events, and ``finish_reason`` ends with that reason.
    """

    def __init__(
        self,
        offers: Sequence[Offer] = (),
        *,
        words: Sequence[str] = WORDS,
        prompt_tokens: int = 5,
        hold_after: int | None = None,
        fail: BackendError | None = None,
        deltas: Sequence[TextDelta] | None = None,
        finish_reason: Literal["stop", "length", "tool_calls", "content_filter"] = "stop",
    ) -> None:
        self._offers = list(offers) or [offer()]
        self.words = tuple(words)
        self.deltas = (
            tuple(deltas) if deltas is not None else tuple(TextDelta(w, 1) for w in self.words)
        )
        self.finish_reason = finish_reason
        self.prompt_tokens = prompt_tokens
        self.hold_after = hold_after
        self.fail = fail
        self.gate = asyncio.Event()
        self.started: asyncio.Queue[str] = asyncio.Queue()
        self.outcomes: dict[str, str] = {}
        self._outcome_changed = asyncio.Event()

    @property
    def kind(self) -> str:
        return "scripted"

    def offers(self) -> list[Offer]:
        return list(self._offers)

    async def generate(self, job: Job) -> AsyncIterator[BackendEvent]:
        self.started.put_nowait(job.job_id)
        outcome = "closed"  # closed by the consumer at a yield
        try:
            for index, delta in enumerate(self.deltas):
                if index == self.hold_after:
                    await self.gate.wait()
                yield delta
            if self.hold_after == len(self.deltas):
                await self.gate.wait()
            if self.fail is not None:
                outcome = "failed"
                raise self.fail
            outcome = "finished"
            yield Finished(
                prompt_tokens=self.prompt_tokens,
                completion_tokens=sum(delta.tokens for delta in self.deltas),
                finish_reason=self.finish_reason,
            )
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            self.outcomes[job.job_id] = outcome
            self._outcome_changed.set()

    async def outcome(self, job_id: str) -> str:
        """How the generation of ``job_id`` ended (waits until it has)."""
        while job_id not in self.outcomes:
            self._outcome_changed.clear()
            await asyncio.wait_for(self._outcome_changed.wait(), 10)
        return self.outcomes[job_id]

    async def aclose(self) -> None:
        pass
