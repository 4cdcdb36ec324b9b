"""The vllm backend against a fake engine with vLLM's interface (the real one: tests/gpu)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import sys
import time
from typing import Any

import pytest

from node_agent.backends import BackendError, TextDelta, VllmBackend, make_backend
from protocol import KNOWN_PARAMETERS, ChatMessage

from .fake_vllm import BOS, FakeEngine, FakeTokenizer
from .helpers import MODEL, chat_job, collect, collect_until_error, completion_job, config

VLLM_INSTALLED = importlib.util.find_spec("vllm") is not None


def vllm_backend(engine: FakeEngine, *, with_tokenizer: bool = True, **fields: Any) -> VllmBackend:
    return VllmBackend(
        config("vllm", **fields),
        engine=engine,
        sampling_params=dict,
        tokenizer=engine.tokenizer if with_tokenizer else None,
    )


async def failure(backend: VllmBackend, job: Any = None) -> tuple[list[TextDelta], BackendError]:
    """Run a job that must fail: the deltas streamed before the error, and the error."""
    events, error = await collect_until_error(backend.generate(job or chat_job()))
    deltas = [event for event in events if isinstance(event, TextDelta)]
    assert deltas == events, "nothing but text may come before the error"
    return deltas, error


@pytest.mark.asyncio
async def test_deltas_are_the_new_part_of_each_cumulative_output() -> None:
    engine = FakeEngine(pieces=("Hel", "lo", " wor", "ld"))
    deltas, finished = await collect(vllm_backend(engine).generate(chat_job()))
    assert [(d.text, d.tokens, d.token_ids) for d in deltas] == [
        ("Hel", 1, (100,)),
        ("lo", 1, (101,)),
        (" wor", 1, (102,)),
        ("ld", 1, (103,)),
    ]
    (prompt, _, _) = engine.calls[0]
    assert finished.prompt_tokens == len(prompt["prompt_token_ids"])
    assert finished.completion_tokens == 4
    assert finished.finish_reason == "stop"


@pytest.mark.asyncio
async def test_several_tokens_per_step_and_tokens_without_text_are_counted_exactly() -> None:
    engine = FakeEngine(pieces=("a", "", "b", "", "", "c", "d"), tokens_per_step=2)
    deltas, finished = await collect(vllm_backend(engine).generate(chat_job()))
    assert [(d.text, d.tokens) for d in deltas] == [("a", 2), ("b", 2), ("c", 2), ("d", 1)]
    assert [i for d in deltas for i in d.token_ids or ()] == list(range(100, 107))
    assert finished.completion_tokens == sum(d.tokens for d in deltas) == 7


@pytest.mark.asyncio
async def test_a_step_with_tokens_but_no_text_yields_the_tokens() -> None:
    engine = FakeEngine(pieces=("", "é"))  # a character split over two byte tokens, say
    deltas, _ = await collect(vllm_backend(engine).generate(chat_job()))
    assert [(d.text, d.tokens) for d in deltas] == [("", 1), ("é", 1)]


@pytest.mark.parametrize(("engine_reason", "reason"), [("stop", "stop"), ("length", "length")])
@pytest.mark.asyncio
async def test_finish_reasons(engine_reason: str, reason: str) -> None:
    engine = FakeEngine(finish_reason=engine_reason)
    _, finished = await collect(vllm_backend(engine).generate(chat_job()))
    assert finished.finish_reason == reason


@pytest.mark.asyncio
async def test_an_engine_abort_is_a_retryable_backend_error() -> None:
    _, error = await failure(vllm_backend(FakeEngine(finish_reason="abort")))
    assert (error.code, error.retryable) == ("backend_error", True)


@pytest.mark.asyncio
async def test_chat_prompts_use_the_chat_template_once() -> None:
    engine = FakeEngine()
    job = chat_job(
        messages=[
            ChatMessage(role="developer", content="Be brief."),
            ChatMessage(role="user", content="Hi there"),
        ]
    )
    await collect(vllm_backend(engine).generate(job))
    tokenizer = engine.tokenizer
    assert tokenizer.templates == [
        (
            [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi there"},
            ],
            False,
            True,
        )
    ]
    rendered = "<|system|> Be brief. <|user|> Hi there <|assistant|>"
    assert tokenizer.encodes == [(rendered, False)]  # the template brings its own specials
    (prompt, _, _) = engine.calls[0]
    assert prompt == {"prompt_token_ids": tokenizer.encode(rendered, add_special_tokens=False)}


@pytest.mark.asyncio
async def test_completion_prompts_are_encoded_with_special_tokens() -> None:
    engine = FakeEngine()
    _, finished = await collect(vllm_backend(engine).generate(completion_job("one two three")))
    (prompt, _, _) = engine.calls[0]
    assert prompt["prompt_token_ids"][0] == BOS
    assert finished.prompt_tokens == 4


@pytest.mark.asyncio
async def test_sampling_parameters_are_passed_and_max_tokens_fits_the_context() -> None:
    engine = FakeEngine()
    backend = vllm_backend(engine, context_length=100)
    job = completion_job(
        "one two three",
        max_tokens=500,
        temperature=0.3,
        top_p=0.8,
        stop=["END"],
        seed=7,
        presence_penalty=0.1,
        frequency_penalty=0.2,
    )
    await collect(backend.generate(job))
    await collect(backend.generate(completion_job("one", max_tokens=10)))
    (_, params, first_id), (_, second_params, second_id) = engine.calls
    assert params == {
        "n": 1,
        "max_tokens": 96,  # 100 in the context, 4 in the prompt
        "temperature": 0.3,
        "top_p": 0.8,
        "stop": ["END"],
        "seed": 7,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
    }
    assert second_params["max_tokens"] == 10
    assert second_params["stop"] is None
    assert second_params["seed"] is None
    assert first_id != second_id
    assert first_id.startswith("job-1")


@pytest.mark.asyncio
async def test_a_prompt_that_fills_the_context_is_refused_before_the_engine() -> None:
    engine = FakeEngine()
    backend = vllm_backend(engine, context_length=4)
    _, error = await failure(backend, completion_job("one two three"))  # BOS + 3 = 4 tokens
    assert (error.code, error.retryable) == ("context_length_exceeded", False)
    assert engine.calls == []


@pytest.mark.parametrize(
    ("changes", "what"),
    [
        ({"tools_json": '[{"type":"function","function":{"name":"f"}}]'}, "tools are"),
        ({"response_format_json": '{"type":"json_object"}'}, "response_format"),
        (
            {"messages": [ChatMessage(role="assistant", content="", tool_calls_json="[]")]},
            "tool calls",
        ),
        (
            {"messages": [ChatMessage(role="tool", content="21", tool_call_id="call_1")]},
            "tool messages",
        ),
    ],
)
@pytest.mark.asyncio
async def test_tools_and_structured_output_are_refused_so_another_node_may_serve_them(
    changes: dict[str, Any], what: str
) -> None:
    engine = FakeEngine()
    _, error = await failure(vllm_backend(engine), chat_job().model_copy(update=changes))
    assert (error.code, error.retryable) == ("invalid_request", True)
    assert what in str(error)
    assert "not supported by the vllm backend yet" in str(error)
    assert engine.calls == []


def test_the_offer_leaves_out_tools_and_structured_output() -> None:
    # Exactly what the backend refuses (above) is missing from its offer.
    (offer,) = vllm_backend(FakeEngine()).offers()
    assert KNOWN_PARAMETERS - set(offer.supported_parameters) == {
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
    }
    assert offer.supported_parameters == sorted(offer.supported_parameters)
    (narrowed,) = vllm_backend(FakeEngine(), supported_parameters=["seed"]).offers()
    assert narrowed.supported_parameters == ["seed"]


def test_a_config_offering_tools_is_refused_before_the_engine_starts() -> None:
    offering_tools = ["seed", "tools", "response_format"]
    with pytest.raises(ValueError, match="vllm backend does not support 'response_format', 'to"):
        vllm_backend(FakeEngine(), supported_parameters=offering_tools)
    with pytest.raises(ValueError, match="vllm backend does not support 'response_format', 'to"):
        # Refused before vLLM is imported or an engine loads weights.
        VllmBackend.from_config(config("vllm", supported_parameters=offering_tools))


@pytest.mark.asyncio
async def test_a_text_response_format_is_served() -> None:
    job = chat_job().model_copy(update={"response_format_json": '{"type":"text"}'})
    deltas, finished = await collect(vllm_backend(FakeEngine()).generate(job))
    assert deltas
    assert finished.finish_reason == "stop"


@pytest.mark.parametrize(
    ("raised", "code", "retryable"),
    [
        (
            ValueError("The decoder prompt (length 9000) is longer than the maximum model length"),
            "context_length_exceeded",
            False,
        ),
        (ValueError("top_k must be -1 or at least 1"), "invalid_request", False),
        (RuntimeError("CUDA error: an illegal memory access"), "backend_error", True),
        (type("EngineDeadError", (Exception,), {})("engine loop died"), "backend_error", True),
        (type("VLLMValidationError", (Exception,), {})("bad"), "invalid_request", False),
    ],
)
@pytest.mark.asyncio
async def test_engine_errors_map_to_failure_codes(
    raised: Exception, code: str, retryable: bool
) -> None:
    engine = FakeEngine(error_after=1, error=raised)
    deltas, error = await failure(vllm_backend(engine))
    assert len(deltas) == 1
    assert (error.code, error.retryable) == (code, retryable)
    assert engine.aborted == [engine.calls[0][2]]


@pytest.mark.asyncio
async def test_a_stream_that_ends_unfinished_is_a_backend_error() -> None:
    deltas, error = await failure(vllm_backend(FakeEngine(end_early=True)))
    assert len(deltas) == 4
    assert error.code == "backend_error"


@pytest.mark.asyncio
async def test_a_finished_request_is_not_aborted_but_its_stream_is_closed() -> None:
    engine = FakeEngine()
    await collect(vllm_backend(engine).generate(chat_job()))
    request_id = engine.calls[0][2]
    assert engine.aborted == []
    assert engine.closed == [request_id]


@pytest.mark.asyncio
async def test_cancelling_the_consumer_aborts_the_engine_request() -> None:
    engine = FakeEngine(pieces=tuple("abcdef"), hang_after=2)
    backend = vllm_backend(engine)

    async def consume() -> None:
        events = backend.generate(chat_job())
        async with contextlib.aclosing(events):
            async for _ in events:
                pass

    task = asyncio.create_task(consume())
    async with asyncio.timeout(5):
        await engine.hanging.wait()  # the consumer waits on a silent engine
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    request_id = engine.calls[0][2]
    assert engine.aborted == [request_id]
    assert engine.closed == [request_id]


@pytest.mark.asyncio
async def test_closing_the_stream_early_aborts_the_engine_request() -> None:
    engine = FakeEngine(pieces=tuple("abcdef"))
    events = vllm_backend(engine).generate(chat_job())
    async with contextlib.aclosing(events):
        async for _ in events:
            break
    request_id = engine.calls[0][2]
    assert engine.aborted == [request_id]
    assert engine.closed == [request_id]


@pytest.mark.asyncio
async def test_the_deadline_aborts_a_silent_engine() -> None:
    engine = FakeEngine(hang_after=1)
    job = chat_job(deadline_ms=int(time.time() * 1000) + 200)
    deltas, error = await failure(vllm_backend(engine), job)
    assert len(deltas) == 1
    assert (error.code, error.retryable) == ("timeout", False)
    assert engine.aborted == [engine.calls[0][2]]


@pytest.mark.parametrize("async_tokenizer", [False, True])
@pytest.mark.asyncio
async def test_the_tokenizer_comes_from_the_engine_when_not_given(async_tokenizer: bool) -> None:
    engine = FakeEngine(async_tokenizer=async_tokenizer, tokenizer=FakeTokenizer())
    backend = vllm_backend(engine, with_tokenizer=False)
    _, finished = await collect(backend.generate(chat_job()))
    assert finished.completion_tokens == 4
    assert engine.tokenizer.templates  # the engine's tokenizer rendered the chat


@pytest.mark.asyncio
async def test_a_job_for_another_model_is_refused() -> None:
    engine = FakeEngine()
    _, error = await failure(vllm_backend(engine), chat_job(model="other"))
    assert error.code == "model_unavailable"
    assert engine.calls == []


@pytest.mark.asyncio
async def test_offers_kind_and_engine_ownership() -> None:
    engine = FakeEngine()
    backend = vllm_backend(engine, weights_hash="sha256:00ff", max_concurrency=32)
    assert backend.kind == "vllm"
    (offer,) = backend.offers()
    assert (offer.model, offer.weights_hash, offer.max_concurrency) == (MODEL, "sha256:00ff", 32)
    await backend.aclose()
    assert not engine.shut_down  # an injected engine belongs to whoever injected it
    owned = VllmBackend(config("vllm"), engine=engine, sampling_params=dict, owns_engine=True)
    await owned.aclose()
    assert engine.shut_down


def test_importing_the_module_does_not_import_vllm() -> None:
    assert "node_agent.backends.vllm" in sys.modules
    assert VLLM_INSTALLED or "vllm" not in sys.modules


@pytest.mark.skipif(VLLM_INSTALLED, reason="vLLM is installed here")
def test_without_vllm_building_the_backend_says_how_to_install_it() -> None:
    with pytest.raises(ImportError, match=r"shareai\[vllm\]"):
        make_backend(config("vllm"))
