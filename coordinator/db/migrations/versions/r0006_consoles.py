"""Web consoles: browser sessions, and operator suspension of nodes.

Revision ID: 0006
Revises: 0005

``console_sessions`` holds one row per logged-in browser (the SHA-256 of its cookie token, the
account and API key it logged in with, its CSRF token and expiry). ``node_enrollments`` gains the
operator's suspension: when, by whom and why (all null while the node is not suspended).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("token_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("api_key_id", sa.String(40), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("expires_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_console_sessions")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_console_sessions_account_id_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_console_sessions_api_key_id_api_keys"),
        ),
    )
    op.create_index(op.f("ix_console_sessions_account_id"), "console_sessions", ["account_id"])
    op.create_index(op.f("ix_console_sessions_api_key_id"), "console_sessions", ["api_key_id"])
    op.create_index(
        op.f("ix_console_sessions_expires_at_ms"), "console_sessions", ["expires_at_ms"]
    )
    with op.batch_alter_table("node_enrollments") as batch:
        batch.add_column(sa.Column("suspended_at_ms", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("suspended_by", sa.String(40), nullable=True))
        batch.add_column(sa.Column("suspended_reason", sa.String(500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("node_enrollments") as batch:
        batch.drop_column("suspended_reason")
        batch.drop_column("suspended_by")
        batch.drop_column("suspended_at_ms")
    op.drop_index(op.f("ix_console_sessions_expires_at_ms"), table_name="console_sessions")
    op.drop_index(op.f("ix_console_sessions_api_key_id"), table_name="console_sessions")
    op.drop_index(op.f("ix_console_sessions_account_id"), table_name="console_sessions")
    op.drop_table("console_sessions")
