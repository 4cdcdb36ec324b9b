"""Holds: money set aside from a customer's wallet for one request, resolved exactly once.

Lifecycle (docs/settlement.md)::

    place_hold ──> open ──post_hold──────> posted    (the charge to the payees, the rest back)
                        ──release_hold───> released  (everything back: no charge)
                        ──expire_holds───> expired   (everything back: nobody resolved it in time)

While open, the amount sits in the customer's holds account (``wallet:<id>:held``), so the
wallet shows only what new requests may use. Resolving a hold is one conditional UPDATE of the
hold row (``WHERE state = 'open'``), so of any number of concurrent posts, releases and expiries
exactly one takes effect; the others see what happened. A crash at any point either rolls the
transaction back (the hold is as before) or leaves an open hold that :func:`expire_holds` returns
to the wallet once its expiry passes: money is never stranded.

Every function works inside the caller's transaction and flushes nothing through the ORM. A
:class:`~coordinator.ledger.LedgerError` means the call wrote nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.models import HoldState, LedgerAccountKind, TransferKind
from coordinator.ledger._store import (
    HOLDS,
    TRANSFERS,
    apply_deltas,
    balance_of,
    checked_amount,
    debit_if_covered,
    hold_from_row,
    insert_on_conflict,
    insert_transfers,
    missing_owners,
    now_or_wall_clock,
    transfer_row,
)
from coordinator.ledger.errors import (
    HoldExceeded,
    HoldNotFound,
    HoldNotOpen,
    IdConflict,
    InsufficientFunds,
    InvalidLedgerInput,
    LedgerError,
)
from coordinator.ledger.ids import checked_id, customer_holds, customer_wallet, owner_and_kind
from coordinator.ledger.records import Credit, Hold, Settlement
from coordinator.ledger.transfers import checked_reference

__all__ = [
    "DEFAULT_HOLD_TTL_MS",
    "MAX_HOLD_TTL_MS",
    "Posting",
    "expire_holds",
    "get_hold",
    "place_hold",
    "post_hold",
    "post_holds",
    "release_hold",
]

# Longer than any request may run (the API's deadline is 300 s), short enough that a crash
# returns the money within minutes.
DEFAULT_HOLD_TTL_MS = 15 * 60 * 1000
MAX_HOLD_TTL_MS = 7 * 24 * 3600 * 1000
_UNPAYABLE = frozenset({LedgerAccountKind.CUSTOMER_HOLDS, LedgerAccountKind.WORLD})


@dataclass(frozen=True, slots=True)
class Posting:
    """Post hold ``hold_id``: pay ``credits`` from it and release the rest."""

    hold_id: str
    credits: Sequence[Credit]


async def get_hold(session: AsyncSession, hold_id: str) -> Hold | None:
    """The hold ``hold_id``, or None."""
    row = (await session.execute(select(HOLDS).where(HOLDS.c.id == hold_id))).first()
    return None if row is None else hold_from_row(row)


def _same_hold_or_conflict(
    existing: Hold, account_id: str, amount: int, reference: str | None
) -> Hold:
    if (existing.account_id, existing.amount_micro_usd, existing.reference) != (
        account_id,
        amount,
        reference,
    ):
        raise IdConflict(
            f"hold id {existing.id!r} was already used for another hold"
            f" ({existing.amount_micro_usd} micro-USD from {existing.account_id})"
        )
    return existing


async def place_hold(
    session: AsyncSession,
    hold_id: str,
    account_id: str,
    amount_micro_usd: int,
    *,
    ttl_ms: int = DEFAULT_HOLD_TTL_MS,
    reference: str | None = None,
    now_ms: int | None = None,
) -> Hold:
    """Hold ``amount_micro_usd`` (>= 0) of ``account_id``'s wallet until ``now + ttl_ms``.

    Race-free on both databases: the wallet is debited by one conditional UPDATE (``WHERE
    balance >= amount``), so however many holds run at once on however many connections, their
    sum never exceeds the wallet. Repeating a hold id with the same account, amount and reference
    returns the first hold (even when the wallet could no longer afford it).

    Raises :class:`InsufficientFunds` (-> 402) when the wallet holds less, :class:`IdConflict`,
    :class:`InvalidLedgerInput` for a bad id, amount, ttl or an unknown account.
    """
    checked_id(hold_id, "hold")
    wallet, held = customer_wallet(account_id), customer_holds(account_id)
    amount = checked_amount(amount_micro_usd, "a hold amount", allow_zero=True)
    if not isinstance(ttl_ms, int) or not 0 < ttl_ms <= MAX_HOLD_TTL_MS:
        raise InvalidLedgerInput(f"a hold's ttl_ms must be 1 to {MAX_HOLD_TTL_MS}, got {ttl_ms!r}")
    checked_reference(reference)
    at_ms = now_or_wall_clock(now_ms)
    if amount > 0:
        # The wallet first: it sorts before its holds account (the lock order), and a refusal
        # then writes nothing.
        if await debit_if_covered(session, wallet, amount) is None:
            existing = await get_hold(session, hold_id)
            if existing is not None:
                return _same_hold_or_conflict(existing, account_id, amount, reference)
            raise InsufficientFunds(wallet, await balance_of(session, wallet), amount)
    elif await missing_owners(session, [wallet]):
        raise InvalidLedgerInput(f"no account {account_id!r}")
    values = {
        "id": hold_id,
        "account_id": account_id,
        "amount_micro_usd": amount,
        "posted_micro_usd": 0,
        "state": HoldState.OPEN,
        "reference": reference,
        "created_at_ms": at_ms,
        "expires_at_ms": at_ms + ttl_ms,
        "resolved_at_ms": None,
    }
    inserted = await session.execute(
        insert_on_conflict(session, HOLDS)
        .values(**values)
        .on_conflict_do_nothing()
        .returning(HOLDS.c.id)
    )
    if inserted.scalar_one_or_none() is None:  # the id was taken: undo the debit, report
        if amount > 0:
            await apply_deltas(session, {wallet: amount}, at_ms)
        existing = await get_hold(session, hold_id)
        assert existing is not None  # a hold row is never deleted
        return _same_hold_or_conflict(existing, account_id, amount, reference)
    if amount > 0:
        await apply_deltas(session, {held: amount}, at_ms)
        await insert_transfers(
            session,
            [
                transfer_row(
                    f"{hold_id}#hold",
                    TransferKind.HOLD,
                    wallet,
                    held,
                    amount,
                    now_ms=at_ms,
                    reference=reference,
                    hold_id=hold_id,
                )
            ],
        )
    return hold_from_row(values)


def _merged_credits(credits: Sequence[Credit]) -> tuple[Credit, ...]:
    totals: dict[str, int] = defaultdict(int)
    for credit in credits:
        if not isinstance(credit, Credit):
            raise InvalidLedgerInput(f"a credit is a Credit, not {credit!r}")
        kind = owner_and_kind(credit.account_id)[1]
        if kind in _UNPAYABLE:
            raise InvalidLedgerInput(f"a hold cannot be posted to {credit.account_id}")
        totals[credit.account_id] += checked_amount(
            credit.amount_micro_usd, "a credit", allow_zero=True
        )
    merged = tuple(Credit(account_id, totals[account_id]) for account_id in sorted(totals))
    checked_amount(sum(credit.amount_micro_usd for credit in merged), "a posting", allow_zero=True)
    return tuple(credit for credit in merged if credit.amount_micro_usd > 0)


async def _posted_credits(session: AsyncSession, hold_id: str) -> tuple[Credit, ...]:
    rows = await session.execute(
        select(TRANSFERS.c.credit_account_id, TRANSFERS.c.amount_micro_usd)
        .where(TRANSFERS.c.hold_id == hold_id, TRANSFERS.c.kind == TransferKind.POST)
        .order_by(TRANSFERS.c.credit_account_id)
    )
    return tuple(Credit(account_id, amount) for account_id, amount in rows)


async def _resolve(
    session: AsyncSession, hold_id: str, state: HoldState, posted_micro_usd: int, now_ms: int
) -> Hold | None:
    """Mark an open hold resolved (once: the UPDATE matches only an open hold that covers the
    posting); None when it is not open, unknown or too small."""
    row = (
        await session.execute(
            update(HOLDS)
            .where(
                HOLDS.c.id == hold_id,
                HOLDS.c.state == HoldState.OPEN,
                HOLDS.c.amount_micro_usd >= posted_micro_usd,
            )
            .values(state=state, posted_micro_usd=posted_micro_usd, resolved_at_ms=now_ms)
            .returning(*HOLDS.c)
        )
    ).first()
    return None if row is None else hold_from_row(row)


def _return_movements(
    hold: Hold, credits: Sequence[Credit], kind: TransferKind, now_ms: int
) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """The balance deltas and transfer rows that empty a just-resolved hold."""
    wallet, held = customer_wallet(hold.account_id), customer_holds(hold.account_id)
    deltas: dict[str, int] = defaultdict(int)
    rows = []
    for credit in credits:
        deltas[credit.account_id] += credit.amount_micro_usd
        rows.append(
            transfer_row(
                f"{hold.id}#post#{credit.account_id}",
                TransferKind.POST,
                held,
                credit.account_id,
                credit.amount_micro_usd,
                now_ms=now_ms,
                reference=hold.reference,
                hold_id=hold.id,
            )
        )
    rest = hold.amount_micro_usd - hold.posted_micro_usd
    if rest > 0:
        deltas[wallet] += rest
        rows.append(
            transfer_row(
                f"{hold.id}#{kind.value}",
                kind,
                held,
                wallet,
                rest,
                now_ms=now_ms,
                reference=hold.reference,
                hold_id=hold.id,
            )
        )
    if hold.amount_micro_usd > 0:
        deltas[held] -= hold.amount_micro_usd
    return deltas, rows


async def _why_not_posted(
    session: AsyncSession, hold_id: str, credits: tuple[Credit, ...]
) -> Settlement | LedgerError:
    hold = await get_hold(session, hold_id)
    if hold is None:
        return HoldNotFound(f"no hold {hold_id!r}")
    if hold.state is HoldState.POSTED:
        if await _posted_credits(session, hold_id) == credits:
            return Settlement(hold, credits)
        return IdConflict(f"hold {hold_id!r} was already posted with other credits")
    if hold.state is not HoldState.OPEN:
        return HoldNotOpen(f"hold {hold_id!r} is {hold.state.value} already", hold.state.value)
    total = sum(credit.amount_micro_usd for credit in credits)
    return HoldExceeded(
        f"posting {total} micro-USD from hold {hold_id!r}, which holds {hold.amount_micro_usd}"
    )


async def post_holds(
    session: AsyncSession, postings: Sequence[Posting], *, now_ms: int | None = None
) -> list[Settlement | LedgerError]:
    """Post several holds in one go (a batch writer's call): per posting, in order, its
    :class:`Settlement`, or the :class:`LedgerError` :func:`post_hold` would raise for it (that
    posting then wrote nothing; the others are unaffected).

    Hold rows are locked in hold id order before any account row, and account rows in id order,
    so batches never deadlock with each other or with :func:`expire_holds`. Raises
    :class:`InvalidLedgerInput` (writing nothing) for a bad credit or a hold id given twice.
    """
    at_ms = now_or_wall_clock(now_ms)
    merged = {posting.hold_id: _merged_credits(posting.credits) for posting in postings}
    if len(merged) != len(postings):
        raise InvalidLedgerInput("a batch names a hold twice")
    missing = await missing_owners(
        session, {credit.account_id for credits in merged.values() for credit in credits}
    )
    if missing:
        raise InvalidLedgerInput(f"no account {missing[0]!r}")
    outcomes: dict[str, Settlement | LedgerError] = {}
    deltas: dict[str, int] = defaultdict(int)
    rows: list[dict[str, Any]] = []
    for hold_id in sorted(merged):
        credits = merged[hold_id]
        total = sum(credit.amount_micro_usd for credit in credits)
        hold = await _resolve(session, hold_id, HoldState.POSTED, total, at_ms)
        if hold is None:
            outcomes[hold_id] = await _why_not_posted(session, hold_id, credits)
            continue
        hold_deltas, hold_rows = _return_movements(hold, credits, TransferKind.RELEASE, at_ms)
        for account_id, delta in hold_deltas.items():
            deltas[account_id] += delta
        rows.extend(hold_rows)
        outcomes[hold_id] = Settlement(hold, credits)
    await apply_deltas(session, deltas, at_ms)
    await insert_transfers(session, rows)
    return [outcomes[posting.hold_id] for posting in postings]


async def post_hold(
    session: AsyncSession,
    hold_id: str,
    credits: Sequence[Credit],
    *,
    now_ms: int | None = None,
) -> Settlement:
    """Settle a request: pay ``credits`` (their sum at most the held amount) from hold
    ``hold_id`` in one atomic step, and release the rest to the wallet.

    Repeating it with the same credits returns the first settlement. Raises
    :class:`HoldNotFound`; :class:`HoldNotOpen` when it was released or expired;
    :class:`IdConflict` when it was posted with other credits; :class:`HoldExceeded` when the
    credits add up to more than it holds; :class:`InvalidLedgerInput` for a bad credit. To post
    several holds in one transaction use :func:`post_holds` (it keeps the lock order).
    """
    (outcome,) = await post_holds(session, [Posting(hold_id, credits)], now_ms=now_ms)
    if isinstance(outcome, LedgerError):
        raise outcome
    return outcome


async def release_hold(session: AsyncSession, hold_id: str, *, now_ms: int | None = None) -> Hold:
    """Give the whole hold back to the wallet: the request was not served (or was free).

    Releasing a released or expired hold returns it unchanged (the money is back either way).
    Raises :class:`HoldNotFound`, and :class:`HoldNotOpen` for a posted hold (reverse its
    transfers to refund it).
    """
    at_ms = now_or_wall_clock(now_ms)
    hold = await _resolve(session, hold_id, HoldState.RELEASED, 0, at_ms)
    if hold is None:
        existing = await get_hold(session, hold_id)
        if existing is None:
            raise HoldNotFound(f"no hold {hold_id!r}")
        if existing.state is HoldState.POSTED:
            raise HoldNotOpen(f"hold {hold_id!r} is posted already", existing.state.value)
        return existing
    deltas, rows = _return_movements(hold, (), TransferKind.RELEASE, at_ms)
    await apply_deltas(session, deltas, at_ms)
    await insert_transfers(session, rows)
    return hold


async def expire_holds(
    session: AsyncSession, *, now_ms: int | None = None, limit: int = 500
) -> list[Hold]:
    """Return the money of up to ``limit`` open holds whose expiry has passed to their wallets;
    the expired holds, oldest expiry first.

    For a periodic sweep (and at start-up, after a crash). On PostgreSQL, holds another
    transaction is resolving right now are skipped (``FOR UPDATE SKIP LOCKED``), so several
    coordinators may sweep at once; each hold is expired at most once.
    """
    at_ms = now_or_wall_clock(now_ms)
    if not isinstance(limit, int) or limit < 1:
        raise InvalidLedgerInput(f"limit must be a positive integer, got {limit!r}")
    # Two statements on purpose: as a subquery of the UPDATE, PostgreSQL may run the locking
    # SELECT again for every row, each time past the rows already updated, ignoring the limit.
    due = list(
        (
            await session.execute(
                select(HOLDS.c.id)
                .where(HOLDS.c.state == HoldState.OPEN, HOLDS.c.expires_at_ms <= at_ms)
                .order_by(HOLDS.c.expires_at_ms, HOLDS.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).scalars()
    )
    if not due:
        return []
    result = await session.execute(
        update(HOLDS)
        .where(HOLDS.c.id.in_(due), HOLDS.c.state == HoldState.OPEN)
        .values(state=HoldState.EXPIRED, resolved_at_ms=at_ms)
        .returning(*HOLDS.c)
    )
    holds = sorted(map(hold_from_row, result), key=lambda hold: (hold.expires_at_ms, hold.id))
    deltas: dict[str, int] = defaultdict(int)
    rows: list[dict[str, Any]] = []
    for hold in holds:
        hold_deltas, hold_rows = _return_movements(hold, (), TransferKind.EXPIRE, at_ms)
        for account_id, delta in hold_deltas.items():
            deltas[account_id] += delta
        rows.extend(hold_rows)
    await apply_deltas(session, deltas, at_ms)
    await insert_transfers(session, rows)
    return holds
