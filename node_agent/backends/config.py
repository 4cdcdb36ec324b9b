"""What one served model needs to build its backend: :class:`BackendConfig`.

One ``BackendConfig`` is one model a node offers: which engine runs it (``kind``), the name it is
offered under, where the engine is (``base_url`` for ``openai``, a weights path for ``vllm``),
its limits, its prices and, optionally, fewer request parameters than the engine supports.
:func:`node_agent.backends.make_backend` turns it into an
:class:`~node_agent.backends.base.InferenceBackend`.

Values are validated when the config is built (pydantic raises ``ValidationError``), so a bad
``node.toml`` fails at start-up, not on the first job.
"""

from __future__ import annotations

from collections.abc import Set
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from protocol import Offer, RequestParameter

__all__ = ["BackendConfig", "BackendKind", "MockOptions", "VllmOptions"]

BackendKind = Literal["mock", "openai", "vllm"]


class MockOptions(BaseModel):
    """How the mock backend behaves (ignored by the other kinds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    time_to_first_token_ms: Annotated[int, Field(ge=0, le=600_000)] = 50
    """Delay before the first token."""
    tokens_per_s: Annotated[float, Field(ge=0.0, le=1_000_000.0)] = 50.0
    """Speed after the first token; 0 means no delay at all (as fast as the loop goes)."""
    output_tokens: Annotated[int, Field(ge=1, le=1_000_000)] = 64
    """The natural length of an answer: a job asking for fewer tokens ends with ``length``."""
    failure_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    """Share of jobs that fail, chosen by a hash of ``(failure_seed, job_id)``: deterministic."""
    failure_seed: int = 0
    failure_after_tokens: Annotated[int, Field(ge=0)] = 0
    """A failing job first streams this many tokens (0: it fails before the first token)."""
    stall_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    """Share of jobs whose first token comes ``stall_ms`` late (a tail-latency spike), chosen by
    a hash of ``("stall", failure_seed, job_id)``: deterministic, independent of failures."""
    stall_ms: Annotated[int, Field(ge=0, le=600_000)] = 0


class VllmOptions(BaseModel):
    """Engine settings for the in-process vLLM backend (ignored by the other kinds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu_memory_utilization: Annotated[float, Field(gt=0.0, le=1.0)] = 0.9
    tensor_parallel_size: Annotated[int, Field(ge=1, le=64)] = 1
    dtype: str = "auto"
    enforce_eager: bool = False
    """Skip CUDA graph capture: slower decoding, much faster start (tests, small GPUs)."""
    seed: int = 0


class BackendConfig(BaseModel):
    """One model this node serves, and the engine that serves it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: BackendKind
    model: Annotated[str, Field(min_length=1, max_length=256)]
    """The name the model is offered under (the ``model`` of offers and jobs)."""
    upstream_model: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    """``openai``: the model's name at the upstream server. ``vllm``: a Hugging Face repo id or a
    local directory with the weights. Defaults to ``model``. Unused by ``mock``."""
    base_url: str | None = None
    """``openai`` only, required there: the server's root, e.g. ``http://127.0.0.1:8000``
    (a trailing ``/v1`` is accepted and dropped)."""
    api_key: SecretStr | None = None
    """``openai`` only: sent as ``Authorization: Bearer ...`` when set."""
    endpoint: Literal["auto", "chat"] = "auto"
    """``openai`` only: ``auto`` sends chat jobs to ``/v1/chat/completions`` and completion jobs to
    ``/v1/completions``; ``chat`` refuses completion jobs (for servers without ``/v1/completions``).
    """
    connect_timeout_s: Annotated[float, Field(gt=0.0, le=600.0)] = 5.0
    read_timeout_s: Annotated[float, Field(gt=0.0, le=3600.0)] = 60.0
    """``openai`` only: the longest silence between two reads of the upstream response."""
    weights_hash: Annotated[str, Field(max_length=128)] | None = None
    """Announced in the offer when known. The mock backend always announces ``"mock"``."""
    context_length: Annotated[int, Field(ge=1, le=100_000_000)]
    max_concurrency: Annotated[int, Field(ge=1, le=4096)] = 8
    price_input_micro_usd_per_1m: Annotated[int, Field(ge=0, le=10**12)] = 0
    price_output_micro_usd_per_1m: Annotated[int, Field(ge=0, le=10**12)] = 0
    supported_parameters: frozenset[RequestParameter] | None = None
    """The request parameters to offer, when fewer than the backend supports (an upstream that
    cannot do tools, say); ``None`` offers all the backend supports. Each must be one of those."""
    mock: MockOptions = MockOptions()
    vllm: VllmOptions = VllmOptions()

    @model_validator(mode="after")
    def _openai_needs_a_url(self) -> Self:
        if self.kind == "openai":
            if not self.base_url:
                raise ValueError("an openai backend needs base_url")
            if not self.base_url.startswith(("http://", "https://")):
                raise ValueError("base_url must start with http:// or https://")
        return self

    @property
    def upstream_name(self) -> str:
        """``upstream_model`` or, when unset, ``model``."""
        return self.upstream_model or self.model

    def offer(self, supports: Set[RequestParameter], *, weights_hash: str | None = None) -> Offer:
        """The offer announced for this model by a backend that supports ``supports``.

        The offer lists ``supported_parameters`` when set, else all of ``supports`` (sorted).
        ``weights_hash`` overrides the configured one. Raises ValueError when
        ``supported_parameters`` names a parameter outside ``supports``.
        """
        offered = supports if self.supported_parameters is None else self.supported_parameters
        unsupported = sorted(offered - supports)
        if unsupported:
            raise ValueError(
                f"the {self.kind} backend does not support {', '.join(map(repr, unsupported))}"
            )
        return Offer(
            model=self.model,
            weights_hash=weights_hash if weights_hash is not None else self.weights_hash,
            context_length=self.context_length,
            max_concurrency=self.max_concurrency,
            price_input_micro_usd_per_1m=self.price_input_micro_usd_per_1m,
            price_output_micro_usd_per_1m=self.price_output_micro_usd_per_1m,
            supported_parameters=sorted(offered),
        )
