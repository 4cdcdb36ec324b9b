"""Provider console: per-model price overrides and one-time node enrollment tokens.

Revision ID: 0007
Revises: 0006

``provider_prices`` holds a Provider's own price per model network id, applied by the coordinator
to the offers of all of the Provider's nodes. ``enrollment_tokens`` holds one-time tokens (their
SHA-256 only) that enroll a node key under a Provider's account without its API key.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "provider_prices",
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("price_input_micro_usd_per_1m", sa.BigInteger(), nullable=False),
        sa.Column("price_output_micro_usd_per_1m", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "model", name=op.f("pk_provider_prices")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_provider_prices_account_id_accounts")
        ),
        sa.CheckConstraint(
            "price_input_micro_usd_per_1m >= 0 AND price_input_micro_usd_per_1m <= 1000000000000"
            " AND price_output_micro_usd_per_1m >= 0"
            " AND price_output_micro_usd_per_1m <= 1000000000000",
            name=op.f("ck_provider_prices_prices_within_bounds"),
        ),
    )
    op.create_table(
        "enrollment_tokens",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("expires_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("used_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("node_id", sa.String(40), nullable=True),
        sa.Column("revoked_at_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrollment_tokens")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_enrollment_tokens_account_id_accounts")
        ),
        sa.UniqueConstraint("token_hash", name=op.f("uq_enrollment_tokens_token_hash")),
    )
    op.create_index(op.f("ix_enrollment_tokens_account_id"), "enrollment_tokens", ["account_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_enrollment_tokens_account_id"), table_name="enrollment_tokens")
    op.drop_table("enrollment_tokens")
    op.drop_table("provider_prices")
