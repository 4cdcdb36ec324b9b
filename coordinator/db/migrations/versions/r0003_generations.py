"""Generations: the usage record of each completed request, with its itemised charge.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "generations",
        sa.Column("id", sa.String(100), nullable=False),
        sa.Column("request_id", sa.String(100), nullable=False),
        sa.Column("customer_account_id", sa.String(40), nullable=False),
        sa.Column("api_key_id", sa.String(100), nullable=True),
        sa.Column("app_id", sa.String(100), nullable=True),
        sa.Column("surcharge_version", sa.Integer(), nullable=True),
        sa.Column("builder_account_id", sa.String(40), nullable=True),
        sa.Column("node_id", sa.String(64), nullable=False),
        sa.Column("provider_account_id", sa.String(40), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("ttft_ms", sa.BigInteger(), nullable=True),
        sa.Column("total_ms", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("finish_reason", sa.String(32), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("hedged", sa.Boolean(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("node_prompt_tokens", sa.BigInteger(), nullable=True),
        sa.Column("node_completion_tokens", sa.BigInteger(), nullable=True),
        sa.Column("metering", sa.String(32), nullable=False),
        sa.Column("token_mismatch", sa.Boolean(), nullable=False),
        sa.Column("price_input_micro_usd_per_1m", sa.BigInteger(), nullable=False),
        sa.Column("price_output_micro_usd_per_1m", sa.BigInteger(), nullable=False),
        sa.Column("provider_micro_usd", sa.BigInteger(), nullable=False),
        sa.Column("builder_micro_usd", sa.BigInteger(), nullable=False),
        sa.Column("platform_micro_usd", sa.BigInteger(), nullable=False),
        sa.Column("lease_hold_id", sa.String(100), nullable=False),
        sa.Column("receipt_signature", sa.LargeBinary(), nullable=True),
        sa.CheckConstraint(
            "provider_micro_usd >= 0 AND builder_micro_usd >= 0 AND platform_micro_usd >= 0",
            name=op.f("ck_generations_parts_not_negative"),
        ),
        sa.CheckConstraint(
            "prompt_tokens >= 0 AND completion_tokens >= 0",
            name=op.f("ck_generations_tokens_not_negative"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_account_id"],
            ["accounts.id"],
            name=op.f("fk_generations_customer_account_id_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_generations")),
    )
    op.create_index(
        "ix_generations_customer_created", "generations", ["customer_account_id", "created_at_ms"]
    )
    op.create_index(
        "ix_generations_provider_created", "generations", ["provider_account_id", "created_at_ms"]
    )
    op.create_index(
        "ix_generations_builder_created", "generations", ["builder_account_id", "created_at_ms"]
    )
    op.create_index(op.f("ix_generations_lease_hold_id"), "generations", ["lease_hold_id"])


def downgrade() -> None:
    op.drop_table("generations")
