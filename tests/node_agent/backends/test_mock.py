"""The mock backend: same job, same answer; the configured schedule, failures and limits."""

from __future__ import annotations

import json
from typing import Any

import pytest

from node_agent.backends import (
    MOCK_WEIGHTS_HASH,
    BackendError,
    MockBackend,
    TextDelta,
    make_backend,
    mock_completion,
)
from node_agent.backends.config import MockOptions
from protocol import KNOWN_PARAMETERS, ChatMessage, Job, ManualClock, Offer, ToolCallDelta

from .helpers import MODEL, chat_job, collect, collect_until_error, completion_job, config


class SleepRecorder:
    """A ``sleep`` that moves a manual clock instead of waiting, and remembers each wait."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.sleeps: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(seconds)


def mock(**options: object) -> tuple[MockBackend, ManualClock, SleepRecorder]:
    clock = ManualClock(wall_s=1_767_225_600.0)
    sleep = SleepRecorder(clock)
    mock_options = {"time_to_first_token_ms": 0, "tokens_per_s": 0.0, **options}
    backend = MockBackend(config("mock", mock=mock_options), clock=clock, sleep=sleep)
    return backend, clock, sleep


def deadline_after(clock: ManualClock, seconds: float) -> int:
    return int((clock.time() + seconds) * 1000)


@pytest.mark.asyncio
async def test_same_job_gives_the_same_text_on_any_backend_and_any_job_id() -> None:
    first, _, _ = mock()
    second, _, _ = mock()
    deltas_a, finished_a = await collect(first.generate(chat_job("hello there", job_id="a")))
    deltas_b, finished_b = await collect(second.generate(chat_job("hello there", job_id="b")))
    assert deltas_a == deltas_b
    assert finished_a == finished_b
    other, _ = await collect(first.generate(chat_job("something else")))
    assert "".join(d.text for d in other) != "".join(d.text for d in deltas_a)
    reseeded, _ = await collect(first.generate(chat_job("hello there", seed=7)))
    assert "".join(d.text for d in reseeded) != "".join(d.text for d in deltas_a)


@pytest.mark.asyncio
async def test_one_token_per_word_piece_and_words_of_the_prompt() -> None:
    backend, _, _ = mock(output_tokens=20)
    job = chat_job(
        messages=[
            ChatMessage(role="system", content="You are terse."),
            ChatMessage(role="user", content="Name three colours please"),
        ]
    )
    deltas, finished = await collect(backend.generate(job))
    text = "".join(delta.text for delta in deltas)
    assert all(delta.tokens == 1 for delta in deltas)
    assert len(text.split()) == len(deltas) == finished.completion_tokens == 20
    assert finished.prompt_tokens == 3 + 4
    assert finished.finish_reason == "stop"
    assert text == mock_completion(job, MockOptions(output_tokens=20)).text


@pytest.mark.asyncio
async def test_completion_jobs_count_the_prompts_words() -> None:
    backend, _, _ = mock(output_tokens=5)
    _, finished = await collect(backend.generate(completion_job("one two three four")))
    assert finished.prompt_tokens == 4
    assert finished.completion_tokens == 5


@pytest.mark.asyncio
async def test_max_tokens_cuts_the_answer_with_length() -> None:
    backend, _, _ = mock(output_tokens=50)
    full, _ = await collect(backend.generate(chat_job(max_tokens=50)))
    deltas, finished = await collect(backend.generate(chat_job(max_tokens=12)))
    assert finished.finish_reason == "length"
    assert finished.completion_tokens == len(deltas) == 12
    assert deltas == full[:12]


@pytest.mark.asyncio
async def test_a_stop_sequence_ends_the_text_before_it() -> None:
    backend, _, _ = mock(output_tokens=40)
    full, _ = await collect(backend.generate(chat_job()))
    full_text = "".join(delta.text for delta in full)
    stop = full[10].text + full[11].text  # occurs at word 10 at the latest
    deltas, finished = await collect(backend.generate(chat_job(stop=["zzz-never", stop])))
    text = "".join(delta.text for delta in deltas)
    assert finished.finish_reason == "stop"
    assert text == full_text[: full_text.index(stop)]
    assert stop not in text
    assert finished.completion_tokens == len(deltas) <= 10


@pytest.mark.asyncio
async def test_a_stop_sequence_inside_a_word_keeps_the_words_start() -> None:
    backend, _, _ = mock(output_tokens=10)
    full, _ = await collect(backend.generate(chat_job()))
    word = full[3].text  # " word" with its leading space
    stop = word[2:]
    full_text = "".join(delta.text for delta in full)
    deltas, _ = await collect(backend.generate(chat_job(stop=[stop])))
    assert "".join(delta.text for delta in deltas) == full_text[: full_text.index(stop)]


@pytest.mark.asyncio
async def test_time_to_first_token_then_a_steady_schedule() -> None:
    backend, _, sleep = mock(time_to_first_token_ms=250, tokens_per_s=20.0, output_tokens=5)
    deltas, _ = await collect(backend.generate(chat_job()))
    assert len(deltas) == 5
    assert sleep.sleeps == pytest.approx([0.25, 0.05, 0.05, 0.05, 0.05])


@pytest.mark.asyncio
async def test_the_schedule_does_not_drift_when_the_consumer_is_slow() -> None:
    backend, clock, sleep = mock(time_to_first_token_ms=100, tokens_per_s=10.0, output_tokens=4)
    events = backend.generate(chat_job())
    assert isinstance(await anext(events), TextDelta)
    clock.advance(0.25)  # the consumer took 2.5 token intervals to come back
    assert isinstance(await anext(events), TextDelta)  # overdue: no wait
    assert isinstance(await anext(events), TextDelta)  # overdue: no wait
    assert isinstance(await anext(events), TextDelta)  # due 0.05 s later
    assert sleep.sleeps == pytest.approx([0.1, 0.05])
    await events.aclose()


@pytest.mark.asyncio
async def test_a_deadline_inside_the_answer_is_a_timeout() -> None:
    backend, clock, sleep = mock(time_to_first_token_ms=100, tokens_per_s=10.0, output_tokens=50)
    job = chat_job(deadline_ms=deadline_after(clock, 0.45))
    events, error = await collect_until_error(backend.generate(job))
    assert error.code == "timeout"
    assert not error.retryable
    assert len(events) == 4  # at 0.1, 0.2, 0.3 and 0.4 s
    assert sum(sleep.sleeps) == pytest.approx(0.45)


@pytest.mark.asyncio
async def test_a_passed_deadline_fails_before_any_token() -> None:
    backend, clock, sleep = mock()
    job = chat_job(deadline_ms=deadline_after(clock, -1.0))
    with pytest.raises(BackendError) as raised:
        await anext(backend.generate(job))
    assert raised.value.code == "timeout"
    assert sleep.sleeps == []


@pytest.mark.asyncio
async def test_failure_rate_one_fails_every_job_before_its_first_token() -> None:
    backend, _, _ = mock(failure_rate=1.0)
    with pytest.raises(BackendError) as raised:
        await anext(backend.generate(chat_job()))
    assert raised.value.code == "backend_error"
    assert raised.value.retryable


@pytest.mark.asyncio
async def test_a_failing_job_can_stream_some_tokens_first() -> None:
    backend, _, _ = mock(failure_rate=1.0, failure_after_tokens=3, output_tokens=10)
    events, error = await collect_until_error(backend.generate(chat_job()))
    assert "mock failure" in str(error)
    assert len(events) == 3
    assert all(isinstance(event, TextDelta) for event in events)


def test_failures_are_chosen_by_seed_and_job_id_alone() -> None:
    jobs = [chat_job(job_id=f"job-{n}") for n in range(1000)]

    def failing(seed: int) -> set[str]:
        backend, _, _ = mock(failure_rate=0.3, failure_seed=seed)
        return {job.job_id for job in jobs if backend.will_fail(job)}

    assert failing(1) == failing(1)
    reordered, _, _ = mock(failure_rate=0.3, failure_seed=1)
    assert failing(1) == {job.job_id for job in reversed(jobs) if reordered.will_fail(job)}
    assert failing(1) != failing(2)
    assert 200 <= len(failing(1)) <= 400  # a hash, so this is fixed, not a matter of luck
    assert failing(0)
    assert not mock(failure_rate=0.0)[0].will_fail(jobs[0])


@pytest.mark.asyncio
async def test_a_stalled_job_gets_its_first_token_late() -> None:
    jobs = [chat_job(job_id=f"job-{n}") for n in range(400)]
    backend, clock, _ = mock(stall_rate=0.25, stall_ms=3000, time_to_first_token_ms=10)
    stalled = [job for job in jobs if backend.will_stall(job)]
    assert 60 <= len(stalled) <= 140  # a hash of the job id: fixed, not luck
    both, _, _ = mock(stall_rate=0.25, failure_rate=0.25)
    assert {j.job_id for j in jobs if both.will_stall(j)} != {
        j.job_id for j in jobs if both.will_fail(j)
    }  # independent draws, not the same jobs
    start = clock.monotonic()
    await anext(backend.generate(stalled[0]))
    assert clock.monotonic() - start == pytest.approx(3.010)
    quick = next(job for job in jobs if not backend.will_stall(job))
    start = clock.monotonic()
    await anext(backend.generate(quick))
    assert clock.monotonic() - start == pytest.approx(0.010)
    assert not mock(stall_rate=0.0)[0].will_stall(jobs[0])


@pytest.mark.asyncio
async def test_offers_are_labelled_mock() -> None:
    backend, _, _ = mock()
    assert backend.kind == "mock"
    assert backend.offers() == [
        Offer(
            model=MODEL,
            weights_hash=MOCK_WEIGHTS_HASH,
            context_length=8192,
            max_concurrency=8,
            price_input_micro_usd_per_1m=0,
            price_output_micro_usd_per_1m=0,
            supported_parameters=sorted(KNOWN_PARAMETERS),
        )
    ]
    assert MOCK_WEIGHTS_HASH == "mock"


def test_the_mock_offers_every_parameter_unless_its_config_narrows_them() -> None:
    # It emulates tools and JSON mode, so it supports every parameter a job can carry.
    assert MockBackend.SUPPORTED_PARAMETERS == KNOWN_PARAMETERS
    narrowed = MockBackend(config("mock", supported_parameters=["tools", "seed"]))
    assert narrowed.offers()[0].supported_parameters == ["seed", "tools"]
    assert (
        MockBackend(config("mock", supported_parameters=[])).offers()[0].supported_parameters == []
    )


@pytest.mark.asyncio
async def test_a_job_for_another_model_is_refused_as_unavailable() -> None:
    backend, _, _ = mock()
    with pytest.raises(BackendError) as raised:
        await anext(backend.generate(chat_job(model="other-model")))
    assert raised.value.code == "model_unavailable"
    assert raised.value.retryable


@pytest.mark.asyncio
async def test_make_backend_builds_a_mock_with_the_configured_prices() -> None:
    backend = make_backend(
        config(
            "mock",
            weights_hash="ignored-for-mock",
            price_input_micro_usd_per_1m=150_000,
            price_output_micro_usd_per_1m=600_000,
            mock={"time_to_first_token_ms": 0, "tokens_per_s": 0, "output_tokens": 3},
        )
    )
    assert isinstance(backend, MockBackend)
    (offer,) = backend.offers()
    assert offer.weights_hash == "mock"
    assert offer.price_output_micro_usd_per_1m == 600_000
    deltas, finished = await collect(backend.generate(chat_job()))
    assert len(deltas) == finished.completion_tokens == 3
    await backend.aclose()


def test_the_mock_refuses_a_config_of_another_kind() -> None:
    with pytest.raises(ValueError, match="mock"):
        MockBackend(config("openai", base_url="http://127.0.0.1:1"))


# --- tools and JSON mode (mock behaviour, documented in node_agent/backends/mock.py) ----------

MOCK_TOOLS = (
    '[{"type":"function","function":{"name":"get_weather"}},'
    '{"type":"function","function":{"name":"get_time"}}]'
)


def tool_job(choice: str | None, **sampling: Any) -> Job:
    return chat_job("What now?", **sampling).model_copy(
        update={"tools_json": MOCK_TOOLS, "tool_choice_json": choice}
    )


@pytest.mark.parametrize(
    ("choice", "name"),
    [
        ('"required"', "get_weather"),
        ('{"type":"function","function":{"name":"get_time"}}', "get_time"),
    ],
)
@pytest.mark.asyncio
async def test_a_required_or_named_tool_is_called_with_empty_arguments(
    choice: str, name: str
) -> None:
    backend, _, _ = mock()
    deltas, finished = await collect(backend.generate(tool_job(choice)))
    assert [d.text for d in deltas] == ["", ""]
    first, second = (d.tool_calls for d in deltas)
    assert len(first) == len(second) == 1
    assert (first[0].index, first[0].name, first[0].arguments) == (0, name, "")
    assert first[0].id is not None
    assert first[0].id.startswith("call_")
    assert second[0] == ToolCallDelta(index=0, arguments="{}")
    assert (finished.finish_reason, finished.completion_tokens) == ("tool_calls", 2)
    again, _ = await collect(backend.generate(tool_job(choice)))
    assert again == deltas  # deterministic, the call id included


@pytest.mark.asyncio
async def test_a_tool_call_cut_by_max_tokens_ends_with_length() -> None:
    backend, _, _ = mock()
    deltas, finished = await collect(backend.generate(tool_job('"required"', max_tokens=1)))
    assert len(deltas) == 1
    assert finished.finish_reason == "length"


@pytest.mark.parametrize("choice", [None, '"auto"', '"none"'])
@pytest.mark.asyncio
async def test_without_a_forced_tool_the_mock_answers_with_text(choice: str | None) -> None:
    backend, _, _ = mock(output_tokens=6)
    deltas, finished = await collect(backend.generate(tool_job(choice)))
    assert all(not d.tool_calls for d in deltas)
    assert len(deltas) == 6
    assert finished.finish_reason == "stop"


@pytest.mark.parametrize(
    "response_format",
    ['{"type":"json_object"}', '{"type":"json_schema","json_schema":{"name":"x"}}'],
)
@pytest.mark.asyncio
async def test_json_mode_answers_one_json_object(response_format: str) -> None:
    backend, _, _ = mock(output_tokens=8)
    job = chat_job().model_copy(update={"response_format_json": response_format})
    deltas, finished = await collect(backend.generate(job))
    text = "".join(d.text for d in deltas)
    value = json.loads(text)
    assert list(value) == ["mock"]
    assert len(value["mock"].split()) == 6
    assert (finished.finish_reason, finished.completion_tokens) == ("stop", 8)
    plain = chat_job().model_copy(update={"response_format_json": '{"type":"text"}'})
    plain_deltas, _ = await collect(backend.generate(plain))
    assert not "".join(d.text for d in plain_deltas).startswith("{")


@pytest.mark.asyncio
async def test_job_json_that_is_not_json_is_an_invalid_request() -> None:
    backend, _, _ = mock()
    job = chat_job().model_copy(update={"tools_json": "[", "tool_choice_json": '"required"'})
    _, error = await collect_until_error(backend.generate(job))
    assert (error.code, error.retryable) == ("invalid_request", False)
