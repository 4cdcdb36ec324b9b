"""Model catalogue and task routes: versioned documents, and the route a generation used.

Revision ID: 0005
Revises: 0004

``catalogue_versions`` and ``task_route_versions`` are append-only version tables
(:mod:`coordinator.db.catalogue`). ``generations`` gains the model the request asked for and the
task route, its version and the rule that chose the model (all nullable: older rows had none),
and an index on its creation time (settlement totals per day and month).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "catalogue_versions",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("note", sa.String(500), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_catalogue_versions")),
        sa.CheckConstraint("version >= 1", name=op.f("ck_catalogue_versions_version_positive")),
    )
    op.create_table(
        "task_route_versions",
        sa.Column("owner_kind", sa.String(16), nullable=False),
        sa.Column("owner_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("document", sa.Text(), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("author_account_id", sa.String(40), nullable=False),
        sa.PrimaryKeyConstraint(
            "owner_kind", "owner_id", "name", "version", name=op.f("pk_task_route_versions")
        ),
        sa.CheckConstraint("version >= 1", name=op.f("ck_task_route_versions_version_positive")),
        sa.CheckConstraint(
            "owner_kind IN ('account', 'app')",
            name=op.f("ck_task_route_versions_owner_kind_known"),
        ),
    )
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("requested_model", sa.String(300), nullable=True))
        batch.add_column(sa.Column("route", sa.String(64), nullable=True))
        batch.add_column(sa.Column("route_version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("route_rule", sa.String(64), nullable=True))
    # Settlement totals for a day or a month (the network status) read by creation time.
    op.create_index(op.f("ix_generations_created_at_ms"), "generations", ["created_at_ms"])


def downgrade() -> None:
    op.drop_index(op.f("ix_generations_created_at_ms"), table_name="generations")
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("route_rule")
        batch.drop_column("route_version")
        batch.drop_column("route")
        batch.drop_column("requested_model")
    op.drop_table("task_route_versions")
    op.drop_table("catalogue_versions")
