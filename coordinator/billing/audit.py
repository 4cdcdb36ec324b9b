"""The billing side of the audit: every completed request has exactly one settlement.

A generation row exists once per request (its id is the primary key) and names the lease hold its
charge was posted through. Each posted lease's hold must have posted exactly the sum of its
generations' charges; a generation naming a lease that was not posted was never settled.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.generations import Generation
from coordinator.db.models import HoldState, LedgerHold
from coordinator.ledger import Violation

__all__ = ["generations_settled"]


async def generations_settled(session: AsyncSession) -> list[Violation]:
    charged = (
        Generation.provider_micro_usd + Generation.builder_micro_usd + Generation.platform_micro_usd
    )
    rows = await session.execute(
        select(
            Generation.lease_hold_id,
            func.count(),
            func.sum(charged),
            LedgerHold.state,
            LedgerHold.posted_micro_usd,
        )
        .outerjoin(LedgerHold, LedgerHold.id == Generation.lease_hold_id)
        .group_by(Generation.lease_hold_id, LedgerHold.state, LedgerHold.posted_micro_usd)
    )
    violations: list[Violation] = []
    for lease_id, count, total, state, posted in rows:
        if state != HoldState.POSTED:
            violations.append(
                Violation(
                    "unsettled_generation",
                    lease_id,
                    f"{count} generations name lease {lease_id}, which is {state or 'missing'}",
                )
            )
        elif int(total or 0) != posted:
            violations.append(
                Violation(
                    "settlement_mismatch",
                    lease_id,
                    f"lease {lease_id} posted {posted} micro-USD for generations charged {total}",
                )
            )
    return violations
