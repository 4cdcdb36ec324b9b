"""The mock backend: deterministic text at a set latency and speed, for tests and demos.

It is always labelled as what it is: its ``kind`` is ``"mock"`` and every offer it makes carries
``weights_hash="mock"``, which no real weights fingerprint can be (those are hex digests), so the
coordinator and the status page can show a mock offer as such even though its model name is
whatever the config says. It supports every request parameter the protocol carries
(:data:`~protocol.KNOWN_PARAMETERS`): it emulates tools and JSON mode, follows ``max_tokens``,
``stop`` and ``seed``, and accepts the other sampling parameters without using them.

What it produces, exactly:

- **Text.** Lorem-ipsum words chosen by a BLAKE2b hash of the prompt (chat: each message's role
  and content; completion: the prompt) and the sampling seed. The same job, on any node and any
  run, gives the same text; the job id does not enter, so a retry elsewhere gives the same answer.
- **Tokens.** One token per whitespace-separated word piece: each ``TextDelta`` is one word with
  its leading space (``"Lorem"``, ``" ipsum"``, ...). Prompt tokens are the whitespace-separated
  words of the message contents (or of the prompt). Not a real tokenizer, and documented as such.
- **Length.** An answer is ``MockOptions.output_tokens`` words long and ends with ``stop``; a job
  whose ``max_tokens`` is smaller is cut there and ends with ``length``. A stop sequence that
  occurs in the text ends it just before the sequence (not included, as OpenAI does) with
  ``stop``; the cut word counts as a token.
- **JSON mode.** With ``response_format`` ``json_object`` or ``json_schema`` the text is one JSON
  object, ``{"mock": "<words>"}``: the opening ``{"mock": "``, ``output_tokens - 2`` words (at
  least one) and the closing ``"}``, one token each, cut by ``max_tokens`` and stop sequences as
  above (a cut answer is not valid JSON, as with a real model). A ``json_schema`` is not
  followed: the object has the one key ``mock`` whatever the schema says.
- **Tool calls.** With ``tools`` and ``tool_choice`` ``"required"`` (the first tool) or naming a
  function (that one), the answer is one call of that function with arguments ``{}``, streamed
  as two fragments (id ``call_<24 hex>`` from the prompt's hash, type and name with empty
  arguments, then the arguments) and no text, ending with ``tool_calls``; a ``max_tokens`` of 1
  stops after the first fragment with ``length``. ``{}`` may not fit the function's parameters:
  the mock does not read them. With ``tool_choice`` ``"auto"``, ``"none"`` or none at all the
  mock never calls a tool and answers with text. Job JSON that is not JSON is an
  ``invalid_request``.
- **Timing.** The first token comes ``time_to_first_token_ms`` after the job starts, then one
  token every ``1 / tokens_per_s`` seconds, on a fixed schedule (no drift). Time is read through
  an injectable :class:`~protocol.Clock` and waited through an injectable ``sleep``.
- **Failures.** A job fails when a BLAKE2b hash of ``(failure_seed, job_id)`` falls under
  ``failure_rate``, so the same seed fails the same jobs in any order. A failing job streams
  ``failure_after_tokens`` tokens, then raises ``BackendError("backend_error", retryable=True)``.
- **Stalls.** A job whose BLAKE2b hash of ``("stall", failure_seed, job_id)`` falls under
  ``stall_rate`` gets its first token ``stall_ms`` late: the tail latency hedging is for.
- **Deadline.** Past ``job.deadline_ms`` it raises ``BackendError("timeout")``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from node_agent.backends._common import check_model, job_json
from node_agent.backends.base import BackendError, BackendEvent, Finished, TextDelta
from node_agent.backends.config import BackendConfig, MockOptions
from protocol import (
    KNOWN_PARAMETERS,
    Clock,
    Job,
    Offer,
    RequestParameter,
    SystemClock,
    ToolCallDelta,
)

__all__ = ["MOCK_WEIGHTS_HASH", "MockBackend", "MockCompletion", "mock_completion"]

MOCK_WEIGHTS_HASH = "mock"

# fmt: off
_WORDS = (
    "lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do",
    "eiusmod", "tempor", "incididunt", "ut", "labore", "et", "dolore", "magna", "aliqua", "enim",
    "ad", "minim", "veniam", "quis", "nostrud", "exercitation", "ullamco", "laboris", "nisi",
    "aliquip", "ex", "ea", "commodo", "consequat", "duis", "aute", "irure", "in", "reprehenderit",
    "voluptate", "velit", "esse", "cillum", "eu", "fugiat", "nulla", "pariatur", "excepteur",
    "sint", "occaecat", "cupidatat", "non", "proident", "sunt", "culpa", "qui", "officia",
    "deserunt", "mollit", "anim", "id", "est", "laborum",
)
# fmt: on
_SENTENCE_WORDS = 9  # a full stop after every ninth word keeps long answers readable


@dataclass(frozen=True, slots=True)
class MockCompletion:
    """What the mock answers to a job, before timing and failures are applied."""

    pieces: tuple[str, ...]
    """The text deltas, one token each."""
    finish_reason: Literal["stop", "length", "tool_calls"]
    prompt_tokens: int
    tool_calls: tuple[ToolCallDelta, ...] = ()
    """Tool-call fragments streamed after the text, one token each."""

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def _prompt_text(job: Job) -> str:
    if job.messages is not None:
        return "\n".join(f"{message.role}: {message.content}" for message in job.messages)
    return job.prompt or ""


def _prompt_tokens(job: Job) -> int:
    if job.messages is not None:
        return sum(len(message.content.split()) for message in job.messages)
    return len((job.prompt or "").split())


def _unit_interval(*parts: str) -> float:
    """A number in [0, 1) fixed by ``parts``."""
    digest = hashlib.blake2b("\0".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _words(seed: bytes, count: int) -> list[str]:
    pieces: list[str] = []
    for index in range(count):
        digest = hashlib.blake2b(index.to_bytes(8, "big"), key=seed, digest_size=4).digest()
        word = _WORDS[int.from_bytes(digest, "big") % len(_WORDS)]
        if index % _SENTENCE_WORDS == 0:
            word = word.capitalize()
        if index % _SENTENCE_WORDS == _SENTENCE_WORDS - 1 or index == count - 1:
            word += "."
        pieces.append(word if index == 0 else " " + word)
    return pieces


def _job_json(text: str | None, field: str) -> Any:
    return None if text is None else job_json(text, field)


def _forced_tool(job: Job) -> str | None:
    """The function the job makes the model call, if any (see the module docstring)."""
    tools = _job_json(job.tools_json, "tools_json")
    choice = _job_json(job.tool_choice_json, "tool_choice_json")
    if not isinstance(tools, list) or not tools:
        return None
    if isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        return name if isinstance(name, str) and name else None
    if choice == "required":
        function = tools[0].get("function") if isinstance(tools[0], dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        return name if isinstance(name, str) and name else None
    return None


def _wants_json(job: Job) -> bool:
    response_format = _job_json(job.response_format_json, "response_format_json")
    return isinstance(response_format, dict) and response_format.get("type") in (
        "json_object",
        "json_schema",
    )


def _tool_call(job: Job, seed_text: str, name: str) -> MockCompletion:
    digest = hashlib.blake2b(seed_text.encode(), digest_size=12).hexdigest()
    fragments = (
        ToolCallDelta(index=0, id=f"call_{digest}", name=name),
        ToolCallDelta(index=0, arguments="{}"),
    )
    max_tokens = job.sampling.max_tokens
    return MockCompletion(
        pieces=(),
        finish_reason="length" if max_tokens < len(fragments) else "tool_calls",
        prompt_tokens=_prompt_tokens(job),
        tool_calls=fragments[:max_tokens],
    )


def mock_completion(job: Job, options: MockOptions) -> MockCompletion:
    """The mock's answer to ``job``: a pure function of the prompt, sampling and options.

    Raises ``invalid_request`` when the job's tools, tool choice or response format is not JSON.
    """
    seed_text = f"{_prompt_text(job)}\0{job.sampling.seed}"
    forced_tool = _forced_tool(job)
    if forced_tool is not None:
        return _tool_call(job, seed_text, forced_tool)
    seed = hashlib.blake2b(seed_text.encode(), digest_size=32).digest()
    # The final word of a natural answer carries a full stop; a cut answer has no natural end.
    if _wants_json(job):
        all_words = ['{"mock": "', *_words(seed, max(1, options.output_tokens - 2)), '"}']
    else:
        all_words = _words(seed, options.output_tokens)
    cut_by_length = job.sampling.max_tokens < len(all_words)
    words = all_words[: job.sampling.max_tokens]
    finish_reason: Literal["stop", "length"] = "length" if cut_by_length else "stop"

    text = "".join(words)
    stops = [text.find(stop) for stop in job.sampling.stop]
    found = [index for index in stops if index >= 0]
    if found:
        cut_at = min(found)
        pieces: list[str] = []
        length = 0
        for word in words:
            if length >= cut_at:
                break
            pieces.append(word[: cut_at - length])
            length += len(word)
        words = pieces
        finish_reason = "stop"
    return MockCompletion(
        pieces=tuple(words), finish_reason=finish_reason, prompt_tokens=_prompt_tokens(job)
    )


class MockBackend:
    """Serves ``config.model`` with mock text (see the module docstring for exact behaviour).

    ``clock`` gives wall time (deadlines) and monotonic time (the token schedule); ``sleep``
    waits a number of seconds. Tests inject a :class:`~protocol.ManualClock` and a ``sleep``
    that advances it, and so run any schedule instantly and deterministically.
    """

    SUPPORTED_PARAMETERS: ClassVar[frozenset[RequestParameter]] = KNOWN_PARAMETERS

    def __init__(
        self,
        config: BackendConfig,
        *,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        if config.kind != "mock":
            raise ValueError(f"MockBackend needs a config of kind 'mock', not {config.kind!r}")
        self._config = config
        self._offer = config.offer(self.SUPPORTED_PARAMETERS, weights_hash=MOCK_WEIGHTS_HASH)
        self._clock: Clock = clock or SystemClock()
        self._sleep = sleep or asyncio.sleep

    @property
    def kind(self) -> str:
        return "mock"

    def offers(self) -> list[Offer]:
        return [self._offer]

    def will_fail(self, job: Job) -> bool:
        """Whether ``job`` is one of the jobs this backend's failure rate picks."""
        options = self._config.mock
        if options.failure_rate <= 0.0:
            return False
        return _unit_interval(str(options.failure_seed), job.job_id) < options.failure_rate

    def will_stall(self, job: Job) -> bool:
        """Whether ``job``'s first token comes ``stall_ms`` late."""
        options = self._config.mock
        if options.stall_rate <= 0.0:
            return False
        return _unit_interval(f"stall:{options.failure_seed}", job.job_id) < options.stall_rate

    async def generate(self, job: Job) -> AsyncGenerator[BackendEvent, None]:
        check_model(job, self._config.model)
        options = self._config.mock
        completion = mock_completion(job, options)
        fail_after = options.failure_after_tokens if self.will_fail(job) else None
        started_s = self._clock.monotonic()
        first_token_s = options.time_to_first_token_ms / 1000.0
        if self.will_stall(job):
            first_token_s += options.stall_ms / 1000.0
        token_interval_s = 1.0 / options.tokens_per_s if options.tokens_per_s > 0 else 0.0

        deltas = [TextDelta(text=piece, tokens=1) for piece in completion.pieces]
        deltas += [
            TextDelta(text="", tokens=1, tool_calls=(call,)) for call in completion.tool_calls
        ]
        for index, delta in enumerate(deltas):
            await self._wait_until(started_s + first_token_s + index * token_interval_s, job)
            if index == fail_after:
                raise BackendError("backend_error", "mock failure (injected)", retryable=True)
            yield delta
        if fail_after is not None:
            raise BackendError("backend_error", "mock failure (injected)", retryable=True)
        yield Finished(
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=len(deltas),
            finish_reason=completion.finish_reason,
        )

    async def _wait_until(self, due_monotonic_s: float, job: Job) -> None:
        delay_s = due_monotonic_s - self._clock.monotonic()
        until_deadline_s = job.deadline_ms / 1000.0 - self._clock.time()
        if delay_s >= until_deadline_s:
            if until_deadline_s > 0:
                await self._sleep(until_deadline_s)
            raise BackendError("timeout", "the job's deadline passed", retryable=False)
        if delay_s > 0:
            await self._sleep(delay_s)

    async def aclose(self) -> None:
        """Nothing to release."""
