"""SQL shared by the ledger's operations: balance updates, transfer rows, row conversion.

Private to :mod:`coordinator.ledger`. Everything here runs inside the caller's transaction.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Row, Table, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.models import (
    Account,
    HoldState,
    LedgerAccount,
    LedgerAccountKind,
    LedgerHold,
    LedgerTransfer,
    TransferKind,
)
from coordinator.ledger.errors import InsufficientFunds, InvalidLedgerInput
from coordinator.ledger.ids import owner_and_kind
from coordinator.ledger.records import Hold, Transfer
from coordinator.money import MAX_AMOUNT_MICRO_USD

__all__ = [
    "ACCOUNTS",
    "HOLDS",
    "TRANSFERS",
    "apply_deltas",
    "balance_of",
    "checked_amount",
    "debit_if_covered",
    "debit_or_raise",
    "hold_from_row",
    "insert_on_conflict",
    "insert_transfers",
    "missing_owners",
    "now_or_wall_clock",
    "transfer_from_row",
    "transfer_row",
]

ACCOUNTS: Table = LedgerAccount.__table__  # type: ignore[assignment]
HOLDS: Table = LedgerHold.__table__  # type: ignore[assignment]
TRANSFERS: Table = LedgerTransfer.__table__  # type: ignore[assignment]


def now_or_wall_clock(now_ms: int | None) -> int:
    """``now_ms`` if given, else the wall clock in unix milliseconds."""
    return now_ms if now_ms is not None else time.time_ns() // 1_000_000


def checked_amount(amount_micro_usd: int, what: str, *, allow_zero: bool = False) -> int:
    """``amount_micro_usd`` if it is an integer in range, else :class:`InvalidLedgerInput`."""
    if not isinstance(amount_micro_usd, int) or isinstance(amount_micro_usd, bool):
        raise InvalidLedgerInput(f"{what} is an integer of micro-USD, not {amount_micro_usd!r}")
    low = 0 if allow_zero else 1
    if not low <= amount_micro_usd <= MAX_AMOUNT_MICRO_USD:
        raise InvalidLedgerInput(
            f"{what} must be {low} to {MAX_AMOUNT_MICRO_USD} micro-USD, got {amount_micro_usd}"
        )
    return amount_micro_usd


def insert_on_conflict(session: AsyncSession, table: Table) -> Any:
    """``INSERT`` with ``ON CONFLICT`` support for the session's database (PostgreSQL, SQLite)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _upsertable(account_id: str, delta: int) -> bool:
    # An upsert's proposed row must pass the CHECK even when it only updates: a credit does,
    # and so does any change of the world account (the one allowed below zero).
    return delta > 0 or owner_and_kind(account_id)[1] is LedgerAccountKind.WORLD


async def _upsert(
    session: AsyncSession, account_ids: list[str], deltas: Mapping[str, int], now_ms: int
) -> None:
    """Add the deltas, creating missing accounts: one statement, rows in the given order."""
    if not account_ids:
        return
    statement = insert_on_conflict(session, ACCOUNTS)
    statement = statement.on_conflict_do_update(
        index_elements=[ACCOUNTS.c.id],
        set_={
            "balance_micro_usd": ACCOUNTS.c.balance_micro_usd + statement.excluded.balance_micro_usd
        },
    )
    await session.execute(
        statement,
        [
            {
                "id": account_id,
                "kind": owner_and_kind(account_id)[1],
                "owner_id": owner_and_kind(account_id)[0],
                "balance_micro_usd": deltas[account_id],
                "created_at_ms": now_ms,
            }
            for account_id in account_ids
        ],
    )


async def _take(session: AsyncSession, account_id: str, amount_micro_usd: int) -> None:
    """Take money the caller knows is there (a hold's own amount)."""
    taken = (
        await session.execute(
            update(ACCOUNTS)
            .where(ACCOUNTS.c.id == account_id)
            .values(balance_micro_usd=ACCOUNTS.c.balance_micro_usd - amount_micro_usd)
            .returning(ACCOUNTS.c.id)
        )
    ).first()
    if taken is None:  # pragma: no cover - only a damaged database gets here
        raise RuntimeError(f"ledger account {account_id} is missing: run `shareai admin audit`")


async def apply_deltas(session: AsyncSession, deltas: Mapping[str, int], now_ms: int) -> None:
    """Add each delta to its account's cached balance, in ascending account id order (the
    ledger's lock order); credited accounts are created when missing. One statement per run of
    credits (an upsert of many rows), one per debit.

    No balance check here: a debit that would take a non-world account below zero violates the
    table's CHECK and raises ``IntegrityError``. Callers debit only what is certainly there (a
    hold's own amount), or check first with :func:`debit_if_covered`.
    """
    run: list[str] = []
    for account_id in sorted(account for account, delta in deltas.items() if delta != 0):
        if _upsertable(account_id, deltas[account_id]):
            run.append(account_id)
            continue
        await _upsert(session, run, deltas, now_ms)
        run = []
        await _take(session, account_id, -deltas[account_id])
    await _upsert(session, run, deltas, now_ms)


async def debit_if_covered(
    session: AsyncSession, account_id: str, amount_micro_usd: int
) -> int | None:
    """Take ``amount_micro_usd`` from ``account_id`` if its balance covers it, atomically (one
    conditional UPDATE: concurrent debits queue on the row, each sees the others' result).
    Returns the new balance, or None when the balance is short or the account does not exist.
    """
    balance: int | None = (
        await session.execute(
            update(ACCOUNTS)
            .where(ACCOUNTS.c.id == account_id, ACCOUNTS.c.balance_micro_usd >= amount_micro_usd)
            .values(balance_micro_usd=ACCOUNTS.c.balance_micro_usd - amount_micro_usd)
            .returning(ACCOUNTS.c.balance_micro_usd)
        )
    ).scalar_one_or_none()
    return balance


async def balance_of(session: AsyncSession, account_id: str) -> int:
    """The cached balance of a ledger account; 0 for one that does not exist yet."""
    balance = (
        await session.execute(
            select(ACCOUNTS.c.balance_micro_usd).where(ACCOUNTS.c.id == account_id)
        )
    ).scalar_one_or_none()
    return balance or 0


async def debit_or_raise(
    session: AsyncSession, account_id: str, amount_micro_usd: int, now_ms: int
) -> None:
    """:func:`debit_if_covered`, raising :class:`InsufficientFunds` when short; the world
    account has no floor (and is created by its first debit)."""
    if owner_and_kind(account_id)[1] is LedgerAccountKind.WORLD:
        await apply_deltas(session, {account_id: -amount_micro_usd}, now_ms)
        return
    if await debit_if_covered(session, account_id, amount_micro_usd) is None:
        available = await balance_of(session, account_id)
        raise InsufficientFunds(account_id, available, amount_micro_usd)


async def missing_owners(session: AsyncSession, account_ids: Iterable[str]) -> list[str]:
    """Which of the owners of these ledger account ids are no coordinator account."""
    owners = {owner for owner, _ in map(owner_and_kind, account_ids) if owner is not None}
    if not owners:
        return []
    found = set((await session.execute(select(Account.id).where(Account.id.in_(owners)))).scalars())
    return sorted(owners - found)


def transfer_row(
    transfer_id: str,
    kind: TransferKind,
    debit_account_id: str,
    credit_account_id: str,
    amount_micro_usd: int,
    *,
    now_ms: int,
    reference: str | None = None,
    hold_id: str | None = None,
    reverses_id: str | None = None,
) -> dict[str, Any]:
    return {
        "id": transfer_id,
        "kind": kind,
        "debit_account_id": debit_account_id,
        "credit_account_id": credit_account_id,
        "amount_micro_usd": amount_micro_usd,
        "hold_id": hold_id,
        "reverses_id": reverses_id,
        "reference": reference,
        "created_at_ms": now_ms,
    }


async def insert_transfers(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert transfer rows (one statement); the caller has made their ids unique."""
    if rows:
        await session.execute(TRANSFERS.insert(), rows)


def transfer_from_row(row: Row[Any] | Mapping[str, Any]) -> Transfer:
    values = row._mapping if isinstance(row, Row) else row
    return Transfer(
        id=values["id"],
        kind=TransferKind(values["kind"]),
        debit_account_id=values["debit_account_id"],
        credit_account_id=values["credit_account_id"],
        amount_micro_usd=values["amount_micro_usd"],
        reference=values["reference"],
        hold_id=values["hold_id"],
        reverses_id=values["reverses_id"],
        created_at_ms=values["created_at_ms"],
    )


def hold_from_row(row: Row[Any] | Mapping[str, Any]) -> Hold:
    values = row._mapping if isinstance(row, Row) else row
    return Hold(
        id=values["id"],
        account_id=values["account_id"],
        amount_micro_usd=values["amount_micro_usd"],
        posted_micro_usd=values["posted_micro_usd"],
        state=HoldState(values["state"]),
        reference=values["reference"],
        created_at_ms=values["created_at_ms"],
        expires_at_ms=values["expires_at_ms"],
        resolved_at_ms=values["resolved_at_ms"],
    )
