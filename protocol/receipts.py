"""Signed usage receipts: a node's non-repudiable statement of what a job used.

A receipt's signing input is a fixed binary layout built from typed fields (not msgpack, which is
not canonical), so anyone holding the node's public key and the stored fields can verify it later::

    "shareai/v1 usage-receipt\\x00"
    32 bytes               the coordinator's Ed25519 public key (the receipt's audience)
    u8  len(job_id)        job_id (ASCII)
    u16 len(model)         model (UTF-8)
    u64 prompt_tokens
    u64 completion_tokens
    u8  len(finish_reason) finish_reason (ASCII)

All integers are big-endian.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.identity import Identity, PublicKey
from protocol.messages import Done, FinishReason

__all__ = ["RECEIPT_DOMAIN", "UsageReceipt"]

RECEIPT_DOMAIN = b"shareai/v1 usage-receipt\x00"


@dataclass(frozen=True, slots=True)
class UsageReceipt:
    """What a node signs at the end of a job. ``coordinator_key`` binds it to one coordinator."""

    coordinator_key: bytes
    job_id: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason

    @classmethod
    def from_done(cls, done: Done, coordinator_key: bytes) -> UsageReceipt:
        return cls(
            coordinator_key=coordinator_key,
            job_id=done.job_id,
            model=done.model,
            prompt_tokens=done.usage.prompt_tokens,
            completion_tokens=done.usage.completion_tokens,
            finish_reason=done.finish_reason,
        )

    def signing_bytes(self) -> bytes:
        job_id = self.job_id.encode("ascii")
        model = self.model.encode("utf-8")
        reason = self.finish_reason.encode("ascii")
        return b"".join(
            (
                RECEIPT_DOMAIN,
                self.coordinator_key,
                len(job_id).to_bytes(1, "big"),
                job_id,
                len(model).to_bytes(2, "big"),
                model,
                self.prompt_tokens.to_bytes(8, "big"),
                self.completion_tokens.to_bytes(8, "big"),
                len(reason).to_bytes(1, "big"),
                reason,
            )
        )

    def sign(self, identity: Identity) -> bytes:
        return identity.sign(self.signing_bytes())

    def verify(self, node_key: PublicKey, signature: bytes) -> None:
        """Raise BadSignature unless ``signature`` is ``node_key``'s signature of this receipt."""
        node_key.verify(signature, self.signing_bytes())
