"""Jobs, configs and stream collection shared by the backend tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable
from typing import Any

import pytest

from node_agent.backends import BackendConfig, BackendError, BackendEvent, Finished, TextDelta
from protocol import ChatMessage, Job, SamplingParams

MODEL = "llama-3.1-8b-instruct"


def chat_job(
    content: str = "Say hello to the world",
    *,
    job_id: str = "job-1",
    model: str = MODEL,
    deadline_ms: int | None = None,
    messages: list[ChatMessage] | None = None,
    **sampling: Any,
) -> Job:
    sampling.setdefault("max_tokens", 256)
    return Job(
        job_id=job_id,
        model=model,
        kind="chat",
        messages=messages or [ChatMessage(role="user", content=content)],
        prompt=None,
        sampling=SamplingParams(**sampling),
        deadline_ms=deadline_ms if deadline_ms is not None else int(time.time() * 1000) + 60_000,
    )


def completion_job(
    prompt: str = "Once upon a time",
    *,
    job_id: str = "job-1",
    model: str = MODEL,
    deadline_ms: int | None = None,
    **sampling: Any,
) -> Job:
    sampling.setdefault("max_tokens", 256)
    return Job(
        job_id=job_id,
        model=model,
        kind="completion",
        messages=None,
        prompt=prompt,
        sampling=SamplingParams(**sampling),
        deadline_ms=deadline_ms if deadline_ms is not None else int(time.time() * 1000) + 60_000,
    )


def config(kind: str, **fields: Any) -> BackendConfig:
    fields.setdefault("model", MODEL)
    fields.setdefault("context_length", 8192)
    return BackendConfig.model_validate({"kind": kind, **fields})


async def collect(events: AsyncIterable[BackendEvent]) -> tuple[list[TextDelta], Finished]:
    """The deltas of a stream and its one ``Finished``, which must come last."""
    deltas: list[TextDelta] = []
    finished: Finished | None = None
    async for event in events:
        assert finished is None, "nothing may follow Finished"
        if isinstance(event, Finished):
            finished = event
        else:
            deltas.append(event)
    assert finished is not None, "the stream ended without Finished"
    return deltas, finished


async def collect_until_error(
    events: AsyncIterable[BackendEvent],
) -> tuple[list[BackendEvent], BackendError]:
    """The events of a stream that must end in a ``BackendError``, and that error."""
    seen: list[BackendEvent] = []
    try:
        async with asyncio.timeout(10):
            async for event in events:
                seen.append(event)  # noqa: PERF401 - kept when the stream raises
    except BackendError as error:
        return seen, error
    pytest.fail(f"the stream ended without a BackendError after {seen!r}")
