"""Inference backends of the node agent, and the coalescing of their output into chunks.

Three kinds, one seam (:class:`InferenceBackend`); each declares the request parameters it
supports (its class's ``SUPPORTED_PARAMETERS``, by kind :func:`backend_parameters`), which its
offers list unless the config narrows them (``BackendConfig.supported_parameters``):

- ``mock`` (:class:`MockBackend`): deterministic lorem text at a set latency and speed, for tests
  and demos; its offers carry ``weights_hash="mock"`` so the coordinator can show them as mock;
  supports every parameter (it emulates tools and JSON mode);
- ``openai`` (:class:`OpenAIBackend`): any OpenAI-compatible server (vLLM's or SGLang's server,
  llama.cpp, Ollama, TGI) over httpx streaming; supports every parameter (it passes them on);
- ``vllm`` (:class:`VllmBackend`): vLLM's async engine in this process, exact token ids. vLLM is
  the optional extra ``shareai[vllm]`` and is imported only when such a backend is built. Supports
  the sampling parameters, not tools or ``response_format`` (yet).

:func:`make_backend` builds one from a :class:`BackendConfig`; :func:`coalesce` merges a
backend's deltas into chunks (16 tokens or 10 ms, the first delta at once).
"""

from __future__ import annotations

from node_agent.backends.base import (
    BackendError,
    BackendEvent,
    FailureCode,
    Finished,
    InferenceBackend,
    TextDelta,
)
from node_agent.backends.coalesce import coalesce, merge_deltas
from node_agent.backends.config import BackendConfig, BackendKind, MockOptions, VllmOptions
from node_agent.backends.mock import MOCK_WEIGHTS_HASH, MockBackend, mock_completion
from node_agent.backends.openai import OpenAIBackend
from node_agent.backends.vllm import VllmBackend
from protocol import Clock, RequestParameter

__all__ = [
    "MOCK_WEIGHTS_HASH",
    "BackendConfig",
    "BackendError",
    "BackendEvent",
    "BackendKind",
    "FailureCode",
    "Finished",
    "InferenceBackend",
    "MockBackend",
    "MockOptions",
    "OpenAIBackend",
    "TextDelta",
    "VllmBackend",
    "VllmOptions",
    "backend_parameters",
    "coalesce",
    "make_backend",
    "merge_deltas",
    "mock_completion",
]


def backend_parameters(kind: BackendKind) -> frozenset[RequestParameter]:
    """The request parameters a backend of ``kind`` supports (what its offers list by default)."""
    if kind == "mock":
        return MockBackend.SUPPORTED_PARAMETERS
    if kind == "openai":
        return OpenAIBackend.SUPPORTED_PARAMETERS
    return VllmBackend.SUPPORTED_PARAMETERS


def make_backend(config: BackendConfig, *, clock: Clock | None = None) -> InferenceBackend:
    """The backend ``config.kind`` names, serving ``config.model``.

    ``clock`` replaces the system clock (deadlines; the mock's schedule). A ``vllm`` backend
    starts its engine here (loading the weights), and raises ``ImportError`` with an install hint
    when vLLM is missing. Raises ValueError when ``config.supported_parameters`` names a parameter
    the backend does not support. The caller owns the backend and must ``await backend.aclose()``.
    """
    if config.kind == "mock":
        return MockBackend(config, clock=clock)
    if config.kind == "openai":
        return OpenAIBackend(config, clock=clock)
    return VllmBackend.from_config(config, clock=clock)
