"""Helpers shared by the backends: the job's model, deadline and JSON text, and error messages."""

from __future__ import annotations

import asyncio
from typing import Any

from node_agent.backends.base import BackendError
from protocol import Clock, InvalidJsonText, Job, load_json_text

__all__ = [
    "MAX_ERROR_MESSAGE_CHARS",
    "check_model",
    "job_json",
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


def job_json(text: str, field: str) -> Any:
    """The JSON value of one of the job's JSON-text fields (``protocol.tools``).

    Raises ``invalid_request``, not retryable: the coordinator sent text that is not JSON.
    """
    try:
        return load_json_text(text, field=field)
    except InvalidJsonText as error:
        raise BackendError("invalid_request", short_message(str(error)), retryable=False) from None
