"""The ledger under concurrency, on SQLite and PostgreSQL: many transactions on many connections
(two engines, as two coordinator replicas would have) never spend more than a wallet holds, and
each hold is resolved exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import pytest
import pytest_asyncio

from coordinator.accounts import Role, create_account
from coordinator.db import create_engine, create_session_factory
from coordinator.ledger import (
    PLATFORM_REVENUE,
    Credit,
    Hold,
    HoldNotOpen,
    HoldState,
    InsufficientFunds,
    Settlement,
    account_balances,
    audit,
    balance,
    expire_holds,
    get_hold,
    place_hold,
    post_hold,
    provider_earnings,
    release_hold,
)
from tests.coordinator.conftest import Sessions

pytestmark = pytest.mark.asyncio

T0 = 1_767_225_600_000
ResultT = TypeVar("ResultT")


@pytest_asyncio.fixture
async def replicas(sessions: Sessions, database_url: str) -> AsyncIterator[list[Sessions]]:
    """Two session factories on two engines (two connection pools) over one database."""
    engine = create_engine(database_url)
    try:
        yield [sessions, create_session_factory(engine)]
    finally:
        await engine.dispose()


async def customer_with(sessions: Sessions, credits_micro_usd: int) -> tuple[str, str]:
    async with sessions.begin() as session:
        customer, _ = await create_account(session, Role.CUSTOMER, "Ada", credits_micro_usd)
        provider, _ = await create_account(session, Role.PROVIDER, "Grace")
    return customer.id, provider.id


async def all_at_once(
    count: int, body: Callable[[int], Awaitable[ResultT]]
) -> list[ResultT | BaseException]:
    """Run ``body(0..count-1)`` concurrently, released together, each on its own connection."""
    start = asyncio.Event()

    async def run(number: int) -> ResultT:
        await start.wait()
        return await body(number)

    tasks = [asyncio.ensure_future(run(number)) for number in range(count)]
    await asyncio.sleep(0)
    start.set()
    return await asyncio.gather(*tasks, return_exceptions=True)


async def assert_healthy(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        assert await audit(session, now_ms=T0) == []


@pytest.mark.parametrize(("requests", "affordable"), [(24, 7), (12, 0), (12, 12)])
async def test_of_n_concurrent_holds_exactly_the_k_affordable_succeed(
    replicas: list[Sessions], requests: int, affordable: int
) -> None:
    price = 1_000
    customer, _ = await customer_with(replicas[0], affordable * price + price - 1)

    async def hold(number: int) -> Hold:
        async with replicas[number % 2].begin() as session:
            return await place_hold(session, f"req-{number}", customer, price, now_ms=T0)

    outcomes = await all_at_once(requests, hold)
    held = [outcome for outcome in outcomes if isinstance(outcome, Hold)]
    refused = [outcome for outcome in outcomes if isinstance(outcome, InsufficientFunds)]
    assert len(held) == affordable
    assert len(refused) == requests - affordable, [o for o in outcomes if not isinstance(o, Hold)]
    assert all(0 <= error.available_micro_usd < price for error in refused)
    async with replicas[1].begin() as session:
        balances = await account_balances(session, customer)
    assert (balances.available_micro_usd, balances.held_micro_usd) == (
        price - 1,
        affordable * price,
    )
    await assert_healthy(replicas[0])


async def test_concurrent_repeats_of_one_hold_take_effect_once(replicas: list[Sessions]) -> None:
    customer, _ = await customer_with(replicas[0], 5_000)

    async def hold(number: int) -> Hold:
        async with replicas[number % 2].begin() as session:
            return await place_hold(session, "req-1", customer, 3_000, now_ms=T0 + number)

    outcomes = await all_at_once(10, hold)
    assert all(isinstance(outcome, Hold) for outcome in outcomes), outcomes
    assert len(set(outcomes)) == 1
    async with replicas[0].begin() as session:
        assert (await account_balances(session, customer)).available_micro_usd == 2_000
    await assert_healthy(replicas[0])


async def test_a_post_a_release_and_an_expiry_racing_resolve_each_hold_once(
    replicas: list[Sessions],
) -> None:
    customer, provider = await customer_with(replicas[0], 1_000_000)
    holds = [f"req-{number}" for number in range(8)]
    async with replicas[0].begin() as session:
        for hold_id in holds:
            await place_hold(session, hold_id, customer, 1_000, ttl_ms=10, now_ms=T0)
    credits = [Credit(provider_earnings(provider), 600), Credit(PLATFORM_REVENUE, 100)]

    async def resolve(number: int) -> object:
        hold_id = holds[number // 3]
        async with replicas[number % 2].begin() as session:
            match number % 3:
                case 0:
                    return await post_hold(session, hold_id, credits, now_ms=T0 + 20)
                case 1:
                    return await release_hold(session, hold_id, now_ms=T0 + 20)
                case _:
                    return await expire_holds(session, now_ms=T0 + 20, limit=1)

    outcomes = await all_at_once(3 * len(holds), resolve)
    unexpected = [
        outcome
        for outcome in outcomes
        if isinstance(outcome, BaseException) and not isinstance(outcome, HoldNotOpen)
    ]
    assert unexpected == []
    posted = sum(isinstance(outcome, Settlement) for outcome in outcomes)
    async with replicas[0].begin() as session:
        states = [(await get_hold(session, hold_id)) for hold_id in holds]
        assert all(hold is not None and hold.state is not HoldState.OPEN for hold in states)
        assert sum(hold.state is HoldState.POSTED for hold in states if hold) == posted
        assert await balance(session, provider_earnings(provider)) == 600 * posted
        assert (await account_balances(session, customer)).available_micro_usd == (
            1_000_000 - 700 * posted
        )
    await assert_healthy(replicas[0])


async def test_holds_and_settlements_of_one_customer_interleave_without_deadlocks(
    replicas: list[Sessions],
) -> None:
    customer, provider = await customer_with(replicas[0], 20 * 1_000)
    earnings = provider_earnings(provider)

    async def request(number: int) -> Settlement:
        hold_id = f"req-{number}"
        async with replicas[number % 2].begin() as session:
            await place_hold(session, hold_id, customer, 1_000, now_ms=T0)
        async with replicas[(number + 1) % 2].begin() as session:
            return await post_hold(
                session,
                hold_id,
                [Credit(earnings, 500 + number), Credit(PLATFORM_REVENUE, 10)],
                now_ms=T0,
            )

    outcomes = await all_at_once(30, request)
    settled = [outcome for outcome in outcomes if isinstance(outcome, Settlement)]
    others = [outcome for outcome in outcomes if not isinstance(outcome, Settlement)]
    # Every request that got a hold was settled; the others were refused for want of money.
    assert all(isinstance(outcome, InsufficientFunds) for outcome in others), others
    assert len(settled) >= 20
    async with replicas[0].begin() as session:
        assert await balance(session, earnings) == sum(
            {credit.account_id: credit.amount_micro_usd for credit in settlement.credits}[earnings]
            for settlement in settled
        )
        assert await balance(session, PLATFORM_REVENUE) == 10 * len(settled)
    await assert_healthy(replicas[0])
