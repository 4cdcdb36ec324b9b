"""The vllm backend on the real vLLM engine, with a tiny random-weight Llama built here.

No download: the tokenizer (byte-level BPE) is trained on a paragraph and the model is initialised
at random, both saved to a temporary folder that vLLM loads like any local model. The output is
gibberish; what is tested is the plumbing: streaming, exact token counts, finish reasons, the
context limit, greedy determinism and that an abandoned request leaves the engine serving.

Run with ``pytest tests/gpu`` (see conftest.py); the default run does not collect this file.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from pathlib import Path
from typing import Any

import pytest

from node_agent.backends import (
    BackendConfig,
    BackendError,
    TextDelta,
    VllmBackend,
    VllmOptions,
    coalesce,
)

from ..node_agent.backends.helpers import chat_job, collect, completion_job

pytestmark = [pytest.mark.gpu, pytest.mark.filterwarnings("default")]

MODEL = "tiny-random-llama"
CONTEXT_TOKENS = 256
CORPUS = (
    "The node agent connects out to the coordinator, announces the models it serves and streams "
    "the answers back, chunk by chunk, while the coordinator meters every token and pays the "
    "provider, the builder and the platform. Providers set their prices; customers call one API."
)
CHAT_TEMPLATE = (
    "{% for message in messages %}<s>{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-llama")
    tokenizers: Any = importlib.import_module("tokenizers")
    transformers: Any = importlib.import_module("transformers")
    torch: Any = importlib.import_module("torch")

    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator([CORPUS] * 20, trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(directory)

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(fast),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=CONTEXT_TOKENS,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        tie_word_embeddings=False,
    )
    transformers.LlamaForCausalLM(config).to(torch.float16).save_pretrained(directory)
    return directory


@pytest.mark.asyncio
async def test_the_real_engine_streams_exact_counts(model_dir: Path) -> None:
    config = BackendConfig(
        kind="vllm",
        model=MODEL,
        upstream_model=str(model_dir),
        context_length=CONTEXT_TOKENS,
        max_concurrency=4,
        vllm=VllmOptions(gpu_memory_utilization=0.25, enforce_eager=True, dtype="float16"),
    )
    backend = VllmBackend.from_config(config)
    try:
        async with asyncio.timeout(300):
            await _check_streaming_and_counts(backend)
            await _check_greedy_determinism(backend)
            await _check_the_context_limit(backend)
            await _check_an_abandoned_request_leaves_the_engine_serving(backend)
    finally:
        await backend.aclose()


async def _check_streaming_and_counts(backend: VllmBackend) -> None:
    job = chat_job("Hello there", model=MODEL, max_tokens=12, temperature=0.0)
    deltas, finished = await collect(backend.generate(job))
    assert deltas
    token_ids = [token for delta in deltas for token in delta.token_ids or ()]
    assert finished.completion_tokens == len(token_ids) == sum(d.tokens for d in deltas)
    assert finished.completion_tokens <= 12
    assert finished.finish_reason in ("stop", "length")
    if finished.finish_reason == "length":
        assert finished.completion_tokens == 12

    tokenizer: Any = await backend._get_tokenizer()
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello there"}], tokenize=False, add_generation_prompt=True
    )
    assert finished.prompt_tokens == len(tokenizer.encode(rendered, add_special_tokens=False))
    assert "".join(d.text for d in deltas) == tokenizer.decode(token_ids, skip_special_tokens=True)

    merged = [event async for event in coalesce(backend.generate(job))]
    assert merged[-1] == finished
    assert "".join(e.text for e in merged if isinstance(e, TextDelta)) == "".join(
        d.text for d in deltas
    )


async def _check_greedy_determinism(backend: VllmBackend) -> None:
    job = completion_job("The node agent", model=MODEL, max_tokens=16, temperature=0.0)
    first, _ = await collect(backend.generate(job))
    second, _ = await collect(backend.generate(job))
    assert [d.token_ids for d in first] == [d.token_ids for d in second]


async def _check_the_context_limit(backend: VllmBackend) -> None:
    job = completion_job("provider " * (CONTEXT_TOKENS * 2), model=MODEL, max_tokens=4)
    with pytest.raises(BackendError) as raised:
        await anext(backend.generate(job))
    assert raised.value.code == "context_length_exceeded"


async def _check_an_abandoned_request_leaves_the_engine_serving(backend: VllmBackend) -> None:
    long_job = completion_job("The coordinator", model=MODEL, max_tokens=200, temperature=1.0)
    events = backend.generate(long_job)
    async with contextlib.aclosing(events):
        async for _ in events:
            break  # abandon it after the first token: the engine request is aborted
    _, finished = await collect(
        backend.generate(completion_job("Providers", model=MODEL, max_tokens=4))
    )
    assert finished.completion_tokens <= 4
