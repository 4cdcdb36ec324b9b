"""Frame layouts and the msgpack envelope, decoded with hard limits.

Two frame kinds travel as websocket binary messages::

    signed frame  (handshake):    0x01 | signer's Ed25519 public key (32) | payload | signature (64)
    session frame (after it):     0x02 | seq (uint64, big-endian) | payload | HMAC-SHA256 (32 bytes)

``payload`` is a msgpack map ``{"v", "type", "seq", "ts", "body"}``. A frame is authenticated over
its exact bytes before the payload is decoded, and it is never re-encoded to verify anything.
Decoding enforces the frame size first, then msgpack's per-object limits (string, binary, array
and map lengths; ext types and duplicate map keys refused), then a nesting-depth limit, then the
message schema.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import msgpack
from pydantic import ValidationError

from protocol.crypto import MAC_BYTES
from protocol.errors import FrameTooLarge, InvalidMessage, MalformedFrame, UnsupportedVersion
from protocol.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES
from protocol.messages import MESSAGE_TYPES, SUPPORTED_VERSIONS, Message

__all__ = [
    "ENVELOPE_KEYS",
    "SESSION_FRAME",
    "SESSION_HEADER_BYTES",
    "SIGNED_FRAME",
    "SIGNED_HEADER_BYTES",
    "DecodeLimits",
    "Envelope",
    "decode_envelope",
    "encode_envelope",
    "parse_body",
    "split_session_frame",
    "split_signed_frame",
]

SIGNED_FRAME = 0x01
SESSION_FRAME = 0x02
SESSION_HEADER_BYTES = 9
SIGNED_HEADER_BYTES = 1 + PUBLIC_KEY_BYTES
ENVELOPE_KEYS = frozenset({"v", "type", "seq", "ts", "body"})
_MAX_SEQ = 2**64 - 1
_WIRE_CONTEXT = {"wire": True}


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Hard limits applied while decoding a received frame (defaults are protocol v1's)."""

    max_frame_bytes: int = 1024 * 1024
    max_str_bytes: int = 1024 * 1024
    max_bin_bytes: int = 1024
    max_array_len: int = 65_536
    max_map_len: int = 64
    max_depth: int = 8


@dataclass(frozen=True, slots=True)
class Envelope:
    version: int
    type: str
    seq: int
    ts_ms: int
    body: dict[str, Any]


def encode_envelope(message: Message, seq: int, ts_ms: int, version: int) -> bytes:
    """The msgpack payload for ``message``; every body field is written, defaults included."""
    envelope = {
        "v": version,
        "type": message.TYPE,
        "seq": seq,
        "ts": ts_ms,
        "body": message.model_dump(),
    }
    return msgpack.packb(envelope, use_bin_type=True)


def split_signed_frame(frame: bytes, limits: DecodeLimits) -> tuple[bytes, bytes, bytes]:
    """Split a signed frame into (signer key, payload, signature) without decoding anything."""
    _check_size(frame, limits)
    if len(frame) < SIGNED_HEADER_BYTES + 1 + SIGNATURE_BYTES or frame[0] != SIGNED_FRAME:
        raise MalformedFrame("expected a signed handshake frame (kind 0x01)")
    return (
        frame[1:SIGNED_HEADER_BYTES],
        frame[SIGNED_HEADER_BYTES:-SIGNATURE_BYTES],
        frame[-SIGNATURE_BYTES:],
    )


def split_session_frame(frame: bytes, limits: DecodeLimits) -> tuple[int, bytes, bytes]:
    """Split a session frame into (sequence number, header+payload, mac) without decoding."""
    _check_size(frame, limits)
    if len(frame) < SESSION_HEADER_BYTES + 1 + MAC_BYTES or frame[0] != SESSION_FRAME:
        raise MalformedFrame("expected a session frame (kind 0x02)")
    seq = int.from_bytes(frame[1:SESSION_HEADER_BYTES], "big")
    return seq, frame[:-MAC_BYTES], frame[-MAC_BYTES:]


def _check_size(frame: bytes, limits: DecodeLimits) -> None:
    if len(frame) > limits.max_frame_bytes:
        raise FrameTooLarge(f"frame of {len(frame)} bytes exceeds {limits.max_frame_bytes}")


def decode_envelope(
    payload: bytes, limits: DecodeLimits, versions: Collection[int] = SUPPORTED_VERSIONS
) -> Envelope:
    """Decode and check the envelope of an already-authenticated payload.

    ``versions`` are the values of ``v`` acceptable at this point of the session. Raises
    MalformedFrame (bad msgpack, limits, duplicate keys, shape) or UnsupportedVersion.
    """
    if len(payload) > limits.max_frame_bytes:
        raise FrameTooLarge(f"payload of {len(payload)} bytes exceeds {limits.max_frame_bytes}")
    try:
        decoded = msgpack.unpackb(
            payload,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=limits.max_str_bytes,
            max_bin_len=limits.max_bin_bytes,
            max_array_len=limits.max_array_len,
            max_map_len=limits.max_map_len,
            max_ext_len=0,
            object_pairs_hook=_map_without_duplicate_keys,
        )
    except Exception as exc:
        raise MalformedFrame(
            f"payload is not valid msgpack within limits: {_describe(exc)}"
        ) from None
    if type(decoded) is not dict or decoded.keys() != ENVELOPE_KEYS:
        raise MalformedFrame("payload must be a map with exactly the keys v, type, seq, ts, body")
    version, type_tag, seq, ts_ms, body = (
        decoded["v"],
        decoded["type"],
        decoded["seq"],
        decoded["ts"],
        decoded["body"],
    )
    if type(version) is not int:
        raise MalformedFrame("envelope field 'v' must be an integer")
    if version not in versions:
        raise UnsupportedVersion(f"protocol version {version} is not accepted here")
    if type(type_tag) is not str:
        raise MalformedFrame("envelope field 'type' must be a string")
    if type(seq) is not int or not 0 <= seq <= _MAX_SEQ:
        raise MalformedFrame("envelope field 'seq' must be an unsigned 64-bit integer")
    if type(ts_ms) is not int or ts_ms < 0:
        raise MalformedFrame("envelope field 'ts' must be a non-negative integer (unix ms)")
    if type(body) is not dict:
        raise MalformedFrame("envelope field 'body' must be a map")
    _check_depth(body, limits.max_depth - 1)
    return Envelope(version, type_tag, seq, ts_ms, body)


def parse_body(envelope: Envelope) -> Message:
    """Validate the body against the schema registered for its type; raises InvalidMessage."""
    cls = MESSAGE_TYPES.get(envelope.type)
    if cls is None:
        raise InvalidMessage(f"unknown message type {envelope.type[:40]!r}")
    try:
        return cls.model_validate(envelope.body, strict=True, context=_WIRE_CONTEXT)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise InvalidMessage(f"invalid {cls.TYPE}: {where}: {first['msg']}") from None


def _check_depth(value: dict[str, Any] | list[Any], depth_left: int) -> None:
    # Iterative over siblings, recursive over depth; depth is bounded by max_depth (small), so
    # this never approaches Python's recursion limit.
    if depth_left <= 0:
        raise MalformedFrame("payload nesting exceeds the depth limit")
    children = value.values() if type(value) is dict else value
    for child in children:
        if type(child) is dict or type(child) is list:
            _check_depth(child, depth_left - 1)


def _map_without_duplicate_keys(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    # msgpack would silently keep the last of two equal keys; a stricter decoder elsewhere would
    # refuse the frame, so two implementations would disagree on what a frame says. Refuse it.
    mapping = dict(pairs)
    if len(mapping) != len(pairs):
        raise ValueError("duplicate key in a map")
    return mapping


def _describe(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text[:100]
