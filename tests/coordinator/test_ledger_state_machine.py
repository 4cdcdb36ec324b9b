"""A hypothesis state machine drives the ledger through random sequences of top-ups, holds,
settlements, releases, expiries, reversals, payouts, repeated ids and simulated crashes, on
SQLite and PostgreSQL. After every step the audit finds nothing and every balance equals the
model's double-entry bookkeeping."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.accounts import Role, create_account
from coordinator.db import create_engine, create_session_factory, migrate
from coordinator.ledger import (
    PLATFORM_REVENUE,
    WORLD,
    Credit,
    HoldExceeded,
    HoldNotOpen,
    HoldState,
    IdConflict,
    InsufficientFunds,
    NotReversible,
    TransferKind,
    audit,
    balance,
    builder_earnings,
    customer_holds,
    customer_wallet,
    expire_holds,
    place_hold,
    post_hold,
    provider_earnings,
    release_hold,
    reverse_transfer,
    top_up,
    transfer,
)

T0 = 1_767_225_600_000
STARTING_CREDITS = 20_000
ResultT = TypeVar("ResultT")
# Bounded so that each database takes well under a minute (the CI budget is shared). No shrinking:
# every shrink step replays a history against the database, which would take many minutes; a
# failure prints its (unshrunk) history of steps instead.
MACHINE_SETTINGS = settings(
    max_examples=20,
    stateful_step_count=35,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    database=None,
)


class SimulatedCrash(Exception):
    """The process dies in the middle of a transaction."""


@dataclass
class ModelHold:
    account_id: str
    amount: int
    reference: str
    expires_at_ms: int
    state: HoldState = HoldState.OPEN
    credits: tuple[Credit, ...] = ()


@dataclass(frozen=True)
class ModelTransfer:
    debit: str
    credit: str
    amount: int


class LedgerMachine(RuleBasedStateMachine):
    """The model: every ledger account's balance, every hold's state, every reversible transfer."""

    DATABASE_URL = ""  # set by a subclass per database: see machine_for()

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.engine = create_engine(self.DATABASE_URL)
        self.sessions = create_session_factory(self.engine)
        self.now_ms = T0
        self.balances: dict[str, int] = defaultdict(int)
        self.holds: dict[str, ModelHold] = {}
        self.reversible: dict[str, ModelTransfer] = {}
        self.reversed: set[str] = set()
        self.top_ups: dict[str, tuple[str, int]] = {}
        self.counter = 0
        self.customers: list[str] = []

    def run(self, coroutine: Coroutine[Any, Any, ResultT]) -> ResultT:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        self.run(self.engine.dispose())
        self.loop.close()

    def fresh_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter:04d}"

    def move(self, debit: str, credit: str, amount: int) -> None:
        self.balances[debit] -= amount
        self.balances[credit] += amount

    @initialize()
    def accounts(self) -> None:
        async def setup() -> tuple[list[str], str, str]:
            async with self.sessions.begin() as session:
                for table in (
                    "ledger_transfers",
                    "ledger_holds",
                    "ledger_accounts",
                    "api_keys",
                    "accounts",
                ):
                    await session.execute(text(f"DELETE FROM {table}"))
                customers = [
                    (await create_account(session, Role.CUSTOMER, name, STARTING_CREDITS))[0].id
                    for name in ("Ada", "Bob")
                ]
                provider, _ = await create_account(session, Role.PROVIDER, "Grace", now_ms=T0)
                builder, _ = await create_account(session, Role.BUILDER, "Lin", now_ms=T0)
            return customers, provider.id, builder.id

        self.customers, provider, builder = self.run(setup())
        for customer in self.customers:
            self.move(WORLD, customer_wallet(customer), STARTING_CREDITS)
        self.provider = provider_earnings(provider)
        self.builder = builder_earnings(builder)

    # -- top-ups -----------------------------------------------------------------------------

    @rule(who=st.integers(0, 1), amount=st.integers(1, 5_000))
    def add_credits(self, who: int, amount: int) -> None:
        customer, transfer_id = self.customers[who], self.fresh_id("top")

        async def act() -> None:
            async with self.sessions.begin() as session:
                await top_up(session, customer, amount, transfer_id=transfer_id, now_ms=self.now_ms)

        self.run(act())
        self.move(WORLD, customer_wallet(customer), amount)
        self.top_ups[transfer_id] = (customer, amount)
        self.reversible[transfer_id] = ModelTransfer(WORLD, customer_wallet(customer), amount)

    @precondition(lambda self: bool(self.top_ups))
    @rule(data=st.data(), changed=st.booleans())
    def repeat_a_top_up(self, data: st.DataObject, changed: bool) -> None:
        transfer_id = data.draw(st.sampled_from(sorted(self.top_ups)))
        customer, amount = self.top_ups[transfer_id]

        async def act() -> None:
            async with self.sessions.begin() as session:
                if changed:
                    with pytest.raises(IdConflict):
                        await top_up(session, customer, amount + 1, transfer_id=transfer_id)
                else:
                    repeated = await top_up(session, customer, amount, transfer_id=transfer_id)
                    assert repeated.amount_micro_usd == amount

        self.run(act())

    # -- holds -------------------------------------------------------------------------------

    @rule(who=st.integers(0, 1), amount=st.integers(0, 4_000), ttl_ms=st.integers(1, 5_000))
    def hold(self, who: int, amount: int, ttl_ms: int) -> None:
        customer, hold_id = self.customers[who], self.fresh_id("h")
        affordable = self.balances[customer_wallet(customer)] >= amount

        async def act() -> None:
            async with self.sessions.begin() as session:
                if affordable:
                    await place_hold(
                        session,
                        hold_id,
                        customer,
                        amount,
                        ttl_ms=ttl_ms,
                        reference=hold_id,
                        now_ms=self.now_ms,
                    )
                else:
                    with pytest.raises(InsufficientFunds):
                        await place_hold(session, hold_id, customer, amount, now_ms=self.now_ms)

        self.run(act())
        if affordable:
            self.holds[hold_id] = ModelHold(customer, amount, hold_id, self.now_ms + ttl_ms)
            self.move(customer_wallet(customer), customer_holds(customer), amount)

    @precondition(lambda self: bool(self.holds))
    @rule(data=st.data(), changed=st.booleans())
    def repeat_a_hold(self, data: st.DataObject, changed: bool) -> None:
        hold_id = data.draw(st.sampled_from(sorted(self.holds)))
        model = self.holds[hold_id]

        async def act() -> None:
            async with self.sessions.begin() as session:
                if changed:
                    with pytest.raises(IdConflict):
                        await place_hold(session, hold_id, model.account_id, model.amount + 1)
                else:
                    again = await place_hold(
                        session, hold_id, model.account_id, model.amount, reference=hold_id
                    )
                    assert (again.amount_micro_usd, again.state) == (model.amount, model.state)

        self.run(act())

    @precondition(lambda self: bool(self.holds))
    @rule(
        data=st.data(),
        shares=st.tuples(st.integers(0, 100), st.integers(0, 100), st.integers(0, 100)),
        over=st.integers(0, 4).map(lambda n: n == 0),
    )
    def settle(self, data: st.DataObject, shares: tuple[int, int, int], over: bool) -> None:
        hold_id = data.draw(st.sampled_from(sorted(self.holds)))
        model = self.holds[hold_id]
        provider, builder, platform = (model.amount * share // 300 for share in shares)
        if over:
            platform = model.amount - provider - builder + 1
        credits = (
            Credit(self.provider, provider),
            Credit(self.builder, builder),
            Credit(PLATFORM_REVENUE, platform),
        )
        wanted = tuple(
            sorted((c for c in credits if c.amount_micro_usd), key=lambda c: c.account_id)
        )

        async def act() -> None:
            async with self.sessions.begin() as session:
                if model.state is HoldState.POSTED and wanted == model.credits:
                    settled = await post_hold(session, hold_id, credits)
                    assert settled.credits == wanted
                elif model.state is HoldState.POSTED:
                    with pytest.raises(IdConflict):
                        await post_hold(session, hold_id, credits)
                elif model.state is not HoldState.OPEN:
                    with pytest.raises(HoldNotOpen):
                        await post_hold(session, hold_id, credits)
                elif over:
                    with pytest.raises(HoldExceeded):
                        await post_hold(session, hold_id, credits)
                else:
                    settled = await post_hold(session, hold_id, credits, now_ms=self.now_ms)
                    assert settled.released_micro_usd == model.amount - sum(
                        c.amount_micro_usd for c in wanted
                    )

        self.run(act())
        if model.state is HoldState.OPEN and not over:
            model.state, model.credits = HoldState.POSTED, wanted
            held = customer_holds(model.account_id)
            for credit in wanted:
                self.move(held, credit.account_id, credit.amount_micro_usd)
                self.reversible[f"{hold_id}#post#{credit.account_id}"] = ModelTransfer(
                    held, credit.account_id, credit.amount_micro_usd
                )
            self.move(held, customer_wallet(model.account_id), self.balances_left(model))

    def pick_hold(self, data: st.DataObject) -> str:
        """Mostly an open hold (the interesting case), sometimes any."""
        open_holds = sorted(h for h, m in self.holds.items() if m.state is HoldState.OPEN)
        prefer_open = data.draw(st.integers(0, 3)) > 0
        if open_holds and prefer_open:
            return data.draw(st.sampled_from(open_holds))
        return data.draw(st.sampled_from(sorted(self.holds)))

    def balances_left(self, model: ModelHold) -> int:
        return model.amount - sum(credit.amount_micro_usd for credit in model.credits)

    @precondition(lambda self: bool(self.holds))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        hold_id = self.pick_hold(data)
        model = self.holds[hold_id]

        async def act() -> None:
            async with self.sessions.begin() as session:
                if model.state is HoldState.POSTED:
                    with pytest.raises(HoldNotOpen):
                        await release_hold(session, hold_id)
                else:
                    released = await release_hold(session, hold_id, now_ms=self.now_ms)
                    expected = HoldState.RELEASED if model.state is HoldState.OPEN else model.state
                    assert released.state is expected

        self.run(act())
        if model.state is HoldState.OPEN:
            model.state = HoldState.RELEASED
            self.move(
                customer_holds(model.account_id), customer_wallet(model.account_id), model.amount
            )

    @rule(elapsed_ms=st.integers(0, 4_000), limit=st.integers(1, 4))
    def time_passes_and_holds_expire(self, elapsed_ms: int, limit: int) -> None:
        self.now_ms += elapsed_ms
        due = {
            hold_id
            for hold_id, model in self.holds.items()
            if model.state is HoldState.OPEN and model.expires_at_ms <= self.now_ms
        }

        async def act() -> list[str]:
            async with self.sessions.begin() as session:
                return [
                    hold.id for hold in await expire_holds(session, now_ms=self.now_ms, limit=limit)
                ]

        expired = self.run(act())
        assert len(expired) == min(limit, len(due))
        assert set(expired) <= due
        for hold_id in expired:
            model = self.holds[hold_id]
            model.state = HoldState.EXPIRED
            self.move(
                customer_holds(model.account_id), customer_wallet(model.account_id), model.amount
            )

    # -- corrections and payouts -------------------------------------------------------------

    @precondition(lambda self: bool(self.reversible))
    @rule(data=st.data())
    def reverse(self, data: st.DataObject) -> None:
        transfer_id = data.draw(st.sampled_from(sorted(self.reversible)))
        original = self.reversible[transfer_id]
        debit = original.credit
        credit = original.debit
        if credit.endswith(":held"):
            credit = credit.removesuffix(":held")
        reversal_id = self.fresh_id("rev")
        covered = debit == WORLD or self.balances[debit] >= original.amount

        async def act() -> None:
            async with self.sessions.begin() as session:
                if transfer_id in self.reversed:
                    with pytest.raises(NotReversible):
                        await reverse_transfer(session, transfer_id, reversal_id=reversal_id)
                elif not covered:
                    with pytest.raises(InsufficientFunds):
                        await reverse_transfer(session, transfer_id, reversal_id=reversal_id)
                else:
                    await reverse_transfer(session, transfer_id, reversal_id=reversal_id)

        self.run(act())
        if transfer_id not in self.reversed and covered:
            self.reversed.add(transfer_id)
            self.move(debit, credit, original.amount)

    @rule(data=st.data(), payee=st.sampled_from(["provider", "builder"]))
    def pay_out(self, data: st.DataObject, payee: str) -> None:
        account = self.provider if payee == "provider" else self.builder
        available = self.balances[account]
        amount = data.draw(st.integers(1, available + 10))
        transfer_id = self.fresh_id("payout")

        async def act() -> None:
            async with self.sessions.begin() as session:
                if amount <= available:
                    await transfer(
                        session, transfer_id, account, WORLD, amount, kind=TransferKind.PAYOUT
                    )
                else:
                    with pytest.raises(InsufficientFunds):
                        await transfer(
                            session, transfer_id, account, WORLD, amount, kind=TransferKind.PAYOUT
                        )

        self.run(act())
        if amount <= available:
            self.move(account, WORLD, amount)
            self.reversible[transfer_id] = ModelTransfer(account, WORLD, amount)

    # -- crashes -----------------------------------------------------------------------------

    async def some_work(self, session: AsyncSession, who: int, amount: int) -> None:
        """A hold, a top-up and (when there is an open hold) a settlement: all to be lost."""
        customer = self.customers[who]
        await top_up(session, customer, amount + 1, transfer_id=self.fresh_id("lost"))
        await place_hold(session, self.fresh_id("lost"), customer, amount, now_ms=self.now_ms)
        open_holds = sorted(h for h, m in self.holds.items() if m.state is HoldState.OPEN)
        if open_holds:
            model = self.holds[open_holds[0]]
            await post_hold(session, open_holds[0], [Credit(self.provider, model.amount)])

    @rule(who=st.integers(0, 1), amount=st.integers(0, 1_000))
    def crash_inside_a_transaction(self, who: int, amount: int) -> None:
        async def work_then_crash() -> None:
            async with self.sessions.begin() as session:
                await self.some_work(session, who, amount)
                raise SimulatedCrash

        with pytest.raises(SimulatedCrash):
            self.run(work_then_crash())

    @rule(who=st.integers(0, 1), amount=st.integers(0, 1_000), drop_connection=st.booleans())
    def abandon_a_session(self, who: int, amount: int, drop_connection: bool) -> None:
        async def act() -> None:
            session = self.sessions()
            await session.begin()
            await self.some_work(session, who, amount)
            if drop_connection:  # the connection dies under the transaction
                await (await session.connection()).invalidate()
            await session.close()

        self.run(act())

    @rule(who=st.integers(0, 1))
    def a_refusal_leaves_the_transaction_usable(self, who: int) -> None:
        customer = self.customers[who]
        wallet = self.balances[customer_wallet(customer)]
        hold_id, transfer_id = self.fresh_id("big"), self.fresh_id("top")

        async def act() -> None:
            async with self.sessions.begin() as session:
                with pytest.raises(InsufficientFunds):
                    await place_hold(session, hold_id, customer, wallet + 1, now_ms=self.now_ms)
                await top_up(session, customer, 7, transfer_id=transfer_id, now_ms=self.now_ms)

        self.run(act())
        self.move(WORLD, customer_wallet(customer), 7)
        self.top_ups[transfer_id] = (customer, 7)

    # -- the invariants ----------------------------------------------------------------------

    @invariant()
    def the_ledger_is_healthy_and_matches_the_model(self) -> None:
        async def check() -> tuple[list[str], dict[str, int]]:
            async with self.sessions.begin() as session:
                violations = [
                    str(v)
                    for v in await audit(session, now_ms=self.now_ms, overdue_grace_ms=10**12)
                ]
                actual = {account: await balance(session, account) for account in self.balances}
            return violations, actual

        violations, actual = self.run(check())
        assert violations == []
        assert actual == dict(self.balances)
        assert sum(self.balances.values()) == 0
        assert all(amount >= 0 for account, amount in self.balances.items() if account != WORLD)


@pytest.mark.asyncio
@pytest.mark.timeout(300)
async def test_random_ledger_histories_keep_every_invariant(database_url: str) -> None:
    await migrate(database_url)

    class OnThisDatabase(LedgerMachine):
        DATABASE_URL = database_url

    def run() -> None:
        run_state_machine_as_test(OnThisDatabase, settings=MACHINE_SETTINGS)

    await asyncio.to_thread(run)
