"""Message schemas: every type round-trips, and validation is strict."""

from __future__ import annotations

from typing import Any

import pytest

from protocol import (
    KNOWN_PARAMETERS,
    MESSAGE_TYPES,
    Challenge,
    Done,
    Hello,
    InvalidMessage,
    Job,
    Message,
    Offer,
    Offers,
    Reject,
    SamplingParams,
    SessionLimits,
    Timings,
    Usage,
    Welcome,
)
from protocol.framing import DecodeLimits, Envelope, decode_envelope, encode_envelope, parse_body
from tests.protocol.peers import (
    established_pair,
    sample_hardware,
    sample_job,
    sample_offer,
    sample_tool_job,
)
from tests.protocol.test_session import COORDINATOR_MESSAGES, NODE_MESSAGES

HANDSHAKE_MESSAGES: list[Message] = [
    Challenge(
        nonce=b"\x01" * 32,
        coordinator_key=b"\x02" * 32,
        ephemeral_key=b"\x03" * 32,
        versions=[1],
        handshake_timeout_ms=10_000,
    ),
    Hello(
        nonce=b"\x01" * 32,
        audience=b"\x02" * 32,
        node_key=b"\x04" * 32,
        ephemeral_key=b"\x05" * 32,
        version=1,
        agent_version="0.1.0",
        max_frame_bytes=1 << 20,
        hardware=sample_hardware(),
        offers=[sample_offer()],
    ),
    Welcome(
        node_id="nd_abc",
        session_id="ses_1",
        heartbeat_interval_ms=5_000,
        limits=SessionLimits(
            max_frame_bytes=1 << 20, max_clock_skew_ms=60_000, max_jobs_in_flight=8
        ),
    ),
    Reject(code="revoked", message="key revoked by its Provider", retry_after_ms=None),
    Done(
        job_id="job_01",
        model="m",
        usage=Usage(prompt_tokens=1, completion_tokens=2),
        finish_reason="length",
        timings=Timings(queue_ms=0, time_to_first_token_ms=None, total_ms=5),
        receipt_signature=b"\x06" * 64,
    ),
]
ALL_MESSAGES = HANDSHAKE_MESSAGES + NODE_MESSAGES + COORDINATOR_MESSAGES


def test_every_registered_type_has_a_sample() -> None:
    assert {type(m) for m in ALL_MESSAGES} == set(MESSAGE_TYPES.values())
    assert len(MESSAGE_TYPES) == 14


@pytest.mark.parametrize("message", ALL_MESSAGES, ids=lambda m: m.TYPE)
def test_every_message_type_round_trips_through_the_envelope(message: Message) -> None:
    payload = encode_envelope(message, seq=7, ts_ms=1_700_000_000_000, version=1)
    envelope = decode_envelope(payload, DecodeLimits())
    assert (envelope.type, envelope.seq, envelope.ts_ms) == (message.TYPE, 7, 1_700_000_000_000)
    assert parse_body(envelope) == message


def parse(type_: str, body: dict[str, Any]) -> Message:
    return parse_body(Envelope(version=1, type=type_, seq=0, ts_ms=0, body=body))


def chunk_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "job_id": "job_01",
        "index": 0,
        "text": "Hi",
        "tokens": 1,
        "token_ids": None,
        "tool_calls_json": None,
    }
    body.update(changes)
    return body


def test_unknown_type_fails() -> None:
    with pytest.raises(InvalidMessage, match="unknown message type 'teleport'"):
        parse("teleport", {})


def test_missing_field_fails_even_when_python_has_a_default() -> None:
    body = chunk_body()
    del body["token_ids"]
    with pytest.raises(InvalidMessage, match=r"missing field.*token_ids"):
        parse("chunk", body)


def test_missing_nested_field_fails() -> None:
    body = sample_job().model_dump()
    del body["sampling"]["temperature"]
    with pytest.raises(InvalidMessage, match=r"missing field.*temperature"):
        parse("job", body)


def test_extra_field_fails() -> None:
    with pytest.raises(InvalidMessage, match="invalid chunk: extra: Extra inputs"):
        parse("chunk", chunk_body(extra="x"))


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"tokens": "1"}, "tokens"),  # a string for an integer
        ({"tokens": 1.0}, "tokens"),  # a float for an integer
        ({"tokens": True}, "tokens"),  # a boolean for an integer
        ({"text": b"Hi"}, "text"),  # bytes for a string
        ({"text": 5}, "text"),
        ({"index": None}, "index"),
        ({"token_ids": [1, "2"]}, "token_ids.1"),
    ],
)
def test_wrong_types_fail_without_coercion(changes: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidMessage, match=f"invalid chunk: {where}:"):
        parse("chunk", chunk_body(**changes))


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"tokens": -1}, "tokens"),
        ({"tokens": 65_537}, "tokens"),
        ({"index": 2**31}, "index"),
        ({"job_id": ""}, "job_id"),
        ({"job_id": "job 01"}, "job_id"),  # outside the identifier alphabet
        ({"job_id": "j" * 65}, "job_id"),
        ({"text": "x" * 65_537}, "text"),
        ({"tool_calls_json": ""}, "tool_calls_json"),
        ({"tool_calls_json": "[" * 262_145}, "tool_calls_json"),
    ],
)
def test_out_of_range_values_fail(changes: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidMessage, match=f"invalid chunk: {where}:"):
        parse("chunk", chunk_body(**changes))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("sampling", "temperature"), 2.5),
        (("sampling", "temperature"), float("nan")),
        (("sampling", "top_p"), 0.0),
        (("sampling", "max_tokens"), 0),
        (("sampling", "stop"), ["a"] * 17),
        (("kind",), "embedding"),
        (("prompt",), "both a prompt and messages"),
        (("tools_json",), ""),
        (("tools_json",), "x" * 262_145),
        (("tool_choice_json",), '"auto"'),  # a tool choice without tools
        (("parallel_tool_calls",), False),  # likewise
        (("parallel_tool_calls",), 0),  # not a boolean
        (("response_format_json",), ["not", "text"]),
        (("messages", 0, "tool_calls_json"), "[]"),  # only assistants carry tool calls
        (("messages", 0, "tool_call_id"), "call_1"),  # only tool messages name a call
        (("messages", 1, "role"), "tool"),  # a tool message without its tool_call_id
    ],
)
def test_invalid_jobs_fail(path: tuple[str | int, ...], value: Any) -> None:
    body = sample_job().model_dump()
    target: Any = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(InvalidMessage, match="invalid job"):
        parse("job", body)


def test_a_completion_job_carries_no_tools_or_response_format() -> None:
    completion = next(
        m.model_dump()
        for m in COORDINATOR_MESSAGES
        if isinstance(m, Job) and m.kind == "completion"
    )
    for field in ("tools_json", "response_format_json"):
        body = {**completion, field: "{}"}
        with pytest.raises(InvalidMessage, match="completion job carries no tools"):
            parse("job", body)


def test_job_json_fields_are_text_the_schema_does_not_parse() -> None:
    # The session layer bounds the length only; the applications parse (protocol.tools).
    body = sample_tool_job().model_dump()
    body["tools_json"] = "not json at all"
    job = parse("job", body)
    assert isinstance(job, Job)
    assert job.tools_json == "not json at all"


def test_invalid_offer_prices_fail() -> None:
    body = HANDSHAKE_MESSAGES[1].model_dump()
    body["offers"][0]["price_input_micro_usd_per_1m"] = -5
    with pytest.raises(
        InvalidMessage, match=r"invalid hello: offers\.0\.price_input_micro_usd_per_1m"
    ):
        parse("hello", body)


def test_known_parameters_are_exactly_those_a_job_carries() -> None:
    # Every request parameter a job can carry, and nothing else, can be offered: the sampling
    # fields and the job's tool and response-format fields (named without _json).
    job_parameters = {
        "tools_json": "tools",
        "tool_choice_json": "tool_choice",
        "parallel_tool_calls": "parallel_tool_calls",
        "response_format_json": "response_format",
    }
    job_input = {"job_id", "model", "kind", "messages", "prompt", "sampling", "deadline_ms"}
    assert set(Job.model_fields) - job_input == set(job_parameters)
    assert set(SamplingParams.model_fields) | set(job_parameters.values()) == KNOWN_PARAMETERS


def test_an_offer_lists_every_known_parameter_unless_told_otherwise() -> None:
    assert sample_offer().supported_parameters == sorted(KNOWN_PARAMETERS)
    # The default is a fresh list per offer, not one shared list.
    assert sample_offer().supported_parameters is not sample_offer().supported_parameters


@pytest.mark.parametrize(
    "supported", [["tools", "seed"], [], ["top_p", "max_tokens", "response_format"]]
)
def test_supported_parameters_round_trip_through_the_envelope_and_a_session(
    supported: list[str],
) -> None:
    offer = Offer.model_validate({**sample_offer().model_dump(), "supported_parameters": supported})
    message = Offers(offers=[offer, sample_offer("Qwen/Qwen2.5-7B-Instruct")])
    payload = encode_envelope(message, seq=1, ts_ms=0, version=1)
    assert parse_body(decode_envelope(payload, DecodeLimits())) == message
    pair = established_pair()
    received = pair.coordinator.receive(pair.node.send(message))
    assert isinstance(received, Offers)
    assert [o.supported_parameters for o in received.offers] == [
        supported,
        sorted(KNOWN_PARAMETERS),
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["tools", "logit_bias"], r"\.1: Input should be 'max_tokens', 'temperature'"),
        (["n"], r"\.0: Input should be"),
        (["Tools"], r"\.0: Input should be"),  # names are exact
        (["tools_json"], r"\.0: Input should be"),
        ([b"tools"], r"\.0: Input should be"),
        (["seed", "tools", "seed"], r": .*'seed' is listed twice"),
        ([*sorted(KNOWN_PARAMETERS), "seed"], r": .*at most 11 items"),
        ("tools", r": Input should be a valid list"),
        (None, r": Input should be a valid list"),
    ],
)
def test_invalid_supported_parameters_fail(value: Any, expected: str) -> None:
    body = HANDSHAKE_MESSAGES[1].model_dump()
    body["offers"][0]["supported_parameters"] = value
    with pytest.raises(
        InvalidMessage, match=r"invalid hello: offers\.0\.supported_parameters" + expected
    ):
        parse("hello", body)


def test_an_offer_without_supported_parameters_fails_on_the_wire() -> None:
    body = HANDSHAKE_MESSAGES[1].model_dump()
    del body["offers"][0]["supported_parameters"]
    with pytest.raises(
        InvalidMessage, match=r"invalid hello: offers\.0: .*missing field.*supported"
    ):
        parse("hello", body)


def test_wrong_size_keys_fail() -> None:
    body = HANDSHAKE_MESSAGES[0].model_dump()
    body["nonce"] = b"\x01" * 31
    with pytest.raises(InvalidMessage, match="invalid challenge: nonce"):
        parse("challenge", body)


@pytest.mark.parametrize("skew_ms", [0, 999, 600_001])
def test_welcome_skew_window_out_of_range_fails(skew_ms: int) -> None:
    body = HANDSHAKE_MESSAGES[2].model_dump()
    body["limits"]["max_clock_skew_ms"] = skew_ms
    with pytest.raises(InvalidMessage, match=r"invalid welcome: limits\.max_clock_skew_ms"):
        parse("welcome", body)


def test_unknown_reject_code_fails() -> None:
    with pytest.raises(InvalidMessage, match="invalid reject: code"):
        parse("reject", {"code": "go_away", "message": "", "retry_after_ms": None})


def test_messages_are_immutable() -> None:
    job = sample_job()
    with pytest.raises(ValueError, match="frozen"):
        job.model = "another-model"  # type: ignore[misc]
