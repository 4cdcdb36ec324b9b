"""Typed errors of the wire protocol, each mapped to a documented websocket close code.

Every error a peer can cause is a :class:`ProtocolError`; the I/O shell catches it, closes the
websocket with ``error.close_code`` and ``error.reason``, and (on the coordinator) counts it
against the node. Nothing else escapes the protocol's decoding paths.

Hierarchy::

    ProtocolError                     (root; close_code 1002)
    ├── FrameTooLarge                 1009  frame over the size limit, rejected before decoding
    ├── MalformedFrame                4001  bad framing, bad msgpack, limits exceeded, ext types
    ├── InvalidMessage                4002  unknown type, missing/extra field, wrong type, range
    ├── AuthenticationFailed          4003  frame MAC does not verify under the session key
    ├── BadSignature                  4004  an Ed25519 signature does not verify
    │   └── UntrustedCoordinator      4004  coordinator key differs from the pinned key
    ├── SequenceViolation             4005  replayed, reordered or skipped sequence number
    ├── StaleFrame                    4006  timestamp outside the allowed clock-skew window
    ├── UnexpectedMessage             4007  message not allowed in this state or direction
    ├── HandshakeTimeout              4008  handshake not finished before its deadline
    ├── UnsupportedVersion            4009  an envelope's v is not accepted, or no common version
    ├── HandshakeMismatch             4010  handshake fields disagree (nonce, audience, keys,
    │                                       version, node id) or a degenerate X25519 key
    └── SessionClosed                 1000  the session object was used after it closed

:class:`KeyFileError` (identity files) is not a wire error and has no close code.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "AuthenticationFailed",
    "BadSignature",
    "CloseCode",
    "FrameTooLarge",
    "HandshakeMismatch",
    "HandshakeTimeout",
    "InvalidMessage",
    "KeyFileError",
    "MalformedFrame",
    "ProtocolError",
    "SequenceViolation",
    "SessionClosed",
    "StaleFrame",
    "UnexpectedMessage",
    "UnsupportedVersion",
    "UntrustedCoordinator",
]


class CloseCode(IntEnum):
    """Websocket close codes used by ShareAI (RFC 6455 codes plus the private 4000-4999 range)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    FRAME_TOO_LARGE = 1009
    INTERNAL_ERROR = 1011
    MALFORMED_FRAME = 4001
    INVALID_MESSAGE = 4002
    AUTHENTICATION_FAILED = 4003
    BAD_SIGNATURE = 4004
    SEQUENCE_VIOLATION = 4005
    STALE_FRAME = 4006
    UNEXPECTED_MESSAGE = 4007
    HANDSHAKE_TIMEOUT = 4008
    UNSUPPORTED_VERSION = 4009
    HANDSHAKE_MISMATCH = 4010
    REJECTED = 4011


class ProtocolError(Exception):
    """Root of every error a peer's bytes can cause.

    ``close_code`` is the websocket close code to send; ``reason`` is a short human-readable text
    suitable for the close frame (websockets limits it to 123 bytes, so it is truncated).
    """

    close_code: CloseCode = CloseCode.PROTOCOL_ERROR

    @property
    def reason(self) -> str:
        text = str(self) or type(self).__name__
        encoded = text.encode("utf-8")[:123]
        return encoded.decode("utf-8", errors="ignore")


class FrameTooLarge(ProtocolError):
    close_code = CloseCode.FRAME_TOO_LARGE


class MalformedFrame(ProtocolError):
    close_code = CloseCode.MALFORMED_FRAME


class InvalidMessage(ProtocolError):
    close_code = CloseCode.INVALID_MESSAGE


class AuthenticationFailed(ProtocolError):
    close_code = CloseCode.AUTHENTICATION_FAILED


class BadSignature(ProtocolError):
    close_code = CloseCode.BAD_SIGNATURE


class UntrustedCoordinator(BadSignature):
    """The coordinator presented a key other than the one the node pinned."""


class SequenceViolation(ProtocolError):
    close_code = CloseCode.SEQUENCE_VIOLATION


class StaleFrame(ProtocolError):
    close_code = CloseCode.STALE_FRAME


class UnexpectedMessage(ProtocolError):
    close_code = CloseCode.UNEXPECTED_MESSAGE


class HandshakeTimeout(ProtocolError):
    close_code = CloseCode.HANDSHAKE_TIMEOUT


class UnsupportedVersion(ProtocolError):
    close_code = CloseCode.UNSUPPORTED_VERSION


class HandshakeMismatch(ProtocolError):
    close_code = CloseCode.HANDSHAKE_MISMATCH


class SessionClosed(ProtocolError):
    close_code = CloseCode.NORMAL


class KeyFileError(Exception):
    """An identity key file is missing, unreadable, malformed or has unsafe permissions."""
