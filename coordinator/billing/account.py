"""One account's money as its owner sees it: what ``GET /v1/account`` and the consoles show.

The ledger alone is not the whole story while requests run: this process's credit gate leases
part of a wallet as ledger holds, reserves requests' worst cases from those leases in memory,
and posts charges in batches. :func:`account_money` combines both views so that every surface
shows the same three numbers (available, held, charged but not yet posted).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.billing.gate import CreditGate
from coordinator.db.generations import Generation
from coordinator.ledger import account_balances

__all__ = ["RECENT_GENERATIONS", "AccountMoney", "account_money", "recent_generations"]

RECENT_GENERATIONS = 20
"""How many past requests an account overview lists."""


@dataclass(frozen=True, slots=True)
class AccountMoney:
    """An account's balances in micro-USD, as its owner should read them.

    ``available`` is what new requests may spend; ``held`` is reserved for requests in flight
    (and any other open ledger hold); ``charged_not_posted`` was charged for finished requests
    and reaches the ledger at the gate's next flush. Earnings are the Provider and Builder
    earnings accounts' balances (paid out monthly).
    """

    available_micro_usd: int
    held_micro_usd: int
    charged_not_posted_micro_usd: int
    provider_earnings_micro_usd: int
    builder_earnings_micro_usd: int


async def account_money(session: AsyncSession, gate: CreditGate, account_id: str) -> AccountMoney:
    """The balances of ``account_id``: the ledger's, corrected by this process's gate."""
    balances = await account_balances(session, account_id)
    totals = gate.totals(account_id)
    # Leased money sits in the ledger's held part; of it, only what requests in flight reserve
    # and what was charged but not posted yet is really taken.
    leased_free = totals.leased_micro_usd - totals.reserved_micro_usd - totals.unposted_micro_usd
    ledger_held = balances.held_micro_usd - totals.leased_micro_usd
    return AccountMoney(
        available_micro_usd=balances.available_micro_usd + max(0, leased_free),
        held_micro_usd=max(0, ledger_held) + totals.reserved_micro_usd,
        charged_not_posted_micro_usd=totals.unposted_micro_usd,
        provider_earnings_micro_usd=balances.provider_earnings_micro_usd,
        builder_earnings_micro_usd=balances.builder_earnings_micro_usd,
    )


async def recent_generations(
    session: AsyncSession, customer_account_id: str, limit: int = RECENT_GENERATIONS
) -> Sequence[Generation]:
    """The customer's most recent posted requests, newest first."""
    return (
        await session.scalars(
            select(Generation)
            .where(Generation.customer_account_id == customer_account_id)
            .order_by(Generation.created_at_ms.desc(), Generation.id.desc())
            .limit(limit)
        )
    ).all()
