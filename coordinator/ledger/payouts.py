"""Monthly payouts: what Providers and Builders earned, paid out to the world once per period.

A payout for period ``YYYY-MM`` (UTC months) pays each earnings account what it had earned by the
end of that month and not been paid since: its balance as of the month's end, less payouts made
after that end, and never more than it holds now (a later reversal may have taken some back).
Earned later is paid with a later period. The payout is a ``payout`` transfer to the world
account with the id ``payout#<period>#<ledger account id>``, so each (payee, period) is paid at
most once however often, and however concurrently, the run is repeated.

New Providers are held back: a Provider whose account is younger than ``holdback_days`` at the
end of the period is not paid for it; its earnings carry over to the first period it is paid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import NamedTuple

from sqlalchemy import func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.models import Account, LedgerAccountKind, Role, TransferKind
from coordinator.ledger._store import ACCOUNTS, TRANSFERS, now_or_wall_clock, transfer_row
from coordinator.ledger.errors import IdConflict, InvalidLedgerInput
from coordinator.ledger.ids import WORLD
from coordinator.ledger.transfers import get_transfer, record_transfer

__all__ = [
    "DEFAULT_HOLDBACK_DAYS",
    "Payout",
    "PayoutStatus",
    "pay_out_period",
    "period_bounds_ms",
]

DEFAULT_HOLDBACK_DAYS = 30
_DAY_MS = 24 * 3600 * 1000
_PERIOD_TEXT = re.compile(r"(?P<year>[0-9]{4})-(?P<month>0[1-9]|1[0-2])")
_PAYEES = (LedgerAccountKind.PROVIDER_EARNINGS, LedgerAccountKind.BUILDER_EARNINGS)


class PayoutStatus(StrEnum):
    PAID = "paid"  # paid by this run
    ALREADY_PAID = "already_paid"  # paid by an earlier run: nothing moved now
    HELD_BACK = "held_back"  # a new Provider: paid with a later period
    NOTHING_DUE = "nothing_due"


@dataclass(frozen=True, slots=True)
class Payout:
    """One payee's outcome for a period. ``amount_micro_usd`` is what was paid (now or before),
    or what is held back; 0 when nothing is due."""

    account_id: str
    ledger_account_id: str
    period: str
    status: PayoutStatus
    amount_micro_usd: int
    transfer_id: str


def period_bounds_ms(period: str) -> tuple[int, int]:
    """``"2026-03"`` -> the unix milliseconds of its first instant and of the next month's (UTC).

    Raises :class:`InvalidLedgerInput` for anything but ``YYYY-MM``.
    """
    match = _PERIOD_TEXT.fullmatch(period) if isinstance(period, str) else None
    if match is None:
        raise InvalidLedgerInput(f"invalid period {period!r}: write YYYY-MM, e.g. 2026-03")
    year, month = int(match["year"]), int(match["month"])
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return int(start.timestamp()) * 1000, int(end.timestamp()) * 1000


async def _due_by_account(session: AsyncSession, end_ms: int) -> dict[str, int]:
    """Per earnings account: balance as of ``end_ms`` less payouts made since, capped by now."""
    moves = (
        select(
            TRANSFERS.c.credit_account_id.label("account_id"),
            TRANSFERS.c.amount_micro_usd.label("amount"),
        )
        .where(TRANSFERS.c.created_at_ms < end_ms)
        .union_all(
            select(TRANSFERS.c.debit_account_id, -TRANSFERS.c.amount_micro_usd).where(
                TRANSFERS.c.created_at_ms < end_ms
            ),
            select(TRANSFERS.c.debit_account_id, -TRANSFERS.c.amount_micro_usd).where(
                TRANSFERS.c.created_at_ms >= end_ms, TRANSFERS.c.kind == TransferKind.PAYOUT
            ),
            select(ACCOUNTS.c.id, literal(0)).where(ACCOUNTS.c.kind.in_(_PAYEES)),
        )
        .subquery()
    )
    earned = (
        select(moves.c.account_id, func.sum(moves.c.amount).label("due"))
        .group_by(moves.c.account_id)
        .subquery()
    )
    rows = await session.execute(
        select(ACCOUNTS.c.id, ACCOUNTS.c.balance_micro_usd, earned.c.due)
        .join(earned, earned.c.account_id == ACCOUNTS.c.id)
        .where(ACCOUNTS.c.kind.in_(_PAYEES))
    )
    return {account_id: max(0, min(now, due)) for account_id, now, due in rows}


async def pay_out_period(
    session: AsyncSession,
    period: str,
    *,
    holdback_days: int = DEFAULT_HOLDBACK_DAYS,
    now_ms: int | None = None,
) -> list[Payout]:
    """Pay every Provider and Builder for ``period`` (see the module docstring); one
    :class:`Payout` per earnings account, in account id order.

    All or nothing: raises :class:`InvalidLedgerInput` for a malformed period, one not over
    yet, or a negative holdback; :class:`InsufficientFunds` when an earnings account shrank while
    the run computed its payout (nothing is paid then: run it again).
    """
    _, end_ms = period_bounds_ms(period)
    at_ms = now_or_wall_clock(now_ms)
    if end_ms > at_ms:
        raise InvalidLedgerInput(f"period {period} is not over yet: pay it out from its next month")
    if not isinstance(holdback_days, int) or holdback_days < 0:
        raise InvalidLedgerInput(f"holdback_days must be 0 or more, got {holdback_days!r}")
    due = await _due_by_account(session, end_ms)
    owners = {
        account_id: _Payee(owner, LedgerAccountKind(kind), Role(role), created_at_ms)
        for account_id, owner, kind, role, created_at_ms in await session.execute(
            select(
                ACCOUNTS.c.id,
                ACCOUNTS.c.owner_id,
                ACCOUNTS.c.kind,
                Account.role,
                Account.created_at_ms,
            )
            .join(Account, Account.id == ACCOUNTS.c.owner_id)
            .where(ACCOUNTS.c.kind.in_(_PAYEES))
        )
    }
    # All payees or none: a refusal half-way (an account that shrank meanwhile) pays nobody.
    savepoint = await session.begin_nested()
    try:
        payouts = [
            await _pay_one(
                session,
                ledger_account_id,
                owners[ledger_account_id],
                period=period,
                due_micro_usd=due.get(ledger_account_id, 0),
                holdback_until_ms=end_ms - holdback_days * _DAY_MS,
                now_ms=at_ms,
            )
            for ledger_account_id in sorted(owners)
        ]
    except BaseException:
        await savepoint.rollback()
        raise
    await savepoint.commit()
    return payouts


class _Payee(NamedTuple):
    owner: str
    kind: LedgerAccountKind
    role: Role
    created_at_ms: int


async def _pay_one(
    session: AsyncSession,
    ledger_account_id: str,
    payee: _Payee,
    *,
    period: str,
    due_micro_usd: int,
    holdback_until_ms: int,
    now_ms: int,
) -> Payout:
    owner, kind, role, created_at_ms = payee
    transfer_id = f"payout#{period}#{ledger_account_id}"
    amount = due_micro_usd
    earlier = await get_transfer(session, transfer_id)
    if earlier is not None:
        status, amount = PayoutStatus.ALREADY_PAID, earlier.amount_micro_usd
    elif amount == 0:
        status = PayoutStatus.NOTHING_DUE
    elif (
        LedgerAccountKind(kind) is LedgerAccountKind.PROVIDER_EARNINGS
        and Role(role) is Role.PROVIDER
        and created_at_ms > holdback_until_ms
    ):
        status = PayoutStatus.HELD_BACK
    else:
        row = transfer_row(
            transfer_id,
            TransferKind.PAYOUT,
            ledger_account_id,
            WORLD,
            amount,
            now_ms=now_ms,
            reference=f"payout {period}",
        )
        try:
            await record_transfer(session, row)
            status = PayoutStatus.PAID
        except IdConflict:  # a concurrent run paid it first, computing another amount
            paid = await get_transfer(session, transfer_id)
            assert paid is not None
            status, amount = PayoutStatus.ALREADY_PAID, paid.amount_micro_usd
    return Payout(owner, ledger_account_id, period, status, amount, transfer_id)
