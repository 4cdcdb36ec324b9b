"""A fake of the parts of vLLM the vllm backend uses: engine, request outputs and tokenizer.

The engine streams *cumulative* outputs, as vLLM's ``AsyncLLMEngine.generate`` does by default,
and records what it was asked: the prompts and sampling parameters it got, which requests were
aborted and which output streams were closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FakeCompletionOutput", "FakeEngine", "FakeRequestOutput", "FakeTokenizer"]

BOS = 1


@dataclass(frozen=True)
class FakeCompletionOutput:
    text: str
    token_ids: Sequence[int]
    finish_reason: str | None


@dataclass(frozen=True)
class FakeRequestOutput:
    prompt_token_ids: Sequence[int] | None
    outputs: Sequence[FakeCompletionOutput]
    finished: bool


@dataclass
class FakeTokenizer:
    """Word-level: one id per whitespace-separated word, ``BOS`` first when special tokens."""

    vocabulary: dict[str, int] = field(default_factory=dict)
    templates: list[tuple[list[dict[str, str]], bool, bool]] = field(default_factory=list)
    encodes: list[tuple[str, bool]] = field(default_factory=list)

    def apply_chat_template(
        self, conversation: list[dict[str, str]], *, tokenize: bool, add_generation_prompt: bool
    ) -> Any:
        self.templates.append((conversation, tokenize, add_generation_prompt))
        text = "".join(f"<|{m['role']}|> {m['content']} " for m in conversation)
        return text + ("<|assistant|>" if add_generation_prompt else "")

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        self.encodes.append((text, add_special_tokens))
        ids = [self.vocabulary.setdefault(word, 10 + len(self.vocabulary)) for word in text.split()]
        return [BOS, *ids] if add_special_tokens else ids


@dataclass
class FakeEngine:
    """Streams ``pieces`` (one token each; "" is a token with no visible text yet).

    ``tokens_per_step`` tokens come per output; then ``finish_reason``. ``hang_after`` steps
    the stream goes silent; ``error_after`` steps it raises ``error``; ``end_early`` ends the
    stream without a finished output.
    """

    pieces: Sequence[str] = ("Hel", "lo", " wor", "ld")
    tokens_per_step: int = 1
    finish_reason: str = "stop"
    hang_after: int | None = None
    error_after: int | None = None
    error: Exception = field(default_factory=lambda: RuntimeError("CUDA error: device lost"))
    end_early: bool = False
    tokenizer: FakeTokenizer = field(default_factory=FakeTokenizer)
    async_tokenizer: bool = False
    """Whether ``get_tokenizer`` is a coroutine (as in older vLLM) rather than a plain call."""

    calls: list[tuple[Any, Any, str]] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    shut_down: bool = False
    hanging: asyncio.Event = field(default_factory=asyncio.Event)

    def generate(
        self, prompt: Any, sampling_params: Any, request_id: str
    ) -> AsyncGenerator[FakeRequestOutput, None]:
        self.calls.append((prompt, sampling_params, request_id))
        return self._outputs(prompt["prompt_token_ids"], request_id)

    async def _outputs(
        self, prompt_ids: list[int], request_id: str
    ) -> AsyncGenerator[FakeRequestOutput, None]:
        try:
            steps = [
                self.pieces[start : start + self.tokens_per_step]
                for start in range(0, len(self.pieces), self.tokens_per_step)
            ]
            text = ""
            ids: list[int] = []
            for index, step in enumerate(steps):
                if index == self.hang_after:
                    self.hanging.set()
                    await asyncio.Event().wait()
                if index == self.error_after:
                    raise self.error
                await asyncio.sleep(0)  # an engine step
                text += "".join(step)
                ids += [100 + len(ids) + n for n in range(len(step))]
                last = index == len(steps) - 1 and not self.end_early
                yield FakeRequestOutput(
                    prompt_token_ids=list(prompt_ids),
                    outputs=[
                        FakeCompletionOutput(
                            text=text,
                            token_ids=tuple(ids),
                            finish_reason=self.finish_reason if last else None,
                        )
                    ],
                    finished=last,
                )
        finally:
            self.closed.append(request_id)

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    def get_tokenizer(self) -> Any:
        if self.async_tokenizer:

            async def tokenizer() -> FakeTokenizer:
                return self.tokenizer

            return tokenizer()
        return self.tokenizer

    def shutdown(self) -> None:
        self.shut_down = True
