"""Direct transfers (top-ups, payouts, adjustments) and reversals.

Each takes effect at most once per id: repeating a call with the same id and the same parameters
returns the first result (even if balances changed since), the same id with other parameters
raises :class:`IdConflict`. Each runs in a SAVEPOINT of the caller's transaction, so a refused
transfer writes nothing and the transaction may go on.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.models import LedgerAccountKind, TransferKind
from coordinator.ledger._store import (
    TRANSFERS,
    apply_deltas,
    checked_amount,
    debit_or_raise,
    insert_on_conflict,
    missing_owners,
    now_or_wall_clock,
    transfer_from_row,
    transfer_row,
)
from coordinator.ledger.errors import (
    IdConflict,
    InvalidLedgerInput,
    NotReversible,
    TransferNotFound,
)
from coordinator.ledger.ids import WORLD, checked_id, customer_wallet, owner_and_kind
from coordinator.ledger.records import Transfer

__all__ = [
    "DIRECT_TRANSFER_KINDS",
    "checked_reference",
    "get_transfer",
    "record_transfer",
    "reverse_transfer",
    "top_up",
    "transfer",
]

DIRECT_TRANSFER_KINDS = frozenset(
    {TransferKind.TOP_UP, TransferKind.PAYOUT, TransferKind.ADJUSTMENT}
)
# Hold movements are undone by the hold's own lifecycle, a reversal by a new adjustment.
_NOT_REVERSIBLE = frozenset(
    {TransferKind.HOLD, TransferKind.RELEASE, TransferKind.EXPIRE, TransferKind.REVERSAL}
)
_MAX_REFERENCE_CHARS = 200
_COMPARED = ("kind", "debit_account_id", "credit_account_id", "amount_micro_usd", "reference")


def checked_reference(reference: str | None) -> str | None:
    if reference is not None and (
        not isinstance(reference, str) or len(reference) > _MAX_REFERENCE_CHARS
    ):
        raise InvalidLedgerInput(f"a reference is at most {_MAX_REFERENCE_CHARS} characters")
    return reference


async def get_transfer(session: AsyncSession, transfer_id: str) -> Transfer | None:
    """The transfer ``transfer_id``, or None."""
    row = (await session.execute(select(TRANSFERS).where(TRANSFERS.c.id == transfer_id))).first()
    return None if row is None else transfer_from_row(row)


def _same_or_conflict(existing: Transfer, wanted: dict[str, Any]) -> Transfer:
    differing = [name for name in _COMPARED if getattr(existing, name) != wanted[name]]
    if existing.reverses_id != wanted["reverses_id"]:
        differing.append("reverses_id")
    if differing:
        raise IdConflict(
            f"transfer id {existing.id!r} was already used for another transfer"
            f" (different {', '.join(differing)})"
        )
    return existing


async def record_transfer(session: AsyncSession, row: dict[str, Any]) -> Transfer:
    """Move the money and insert ``row`` (a :func:`~coordinator.ledger._store.transfer_row`),
    once, in a SAVEPOINT: the module docstring's rules, for callers that checked the row."""
    existing = await get_transfer(session, row["id"])
    if existing is not None:
        return _same_or_conflict(existing, row)
    debit, credit = row["debit_account_id"], row["credit_account_id"]
    amount, at_ms = row["amount_micro_usd"], row["created_at_ms"]
    savepoint = await session.begin_nested()
    try:
        for account_id in sorted((debit, credit)):  # the ledger's lock order
            if account_id == debit:
                await debit_or_raise(session, debit, amount, at_ms)
            else:
                await apply_deltas(session, {credit: amount}, at_ms)
        inserted = await session.execute(
            insert_on_conflict(session, TRANSFERS)
            .values(**row)
            .on_conflict_do_nothing()
            .returning(TRANSFERS.c.id)
        )
        recorded = inserted.scalar_one_or_none() is not None
    except BaseException:
        await savepoint.rollback()
        raise
    if recorded:
        await savepoint.commit()
        return transfer_from_row(row)
    # Another transaction committed this id (or a reversal of the same transfer) first.
    await savepoint.rollback()
    existing = await get_transfer(session, row["id"])
    if existing is None:
        raise NotReversible(f"transfer {row['reverses_id']!r} was reversed already")
    return _same_or_conflict(existing, row)


async def transfer(
    session: AsyncSession,
    transfer_id: str,
    debit_account_id: str,
    credit_account_id: str,
    amount_micro_usd: int,
    *,
    kind: TransferKind = TransferKind.ADJUSTMENT,
    reference: str | None = None,
    now_ms: int | None = None,
) -> Transfer:
    """Move ``amount_micro_usd`` (> 0) from one ledger account to another, once per id.

    For operator corrections (``adjustment``), top-ups and payouts; holds have their own
    operations and their accounts cannot be named here. Raises :class:`InsufficientFunds` when
    the debit account (any but the world) holds less, :class:`IdConflict`, and
    :class:`InvalidLedgerInput` for a bad id, amount, kind or account (also an owner that is no
    coordinator account).
    """
    checked_id(transfer_id, "transfer")
    amount = checked_amount(amount_micro_usd, "a transfer amount")
    if kind not in DIRECT_TRANSFER_KINDS:
        raise InvalidLedgerInput(f"a {kind.value} transfer is made by the ledger itself")
    accounts = (debit_account_id, credit_account_id)
    if debit_account_id == credit_account_id:
        raise InvalidLedgerInput("a transfer needs two different accounts")
    for account_id in accounts:
        if owner_and_kind(account_id)[1] is LedgerAccountKind.CUSTOMER_HOLDS:
            raise InvalidLedgerInput(f"{account_id} changes only through holds")
    missing = await missing_owners(session, accounts)
    if missing:
        raise InvalidLedgerInput(f"no account {missing[0]!r}")
    row = transfer_row(
        transfer_id,
        kind,
        debit_account_id,
        credit_account_id,
        amount,
        now_ms=now_or_wall_clock(now_ms),
        reference=checked_reference(reference),
    )
    return await record_transfer(session, row)


async def top_up(
    session: AsyncSession,
    account_id: str,
    amount_micro_usd: int,
    *,
    transfer_id: str,
    reference: str | None = None,
    now_ms: int | None = None,
) -> Transfer:
    """Credit ``account_id``'s wallet with money from outside (the world account), once per
    ``transfer_id``. Raises like :func:`transfer`."""
    return await transfer(
        session,
        transfer_id,
        WORLD,
        customer_wallet(account_id),
        amount_micro_usd,
        kind=TransferKind.TOP_UP,
        reference=reference,
        now_ms=now_ms,
    )


async def reverse_transfer(
    session: AsyncSession,
    transfer_id: str,
    *,
    reversal_id: str,
    reference: str | None = None,
    now_ms: int | None = None,
) -> Transfer:
    """Undo transfer ``transfer_id`` with a new transfer ``reversal_id`` the other way.

    A posted part of a hold goes back to the customer's wallet (not to the holds account,
    which only ever holds open holds). A transfer is reversed at most once. Raises
    :class:`TransferNotFound`; :class:`NotReversible` for hold movements, reversals, and a
    transfer reversed already; :class:`InsufficientFunds` when the account to take the money
    back from no longer holds it (e.g. earnings paid out since); :class:`IdConflict`.
    """
    checked_id(reversal_id, "transfer")
    original = await get_transfer(session, transfer_id)
    if original is None:
        raise TransferNotFound(f"no transfer {transfer_id!r}")
    if original.kind in _NOT_REVERSIBLE:
        raise NotReversible(f"a {original.kind.value} transfer cannot be reversed")
    at_ms = now_or_wall_clock(now_ms)
    owner, kind = owner_and_kind(original.debit_account_id)
    credit = original.debit_account_id
    if kind is LedgerAccountKind.CUSTOMER_HOLDS:
        assert owner is not None  # a holds account always has an owner
        credit = customer_wallet(owner)
    row = transfer_row(
        reversal_id,
        TransferKind.REVERSAL,
        original.credit_account_id,
        credit,
        original.amount_micro_usd,
        now_ms=at_ms,
        reference=checked_reference(reference),
        reverses_id=original.id,
    )
    existing = await get_transfer(session, reversal_id)
    if existing is not None:
        return _same_or_conflict(existing, row)
    reversed_by = (
        await session.execute(select(TRANSFERS.c.id).where(TRANSFERS.c.reverses_id == transfer_id))
    ).scalar_one_or_none()
    if reversed_by is not None:
        raise NotReversible(f"transfer {transfer_id!r} was reversed already by {reversed_by!r}")
    return await record_transfer(session, row)
