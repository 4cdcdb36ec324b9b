"""The ``openai`` backend in front of a real server and a real model.

``python -m llama_cpp.server`` serves SmolLM2-135M-Instruct (a 98 MB GGUF file) on loopback; a
node on the ``openai`` backend fronts it; the customer uses the official ``openai`` SDK. Both
come with the ``local-model`` extra, which ``scripts/test`` installs: without it these tests
fail, they are never skipped.

Requests are short (8 tokens, temperature 0, so greedy and deterministic) and the context small:
the whole module takes a few seconds on two cores.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from shareai.local_model import (
    SMOLLM2_MODEL,
    LlamaCppServer,
    LocalModelMissing,
    check_local_model,
)
from tests.e2e.network import Network, free_port, network

MODEL = SMOLLM2_MODEL
N_CTX = 512
MAX_TOKENS = 8
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]


def gguf_path() -> Path:
    try:
        return check_local_model()
    except LocalModelMissing as error:
        pytest.fail(f"the local-model extra is missing: {error}", pytrace=False)


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppServer]:
    log = tmp_path_factory.mktemp("llama") / "llama-server.log"
    server = LlamaCppServer(model_path=gguf_path(), port=free_port(), log=log, n_ctx=N_CTX)
    with server:  # waits (60 s at most) until GET /v1/models answers; SIGTERM at the end
        yield server


@pytest.fixture(scope="module")
def llama_network(
    llama_server: LlamaCppServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Network]:
    with network(tmp_path_factory.mktemp("net")) as net:
        net.add_node(
            "llama",
            f"""[[models]]
name = "{MODEL}"
backend = "openai"
upstream_url = "{llama_server.base_url}"
upstream_model = "{llama_server.alias}"
price_in_usd_per_1m = "0.01"
price_out_usd_per_1m = "0.02"
max_concurrency = 1
context_length = {N_CTX}
""",
        )
        net.wait_for_nodes(MODEL, 1)
        yield net


def customer(net: Network) -> openai.OpenAI:
    return openai.OpenAI(base_url=net.base_url, api_key=net.customer_key, max_retries=0, timeout=60)


def direct(server: LlamaCppServer) -> openai.OpenAI:
    """A client of the llama.cpp server itself, bypassing ShareAI."""
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=60)


def count_prompt_tokens(messages: list[ChatCompletionMessageParam]) -> int:
    """The prompt's length in SmolLM2's own tokens, counted the way llama.cpp's server does it.

    The GGUF file holds the tokenizer and the chat template: render the template (with the
    generation prompt), then tokenize the text with its special tokens, adding a BOS only if
    the template did not (``llama_cpp.llama_chat_format``'s handler does exactly this).
    """
    model_path = gguf_path()  # a clear failure first, if the extra is missing
    from llama_cpp import Llama  # noqa: PLC0415
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter  # noqa: PLC0415

    vocab = Llama(model_path=str(model_path), vocab_only=True, verbose=False)
    formatter = Jinja2ChatFormatter(
        template=vocab.metadata["tokenizer.chat_template"],
        eos_token=vocab._model.token_get_text(vocab.token_eos()),
        bos_token=vocab._model.token_get_text(vocab.token_bos()),
    )
    rendered = formatter(messages=list(messages))  # type: ignore[arg-type]
    tokens = vocab.tokenize(
        rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True
    )
    return len(tokens)


def test_a_chat_completion_is_the_models_own_answer(
    llama_network: Network, llama_server: LlamaCppServer
) -> None:
    response = customer(llama_network).chat.completions.with_raw_response.create(
        model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0
    )
    assert response.headers["x-shareai-node"].startswith("nd_")
    reply = response.parse()
    text = reply.choices[0].message.content
    assert text
    assert text.strip()
    assert reply.choices[0].finish_reason in {"stop", "length"}
    assert reply.usage is not None
    assert 0 < reply.usage.completion_tokens <= MAX_TOKENS

    # Greedy decoding is deterministic: asking the server directly gives the same words.
    expected = direct(llama_server).chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0
    )
    assert text == expected.choices[0].message.content
    assert reply.choices[0].finish_reason == expected.choices[0].finish_reason
    assert expected.usage is not None
    # The server streams to the node without usage, so the node counts one token per content
    # delta: exact for this ASCII answer (a character split across tokens would be held back).
    assert reply.usage.completion_tokens == expected.usage.completion_tokens


def test_a_streamed_answer_arrives_in_several_deltas(
    llama_network: Network, llama_server: LlamaCppServer
) -> None:
    stream = customer(llama_network).chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=MAX_TOKENS,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    deltas: list[str] = []
    finish_reasons: list[str] = []
    usage = None
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                deltas.append(choice.delta.content)
            if choice.finish_reason:
                finish_reasons.append(choice.finish_reason)
        if chunk.usage is not None:
            usage = chunk.usage
    # The node passes the first token on alone and merges the rest over 10 ms at most.
    assert len(deltas) >= 2, deltas
    assert len(finish_reasons) == 1
    assert usage is not None
    assert 0 < usage.completion_tokens <= MAX_TOKENS

    expected = direct(llama_server).chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0
    )
    assert "".join(deltas) == expected.choices[0].message.content


def test_the_prompt_counted_with_the_models_tokenizer_matches_the_server(
    llama_server: LlamaCppServer,
) -> None:
    counted = count_prompt_tokens(MESSAGES)
    assert counted > 20  # the template adds a default system prompt
    reply = direct(llama_server).chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=1, temperature=0
    )
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == counted
    longer: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "Name a colour. Déjà vu, 1234567!"},
    ]
    reply = direct(llama_server).chat.completions.create(
        model=MODEL, messages=longer, max_tokens=1, temperature=0
    )
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == count_prompt_tokens(longer)


@pytest.mark.xfail(
    reason="llama_cpp.server ignores stream_options.include_usage, the openai backend always"
    " streams from its upstream, so the node reports 0 prompt tokens (and warns);"
    " coordinator-side counting (coordinator/tokens.py, the settlement issue) will fix it",
    strict=True,
)
def test_the_network_reports_the_prompt_tokens_the_model_saw(llama_network: Network) -> None:
    reply = customer(llama_network).chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0
    )
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == count_prompt_tokens(MESSAGES)
