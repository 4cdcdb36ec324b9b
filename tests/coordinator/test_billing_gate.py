"""The credit gate over a real ledger, on SQLite and PostgreSQL: no overspending, exact posting."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import select

from coordinator.accounts import create_account
from coordinator.billing import CreditGate, GenerationRecord, InsufficientCredits
from coordinator.billing.audit import generations_settled
from coordinator.db.generations import Generation
from coordinator.ledger import (
    Pricing,
    account_balances,
    audit,
    charge_for,
    credits_for,
    expire_holds,
    ledger_totals,
)
from tests.coordinator.conftest import Sessions

pytestmark = pytest.mark.asyncio

PRICING = Pricing(1_000_000, 2_000_000, platform_fee_bps=500)  # 1 / 2 micro-USD per token


async def accounts(sessions: Sessions, credits: int) -> tuple[str, str]:
    async with sessions.begin() as session:
        customer, _ = await create_account(session, "customer", "c", credits)
        provider, _ = await create_account(session, "provider", "p")
    return customer.id, provider.id


def record(n: int, customer: str, provider: str, prompt: int, completion: int) -> GenerationRecord:
    charge = charge_for(PRICING, prompt, completion)
    return GenerationRecord(
        id=f"gen-{n}",
        request_id=f"req_{n}",
        customer_account_id=customer,
        api_key_id=None,
        app_id=None,
        surcharge_version=None,
        builder_account_id=None,
        node_id="nd_x",
        provider_account_id=provider,
        model="m",
        created_at_ms=0,
        ttft_ms=1,
        total_ms=2,
        outcome="completed",
        finish_reason="stop",
        attempts=1,
        hedged=False,
        prompt_tokens=prompt,
        completion_tokens=completion,
        node_prompt_tokens=prompt,
        node_completion_tokens=completion,
        metering="node_report_bounded",
        token_mismatch=False,
        price_input_micro_usd_per_1m=PRICING.input_micro_usd_per_1m,
        price_output_micro_usd_per_1m=PRICING.output_micro_usd_per_1m,
        charge=charge,
        credits=credits_for(charge, provider_account_id=provider),
    )


async def healthy(sessions: Sessions) -> None:
    async with sessions() as session:
        assert await audit(session, extra_checks=(generations_settled,)) == []


async def test_exactly_the_affordable_requests_get_through(sessions: Sessions) -> None:
    cost, affordable = 1_000, 7
    customer, _ = await accounts(sessions, cost * affordable)
    gates = [CreditGate(sessions, lease_chunk_micro_usd=3_000) for _ in range(2)]  # 2 processes

    async def one(i: int) -> bool:
        try:
            await gates[i % 2].reserve(customer, cost)
        except InsufficientCredits:
            return False
        return True

    results = await asyncio.gather(*(one(i) for i in range(4 * affordable)))
    assert sum(results) == affordable
    async with sessions() as session:
        balances = await account_balances(session, customer)
    assert balances.available_micro_usd >= 0
    assert balances.available_micro_usd + balances.held_micro_usd == cost * affordable


async def test_charges_are_posted_exactly_and_the_rest_released(sessions: Sessions) -> None:
    customer, provider = await accounts(sessions, 1_000_000)
    gate = CreditGate(sessions, lease_chunk_micro_usd=100_000)
    total = 0
    for n in range(5):
        reservation = await gate.reserve(customer, 10_000)
        done = record(n, customer, provider, prompt=100 + n, completion=50)
        gate.settle(reservation, done)
        total += done.charge.total_micro_usd
    released = await gate.reserve(customer, 10_000)
    gate.release(released)
    assert gate.pending("gen-0") is not None
    await gate.close()
    assert gate.pending("gen-0") is None
    async with sessions() as session:
        balances = await account_balances(session, customer)
        totals = await ledger_totals(session)
        rows = (await session.scalars(select(Generation))).all()
    assert balances.held_micro_usd == 0
    assert balances.available_micro_usd == 1_000_000 - total
    assert totals["provider_earnings"] + totals["platform_revenue"] == total
    assert len(rows) == 5
    await healthy(sessions)


async def test_a_lease_with_charges_is_rotated_and_posted_while_traffic_goes_on(
    sessions: Sessions,
) -> None:
    customer, provider = await accounts(sessions, 1_000_000)
    gate = CreditGate(sessions, lease_chunk_micro_usd=100_000)
    first = await gate.reserve(customer, 10_000)
    in_flight = await gate.reserve(customer, 10_000)
    gate.settle(first, record(1, customer, provider, 10, 10))
    await gate.flush()  # rotates: new requests use a fresh lease, the old one waits
    later = await gate.reserve(customer, 10_000)
    assert later.lease is not first.lease
    assert gate.leases_posted == 0  # the old lease still has a request in flight
    gate.settle(in_flight, record(2, customer, provider, 10, 10))
    await gate.flush()
    assert gate.leases_posted == 1
    gate.release(later)
    await gate.close()
    await healthy(sessions)


async def test_a_charge_over_its_reservation_is_refused(sessions: Sessions) -> None:
    customer, provider = await accounts(sessions, 1_000_000)
    gate = CreditGate(sessions)
    reservation = await gate.reserve(customer, 10)
    with pytest.raises(RuntimeError, match="exceeds the reservation"):
        gate.settle(reservation, record(1, customer, provider, 1_000, 1_000))


async def test_a_crash_strands_no_money(sessions: Sessions) -> None:
    customer, provider = await accounts(sessions, 500_000)
    gate = CreditGate(sessions, lease_chunk_micro_usd=200_000, lease_ttl_ms=1_000)
    reservation = await gate.reserve(customer, 10_000)
    gate.settle(reservation, record(1, customer, provider, 10, 10))
    del gate  # the process died before its flush: the charge is lost, the money is not
    async with sessions.begin() as session:
        expired = await expire_holds(session, now_ms=int(time.time() * 1000) + 60_000)
    assert len(expired) == 1
    async with sessions() as session:
        balances = await account_balances(session, customer)
    assert balances.available_micro_usd == 500_000
    await healthy(sessions)


async def test_a_free_request_is_served_to_an_empty_wallet(sessions: Sessions) -> None:
    customer, _ = await accounts(sessions, 0)
    gate = CreditGate(sessions)
    reservation = await gate.reserve(customer, 0)
    gate.release(reservation)
    with pytest.raises(InsufficientCredits):
        await gate.reserve(customer, 1)
    await gate.close()
    await healthy(sessions)
