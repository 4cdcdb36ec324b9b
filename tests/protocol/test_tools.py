"""The JSON-text fields: compact writing, strict reading, and tool-call fragments."""

from __future__ import annotations

import pytest

from protocol import (
    MAX_JSON_CHARS,
    InvalidJsonText,
    ToolCallDelta,
    decode_tool_call_deltas,
    dump_json_text,
    encode_tool_call_deltas,
    load_json_text,
)


def test_json_text_is_compact_and_keeps_unicode() -> None:
    text = dump_json_text({"type": "json_schema", "name": "météo"}, field="response_format")
    assert text == '{"type":"json_schema","name":"météo"}'
    assert load_json_text(text, field="response_format") == {
        "type": "json_schema",
        "name": "météo",
    }


def test_json_text_over_the_limit_is_refused_both_ways() -> None:
    big = ["x" * 1000] * 300
    with pytest.raises(InvalidJsonText, match=r"tools is \d+ characters of JSON; at most 262144"):
        dump_json_text(big, field="tools")
    with pytest.raises(InvalidJsonText, match="longer than 262144"):
        load_json_text(" " * (MAX_JSON_CHARS + 1), field="tools")


@pytest.mark.parametrize("text", ["", "{", "NaN", "[Infinity]", "[-Infinity]", "[" * 100_000])
def test_invalid_json_text_is_refused(text: str) -> None:
    with pytest.raises(InvalidJsonText, match="tools"):
        load_json_text(text, field="tools")


def test_non_json_values_cannot_be_written() -> None:
    with pytest.raises(InvalidJsonText, match="not JSON"):
        dump_json_text({"x": float("nan")}, field="tools")


def test_tool_call_fragments_round_trip_in_openai_shape() -> None:
    deltas = (
        ToolCallDelta(index=0, id="call_1", name="get_weather"),
        ToolCallDelta(index=0, arguments='{"city":'),
        ToolCallDelta(index=1, id="call_2", name="get_time", arguments="{}"),
    )
    text = encode_tool_call_deltas(deltas)
    assert text.startswith(
        '[{"index":0,"id":"call_1","type":"function","function":'
        '{"name":"get_weather","arguments":""}},{"index":0,"function":{"arguments":"{\\"city\\":"}}'
    )
    assert decode_tool_call_deltas(text) == deltas


def test_tool_call_fragments_accept_nulls_as_upstreams_write_them() -> None:
    text = '[{"index":3,"id":null,"type":null,"function":{"name":null,"arguments":null}}]'
    assert decode_tool_call_deltas(text) == (ToolCallDelta(index=3),)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{}", "array of 1 to 4096"),
        ("[]", "array of 1 to 4096"),
        ("[1]", r"tool_calls_json\[0\] must be an object"),
        ('[{"id":"c"}]', r"\.index must be an integer"),
        ('[{"index":true}]', r"\.index must be an integer"),
        ('[{"index":-1}]', r"\.index must be an integer"),
        ('[{"index":0,"type":"code"}]', 'type must be "function"'),
        ('[{"index":0,"id":""}]', r"\.id must be a string of 1 to 256"),
        ('[{"index":0,"id":7}]', r"\.id must be a string"),
        ('[{"index":0,"function":[]}]', r"\.function must be an object"),
        ('[{"index":0,"function":{"arguments":{}}}]', r"arguments must be a string"),
        ('[{"index":0,"function":{"name":"x","code":"rm"}}]', "unknown key"),
        ('[{"index":0,"extra":1}]', r"unknown key\(s\): extra"),
    ],
)
def test_malformed_tool_call_fragments_are_refused(text: str, why: str) -> None:
    with pytest.raises(InvalidJsonText, match=why):
        decode_tool_call_deltas(text)
