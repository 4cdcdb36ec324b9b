"""The seam between the node agent and an inference engine.

A backend turns one protocol :class:`~protocol.Job` into a stream of :class:`TextDelta` events
followed by exactly one :class:`Finished`, or raises :class:`BackendError`. Cancellation is
asyncio cancellation of the consuming task: a backend must then stop generating (close the
upstream stream, abort the engine request) and re-raise ``CancelledError``.

Errors::

    BackendError            (code is a protocol ``Failed.code``; retryable says whether another
                             node could succeed)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

from protocol import Job, Offer

__all__ = [
    "BackendError",
    "BackendEvent",
    "FailureCode",
    "Finished",
    "InferenceBackend",
    "TextDelta",
]

FailureCode = Literal[
    "backend_error",
    "model_unavailable",
    "overloaded",
    "timeout",
    "cancelled",
    "invalid_request",
    "context_length_exceeded",
    "internal_error",
]


@dataclass(frozen=True, slots=True)
class TextDelta:
    """New output text and how many tokens it is (token ids when the engine exposes them)."""

    text: str
    tokens: int
    token_ids: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class Finished:
    """The end of a generation with its usage as the engine counted it."""

    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length", "content_filter"]


BackendEvent = TextDelta | Finished


class BackendError(Exception):
    """A generation failed; ``code`` and ``retryable`` go into the protocol ``failed`` message."""

    def __init__(self, code: FailureCode, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.code: FailureCode = code
        self.retryable = retryable


class InferenceBackend(Protocol):
    """An inference engine serving one or more models."""

    @property
    def kind(self) -> str:
        """``mock``, ``openai`` or ``vllm``: shown to operators and customers."""
        ...

    def offers(self) -> list[Offer]:
        """The models this backend serves, with prices and limits, as announced to the hub."""
        ...

    def generate(self, job: Job) -> AsyncIterator[BackendEvent]:
        """Stream the output of ``job``: TextDelta events, then one Finished (or BackendError)."""
        ...

    async def aclose(self) -> None:
        """Release connections, engines and files."""
        ...
