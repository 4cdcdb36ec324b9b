"""Helpers shared by the backends: the job's model and deadline, and error messages."""

from __future__ import annotations

import asyncio

from node_agent.backends.base import BackendError
from protocol import Clock, Job

__all__ = [
    "MAX_ERROR_MESSAGE_CHARS",
    "check_model",
    "loop_deadline",
    "short_message",
]

# protocol ``failed.message`` holds at most 1024 characters; leave room for a prefix.
MAX_ERROR_MESSAGE_CHARS = 512


def short_message(text: str) -> str:
    """``text`` on one line, cut to fit a protocol ``failed`` message."""
    one_line = " ".join(text.split())
    if len(one_line) <= MAX_ERROR_MESSAGE_CHARS:
        return one_line
    return one_line[: MAX_ERROR_MESSAGE_CHARS - 3] + "..."


def check_model(job: Job, offered: str) -> None:
    """Raise ``model_unavailable`` (retryable elsewhere) when ``job`` asks for another model."""
    if job.model != offered:
        raise BackendError(
            "model_unavailable",
            short_message(f"this backend serves {offered!r}, not {job.model!r}"),
            retryable=True,
        )


def loop_deadline(job: Job, clock: Clock) -> float:
    """The job's deadline (Unix milliseconds, wall clock) on the running loop's clock.

    Raises ``timeout`` when the deadline has already passed. Per-await timeouts use this with
    ``asyncio.timeout_at``, because a timeout scope around a ``yield`` would fire in the consumer.
    """
    remaining_s = job.deadline_ms / 1000.0 - clock.time()
    if remaining_s <= 0:
        raise BackendError("timeout", "the job's deadline had passed", retryable=False)
    return asyncio.get_running_loop().time() + remaining_s
