"""Properties: whatever bytes arrive, decoding raises only ProtocolError and never hangs."""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import MESSAGE_TYPES, ProtocolError, SessionState
from protocol.framing import DecodeLimits, decode_envelope, parse_body
from tests.protocol.peers import established_pair, new_pair
from tests.protocol.test_session import seal

FUZZ = settings(
    max_examples=400,
    deadline=500,  # ms per example: a decoder that hangs or goes quadratic fails here
    suppress_health_check=[HealthCheck.too_slow],
)

msgpack_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=40)
    | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=30,
)


def envelope_like() -> st.SearchStrategy[dict[str, Any]]:
    """Envelopes that are nearly right, so fuzzing reaches schema validation."""
    body = st.dictionaries(
        st.sampled_from(
            ["job_id", "index", "text", "tokens", "token_ids", "model", "usage", "offers", "x"]
        ),
        msgpack_values,
        max_size=8,
    )
    return st.fixed_dictionaries(
        {
            "v": st.sampled_from([1, 1, 1, 2, -1, "1"]),
            "type": st.sampled_from([*MESSAGE_TYPES, "nope", ""]),
            "seq": st.integers(min_value=-1, max_value=3),
            "ts": st.integers(min_value=-1, max_value=2**53),
            "body": body,
        }
    )


@FUZZ
@given(st.binary(max_size=2_048))
def test_decoding_arbitrary_bytes_raises_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_body(decode_envelope(data, DecodeLimits()))


@FUZZ
@given(msgpack_values)
def test_decoding_arbitrary_msgpack_raises_only_protocol_errors(value: Any) -> None:
    with contextlib.suppress(ProtocolError):
        parse_body(decode_envelope(msgpack.packb(value), DecodeLimits()))


@FUZZ
@given(envelope_like())
def test_decoding_near_valid_envelopes_raises_only_protocol_errors(value: dict[str, Any]) -> None:
    with contextlib.suppress(ProtocolError):
        parse_body(decode_envelope(msgpack.packb(value), DecodeLimits()))


@FUZZ
@given(st.binary(max_size=2_048))
def test_an_established_session_survives_arbitrary_frames(data: bytes) -> None:
    pair = established_pair()
    try:
        pair.coordinator.receive(data)
    except ProtocolError:
        assert pair.coordinator.state is SessionState.CLOSED


@FUZZ
@given(envelope_like() | msgpack_values)
def test_authenticated_garbage_raises_only_protocol_errors(value: Any) -> None:
    """Even a peer holding the session key cannot crash the receiver with odd payloads."""
    pair = established_pair()
    try:
        pair.coordinator.receive(seal(pair, msgpack.packb(value)))
    except ProtocolError:
        assert pair.coordinator.state is SessionState.CLOSED


@FUZZ
@given(st.binary(max_size=2_048))
def test_a_handshaking_session_survives_arbitrary_frames(data: bytes) -> None:
    pair = new_pair()
    pair.coordinator.start()
    with contextlib.suppress(ProtocolError):
        pair.coordinator.receive(data)
    with contextlib.suppress(ProtocolError):
        pair.node.receive(data)
