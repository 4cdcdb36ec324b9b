"""The seam between the node agent and an inference engine.

A backend turns one protocol :class:`~protocol.Job` into a stream of :class:`TextDelta` events
followed by exactly one :class:`Finished`, or raises :class:`BackendError`. Cancellation is
asyncio cancellation of the consuming task: a backend must then stop generating (close the
upstream stream, abort the engine request) and re-raise ``CancelledError``.

``generate`` is implemented as an async generator, so a consumer that is cancelled *between* two
events (while it sends a chunk, say) leaves it suspended at a ``yield``, where no
``CancelledError`` reaches it. Consumers therefore close it when they stop, whatever the reason:
``contextlib.aclosing``, ``aclose()`` in a ``finally``, or by consuming it through
:func:`~node_agent.backends.coalesce.coalesce`, which closes its source. Closing raises
``GeneratorExit`` at the ``yield``, and backends release the request in ``finally`` blocks, so
both paths stop the generation promptly.

Deadlines: every backend enforces ``job.deadline_ms`` and raises ``BackendError("timeout")`` when
it passes. Concurrency: backends do not count jobs; the agent keeps each model within its offer's
``max_concurrency`` and refuses the rest.

Errors::

    BackendError            (code is a protocol ``Failed.code``; retryable says whether another
                             node could succeed)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

from protocol import Job, Offer, ToolCallDelta
from protocol.messages import FailureCode

__all__ = [
    "BackendError",
    "BackendEvent",
    "FailureCode",
    "Finished",
    "InferenceBackend",
    "TextDelta",
]


@dataclass(frozen=True, slots=True)
class TextDelta:
    """New output and how many tokens it is (token ids when the engine exposes them).

    The output is text, fragments of tool calls the model is making (``tool_calls``, in the
    order the engine streamed them; see :class:`~protocol.ToolCallDelta`), or both.
    """

    text: str
    tokens: int
    token_ids: tuple[int, ...] | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()


@dataclass(frozen=True, slots=True)
class Finished:
    """The end of a generation with its usage as the engine counted it."""

    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter"]


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
        """The models this backend serves, as announced to the hub.

        Each offer carries prices, limits and the request parameters the backend honours
        (``supported_parameters``: its own set, or fewer when the config narrows it).
        """
        ...

    def generate(self, job: Job) -> AsyncIterator[BackendEvent]:
        """Stream the output of ``job``: TextDelta events, then one Finished (or BackendError).

        In practice an async generator, which consumers close with ``aclose()`` (see the module
        docstring; :func:`~node_agent.backends.coalesce.coalesce` closes its source).
        """
        ...

    async def aclose(self) -> None:
        """Release connections, engines and files."""
        ...
