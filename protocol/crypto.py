"""Cryptographic building blocks of the handshake and of frame authentication.

- Handshake frames are signed with Ed25519 over a domain-separation prefix, the hash of the
  handshake payloads that came before, and the frame's own payload bytes.
- Both sides contribute an ephemeral X25519 key; the shared secret and the transcript hash of
  (challenge, hello) go through HKDF-SHA256 to give one 32-byte key per direction.
- Session frames carry HMAC-SHA256 over the direction byte, the frame header (kind and sequence
  number) and the payload bytes, under the sender's direction key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocol.errors import HandshakeMismatch

__all__ = [
    "DIRECTION_COORDINATOR_TO_NODE",
    "DIRECTION_NODE_TO_COORDINATOR",
    "HANDSHAKE_DOMAIN",
    "MAC_BYTES",
    "SESSION_KEYS_INFO",
    "EphemeralKey",
    "SessionKeys",
    "derive_session_keys",
    "frame_mac",
    "handshake_signing_input",
    "transcript_hash",
]

HANDSHAKE_DOMAIN = b"shareai/v1 handshake\x00"
SESSION_KEYS_INFO = b"shareai/v1 session keys"
MAC_BYTES = 32
DIRECTION_COORDINATOR_TO_NODE = b"C"
DIRECTION_NODE_TO_COORDINATOR = b"N"


def transcript_hash(*payloads: bytes) -> bytes:
    """SHA-256 over the SHA-256 of each payload, in order (unambiguous without length framing)."""
    return hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in payloads)).digest()


def handshake_signing_input(prior_payloads: tuple[bytes, ...], payload: bytes) -> bytes:
    """The exact bytes a handshake frame's Ed25519 signature covers."""
    return HANDSHAKE_DOMAIN + transcript_hash(*prior_payloads) + payload


@dataclass(frozen=True, slots=True)
class SessionKeys:
    coordinator_to_node: bytes
    node_to_coordinator: bytes


def derive_session_keys(
    shared_secret: bytes, challenge_payload: bytes, hello_payload: bytes
) -> SessionKeys:
    """HKDF-SHA256(ikm=shared secret, salt=transcript_hash(challenge, hello)) -> 2 x 32 bytes."""
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=64,
        salt=transcript_hash(challenge_payload, hello_payload),
        info=SESSION_KEYS_INFO,
    ).derive(shared_secret)
    return SessionKeys(coordinator_to_node=okm[:32], node_to_coordinator=okm[32:])


class EphemeralKey:
    """A one-session X25519 key pair."""

    __slots__ = ("_private", "public_bytes")

    def __init__(self, random_bytes: Callable[[int], bytes]) -> None:
        self._private = X25519PrivateKey.from_private_bytes(random_bytes(32))
        self.public_bytes = self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def exchange(self, peer_public: bytes) -> bytes:
        """The shared secret with ``peer_public``; raises HandshakeMismatch for a degenerate key."""
        try:
            return self._private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError:
            # cryptography refuses low-order points (an all-zero shared secret).
            raise HandshakeMismatch("peer's ephemeral X25519 key is invalid") from None


def frame_mac(key: bytes, direction: bytes, header_and_payload: bytes) -> bytes:
    """HMAC-SHA256 of a session frame under its direction's key."""
    return hmac.digest(key, direction + header_and_payload, "sha256")
