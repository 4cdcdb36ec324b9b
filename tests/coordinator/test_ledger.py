"""Each ledger operation, on SQLite and PostgreSQL: what it moves, what it refuses, and that a
repeated id takes effect once."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.accounts import Role, create_account
from coordinator.ledger import (
    PLATFORM_REVENUE,
    WORLD,
    Credit,
    HoldExceeded,
    HoldNotFound,
    HoldNotOpen,
    HoldState,
    IdConflict,
    InsufficientFunds,
    InvalidLedgerInput,
    NotReversible,
    Posting,
    Pricing,
    Settlement,
    TransferKind,
    TransferNotFound,
    account_balances,
    audit,
    balance,
    balances_by_account,
    builder_earnings,
    charge_for,
    credits_for,
    customer_holds,
    customer_wallet,
    expire_holds,
    get_hold,
    hold_amount_for,
    ledger_totals,
    list_transfers,
    place_hold,
    post_hold,
    post_holds,
    provider_earnings,
    release_hold,
    reverse_transfer,
    top_up,
    transfer,
)
from tests.coordinator.conftest import Sessions

pytestmark = pytest.mark.asyncio

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@dataclass(frozen=True)
class People:
    customer: str
    provider: str
    builder: str


@pytest_asyncio.fixture
async def people(sessions: Sessions) -> People:
    """A customer with 10 USD, a Provider and a Builder."""
    async with sessions.begin() as session:
        customer, _ = await create_account(session, Role.CUSTOMER, "Ada", 10_000_000, now_ms=T0)
        provider, _ = await create_account(session, Role.PROVIDER, "Grace", now_ms=T0)
        builder, _ = await create_account(session, Role.BUILDER, "Lin", now_ms=T0)
    return People(customer.id, provider.id, builder.id)


async def healthy(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        assert await audit(session, now_ms=T0) == []


async def transfer_count(session: AsyncSession) -> int:
    return int((await session.execute(text("SELECT COUNT(*) FROM ledger_transfers"))).scalar_one())


async def test_a_top_up_moves_money_in_from_the_world_once(
    sessions: Sessions, people: People
) -> None:
    async with sessions.begin() as session:
        first = await top_up(session, people.customer, 2_000_000, transfer_id="pay-1", now_ms=T0)
    async with sessions.begin() as session:
        again = await top_up(
            session, people.customer, 2_000_000, transfer_id="pay-1", now_ms=T0 + 9
        )
        assert again == first  # the first result, created_at included
        with pytest.raises(IdConflict, match="amount_micro_usd"):
            await top_up(session, people.customer, 2_000_001, transfer_id="pay-1")
        with pytest.raises(IdConflict, match="credit_account_id"):
            await top_up(session, people.provider, 2_000_000, transfer_id="pay-1")
        assert (await account_balances(session, people.customer)).available_micro_usd == 12_000_000
        assert await balance(session, WORLD) == -12_000_000
    assert (first.kind, first.debit_account_id) == (TransferKind.TOP_UP, WORLD)
    assert first.credit_account_id == customer_wallet(people.customer)
    await healthy(sessions)


@pytest.mark.parametrize(
    ("amount", "transfer_id"),
    [(0, "t"), (-5, "t"), (True, "t"), (10**16, "t"), (5, ""), (5, "has space"), (5, "a#b")],
)
async def test_bad_top_ups_are_refused(
    sessions: Sessions, people: People, amount: int, transfer_id: str
) -> None:
    async with sessions.begin() as session:
        with pytest.raises(InvalidLedgerInput):
            await top_up(session, people.customer, amount, transfer_id=transfer_id)
        with pytest.raises(InvalidLedgerInput, match="no account"):
            await top_up(session, "acc_missing", 5, transfer_id="t")


async def test_direct_transfers_keep_away_from_holds_and_respect_balances(
    sessions: Sessions, people: People
) -> None:
    wallet = customer_wallet(people.customer)
    async with sessions.begin() as session:
        with pytest.raises(InvalidLedgerInput, match="only through holds"):
            await transfer(session, "x", wallet, customer_holds(people.customer), 1)
        with pytest.raises(InvalidLedgerInput, match="made by the ledger"):
            await transfer(session, "x", wallet, PLATFORM_REVENUE, 1, kind=TransferKind.POST)
        with pytest.raises(InvalidLedgerInput, match="two different"):
            await transfer(session, "x", wallet, wallet, 1)
        with pytest.raises(InsufficientFunds) as refused:
            await transfer(session, "x", wallet, PLATFORM_REVENUE, 10_000_001)
        assert (refused.value.available_micro_usd, refused.value.requested_micro_usd) == (
            10_000_000,
            10_000_001,
        )
        # The refusal wrote nothing and the transaction goes on.
        moved = await transfer(session, "fee", wallet, PLATFORM_REVENUE, 10_000_000)
    assert moved.kind is TransferKind.ADJUSTMENT
    async with sessions.begin() as session:
        assert (await account_balances(session, people.customer)).available_micro_usd == 0
        assert await balance(session, PLATFORM_REVENUE) == 10_000_000
    await healthy(sessions)


async def test_a_hold_sets_money_aside_and_a_refused_hold_writes_nothing(
    sessions: Sessions, people: People
) -> None:
    async with sessions.begin() as session:
        hold = await place_hold(
            session,
            "req-1",
            people.customer,
            3_000_000,
            ttl_ms=60_000,
            reference="req-1",
            now_ms=T0,
        )
        assert (hold.state, hold.amount_micro_usd, hold.expires_at_ms) == (
            HoldState.OPEN,
            3_000_000,
            T0 + 60_000,
        )
        balances = await account_balances(session, people.customer)
        assert (balances.available_micro_usd, balances.held_micro_usd) == (7_000_000, 3_000_000)
        before = await transfer_count(session)
        with pytest.raises(InsufficientFunds) as refused:
            await place_hold(session, "req-2", people.customer, 7_000_001, now_ms=T0)
        assert refused.value.available_micro_usd == 7_000_000
        assert await transfer_count(session) == before
        assert await get_hold(session, "req-2") is None
        # The same id again returns the first hold, even now that the wallet could not pay it.
        await place_hold(session, "req-3", people.customer, 7_000_000, now_ms=T0)
        again = await place_hold(
            session, "req-1", people.customer, 3_000_000, reference="req-1", now_ms=T0 + 5
        )
        assert again == hold
        with pytest.raises(IdConflict):
            await place_hold(session, "req-1", people.customer, 3_000_001, reference="req-1")
        assert (await account_balances(session, people.customer)).available_micro_usd == 0
    await healthy(sessions)


async def test_a_repeated_hold_id_is_undone_when_the_wallet_could_pay_it_again(
    sessions: Sessions, people: People
) -> None:
    async with sessions.begin() as session:
        first = await place_hold(session, "req-1", people.customer, 1_000, now_ms=T0)
    async with sessions.begin() as session:
        assert await place_hold(session, "req-1", people.customer, 1_000, now_ms=T0 + 1) == first
        balances = await account_balances(session, people.customer)
    assert (balances.available_micro_usd, balances.held_micro_usd) == (9_999_000, 1_000)
    await healthy(sessions)


async def test_a_free_request_gets_a_zero_hold_without_moving_money(
    sessions: Sessions, people: People
) -> None:
    async with sessions.begin() as session:
        await place_hold(session, "free", people.provider, 0, now_ms=T0)
        settled = await post_hold(session, "free", [Credit(PLATFORM_REVENUE, 0)], now_ms=T0)
        assert settled.credits == ()
        assert await transfer_count(session) == 1  # the customer's starting credits only
        with pytest.raises(InvalidLedgerInput, match="no account"):
            await place_hold(session, "ghost", "acc_missing", 0)
    await healthy(sessions)


async def test_posting_splits_the_charge_and_releases_the_rest_once(
    sessions: Sessions, people: People
) -> None:
    pricing = Pricing(200_000, 600_000, surcharge_bps=1_000, platform_fee_bps=500)
    held = hold_amount_for(pricing, prompt_tokens=1_000, max_tokens=2_000)
    charge = charge_for(pricing, 1_000, 500)
    credits = credits_for(
        charge, provider_account_id=people.provider, builder_account_id=people.builder
    )
    assert (held, charge.total_micro_usd) == (1_610, 575)
    async with sessions.begin() as session:
        await place_hold(session, "req-1", people.customer, held, reference="req-1", now_ms=T0)
    async with sessions.begin() as session:
        settlement = await post_hold(session, "req-1", credits, now_ms=T0 + 1_000)
    assert settlement.hold.state is HoldState.POSTED
    assert (settlement.charged_micro_usd, settlement.released_micro_usd) == (575, 1_035)
    assert settlement.credits == (
        Credit(builder_earnings(people.builder), 50),
        Credit(PLATFORM_REVENUE, 25),
        Credit(provider_earnings(people.provider), 500),
    )
    async with sessions.begin() as session:
        assert await post_hold(session, "req-1", list(reversed(credits))) == settlement
        with pytest.raises(IdConflict):
            await post_hold(session, "req-1", [Credit(PLATFORM_REVENUE, 575)])
        with pytest.raises(HoldNotOpen) as not_open:
            await release_hold(session, "req-1")
        assert not_open.value.state == "posted"
        customer = await account_balances(session, people.customer)
        assert (customer.available_micro_usd, customer.held_micro_usd) == (10_000_000 - 575, 0)
        provider = await account_balances(session, people.provider)
        assert provider.provider_earnings_micro_usd == 500
        builder = await account_balances(session, people.builder)
        assert builder.builder_earnings_micro_usd == 50
        assert await balance(session, PLATFORM_REVENUE) == 25
        moved = await list_transfers(session, ledger_account_id=customer_holds(people.customer))
        assert sorted((t.id, t.kind.value, t.amount_micro_usd) for t in moved) == [
            ("req-1#hold", "hold", 1_610),
            (f"req-1#post#{builder_earnings(people.builder)}", "post", 50),
            (f"req-1#post#{PLATFORM_REVENUE}", "post", 25),
            (f"req-1#post#{provider_earnings(people.provider)}", "post", 500),
            ("req-1#release", "release", 1_035),
        ]
        assert all(t.reference == "req-1" and t.hold_id == "req-1" for t in moved)
    await healthy(sessions)


async def test_posting_is_refused_beyond_the_hold_and_for_unknown_or_closed_holds(
    sessions: Sessions, people: People
) -> None:
    provider = provider_earnings(people.provider)
    async with sessions.begin() as session:
        await place_hold(session, "req-1", people.customer, 100, now_ms=T0)
        await place_hold(session, "req-2", people.customer, 100, now_ms=T0)
        await release_hold(session, "req-2", now_ms=T0)
        before = await transfer_count(session)
        with pytest.raises(HoldExceeded):
            await post_hold(session, "req-1", [Credit(provider, 60), Credit(provider, 41)])
        with pytest.raises(HoldNotFound):
            await post_hold(session, "req-9", [Credit(provider, 1)])
        with pytest.raises(HoldNotOpen):
            await post_hold(session, "req-2", [Credit(provider, 1)])
        for bad in (
            Credit(customer_holds(people.customer), 1),
            Credit(WORLD, 1),
            Credit("nowhere", 1),
            Credit(provider, -1),
        ):
            with pytest.raises(InvalidLedgerInput):
                await post_hold(session, "req-1", [bad])
        with pytest.raises(InvalidLedgerInput, match="no account"):
            await post_hold(session, "req-1", [Credit(provider_earnings("acc_missing"), 1)])
        assert await transfer_count(session) == before
        assert (await get_hold(session, "req-1")) is not None
        settled = await post_hold(session, "req-1", [Credit(provider, 100)])
    assert (settled.charged_micro_usd, settled.released_micro_usd) == (100, 0)
    await healthy(sessions)


async def test_a_release_gives_everything_back_and_repeats_harmlessly(
    sessions: Sessions, people: People
) -> None:
    async with sessions.begin() as session:
        await place_hold(session, "req-1", people.customer, 4_000, now_ms=T0)
    async with sessions.begin() as session:
        released = await release_hold(session, "req-1", now_ms=T0 + 7)
        assert await release_hold(session, "req-1", now_ms=T0 + 8) == released
        with pytest.raises(HoldNotFound):
            await release_hold(session, "req-9")
        assert (await account_balances(session, people.customer)).available_micro_usd == 10_000_000
    assert (released.state, released.resolved_at_ms, released.released_micro_usd) == (
        HoldState.RELEASED,
        T0 + 7,
        4_000,
    )
    await healthy(sessions)


async def test_expiry_returns_the_money_of_holds_nobody_resolved(
    sessions: Sessions, people: People
) -> None:
    async with sessions.begin() as session:
        await place_hold(session, "old", people.customer, 1_000, ttl_ms=1_000, now_ms=T0)
        await place_hold(session, "older", people.customer, 2_000, ttl_ms=500, now_ms=T0)
        await place_hold(session, "young", people.customer, 3_000, ttl_ms=60_000, now_ms=T0)
    async with sessions.begin() as session:
        assert await expire_holds(session, now_ms=T0 + 999) == [await get_hold(session, "older")]
    async with sessions.begin() as session:
        expired = await expire_holds(session, now_ms=T0 + 1_000)
        assert [hold.id for hold in expired] == ["old"]
        assert await expire_holds(session, now_ms=T0 + 1_000) == []
        with pytest.raises(HoldNotOpen) as too_late:
            await post_hold(session, "old", [Credit(PLATFORM_REVENUE, 1)])
        assert too_late.value.state == "expired"
        assert (await release_hold(session, "old")).state is HoldState.EXPIRED
        balances = await account_balances(session, people.customer)
    assert (balances.available_micro_usd, balances.held_micro_usd) == (9_997_000, 3_000)
    async with sessions.begin() as session:
        # Audit: an open hold long past its expiry means the sweep is not running.
        violations = await audit(session, now_ms=T0 + 60_000 + 10**9)
    assert [(v.code, v.subject) for v in violations] == [("overdue_hold", "young")]


async def test_expiry_sweeps_in_batches(sessions: Sessions, people: People) -> None:
    async with sessions.begin() as session:
        for number in range(5):
            await place_hold(
                session, f"h{number}", people.customer, 10, ttl_ms=1 + number, now_ms=T0
            )
    async with sessions.begin() as session:
        first = await expire_holds(session, now_ms=T0 + 100, limit=2)
        second = await expire_holds(session, now_ms=T0 + 100, limit=10)
        with pytest.raises(InvalidLedgerInput):
            await expire_holds(session, now_ms=T0, limit=0)
    assert [hold.id for hold in first] == ["h0", "h1"]
    assert [hold.id for hold in second] == ["h2", "h3", "h4"]
    await healthy(sessions)


async def test_a_batch_posts_each_hold_or_reports_why_not(
    sessions: Sessions, people: People
) -> None:
    provider = provider_earnings(people.provider)
    async with sessions.begin() as session:
        for hold_id in ("a", "b", "c"):
            await place_hold(session, hold_id, people.customer, 100, now_ms=T0)
        await release_hold(session, "c")
    async with sessions.begin() as session:
        outcomes = await post_holds(
            session,
            [
                Posting("b", [Credit(provider, 70), Credit(PLATFORM_REVENUE, 5)]),
                Posting("a", [Credit(provider, 101)]),
                Posting("c", [Credit(provider, 1)]),
                Posting("zz", [Credit(provider, 1)]),
            ],
            now_ms=T0,
        )
        with pytest.raises(InvalidLedgerInput, match="twice"):
            await post_holds(session, [Posting("a", []), Posting("a", [])])
    assert isinstance(outcomes[0], Settlement)
    assert outcomes[0].released_micro_usd == 25
    assert [type(outcome) for outcome in outcomes[1:]] == [HoldExceeded, HoldNotOpen, HoldNotFound]
    async with sessions.begin() as session:
        assert (await get_hold(session, "a")).state is HoldState.OPEN  # type: ignore[union-attr]
        assert await balance(session, provider) == 70
    await healthy(sessions)


async def test_a_reversal_refunds_a_posted_part_to_the_wallet_once(
    sessions: Sessions, people: People
) -> None:
    provider = provider_earnings(people.provider)
    async with sessions.begin() as session:
        await place_hold(session, "req-1", people.customer, 1_000, now_ms=T0)
        await post_hold(session, "req-1", [Credit(provider, 600), Credit(PLATFORM_REVENUE, 100)])
    part = f"req-1#post#{provider}"
    async with sessions.begin() as session:
        refund = await reverse_transfer(
            session, part, reversal_id="refund-1", reference="bad answer"
        )
        assert (
            await reverse_transfer(session, part, reversal_id="refund-1", reference="bad answer")
            == refund
        )
        with pytest.raises(NotReversible, match="already"):
            await reverse_transfer(session, part, reversal_id="refund-2")
        with pytest.raises(NotReversible):
            await reverse_transfer(session, "req-1#hold", reversal_id="refund-3")
        with pytest.raises(NotReversible):
            await reverse_transfer(session, "refund-1", reversal_id="refund-4")
        with pytest.raises(TransferNotFound):
            await reverse_transfer(session, "nothing", reversal_id="refund-5")
        with pytest.raises(IdConflict):
            await reverse_transfer(
                session, f"req-1#post#{PLATFORM_REVENUE}", reversal_id="refund-1"
            )
        assert (await account_balances(session, people.customer)).available_micro_usd == (
            10_000_000 - 100
        )
        assert await balance(session, provider) == 0
    assert (refund.debit_account_id, refund.credit_account_id, refund.amount_micro_usd) == (
        provider,
        customer_wallet(people.customer),
        600,
    )
    assert refund.reverses_id == part
    await healthy(sessions)


async def test_a_reversal_cannot_take_back_money_already_paid_out(
    sessions: Sessions, people: People
) -> None:
    provider = provider_earnings(people.provider)
    async with sessions.begin() as session:
        await place_hold(session, "req-1", people.customer, 1_000, now_ms=T0)
        await post_hold(session, "req-1", [Credit(provider, 1_000)])
        await transfer(session, "payout-1", provider, WORLD, 900, kind=TransferKind.PAYOUT)
    async with sessions.begin() as session:
        with pytest.raises(InsufficientFunds):
            await reverse_transfer(session, f"req-1#post#{provider}", reversal_id="refund-1")
        # Undoing the payout first (the money came back) makes the refund possible.
        await reverse_transfer(session, "payout-1", reversal_id="payout-1-undo")
        await reverse_transfer(session, f"req-1#post#{provider}", reversal_id="refund-1")
        totals = await ledger_totals(session)
    assert totals == {
        "customer_available": 10_000_000,
        "customer_held": 0,
        "provider_earnings": 0,
        "builder_earnings": 0,
        "platform_revenue": 0,
        "paid_in": 10_000_000,
    }
    await healthy(sessions)


async def test_balances_of_every_account_at_once(sessions: Sessions, people: People) -> None:
    async with sessions.begin() as session:
        await place_hold(session, "req-1", people.customer, 1_000, now_ms=T0)
        await post_hold(session, "req-1", [Credit(provider_earnings(people.provider), 400)])
        await place_hold(session, "req-2", people.customer, 50, now_ms=T0)
        everyone = await balances_by_account(session)
        named = await balances_by_account(session, [people.builder, people.provider])
    assert everyone[people.customer].available_micro_usd == 10_000_000 - 450
    assert everyone[people.customer].held_micro_usd == 50
    assert everyone[people.customer].credits_micro_usd == 10_000_000 - 400
    assert everyone[people.provider].provider_earnings_micro_usd == 400
    assert people.builder not in everyone  # no money yet
    assert named[people.builder].available_micro_usd == 0
    assert set(named) == {people.builder, people.provider}


@pytest.mark.parametrize(
    ("tampering", "codes"),
    [
        (
            [
                "UPDATE ledger_accounts SET balance_micro_usd = balance_micro_usd + 1"
                " WHERE kind = 'platform_revenue'"
            ],
            ["unbalanced", "balance_mismatch"],
        ),
        (
            [
                "UPDATE ledger_accounts SET balance_micro_usd = balance_micro_usd + 5"
                " WHERE kind = 'platform_revenue'",
                "UPDATE ledger_accounts SET balance_micro_usd = balance_micro_usd - 5"
                " WHERE kind = 'world'",
            ],
            ["balance_mismatch", "balance_mismatch"],
        ),
        (
            ["DELETE FROM ledger_transfers WHERE id = 'req-2#hold'"],
            ["balance_mismatch", "balance_mismatch", "hold_movements"],
        ),
        (
            ["UPDATE ledger_holds SET state = 'released', resolved_at_ms = 1 WHERE id = 'req-2'"],
            ["holds_mismatch", "hold_movements"],
        ),
        (["UPDATE ledger_holds SET posted_micro_usd = 10 WHERE id = 'req-1'"], ["hold_movements"]),
        (
            ["UPDATE ledger_holds SET reference = 'same' WHERE id IN ('req-1', 'req-3')"],
            ["duplicate_settlement"],
        ),
        (
            ["UPDATE ledger_transfers SET credit_account_id = 'platform' WHERE id = 'req-2#hold'"],
            ["balance_mismatch", "balance_mismatch", "hold_accounts"],
        ),
        (
            ["UPDATE ledger_transfers SET hold_id = NULL WHERE id = 'req-2#hold'"],
            ["hold_movements", "hold_accounts"],
        ),
        (["UPDATE ledger_transfers SET reverses_id = NULL WHERE id = 'refund'"], ["bad_reversal"]),
        (
            ["UPDATE ledger_transfers SET reverses_id = 'req-1#hold' WHERE id = 'refund'"],
            ["bad_reversal"],
        ),
    ],
)
async def test_the_audit_names_each_kind_of_damage(
    sessions: Sessions, people: People, tampering: list[str], codes: list[str]
) -> None:
    provider = provider_earnings(people.provider)
    async with sessions.begin() as session:
        await place_hold(session, "req-1", people.customer, 100, reference="req-1", now_ms=T0)
        await post_hold(session, "req-1", [Credit(provider, 60), Credit(PLATFORM_REVENUE, 10)])
        await place_hold(session, "req-2", people.customer, 200, reference="req-2", now_ms=T0)
        await place_hold(session, "req-3", people.customer, 10, reference="req-3", now_ms=T0)
        await post_hold(session, "req-3", [Credit(provider, 10)])
        await reverse_transfer(session, f"req-3#post#{provider}", reversal_id="refund")
    await healthy(sessions)
    async with sessions.begin() as session:
        for statement in tampering:
            await session.execute(text(statement))
        violations = await audit(session, now_ms=T0)
    assert sorted(v.code for v in violations) == sorted(codes), violations
    assert all(str(v).startswith(f"{v.code}: ") for v in violations)


async def test_the_audit_runs_extra_checks(sessions: Sessions, people: People) -> None:
    from coordinator.ledger import Violation  # noqa: PLC0415

    async def every_request_settled(session: AsyncSession) -> list[Violation]:
        return [Violation("unsettled_request", "req-9", "request req-9 has no settlement")]

    async with sessions.begin() as session:
        violations = await audit(session, extra_checks=[every_request_settled])
    assert [str(v) for v in violations] == ["unsettled_request: request req-9 has no settlement"]
