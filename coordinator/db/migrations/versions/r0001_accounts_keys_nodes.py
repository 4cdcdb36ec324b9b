"""Accounts with a credit balance, API keys (hashes only) and node enrollments.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("balance_micro_usd", sa.BigInteger(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.CheckConstraint(
            "role IN ('customer', 'provider', 'builder', 'operator')", name=op.f("ck_accounts_role")
        ),
        sa.CheckConstraint("balance_micro_usd >= 0", name=op.f("ck_accounts_balance_not_negative")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("key_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("last_used_at_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_api_keys_account_id_accounts")
        ),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index(op.f("ix_api_keys_account_id"), "api_keys", ["account_id"])
    op.create_index(op.f("ix_api_keys_prefix"), "api_keys", ["prefix"])
    op.create_table(
        "node_enrollments",
        sa.Column("node_id", sa.String(40), nullable=False),
        sa.Column("public_key", sa.LargeBinary(32), nullable=False),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("enrolled_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("revoked_by", sa.String(40), nullable=True),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_node_enrollments")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_node_enrollments_account_id_accounts")
        ),
        sa.UniqueConstraint("public_key", name=op.f("uq_node_enrollments_public_key")),
    )
    op.create_index(op.f("ix_node_enrollments_account_id"), "node_enrollments", ["account_id"])


def downgrade() -> None:
    op.drop_table("node_enrollments")
    op.drop_table("api_keys")
    op.drop_table("accounts")
