"""Chunk coalescing: the first delta at once, then batches by token count or by time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

import pytest

from node_agent.backends import BackendError, BackendEvent, Finished, TextDelta, coalesce
from node_agent.backends.coalesce import merge_deltas
from protocol import ManualClock, ToolCallDelta

from .helpers import collect_until_error

FINISHED = Finished(prompt_tokens=3, completion_tokens=40, finish_reason="stop")
LONG_MS = 60_000.0  # a batch timer that never fires within a test


def delta(n: int) -> TextDelta:
    return TextDelta(text=f"<{n}>", tokens=1, token_ids=(n,))


async def stream(*events: BackendEvent) -> AsyncIterator[BackendEvent]:
    for event in events:
        yield event


async def gather(events: AsyncIterator[BackendEvent]) -> list[BackendEvent]:
    return [event async for event in events]


def texts(events: list[BackendEvent]) -> list[str]:
    return [event.text if isinstance(event, TextDelta) else "FINISHED" for event in events]


@pytest.mark.asyncio
async def test_first_delta_alone_then_batches_of_max_tokens_then_the_rest() -> None:
    source = stream(*(delta(n) for n in range(40)), FINISHED)
    out = await gather(coalesce(source, max_tokens=16, max_delay_ms=LONG_MS, clock=ManualClock()))
    assert [e.tokens for e in out if isinstance(e, TextDelta)] == [1, 16, 16, 7]
    assert out[-1] == FINISHED
    merged = [e for e in out if isinstance(e, TextDelta)]
    assert "".join(e.text for e in merged) == "".join(f"<{n}>" for n in range(40))
    assert [i for e in merged for i in e.token_ids or ()] == list(range(40))


@pytest.mark.asyncio
async def test_a_batch_whose_time_is_up_is_sent_before_the_next_delta_joins() -> None:
    clock = ManualClock()

    async def source() -> AsyncIterator[BackendEvent]:
        yield delta(1)
        yield delta(2)
        yield delta(3)
        clock.advance(0.011)  # the batch [2, 3] is now older than 10 ms
        yield delta(4)
        yield delta(5)
        yield FINISHED

    out = await gather(coalesce(source(), max_tokens=16, max_delay_ms=10, clock=clock))
    assert texts(out) == ["<1>", "<2><3>", "<4><5>", "FINISHED"]


@pytest.mark.asyncio
async def test_a_silent_source_does_not_hold_a_batch_back() -> None:
    released = asyncio.Event()

    async def source() -> AsyncIterator[BackendEvent]:
        yield delta(1)
        yield delta(2)
        await released.wait()  # silent until the consumer has seen <2>: only the timer sends it
        yield delta(3)
        yield FINISHED

    seen: list[BackendEvent] = []
    async with asyncio.timeout(5):
        async for event in coalesce(source(), max_tokens=16, max_delay_ms=5):
            seen.append(event)
            if isinstance(event, TextDelta) and event.text == "<2>":
                released.set()
    assert texts(seen) == ["<1>", "<2>", "<3>", "FINISHED"]


@pytest.mark.asyncio
async def test_the_end_of_the_stream_flushes_without_waiting() -> None:
    source = stream(delta(1), delta(2), delta(3))  # no Finished: the iterator just ends
    async with asyncio.timeout(5):
        out = await gather(coalesce(source, max_delay_ms=LONG_MS, clock=ManualClock()))
    assert texts(out) == ["<1>", "<2><3>"]


@pytest.mark.asyncio
async def test_finished_flushes_the_batch_first() -> None:
    source = stream(delta(1), delta(2), FINISHED)
    async with asyncio.timeout(5):
        out = await gather(coalesce(source, max_delay_ms=LONG_MS, clock=ManualClock()))
    assert texts(out) == ["<1>", "<2>", "FINISHED"]


@pytest.mark.asyncio
async def test_an_error_flushes_the_batch_then_is_raised() -> None:
    async def source() -> AsyncIterator[BackendEvent]:
        yield delta(1)
        yield delta(2)
        yield delta(3)
        raise BackendError("backend_error", "upstream dropped", retryable=True)

    seen, error = await collect_until_error(
        coalesce(source(), max_delay_ms=LONG_MS, clock=ManualClock())
    )
    assert texts(seen) == ["<1>", "<2><3>"]
    assert "upstream dropped" in str(error)


@pytest.mark.asyncio
async def test_batches_stay_under_max_chars() -> None:
    big = [TextDelta(text="x" * 40, tokens=1) for _ in range(6)]
    out = await gather(
        coalesce(stream(*big), max_chars=100, max_delay_ms=LONG_MS, clock=ManualClock())
    )
    assert [len(e.text) for e in out if isinstance(e, TextDelta)] == [40, 80, 80, 40]


@pytest.mark.asyncio
async def test_a_zero_delay_merges_nothing() -> None:
    clock = ManualClock()
    out = await gather(coalesce(stream(delta(1), delta(2), delta(3)), max_delay_ms=0, clock=clock))
    assert texts(out) == ["<1>", "<2>", "<3>"]


@pytest.mark.asyncio
async def test_cancelling_the_consumer_closes_the_source() -> None:
    source_closed = asyncio.Event()
    first_seen = asyncio.Event()

    async def source() -> AsyncGenerator[BackendEvent, None]:
        try:
            yield delta(1)
            yield delta(2)
            await asyncio.Event().wait()  # an engine that never answers again
        finally:
            source_closed.set()

    async def consume() -> None:
        events = coalesce(source(), max_delay_ms=LONG_MS)
        async with contextlib.aclosing(events):
            async for _ in events:
                first_seen.set()

    task = asyncio.create_task(consume())
    async with asyncio.timeout(5):
        await first_seen.wait()
        await asyncio.sleep(0)  # let the coalescer start its read of <2> and the silence
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await source_closed.wait()


@pytest.mark.asyncio
async def test_closing_early_closes_the_source() -> None:
    closed = False

    async def source() -> AsyncGenerator[BackendEvent, None]:
        nonlocal closed
        try:
            for n in range(100):
                yield delta(n)
        finally:
            closed = True

    events = coalesce(source(), max_tokens=4, max_delay_ms=LONG_MS, clock=ManualClock())
    async with contextlib.aclosing(events):
        async for _ in events:
            break
    assert closed


def test_merge_keeps_token_ids_only_when_all_deltas_have_them() -> None:
    assert merge_deltas([delta(1), delta(2)]) == TextDelta("<1><2>", 2, (1, 2))
    assert merge_deltas([delta(1), TextDelta("x", 1)]) == TextDelta("<1>x", 2, None)
    one = TextDelta("only", 3)
    assert merge_deltas([one]) is one


@pytest.mark.asyncio
async def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        await anext(coalesce(stream(delta(1)), max_tokens=0))
    with pytest.raises(ValueError, match="max_delay_ms"):
        await anext(coalesce(stream(delta(1)), max_delay_ms=-1))


def call(
    index: int, arguments: str = "", *, id: str | None = None, name: str | None = None
) -> TextDelta:
    return TextDelta(
        text="",
        tokens=1,
        tool_calls=(ToolCallDelta(index=index, id=id, name=name, arguments=arguments),),
    )


def test_merging_joins_the_argument_fragments_of_one_call_and_keeps_calls_apart() -> None:
    merged = merge_deltas(
        [
            TextDelta(text="Let me check.", tokens=3),
            call(0, id="call_a", name="get_weather"),
            call(0, '{"city":'),
            call(0, '"Paris"}'),
            call(1, id="call_b", name="get_time"),
            call(1, "{}"),
            call(0, " "),  # a late fragment of call 0 stays after call 1's
        ]
    )
    assert merged.text == "Let me check."
    assert merged.tokens == 9
    assert merged.tool_calls == (
        ToolCallDelta(index=0, id="call_a", name="get_weather", arguments='{"city":"Paris"}'),
        ToolCallDelta(index=1, id="call_b", name="get_time", arguments="{}"),
        ToolCallDelta(index=0, arguments=" "),
    )


def test_a_fragment_that_names_a_call_again_is_not_folded_into_the_previous_one() -> None:
    merged = merge_deltas([call(0, "{", id="call_a", name="f"), call(0, "}", id="call_a")])
    assert merged.tool_calls == (
        ToolCallDelta(index=0, id="call_a", name="f", arguments="{"),
        ToolCallDelta(index=0, id="call_a", arguments="}"),
    )


@pytest.mark.asyncio
async def test_tool_call_fragments_are_coalesced_and_arguments_count_toward_max_chars() -> None:
    source = stream(
        call(0, id="call_a", name="f"),
        *(call(0, "x" * 10) for _ in range(6)),
        FINISHED,
    )
    out = await gather(
        coalesce(source, max_tokens=16, max_delay_ms=LONG_MS, max_chars=25, clock=ManualClock())
    )
    deltas = [e for e in out if isinstance(e, TextDelta)]
    assert [len(d.tool_calls[0].arguments) for d in deltas] == [0, 20, 20, 20]
    assert deltas[0].tool_calls[0].name == "f"
    assert all(d.tool_calls[0].id is None for d in deltas[1:])
    assert out[-1] == FINISHED
