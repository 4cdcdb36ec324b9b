"""Monthly payouts, on SQLite and PostgreSQL: each (payee, period) paid once, what was earned by
the month's end, new Providers held back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from coordinator.accounts import Role, create_account
from coordinator.ledger import (
    PLATFORM_REVENUE,
    WORLD,
    Credit,
    InvalidLedgerInput,
    PayoutStatus,
    TransferKind,
    audit,
    balance,
    builder_earnings,
    list_transfers,
    pay_out_period,
    period_bounds_ms,
    place_hold,
    post_hold,
    provider_earnings,
    reverse_transfer,
)
from tests.coordinator.conftest import Sessions

pytestmark = pytest.mark.asyncio


def ms(year: int, month: int, day: int) -> int:
    return int(datetime(year, month, day, 12, tzinfo=UTC).timestamp()) * 1000


async def test_periods_are_utc_months() -> None:
    assert period_bounds_ms("2026-03") == (ms(2026, 3, 1) - 43_200_000, ms(2026, 4, 1) - 43_200_000)
    assert period_bounds_ms("2026-12")[1] == ms(2027, 1, 1) - 43_200_000
    for bad in ("2026-13", "2026-00", "2026-3", "26-03", "2026/03", ""):
        with pytest.raises(InvalidLedgerInput):
            period_bounds_ms(bad)


async def test_each_payee_is_paid_once_per_period_for_what_it_earned_by_then(
    sessions: Sessions,
) -> None:
    async with sessions.begin() as session:
        customer, _ = await create_account(
            session, Role.CUSTOMER, "Ada", 10_000, now_ms=ms(2026, 1, 1)
        )
        veteran, _ = await create_account(session, Role.PROVIDER, "Old", now_ms=ms(2026, 1, 1))
        newcomer, _ = await create_account(session, Role.PROVIDER, "New", now_ms=ms(2026, 3, 20))
        builder, _ = await create_account(session, Role.BUILDER, "Lin", now_ms=ms(2026, 3, 25))
    old, new, app = (
        provider_earnings(veteran.id),
        provider_earnings(newcomer.id),
        builder_earnings(builder.id),
    )

    async def settle(hold_id: str, at_ms: int, credits: list[Credit]) -> None:
        async with sessions.begin() as session:
            total = sum(credit.amount_micro_usd for credit in credits)
            await place_hold(session, hold_id, customer.id, total, now_ms=at_ms)
            await post_hold(session, hold_id, credits, now_ms=at_ms)

    await settle(
        "m1", ms(2026, 3, 28), [Credit(old, 1_000), Credit(app, 100), Credit(PLATFORM_REVENUE, 5)]
    )
    await settle("m2", ms(2026, 3, 29), [Credit(new, 500)])
    await settle("a1", ms(2026, 4, 2), [Credit(old, 300)])

    async with sessions.begin() as session:
        with pytest.raises(InvalidLedgerInput, match="not over"):
            await pay_out_period(session, "2026-04", now_ms=ms(2026, 4, 30))
        march = await pay_out_period(session, "2026-03", now_ms=ms(2026, 4, 10))
    assert {(p.ledger_account_id, p.status, p.amount_micro_usd) for p in march} == {
        (old, PayoutStatus.PAID, 1_000),  # not April's 300
        (app, PayoutStatus.PAID, 100),  # Builders are not held back
        (new, PayoutStatus.HELD_BACK, 500),  # 12 days old at the end of March
    }
    assert {p.account_id for p in march} == {veteran.id, newcomer.id, builder.id}

    async with sessions.begin() as session:  # running it again pays nothing again
        again = await pay_out_period(session, "2026-03", now_ms=ms(2026, 4, 11))
        assert await balance(session, old) == 300
    assert {(p.ledger_account_id, p.status, p.amount_micro_usd) for p in again} == {
        (old, PayoutStatus.ALREADY_PAID, 1_000),
        (app, PayoutStatus.ALREADY_PAID, 100),
        (new, PayoutStatus.HELD_BACK, 500),
    }

    async with sessions.begin() as session:
        april = await pay_out_period(session, "2026-04", now_ms=ms(2026, 5, 2))
        # Paying an older month after a newer one finds nothing left to pay for it.
        march_late = await pay_out_period(
            session, "2026-03", holdback_days=0, now_ms=ms(2026, 5, 3)
        )
        payouts = await list_transfers(session, kind=TransferKind.PAYOUT)
        assert await balance(session, WORLD) == -10_000 + 1_000 + 100 + 300 + 500
        assert await audit(session) == []
    assert {(p.ledger_account_id, p.status, p.amount_micro_usd) for p in april} == {
        (old, PayoutStatus.PAID, 300),
        (app, PayoutStatus.NOTHING_DUE, 0),
        (new, PayoutStatus.PAID, 500),  # March's earnings, now that the holdback has passed
    }
    assert {(p.ledger_account_id, p.status) for p in march_late} == {
        (old, PayoutStatus.ALREADY_PAID),
        (app, PayoutStatus.ALREADY_PAID),
        (new, PayoutStatus.NOTHING_DUE),
    }
    assert sorted(t.id for t in payouts) == sorted(
        [
            f"payout#2026-03#{old}",
            f"payout#2026-03#{app}",
            f"payout#2026-04#{old}",
            f"payout#2026-04#{new}",
        ]
    )
    assert all(t.credit_account_id == WORLD for t in payouts)


async def test_a_payout_never_exceeds_what_the_payee_holds_now(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        customer, _ = await create_account(
            session, Role.CUSTOMER, "Ada", 10_000, now_ms=ms(2026, 1, 1)
        )
        provider, _ = await create_account(session, Role.PROVIDER, "Old", now_ms=ms(2026, 1, 1))
        earnings = provider_earnings(provider.id)
        await place_hold(session, "m1", customer.id, 800, now_ms=ms(2026, 3, 5))
        await post_hold(session, "m1", [Credit(earnings, 800)], now_ms=ms(2026, 3, 5))
    async with sessions.begin() as session:  # refunded in April, before the March payout ran
        await reverse_transfer(
            session, f"m1#post#{earnings}", reversal_id="refund", now_ms=ms(2026, 4, 1)
        )
        (payout,) = await pay_out_period(session, "2026-03", now_ms=ms(2026, 4, 2))
        with pytest.raises(InvalidLedgerInput):
            await pay_out_period(session, "2026-03", holdback_days=-1, now_ms=ms(2026, 4, 2))
    assert (payout.status, payout.amount_micro_usd) == (PayoutStatus.NOTHING_DUE, 0)
