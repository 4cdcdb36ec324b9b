"""The ``generations`` table: one row per completed request, written when its charge is posted.

A row is the usage record of a request: who asked (account, key, app), who served (node and its
Provider), what was billed (token counts, the node's claims, how they were metered) and the
itemised charge, plus the lease hold (:mod:`coordinator.billing`) the charge was posted through.
Rows are append-only. The charges of all rows of one lease add up to that hold's posted amount
(checked by the billing audit).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from coordinator.db.models import Base

__all__ = ["Generation"]


class Generation(Base):
    __tablename__ = "generations"
    __table_args__ = (
        CheckConstraint(
            "provider_micro_usd >= 0 AND builder_micro_usd >= 0 AND platform_micro_usd >= 0",
            name="parts_not_negative",
        ),
        CheckConstraint(
            "prompt_tokens >= 0 AND completion_tokens >= 0", name="tokens_not_negative"
        ),
        Index("ix_generations_customer_created", "customer_account_id", "created_at_ms"),
        Index("ix_generations_provider_created", "provider_account_id", "created_at_ms"),
        Index("ix_generations_builder_created", "builder_account_id", "created_at_ms"),
    )

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(100))
    customer_account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    api_key_id: Mapped[str | None] = mapped_column(String(100))
    app_id: Mapped[str | None] = mapped_column(String(100))
    surcharge_version: Mapped[int | None] = mapped_column(Integer)
    builder_account_id: Mapped[str | None] = mapped_column(String(40))
    node_id: Mapped[str] = mapped_column(String(64))
    provider_account_id: Mapped[str] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(256))
    """The model that served the request: its canonical catalogue id, or its own name."""
    requested_model: Mapped[str | None] = mapped_column(String(300))
    """What the request asked for (an alias, a ``route:NAME``), when it differs from ``model``."""
    route: Mapped[str | None] = mapped_column(String(64))
    route_version: Mapped[int | None] = mapped_column(Integer)
    route_rule: Mapped[str | None] = mapped_column(String(64))
    created_at_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    ttft_ms: Mapped[int | None] = mapped_column(BigInteger)
    total_ms: Mapped[int] = mapped_column(BigInteger)
    outcome: Mapped[str] = mapped_column(String(32))
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer)
    hedged: Mapped[bool]
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    completion_tokens: Mapped[int] = mapped_column(BigInteger)
    node_prompt_tokens: Mapped[int | None] = mapped_column(BigInteger)
    node_completion_tokens: Mapped[int | None] = mapped_column(BigInteger)
    metering: Mapped[str] = mapped_column(String(32))
    token_mismatch: Mapped[bool]
    price_input_micro_usd_per_1m: Mapped[int] = mapped_column(BigInteger)
    price_output_micro_usd_per_1m: Mapped[int] = mapped_column(BigInteger)
    provider_micro_usd: Mapped[int] = mapped_column(BigInteger)
    builder_micro_usd: Mapped[int] = mapped_column(BigInteger)
    platform_micro_usd: Mapped[int] = mapped_column(BigInteger)
    lease_hold_id: Mapped[str] = mapped_column(String(100), index=True)
    receipt_signature: Mapped[bytes | None] = mapped_column(LargeBinary)
