"""Public Provider names: the display name a Provider chose to publish (opt-in).

Revision ID: 0009
Revises: 0008

``provider_public_names`` holds one row per Provider that published a name; ``name_key`` (the
name case-folded) is unique, so public names are unique case-insensitively. No row: anonymous.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "provider_public_names",
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(60), nullable=False),
        sa.Column("name_key", sa.String(180), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_provider_public_names_account_id_accounts"),
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_provider_public_names")),
        sa.UniqueConstraint("name_key", name=op.f("uq_provider_public_names_name_key")),
    )


def downgrade() -> None:
    op.drop_table("provider_public_names")
