"""The event-stream decoder: bytes in, events out, whatever the network does to the bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node_agent.backends.sse import ServerSentEvent, SSEDecoder, SSEError


def decode(*chunks: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events + decoder.end()


def test_one_event_per_blank_line() -> None:
    assert decode(b"data: a\n\ndata: b\n\n") == [ServerSentEvent("a"), ServerSentEvent("b")]


def test_every_line_ending_the_spec_allows() -> None:
    stream = b"data: lf\n\ndata: crlf\r\n\r\ndata: cr\r\rdata: mixed\r\n\n"
    assert [event.data for event in decode(stream)] == ["lf", "crlf", "cr", "mixed"]


def test_multi_line_data_is_joined_with_newlines() -> None:
    assert decode(b'data: {"a":\ndata: 1}\n\n') == [ServerSentEvent('{"a":\n1}')]


def test_comments_and_unknown_fields_are_ignored() -> None:
    stream = b": keep-alive\n\nretry: 100\nfoo: bar\ndata: x\n: in the middle\n\n"
    assert decode(stream) == [ServerSentEvent("x")]


def test_event_type_and_id() -> None:
    assert decode(b"event: error\nid: 7\ndata: boom\n\ndata: next\n\n") == [
        ServerSentEvent("boom", event="error", id="7"),
        ServerSentEvent("next", id="7"),
    ]


def test_one_leading_space_is_removed_and_no_more() -> None:
    assert decode(b"data:tight\n\ndata:  two\n\ndata\n\n") == [
        ServerSentEvent("tight"),
        ServerSentEvent(" two"),
        ServerSentEvent(""),
    ]


def test_byte_order_mark_at_start_is_dropped() -> None:
    assert decode(b"\xef\xbb\xbfdata: x\n\n") == [ServerSentEvent("x")]


def test_utf8_split_across_reads() -> None:
    encoded = "data: héllo ✓\n\n".encode()
    cut = encoded.index(b"\xe2") + 1  # inside the three bytes of the check mark
    assert decode(encoded[:cut], encoded[cut:]) == [ServerSentEvent("héllo ✓")]


def test_crlf_split_between_reads_is_one_line_ending() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n\r") == []
    assert decoder.feed(b"\ndata: b\n\n") == [ServerSentEvent("a"), ServerSentEvent("b")]


def test_a_carriage_return_at_the_very_end_still_ends_the_event() -> None:
    assert decode(b"data: a\r\rdata: [DONE]\r\r") == [
        ServerSentEvent("a"),
        ServerSentEvent("[DONE]"),
    ]


def test_an_event_without_its_blank_line_is_discarded_at_the_end() -> None:
    assert decode(b"data: complete\n\ndata: [DONE]\n") == [ServerSentEvent("complete")]
    assert decode(b"data: partial") == []


def test_a_line_longer_than_the_limit_is_refused() -> None:
    decoder = SSEDecoder(max_event_chars=64)
    with pytest.raises(SSEError):
        decoder.feed(b"data: " + b"x" * 100)


def test_an_event_longer_than_the_limit_is_refused() -> None:
    decoder = SSEDecoder(max_event_chars=64)
    with pytest.raises(SSEError):
        decoder.feed(b"data: " + b"x" * 40 + b"\ndata: " + b"y" * 40 + b"\n")


STREAM = (
    b': hello\r\n\r\ndata: {"choices": []}\r\n\r\nevent: ping\ndata: 1\n\n'
    b"data: line one\ndata: line two\r\rdata: [DONE]\n\n"
)


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_split_of_the_bytes_gives_the_same_events(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    assert decode(*chunks) == decode(STREAM)
    assert [event.data for event in decode(STREAM)] == [
        '{"choices": []}',
        "1",
        "line one\nline two",
        "[DONE]",
    ]
