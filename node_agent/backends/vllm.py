"""The ``vllm`` backend: vLLM's async engine in this process, with exact token ids.

vLLM is an optional extra (``pip install 'shareai[vllm]'``) and is imported only by
:meth:`VllmBackend.from_config`, so importing this module never needs it. The backend itself
talks to the engine through three small seams, which tests replace with fakes:

- an engine with ``generate(prompt, sampling_params, request_id)`` (an async iterator of
  ``RequestOutput``: ``.prompt_token_ids``, ``.finished`` and ``.outputs[0]`` with the
  *cumulative* ``.text`` and ``.token_ids`` and a ``.finish_reason``) and
  ``await abort(request_id)``; vLLM's ``AsyncLLMEngine`` (``AsyncLLM`` in the V1 engine) is one;
- the model's tokenizer (``apply_chat_template`` and ``encode``, as Hugging Face's), taken from
  the engine (``get_tokenizer()``, awaited when the engine's version makes it a coroutine)
  unless given;
- a ``SamplingParams`` factory (vLLM's class).

How a job runs:

- **Prompt.** A chat job is rendered with the tokenizer's chat template
  (``add_generation_prompt=True``) and encoded without adding special tokens again (the template
  has them), a completion job is encoded as vLLM's own server would; the engine gets the token
  ids (``{"prompt_token_ids": [...]}``), so the prompt is tokenized exactly once.
- **Context.** A prompt of ``context_length`` tokens or more is refused with
  ``context_length_exceeded``; ``max_tokens`` is clamped to what the context has left, and such an
  answer ends with ``length``.
- **Streaming.** Each engine output is cumulative; the backend yields the new text and the new
  token ids since the previous output (``TextDelta.tokens`` is their exact number).
- **Usage.** ``prompt_tokens`` is the length of ``prompt_token_ids``, ``completion_tokens`` that
  of the output's ``token_ids``: exact.
- **Finish.** vLLM's ``stop`` and ``length`` pass through; ``abort`` (the engine dropped the
  request) is a retryable ``backend_error``.
- **Cancellation and deadline.** Closing or cancelling the generator, or ``job.deadline_ms``
  passing, closes the engine's stream and calls ``engine.abort(request_id)``, so the GPU stops
  working on the request at once.
- **Not supported yet.** Tools (``tools``, tool calls in the conversation, ``tool`` messages)
  and structured output (a ``response_format`` other than ``{"type": "text"}``) would need the
  engine's tool parsers and guided decoding, whose interfaces differ between vLLM versions; such
  a job fails at once with ``invalid_request``, retryable (a node on another backend may serve
  it), before anything reaches the engine. The offer says so: its ``supported_parameters`` are the
  sampling parameters only (:attr:`VllmBackend.SUPPORTED_PARAMETERS`), so the coordinator does
  not route such jobs here.
- **Errors.** An engine error whose text speaks of the context length is
  ``context_length_exceeded``; a ``ValueError`` or ``TypeError`` (vLLM's validation) is a
  non-retryable ``invalid_request``; anything else, a dead engine included, a retryable
  ``backend_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import itertools
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any, ClassVar, Protocol

from node_agent.backends._common import check_model, job_json, loop_deadline, short_message
from node_agent.backends.base import BackendError, BackendEvent, Finished, TextDelta
from node_agent.backends.config import BackendConfig
from node_agent.backends.openai import is_context_length_error
from protocol import KNOWN_PARAMETERS, Clock, Job, Offer, RequestParameter, SystemClock

__all__ = [
    "ChatTokenizer",
    "CompletionOutputLike",
    "RequestOutputLike",
    "VllmBackend",
    "VllmEngine",
]

logger = logging.getLogger(__name__)


class CompletionOutputLike(Protocol):
    """What the backend reads of vLLM's ``CompletionOutput``."""

    @property
    def text(self) -> str: ...

    @property
    def token_ids(self) -> Sequence[int]: ...

    @property
    def finish_reason(self) -> str | None: ...


class RequestOutputLike(Protocol):
    """What the backend reads of vLLM's ``RequestOutput``."""

    @property
    def prompt_token_ids(self) -> Sequence[int] | None: ...

    @property
    def outputs(self) -> Sequence[CompletionOutputLike]: ...

    @property
    def finished(self) -> bool: ...


class VllmEngine(Protocol):
    """The part of vLLM's ``AsyncLLMEngine`` the backend uses."""

    def generate(
        self, prompt: Any, sampling_params: Any, request_id: str
    ) -> AsyncIterator[RequestOutputLike]: ...

    async def abort(self, request_id: str) -> None: ...

    def get_tokenizer(self) -> Any:
        """The engine's tokenizer, or an awaitable of it (vLLM's versions differ)."""
        ...


class ChatTokenizer(Protocol):
    """The part of a Hugging Face tokenizer the backend uses."""

    def apply_chat_template(
        self, conversation: list[dict[str, str]], *, tokenize: bool, add_generation_prompt: bool
    ) -> Any: ...

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]: ...


_request_numbers = itertools.count()


def _import_vllm() -> Any:
    try:
        return importlib.import_module("vllm")
    except ImportError as error:
        raise ImportError(
            "the vllm backend needs vLLM: pip install 'shareai[vllm]' (Linux with a CUDA GPU)"
        ) from error


# vLLM's own validation errors, matched by name: its classes cannot be imported here.
_VALIDATION_ERRORS = frozenset(
    {"ValueError", "TypeError", "VLLMValidationError", "VLLMClientError"}
)


def _error_from_engine(error: Exception) -> BackendError:
    # vLLM wraps unexpected errors (EngineGenerateError) with the cause as __cause__.
    text = f"{error} {error.__cause__ or ''}"
    detail = short_message(f"vLLM {type(error).__name__}: {text}")
    if is_context_length_error(text):
        return BackendError("context_length_exceeded", detail, retryable=False)
    if any(cls.__name__ in _VALIDATION_ERRORS for cls in type(error).__mro__):
        return BackendError("invalid_request", detail, retryable=False)
    return BackendError("backend_error", detail, retryable=True)


def _refuse_unsupported(job: Job) -> None:
    """Raise ``invalid_request`` (retryable elsewhere) for what this backend cannot do yet."""

    def unsupported(what: str) -> BackendError:
        return BackendError(
            "invalid_request", f"{what} not supported by the vllm backend yet", retryable=True
        )

    if job.tools_json is not None:
        raise unsupported("tools are")
    if job.messages is not None and any(
        message.tool_calls_json is not None or message.role == "tool" for message in job.messages
    ):
        raise unsupported("tool calls and tool messages are")
    if job.response_format_json is not None:
        response_format = job_json(job.response_format_json, "response_format_json")
        if response_format != {"type": "text"}:
            raise unsupported("response_format (structured output) is")


class _Sent:
    """How much of the engine's cumulative output has been yielded already."""

    def __init__(self) -> None:
        self.chars = 0
        self.tokens = 0
        self.finished = False

    def advance(self, completion: CompletionOutputLike) -> TextDelta | None:
        new_text = completion.text[self.chars :]
        new_ids = tuple(completion.token_ids[self.tokens :])
        if not new_text and not new_ids:
            return None
        self.chars += len(new_text)
        self.tokens += len(new_ids)
        return TextDelta(text=new_text, tokens=len(new_ids), token_ids=new_ids)


async def _next_output(
    outputs: AsyncIterator[RequestOutputLike], deadline: float
) -> RequestOutputLike:
    try:
        async with asyncio.timeout_at(deadline):
            output = await anext(outputs, None)
    except TimeoutError as error:
        raise BackendError("timeout", "the job's deadline passed", retryable=False) from error
    except Exception as error:
        raise _error_from_engine(error) from error
    if output is None:
        raise BackendError("backend_error", "the engine's stream ended unfinished", retryable=True)
    return output


def _finished(
    output: RequestOutputLike, completion: CompletionOutputLike, prompt_ids: list[int]
) -> Finished:
    reason = completion.finish_reason
    if reason == "abort":
        raise BackendError("backend_error", "the engine aborted the request", retryable=True)
    prompt_token_ids = output.prompt_token_ids
    return Finished(
        prompt_tokens=len(prompt_token_ids if prompt_token_ids is not None else prompt_ids),
        completion_tokens=len(completion.token_ids),
        finish_reason="length" if reason == "length" else "stop",
    )


class VllmBackend:
    """Serves ``config.model`` from a vLLM engine running in this process.

    Build one for real with :meth:`from_config`. The constructor takes the seams directly:
    ``engine`` (see :class:`VllmEngine`), ``sampling_params`` (a factory called with keyword
    arguments named as vLLM's ``SamplingParams``), ``tokenizer`` (fetched from the engine on the
    first job when ``None``), ``clock`` (wall time for deadlines) and ``owns_engine`` (whether
    :meth:`aclose` shuts the engine down).
    """

    SUPPORTED_PARAMETERS: ClassVar[frozenset[RequestParameter]] = KNOWN_PARAMETERS - {
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
    }
    """Everything but tools and structured output, which :func:`_refuse_unsupported` refuses."""

    def __init__(
        self,
        config: BackendConfig,
        *,
        engine: VllmEngine,
        sampling_params: Callable[..., Any],
        tokenizer: ChatTokenizer | None = None,
        clock: Clock | None = None,
        owns_engine: bool = False,
    ) -> None:
        if config.kind != "vllm":
            raise ValueError(f"VllmBackend needs a config of kind 'vllm', not {config.kind!r}")
        self._config = config
        self._offer = config.offer(self.SUPPORTED_PARAMETERS)
        self._engine = engine
        self._sampling_params = sampling_params
        self._tokenizer = tokenizer
        self._clock: Clock = clock or SystemClock()
        self._owns_engine = owns_engine

    @classmethod
    def from_config(cls, config: BackendConfig, *, clock: Clock | None = None) -> VllmBackend:
        """Start vLLM's engine for ``config`` (loads the weights; takes a while, needs a GPU).

        Raises ``ImportError`` with an install hint when vLLM is not installed, and ValueError
        when ``config.supported_parameters`` names one this backend does not support (before
        loading anything).
        """
        config.offer(cls.SUPPORTED_PARAMETERS)
        vllm = _import_vllm()
        options = config.vllm
        engine_args = vllm.AsyncEngineArgs(
            model=config.upstream_name,
            served_model_name=config.model,
            max_model_len=config.context_length,
            max_num_seqs=config.max_concurrency,
            gpu_memory_utilization=options.gpu_memory_utilization,
            tensor_parallel_size=options.tensor_parallel_size,
            dtype=options.dtype,
            enforce_eager=options.enforce_eager,
            seed=options.seed,
        )
        engine = vllm.AsyncLLMEngine.from_engine_args(engine_args)
        return cls(
            config,
            engine=engine,
            sampling_params=vllm.SamplingParams,
            clock=clock,
            owns_engine=True,
        )

    @property
    def kind(self) -> str:
        return "vllm"

    def offers(self) -> list[Offer]:
        return [self._offer]

    async def _get_tokenizer(self) -> ChatTokenizer:
        if self._tokenizer is None:
            tokenizer: Any = self._engine.get_tokenizer()
            if inspect.isawaitable(tokenizer):
                tokenizer = await tokenizer
            self._tokenizer = tokenizer
        return self._tokenizer

    def _prompt_token_ids(self, job: Job, tokenizer: ChatTokenizer) -> list[int]:
        if job.messages is not None:
            # Chat templates know "system"; few know the newer "developer" role.
            conversation = [
                {
                    "role": "system" if message.role == "developer" else message.role,
                    "content": message.content,
                }
                for message in job.messages
            ]
            text = tokenizer.apply_chat_template(
                conversation, tokenize=False, add_generation_prompt=True
            )
            if not isinstance(text, str):
                raise BackendError(
                    "internal_error", "the chat template did not render to text", retryable=True
                )
            return list(tokenizer.encode(text, add_special_tokens=False))
        return list(tokenizer.encode(job.prompt or ""))

    async def _prepare(self, job: Job) -> tuple[list[int], Any]:
        """The prompt's token ids and the engine's sampling parameters for ``job``."""
        try:
            tokenizer = await self._get_tokenizer()
            prompt_ids = self._prompt_token_ids(job, tokenizer)
        except BackendError:
            raise
        except Exception as error:
            raise _error_from_engine(error) from error
        room = self._config.context_length - len(prompt_ids)
        if room <= 0:
            raise BackendError(
                "context_length_exceeded",
                f"the prompt has {len(prompt_ids)} tokens; the context holds "
                f"{self._config.context_length}",
                retryable=False,
            )
        sampling = job.sampling
        try:
            params = self._sampling_params(
                n=1,
                max_tokens=min(sampling.max_tokens, room),
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                stop=list(sampling.stop) or None,
                seed=sampling.seed,
                presence_penalty=sampling.presence_penalty,
                frequency_penalty=sampling.frequency_penalty,
            )
        except Exception as error:
            raise _error_from_engine(error) from error
        return prompt_ids, params

    async def generate(self, job: Job) -> AsyncGenerator[BackendEvent, None]:
        check_model(job, self._config.model)
        _refuse_unsupported(job)
        deadline = loop_deadline(job, self._clock)
        prompt_ids, params = await self._prepare(job)
        request_id = f"{job.job_id}-{next(_request_numbers)}"
        outputs = self._engine.generate({"prompt_token_ids": prompt_ids}, params, request_id)
        sent = _Sent()
        try:
            while True:
                output = await _next_output(outputs, deadline)
                completion = output.outputs[0]
                delta = sent.advance(completion)
                if delta is not None:
                    yield delta
                if output.finished:
                    sent.finished = True
                    yield _finished(output, completion, prompt_ids)
                    return
        finally:
            await self._release(outputs, request_id, finished=sent.finished)

    async def _release(
        self, outputs: AsyncIterator[RequestOutputLike], request_id: str, *, finished: bool
    ) -> None:
        # Closing vLLM's generator aborts the request too; abort() explicitly as well, because
        # an engine may not, and aborting a finished or unknown request is a no-op.
        closer = getattr(outputs, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()
        if not finished:
            try:
                await self._engine.abort(request_id)
            except Exception:
                logger.exception("aborting vLLM request %s failed", request_id)

    async def aclose(self) -> None:
        """Shut the engine down when this backend started it (:meth:`from_config`)."""
        if not self._owns_engine:
            return
        for name in ("shutdown", "shutdown_background_loop"):
            shutdown = getattr(self._engine, name, None)
            if shutdown is not None:
                result = shutdown()
                if inspect.isawaitable(result):
                    await result
                return
