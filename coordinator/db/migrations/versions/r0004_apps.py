"""Builder apps: apps, their versioned surcharges, customer authorizations, app-scoped keys.

Revision ID: 0004
Revises: 0003

``api_keys`` gains a nullable ``app_id``: existing keys stay account keys. The downgrade first
revokes every app-scoped key, because without the column such a key would become an unrestricted
key of the customer's account.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

_api_keys = sa.table(
    "api_keys",
    sa.column("app_id", sa.String),
    sa.column("revoked_at_ms", sa.BigInteger),
)


def upgrade() -> None:
    op.create_table(
        "apps",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("builder_account_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("disabled_at_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_apps")),
        sa.ForeignKeyConstraint(
            ["builder_account_id"],
            ["accounts.id"],
            name=op.f("fk_apps_builder_account_id_accounts"),
        ),
    )
    op.create_index(op.f("ix_apps_builder_account_id"), "apps", ["builder_account_id"])

    op.create_table(
        "app_surcharges",
        sa.Column("app_id", sa.String(40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("surcharge_bps", sa.Integer(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "version", name=op.f("pk_app_surcharges")),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_app_surcharges_app_id_apps")
        ),
        sa.CheckConstraint("version >= 1", name=op.f("ck_app_surcharges_version_positive")),
        sa.CheckConstraint(
            "surcharge_bps >= 0 AND surcharge_bps <= 10000",
            name=op.f("ck_app_surcharges_surcharge_bps_within_bounds"),
        ),
    )

    op.create_table(
        "app_authorizations",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("app_id", sa.String(40), nullable=False),
        sa.Column("customer_account_id", sa.String(40), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_app_authorizations")),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_app_authorizations_app_id_apps")
        ),
        sa.ForeignKeyConstraint(
            ["customer_account_id"],
            ["accounts.id"],
            name=op.f("fk_app_authorizations_customer_account_id_accounts"),
        ),
    )
    op.create_index(op.f("ix_app_authorizations_app_id"), "app_authorizations", ["app_id"])
    op.create_index(
        op.f("ix_app_authorizations_customer_account_id"),
        "app_authorizations",
        ["customer_account_id"],
    )
    op.create_index(
        "ix_app_authorizations_one_active",
        "app_authorizations",
        ["app_id", "customer_account_id"],
        unique=True,
        sqlite_where=sa.text("revoked_at_ms IS NULL"),
        postgresql_where=sa.text("revoked_at_ms IS NULL"),
    )

    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("app_id", sa.String(40), nullable=True))
        batch.create_foreign_key(op.f("fk_api_keys_app_id_apps"), "apps", ["app_id"], ["id"])


def downgrade() -> None:
    op.get_bind().execute(
        sa.update(_api_keys)
        .where(_api_keys.c.app_id.is_not(None), _api_keys.c.revoked_at_ms.is_(None))
        .values(revoked_at_ms=time.time_ns() // 1_000_000)
    )
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_constraint(op.f("fk_api_keys_app_id_apps"), type_="foreignkey")
        batch.drop_column("app_id")
    op.drop_table("app_authorizations")
    op.drop_table("app_surcharges")
    op.drop_table("apps")
