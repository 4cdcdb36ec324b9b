"""Reading balances: one indexed row per ledger account (balances are cached, never summed)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.models import LedgerAccountKind, TransferKind
from coordinator.ledger._store import ACCOUNTS, TRANSFERS, balance_of, transfer_from_row
from coordinator.ledger.records import AccountBalances, Transfer

__all__ = [
    "account_balances",
    "balance",
    "balances_by_account",
    "ledger_totals",
    "list_transfers",
]

_ZERO = AccountBalances(0, 0, 0, 0)
_FIELDS = {
    LedgerAccountKind.CUSTOMER_WALLET: "available_micro_usd",
    LedgerAccountKind.CUSTOMER_HOLDS: "held_micro_usd",
    LedgerAccountKind.PROVIDER_EARNINGS: "provider_earnings_micro_usd",
    LedgerAccountKind.BUILDER_EARNINGS: "builder_earnings_micro_usd",
}


async def balance(session: AsyncSession, ledger_account_id: str) -> int:
    """The balance of one ledger account (e.g. :data:`~coordinator.ledger.PLATFORM_REVENUE`),
    micro-USD; 0 for an account no movement has touched yet. The world account is negative:
    it is what came in from outside, net of what was paid out."""
    return await balance_of(session, ledger_account_id)


async def balances_by_account(
    session: AsyncSession, account_ids: Iterable[str] | None = None
) -> dict[str, AccountBalances]:
    """The balances of these coordinator accounts (of every account that has any, if None).

    Accounts without ledger accounts yet are included, with zeros, when named.
    """
    query = select(ACCOUNTS.c.owner_id, ACCOUNTS.c.kind, ACCOUNTS.c.balance_micro_usd).where(
        ACCOUNTS.c.owner_id.is_not(None)
    )
    wanted = None if account_ids is None else set(account_ids)
    if wanted is not None:
        query = query.where(ACCOUNTS.c.owner_id.in_(wanted))
    fields: dict[str, dict[str, int]] = {owner: {} for owner in wanted or ()}
    for owner, kind, amount in await session.execute(query):
        fields.setdefault(owner, {})[_FIELDS[LedgerAccountKind(kind)]] = amount
    return {
        owner: AccountBalances(
            available_micro_usd=values.get("available_micro_usd", 0),
            held_micro_usd=values.get("held_micro_usd", 0),
            provider_earnings_micro_usd=values.get("provider_earnings_micro_usd", 0),
            builder_earnings_micro_usd=values.get("builder_earnings_micro_usd", 0),
        )
        for owner, values in fields.items()
    }


async def account_balances(session: AsyncSession, account_id: str) -> AccountBalances:
    """The balances of one coordinator account (zeros for an account with no money yet)."""
    return (await balances_by_account(session, [account_id])).get(account_id, _ZERO)


async def list_transfers(
    session: AsyncSession,
    *,
    ledger_account_id: str | None = None,
    kind: TransferKind | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    limit: int = 1000,
) -> list[Transfer]:
    """Transfers, oldest first: those touching ``ledger_account_id`` (either side), of ``kind``,
    created in ``[since_ms, until_ms)``; at most ``limit``. For statements and inspection."""
    query = select(TRANSFERS).order_by(TRANSFERS.c.created_at_ms, TRANSFERS.c.id).limit(limit)
    if ledger_account_id is not None:
        query = query.where(
            (TRANSFERS.c.debit_account_id == ledger_account_id)
            | (TRANSFERS.c.credit_account_id == ledger_account_id)
        )
    if kind is not None:
        query = query.where(TRANSFERS.c.kind == kind)
    if since_ms is not None:
        query = query.where(TRANSFERS.c.created_at_ms >= since_ms)
    if until_ms is not None:
        query = query.where(TRANSFERS.c.created_at_ms < until_ms)
    return [transfer_from_row(row) for row in await session.execute(query)]


async def ledger_totals(session: AsyncSession) -> dict[str, int]:
    """The whole ledger at a glance, micro-USD, for the operator: customers' available and held
    credits, Providers' and Builders' unpaid earnings, the platform's revenue, and ``paid_in``,
    what came in from outside net of payouts (the world account, negated). The first five add up
    to ``paid_in``."""
    rows = await session.execute(
        select(ACCOUNTS.c.kind, func.sum(ACCOUNTS.c.balance_micro_usd)).group_by(ACCOUNTS.c.kind)
    )
    sums = {LedgerAccountKind(kind): amount for kind, amount in rows}

    def total(kind: LedgerAccountKind) -> int:
        return int(sums.get(kind, 0) or 0)

    return {
        "customer_available": total(LedgerAccountKind.CUSTOMER_WALLET),
        "customer_held": total(LedgerAccountKind.CUSTOMER_HOLDS),
        "provider_earnings": total(LedgerAccountKind.PROVIDER_EARNINGS),
        "builder_earnings": total(LedgerAccountKind.BUILDER_EARNINGS),
        "platform_revenue": total(LedgerAccountKind.PLATFORM_REVENUE),
        "paid_in": -total(LedgerAccountKind.WORLD),
    }
