"""The double-entry ledger; account balances move into it as top-ups from the world account.

Revision ID: 0002
Revises: 0001

Each account with a positive ``accounts.balance_micro_usd`` gets a customer wallet holding that
balance and a ``top_up`` transfer ``r0002#carry#<account id>`` from the world account, so the
ledger sums to zero and the audit accepts the carried balances; then the column is dropped. The
downgrade puts each wallet's balance, plus what its open holds held, back into the column.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_WORLD = "world"

_accounts = sa.table(
    "accounts",
    sa.column("id", sa.String),
    sa.column("balance_micro_usd", sa.BigInteger),
)
_ledger_accounts = sa.table(
    "ledger_accounts",
    sa.column("id", sa.String),
    sa.column("kind", sa.String),
    sa.column("owner_id", sa.String),
    sa.column("balance_micro_usd", sa.BigInteger),
    sa.column("created_at_ms", sa.BigInteger),
)
_ledger_transfers = sa.table(
    "ledger_transfers",
    sa.column("id", sa.String),
    sa.column("kind", sa.String),
    sa.column("debit_account_id", sa.String),
    sa.column("credit_account_id", sa.String),
    sa.column("amount_micro_usd", sa.BigInteger),
    sa.column("reference", sa.String),
    sa.column("created_at_ms", sa.BigInteger),
)
_ledger_holds = sa.table(
    "ledger_holds",
    sa.column("account_id", sa.String),
    sa.column("amount_micro_usd", sa.BigInteger),
    sa.column("state", sa.String),
)


def _kind_check(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def _create_tables() -> None:
    op.create_table(
        "ledger_accounts",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("owner_id", sa.String(40), nullable=True),
        sa.Column("balance_micro_usd", sa.BigInteger(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_accounts")),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["accounts.id"], name=op.f("fk_ledger_accounts_owner_id_accounts")
        ),
        sa.CheckConstraint(
            _kind_check(
                "kind",
                (
                    "customer_wallet",
                    "customer_holds",
                    "provider_earnings",
                    "builder_earnings",
                    "platform_revenue",
                    "world",
                ),
            ),
            name=op.f("ck_ledger_accounts_ledger_account_kind"),
        ),
        sa.CheckConstraint(
            "kind = 'world' OR balance_micro_usd >= 0",
            name=op.f("ck_ledger_accounts_balance_not_negative"),
        ),
    )
    op.create_index(op.f("ix_ledger_accounts_owner_id"), "ledger_accounts", ["owner_id"])

    op.create_table(
        "ledger_holds",
        sa.Column("id", sa.String(100), nullable=False),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("amount_micro_usd", sa.BigInteger(), nullable=False),
        sa.Column("posted_micro_usd", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reference", sa.String(200), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("expires_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("resolved_at_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_holds")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_ledger_holds_account_id_accounts")
        ),
        sa.CheckConstraint(
            _kind_check("state", ("open", "posted", "released", "expired")),
            name=op.f("ck_ledger_holds_hold_state"),
        ),
        sa.CheckConstraint(
            "amount_micro_usd >= 0", name=op.f("ck_ledger_holds_amount_not_negative")
        ),
        sa.CheckConstraint(
            "posted_micro_usd >= 0 AND posted_micro_usd <= amount_micro_usd",
            name=op.f("ck_ledger_holds_posted_within_amount"),
        ),
        sa.CheckConstraint(
            "state = 'posted' OR posted_micro_usd = 0",
            name=op.f("ck_ledger_holds_posted_only_if_posted"),
        ),
        sa.CheckConstraint(
            "(state = 'open') = (resolved_at_ms IS NULL)",
            name=op.f("ck_ledger_holds_resolved_unless_open"),
        ),
    )
    op.create_index(op.f("ix_ledger_holds_account_id"), "ledger_holds", ["account_id"])
    op.create_index(op.f("ix_ledger_holds_reference"), "ledger_holds", ["reference"])
    op.create_index(
        "ix_ledger_holds_state_expires_at_ms", "ledger_holds", ["state", "expires_at_ms"]
    )

    op.create_table(
        "ledger_transfers",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("debit_account_id", sa.String(64), nullable=False),
        sa.Column("credit_account_id", sa.String(64), nullable=False),
        sa.Column("amount_micro_usd", sa.BigInteger(), nullable=False),
        sa.Column("hold_id", sa.String(100), nullable=True),
        sa.Column("reverses_id", sa.String(200), nullable=True),
        sa.Column("reference", sa.String(200), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_transfers")),
        sa.ForeignKeyConstraint(
            ["debit_account_id"],
            ["ledger_accounts.id"],
            name=op.f("fk_ledger_transfers_debit_account_id_ledger_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["credit_account_id"],
            ["ledger_accounts.id"],
            name=op.f("fk_ledger_transfers_credit_account_id_ledger_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["hold_id"], ["ledger_holds.id"], name=op.f("fk_ledger_transfers_hold_id_ledger_holds")
        ),
        sa.ForeignKeyConstraint(
            ["reverses_id"],
            ["ledger_transfers.id"],
            name=op.f("fk_ledger_transfers_reverses_id_ledger_transfers"),
        ),
        sa.UniqueConstraint("reverses_id", name=op.f("uq_ledger_transfers_reverses_id")),
        sa.CheckConstraint(
            _kind_check(
                "kind",
                (
                    "top_up",
                    "hold",
                    "post",
                    "release",
                    "expire",
                    "payout",
                    "reversal",
                    "adjustment",
                ),
            ),
            name=op.f("ck_ledger_transfers_transfer_kind"),
        ),
        sa.CheckConstraint(
            "amount_micro_usd > 0", name=op.f("ck_ledger_transfers_amount_positive")
        ),
        sa.CheckConstraint(
            "debit_account_id <> credit_account_id", name=op.f("ck_ledger_transfers_two_accounts")
        ),
    )
    for column in ("debit_account_id", "credit_account_id", "hold_id", "reference"):
        op.create_index(op.f(f"ix_ledger_transfers_{column}"), "ledger_transfers", [column])
    op.create_index(
        op.f("ix_ledger_transfers_created_at_ms"), "ledger_transfers", ["created_at_ms"]
    )


def _carry_balances_over() -> None:
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(_accounts.c.id, _accounts.c.balance_micro_usd)
        .where(_accounts.c.balance_micro_usd > 0)
        .order_by(_accounts.c.id)
    ).all()
    if not rows:
        return
    now_ms = time.time_ns() // 1_000_000
    total = sum(balance for _, balance in rows)
    connection.execute(
        sa.insert(_ledger_accounts),
        [
            {
                "id": _WORLD,
                "kind": "world",
                "owner_id": None,
                "balance_micro_usd": -total,
                "created_at_ms": now_ms,
            },
            *(
                {
                    "id": f"wallet:{account_id}",
                    "kind": "customer_wallet",
                    "owner_id": account_id,
                    "balance_micro_usd": balance,
                    "created_at_ms": now_ms,
                }
                for account_id, balance in rows
            ),
        ],
    )
    connection.execute(
        sa.insert(_ledger_transfers),
        [
            {
                "id": f"r0002#carry#{account_id}",
                "kind": "top_up",
                "debit_account_id": _WORLD,
                "credit_account_id": f"wallet:{account_id}",
                "amount_micro_usd": balance,
                "reference": "balance carried over by migration 0002",
                "created_at_ms": now_ms,
            }
            for account_id, balance in rows
        ],
    )


def _create_accounts(*, with_balance: bool) -> None:
    """The ``accounts`` table of revision 0001, with or without its balance column."""
    balance = [sa.Column("balance_micro_usd", sa.BigInteger(), nullable=False)]
    balance_check = [
        sa.CheckConstraint("balance_micro_usd >= 0", name=op.f("ck_accounts_balance_not_negative"))
    ]
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        *(balance if with_balance else []),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.CheckConstraint(
            "role IN ('customer', 'provider', 'builder', 'operator')", name=op.f("ck_accounts_role")
        ),
        *(balance_check if with_balance else []),
    )


def _rebuild_sqlite_accounts(*, with_balance: bool) -> None:
    # SQLite cannot drop a column that a CHECK names, nor add a CHECK, in place, and Alembic's
    # batch mode (copy, drop, rename) trips the foreign keys of api_keys and the ledger, because
    # PRAGMA foreign_keys cannot change inside the migration's transaction. Deferred foreign keys
    # can: the old table is dropped and a new one of the same name filled from a copy, so every
    # reference is satisfied again by commit (SQLite checks deferred keys then).
    op.execute("PRAGMA defer_foreign_keys = ON")
    op.execute("CREATE TABLE _r0002_accounts AS SELECT id, role, name, created_at_ms FROM accounts")
    op.drop_table("accounts")
    _create_accounts(with_balance=with_balance)
    if with_balance:
        op.execute(
            "INSERT INTO accounts (id, role, name, created_at_ms, balance_micro_usd)"
            " SELECT id, role, name, created_at_ms, 0 FROM _r0002_accounts"
        )
    else:
        op.execute(
            "INSERT INTO accounts (id, role, name, created_at_ms)"
            " SELECT id, role, name, created_at_ms FROM _r0002_accounts"
        )
    op.drop_table("_r0002_accounts")


def upgrade() -> None:
    _create_tables()
    _carry_balances_over()
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite_accounts(with_balance=False)
    else:
        op.drop_column("accounts", "balance_micro_usd")  # drops its CHECK too


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        _rebuild_sqlite_accounts(with_balance=True)
    else:
        op.add_column(
            "accounts",
            sa.Column("balance_micro_usd", sa.BigInteger(), nullable=False, server_default="0"),
        )
    connection = op.get_bind()
    wallets = sa.select(
        _ledger_accounts.c.owner_id, _ledger_accounts.c.balance_micro_usd.label("amount")
    ).where(_ledger_accounts.c.kind == "customer_wallet")
    open_holds = sa.select(
        _ledger_holds.c.account_id.label("owner_id"),
        _ledger_holds.c.amount_micro_usd.label("amount"),
    ).where(_ledger_holds.c.state == "open")
    owner_id: str
    amount: int
    for owner_id, amount in connection.execute(
        sa.select(sa.literal_column("owner_id"), sa.func.sum(sa.literal_column("amount")))
        .select_from(sa.union_all(wallets, open_holds).subquery())
        .group_by(sa.literal_column("owner_id"))
    ):
        connection.execute(
            sa.update(_accounts).where(_accounts.c.id == owner_id).values(balance_micro_usd=amount)
        )
    if not sqlite:
        op.alter_column("accounts", "balance_micro_usd", server_default=None)
        op.create_check_constraint(
            op.f("ck_accounts_balance_not_negative"), "accounts", "balance_micro_usd >= 0"
        )
    op.drop_table("ledger_transfers")
    op.drop_table("ledger_holds")
    op.drop_table("ledger_accounts")
