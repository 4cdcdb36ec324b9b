"""Self-serve sign-up: the operator's invite codes.

Revision ID: 0008
Revises: 0007

``invite_codes`` holds invite codes (their SHA-256 only) with a use limit, an expiry and an
optional role; ``uses`` is raised by one conditional UPDATE per sign-up.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "invite_codes",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("code_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("role", sa.String(16), nullable=True),
        sa.Column("max_uses", sa.Integer(), nullable=False),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("note", sa.String(200), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("expires_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invite_codes")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_invite_codes_code_hash")),
        sa.CheckConstraint(
            "role IN ('customer', 'provider', 'builder', 'operator')",
            name=op.f("ck_invite_codes_role"),
        ),
        sa.CheckConstraint(
            "uses >= 0 AND uses <= max_uses", name=op.f("ck_invite_codes_uses_within_limit")
        ),
    )


def downgrade() -> None:
    op.drop_table("invite_codes")
