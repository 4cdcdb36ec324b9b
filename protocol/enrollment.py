"""Proof of possession for enrolling a node key under a Provider's account.

``shareai node init`` signs an enrollment statement with the new node key; the coordinator checks
the signature before binding the key to the Provider whose API key made the request. The
statement names the coordinator (its key), the Provider account and a timestamp, so a proof can
be used neither at another coordinator, nor for another account, nor long after it was made::

    "shareai/v1 enroll\\x00"
    32 bytes  coordinator Ed25519 public key
    32 bytes  node Ed25519 public key
    u16 len(account_id)  account_id (UTF-8)
    u64 issued_at_ms     (unix milliseconds)
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.identity import Identity, PublicKey

__all__ = ["ENROLLMENT_DOMAIN", "ENROLLMENT_MAX_AGE_MS", "EnrollmentStatement"]

ENROLLMENT_DOMAIN = b"shareai/v1 enroll\x00"
ENROLLMENT_MAX_AGE_MS = 5 * 60 * 1000


@dataclass(frozen=True, slots=True)
class EnrollmentStatement:
    coordinator_key: PublicKey
    node_key: PublicKey
    account_id: str
    issued_at_ms: int

    def signing_bytes(self) -> bytes:
        account = self.account_id.encode("utf-8")
        return b"".join(
            (
                ENROLLMENT_DOMAIN,
                self.coordinator_key.raw,
                self.node_key.raw,
                len(account).to_bytes(2, "big"),
                account,
                self.issued_at_ms.to_bytes(8, "big"),
            )
        )

    def sign(self, node_identity: Identity) -> bytes:
        """The node's proof: only the holder of ``node_key``'s private key can make it."""
        if node_identity.public_key != self.node_key:
            raise ValueError("the statement names another node key")
        return node_identity.sign(self.signing_bytes())

    def verify(self, signature: bytes, *, now_ms: int) -> None:
        """Raise BadSignature for a bad proof, ValueError for one too old or from the future."""
        if abs(now_ms - self.issued_at_ms) > ENROLLMENT_MAX_AGE_MS:
            raise ValueError("enrollment proof is older than 5 minutes or from the future")
        self.node_key.verify(signature, self.signing_bytes())
