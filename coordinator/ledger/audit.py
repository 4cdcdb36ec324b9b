"""The ledger's invariants, checked against the database: :func:`audit` lists every violation.

An empty list means healthy. The checks (docs/settlement.md, "Invariants"):

- ``unbalanced``: the balances of all ledger accounts add up to zero;
- ``balance_mismatch``: each cached balance equals its credits minus its debits;
- ``negative_balance``: no account but the world is below zero (a customer's available balance
  above all);
- ``bad_transfer``: every amount is positive and moves between two accounts;
- ``holds_mismatch``: each customer's holds account holds exactly its open holds;
- ``hold_movements``: each hold moved its money in exactly once and out exactly once, as its
  state says, and never posted more than it held;
- ``hold_accounts``: each hold's movements use that customer's wallet and holds account;
- ``overdue_hold``: no hold is still open ``grace_ms`` after its expiry (when ``now_ms`` given);
- ``duplicate_settlement``: no two posted holds name the same reference (request id);
- ``bad_reversal``: each reversal mirrors the transfer it reverses.

Checks that need tables outside the ledger (e.g. "every completed request has exactly one
settlement", once requests are stored) plug in as :class:`AuditCheck` callables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import and_, case, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from coordinator.db.models import HoldState, LedgerAccountKind, TransferKind
from coordinator.ledger._store import ACCOUNTS, HOLDS, TRANSFERS

__all__ = ["DEFAULT_OVERDUE_GRACE_MS", "AuditCheck", "Violation", "audit"]

# How long past its expiry an open hold may wait for the sweep before the audit reports it.
DEFAULT_OVERDUE_GRACE_MS = 5 * 60 * 1000


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken invariant: ``code`` (see the module docstring), what it is about (an account,
    hold or transfer id; empty for the whole ledger) and a sentence for people."""

    code: str
    subject: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class AuditCheck(Protocol):
    """An extra invariant check: the violations it finds in the caller's transaction."""

    async def __call__(self, session: AsyncSession) -> list[Violation]: ...


async def _unbalanced(session: AsyncSession) -> list[Violation]:
    total = (await session.execute(select(func.sum(ACCOUNTS.c.balance_micro_usd)))).scalar()
    if total:
        return [Violation("unbalanced", "", f"the balances add up to {total} micro-USD, not 0")]
    return []


async def _balance_mismatches(session: AsyncSession) -> list[Violation]:
    credits = (
        (
            select(
                TRANSFERS.c.credit_account_id.label("id"),
                TRANSFERS.c.amount_micro_usd.label("amount"),
            )
        )
        .union_all(select(TRANSFERS.c.debit_account_id, -TRANSFERS.c.amount_micro_usd))
        .subquery()
    )
    moved = (
        select(credits.c.id, func.sum(credits.c.amount).label("net")).group_by(credits.c.id)
    ).subquery()
    net = func.coalesce(moved.c.net, 0)
    rows = await session.execute(
        select(ACCOUNTS.c.id, ACCOUNTS.c.balance_micro_usd, net)
        .select_from(ACCOUNTS.outerjoin(moved, moved.c.id == ACCOUNTS.c.id))
        .where(ACCOUNTS.c.balance_micro_usd != net)
        .order_by(ACCOUNTS.c.id)
    )
    return [
        Violation(
            "balance_mismatch",
            account_id,
            f"{account_id} shows {cached} micro-USD but its transfers add up to {summed}",
        )
        for account_id, cached, summed in rows
    ]


async def _negative_balances(session: AsyncSession) -> list[Violation]:
    rows = await session.execute(
        select(ACCOUNTS.c.id, ACCOUNTS.c.balance_micro_usd)
        .where(ACCOUNTS.c.kind != LedgerAccountKind.WORLD, ACCOUNTS.c.balance_micro_usd < 0)
        .order_by(ACCOUNTS.c.id)
    )
    return [
        Violation("negative_balance", account_id, f"{account_id} is at {amount} micro-USD")
        for account_id, amount in rows
    ]


async def _bad_transfers(session: AsyncSession) -> list[Violation]:
    rows = await session.execute(
        select(TRANSFERS.c.id)
        .where(
            or_(
                TRANSFERS.c.amount_micro_usd <= 0,
                TRANSFERS.c.debit_account_id == TRANSFERS.c.credit_account_id,
            )
        )
        .order_by(TRANSFERS.c.id)
    )
    return [
        Violation("bad_transfer", transfer_id, f"transfer {transfer_id} moves nothing")
        for (transfer_id,) in rows
    ]


async def _holds_mismatches(session: AsyncSession) -> list[Violation]:
    # Per owner: the holds account's balance (plus) against the open holds (minus).
    both = (
        select(
            ACCOUNTS.c.owner_id.label("owner"),
            ACCOUNTS.c.balance_micro_usd.label("balance"),
            literal(0).label("held"),
        )
        .where(ACCOUNTS.c.kind == LedgerAccountKind.CUSTOMER_HOLDS)
        .union_all(
            select(HOLDS.c.account_id, literal(0), HOLDS.c.amount_micro_usd).where(
                HOLDS.c.state == HoldState.OPEN
            )
        )
        .subquery()
    )
    balance, held = func.sum(both.c.balance), func.sum(both.c.held)
    rows = await session.execute(
        select(both.c.owner, balance, held)
        .group_by(both.c.owner)
        .having(balance != held)
        .order_by(both.c.owner)
    )
    return [
        Violation(
            "holds_mismatch",
            account_id,
            f"the holds account of {account_id} has {amount} micro-USD, its open holds {expected}",
        )
        for account_id, amount, expected in rows
    ]


def _sum_of(kind: TransferKind) -> ColumnElement[int]:
    return func.coalesce(
        func.sum(case((TRANSFERS.c.kind == kind, TRANSFERS.c.amount_micro_usd), else_=0)), 0
    )


def _count_of(kind: TransferKind) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((TRANSFERS.c.kind == kind, 1), else_=0)), 0)


async def _hold_movements(session: AsyncSession) -> list[Violation]:
    amount, posted, state = HOLDS.c.amount_micro_usd, HOLDS.c.posted_micro_usd, HOLDS.c.state
    held_in, holds_made = _sum_of(TransferKind.HOLD), _count_of(TransferKind.HOLD)
    post_out, release_out = _sum_of(TransferKind.POST), _sum_of(TransferKind.RELEASE)
    expire_out = _sum_of(TransferKind.EXPIRE)
    expected_release = case(
        (state == HoldState.POSTED, amount - posted),
        (state == HoldState.RELEASED, amount),
        else_=0,
    )
    expected_expire = case((state == HoldState.EXPIRED, amount), else_=0)
    healthy = and_(
        held_in == amount,
        holds_made == case((amount > 0, 1), else_=0),
        post_out == posted,
        release_out == expected_release,
        expire_out == expected_expire,
        posted >= 0,
        posted <= amount,
        or_(state == HoldState.POSTED, posted == 0),
    )
    rows = await session.execute(
        select(HOLDS.c.id, state, amount, posted, held_in, post_out, release_out, expire_out)
        .select_from(HOLDS.outerjoin(TRANSFERS, TRANSFERS.c.hold_id == HOLDS.c.id))
        .group_by(HOLDS.c.id, state, amount, posted)
        .having(~healthy)
        .order_by(HOLDS.c.id)
    )
    return [
        Violation(
            "hold_movements",
            hold_id,
            f"hold {hold_id} ({HoldState(hold_state).value}, {held} held, {hold_posted} posted)"
            f" moved {moved_in} in and {moved_post} posted + {moved_release} released"
            f" + {moved_expire} expired out",
        )
        for (
            hold_id,
            hold_state,
            held,
            hold_posted,
            moved_in,
            moved_post,
            moved_release,
            moved_expire,
        ) in rows
    ]


async def _hold_accounts(session: AsyncSession) -> list[Violation]:
    wallet = literal("wallet:") + HOLDS.c.account_id
    held = wallet + literal(":held")
    debit, credit, kind = (
        TRANSFERS.c.debit_account_id,
        TRANSFERS.c.credit_account_id,
        TRANSFERS.c.kind,
    )
    healthy = case(
        (kind == TransferKind.HOLD, and_(debit == wallet, credit == held)),
        (kind == TransferKind.POST, debit == held),
        (
            kind.in_([TransferKind.RELEASE, TransferKind.EXPIRE]),
            and_(debit == held, credit == wallet),
        ),
        else_=False,
    )
    rows = await session.execute(
        select(TRANSFERS.c.id, HOLDS.c.id)
        .select_from(TRANSFERS.join(HOLDS, HOLDS.c.id == TRANSFERS.c.hold_id))
        .where(~healthy)
        .order_by(TRANSFERS.c.id)
    )
    unattached = await session.execute(
        select(TRANSFERS.c.id)
        .where(
            TRANSFERS.c.hold_id.is_(None),
            TRANSFERS.c.kind.in_(
                [TransferKind.HOLD, TransferKind.POST, TransferKind.RELEASE, TransferKind.EXPIRE]
            ),
        )
        .order_by(TRANSFERS.c.id)
    )
    return [
        Violation(
            "hold_accounts",
            transfer_id,
            f"transfer {transfer_id} of hold {hold_id} uses other"
            " accounts than the hold's wallet and holds account",
        )
        for transfer_id, hold_id in rows
    ] + [
        Violation("hold_accounts", transfer_id, f"hold movement {transfer_id} names no hold")
        for (transfer_id,) in unattached
    ]


async def _overdue_holds(session: AsyncSession, now_ms: int, grace_ms: int) -> list[Violation]:
    rows = await session.execute(
        select(HOLDS.c.id, HOLDS.c.expires_at_ms)
        .where(HOLDS.c.state == HoldState.OPEN, HOLDS.c.expires_at_ms + grace_ms < now_ms)
        .order_by(HOLDS.c.expires_at_ms, HOLDS.c.id)
    )
    return [
        Violation(
            "overdue_hold",
            hold_id,
            f"hold {hold_id} is still open {now_ms - expires_at_ms} ms after its expiry"
            " (is the expiry sweep running?)",
        )
        for hold_id, expires_at_ms in rows
    ]


async def _duplicate_settlements(session: AsyncSession) -> list[Violation]:
    rows = await session.execute(
        select(HOLDS.c.reference, func.count())
        .where(HOLDS.c.state == HoldState.POSTED, HOLDS.c.reference.is_not(None))
        .group_by(HOLDS.c.reference)
        .having(func.count() > 1)
        .order_by(HOLDS.c.reference)
    )
    return [
        Violation(
            "duplicate_settlement", reference, f"{count} posted holds name reference {reference}"
        )
        for reference, count in rows
    ]


async def _bad_reversals(session: AsyncSession) -> list[Violation]:
    original = TRANSFERS.alias("original")
    reversal = TRANSFERS.alias("reversal")
    mirrored = and_(
        reversal.c.kind == TransferKind.REVERSAL,
        reversal.c.amount_micro_usd == original.c.amount_micro_usd,
        reversal.c.debit_account_id == original.c.credit_account_id,
        or_(
            reversal.c.credit_account_id == original.c.debit_account_id,
            original.c.debit_account_id == reversal.c.credit_account_id + literal(":held"),
        ),
    )
    rows = await session.execute(
        select(reversal.c.id)
        .select_from(reversal.join(original, original.c.id == reversal.c.reverses_id))
        .where(~mirrored)
        .order_by(reversal.c.id)
    )
    orphans = await session.execute(
        select(TRANSFERS.c.id)
        .where(TRANSFERS.c.kind == TransferKind.REVERSAL, TRANSFERS.c.reverses_id.is_(None))
        .order_by(TRANSFERS.c.id)
    )
    return [
        Violation("bad_reversal", transfer_id, f"{transfer_id} does not mirror what it reverses")
        for (transfer_id,) in [*rows, *orphans]
    ]


async def audit(
    session: AsyncSession,
    *,
    now_ms: int | None = None,
    overdue_grace_ms: int = DEFAULT_OVERDUE_GRACE_MS,
    extra_checks: Sequence[AuditCheck] = (),
) -> list[Violation]:
    """Every violation of the ledger's invariants (the module docstring), as of the caller's
    transaction; ``[]`` when healthy. Overdue holds are checked only when ``now_ms`` is given.

    Reads every ledger row once per check: an operator's tool and a test oracle, not for the
    request path. Use a transaction of its own so the checks see one consistent state (on
    PostgreSQL, REPEATABLE READ gives all checks one snapshot).
    """
    violations: list[Violation] = []
    for check in (
        _unbalanced,
        _balance_mismatches,
        _negative_balances,
        _bad_transfers,
        _holds_mismatches,
        _hold_movements,
        _hold_accounts,
        _duplicate_settlements,
        _bad_reversals,
        *extra_checks,
    ):
        violations.extend(await check(session))
    if now_ms is not None:
        violations.extend(await _overdue_holds(session, now_ms, overdue_grace_ms))
    return violations
