"""Accounts, API keys and credits, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from sqlalchemy import text, update

from coordinator.accounts import (
    API_KEY_PREFIX,
    AccountNotFound,
    AmbiguousKeyPrefix,
    ApiKey,
    InvalidAccountInput,
    KeyNotFound,
    Principal,
    Role,
    add_credits,
    authenticate,
    create_account,
    issue_api_key,
    list_accounts,
    list_api_keys,
    revoke_key,
)
from coordinator.ledger import IdConflict, account_balances, audit
from coordinator.money import MAX_AMOUNT_MICRO_USD
from tests.coordinator.conftest import Sessions

pytestmark = pytest.mark.asyncio


async def test_a_new_account_gets_a_key_shown_once_and_stored_only_as_its_hash(
    sessions: Sessions,
) -> None:
    async with sessions.begin() as session:
        account, raw_key = await create_account(
            session, Role.CUSTOMER, "  Ada  ", 2_500_000, now_ms=1_767_225_600_000
        )
    assert account.id.startswith("acc_")
    assert (account.role, account.name) == (Role.CUSTOMER, "Ada")
    async with sessions.begin() as session:
        assert (await account_balances(session, account.id)).available_micro_usd == 2_500_000
    assert account.created_at_ms == 1_767_225_600_000
    assert raw_key.startswith(API_KEY_PREFIX)
    assert len(raw_key) == len(API_KEY_PREFIX) + 52

    async with sessions.begin() as session:
        rows = (await session.execute(text("SELECT * FROM api_keys"))).mappings().all()
    assert len(rows) == 1
    row = dict(rows[0])
    assert bytes(row["key_hash"]) == hashlib.sha256(raw_key.encode()).digest()
    assert row["prefix"] == raw_key[: len(API_KEY_PREFIX) + 8]
    assert row["account_id"] == account.id
    assert row["revoked_at_ms"] is None
    secret_part = raw_key[len(row["prefix"]) :]
    for value in row.values():
        text_value = value.hex() if isinstance(value, bytes | memoryview) else str(value)
        assert secret_part not in text_value
        assert raw_key not in text_value

    async with sessions.begin() as session:
        principal = await authenticate(session, raw_key)
    assert principal == Principal(account_id=account.id, role=Role.CUSTOMER, key_id=row["id"])


async def test_unknown_malformed_and_revoked_keys_do_not_authenticate(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        account, first_key = await create_account(session, Role.BUILDER, "Lin")
        second_key = await issue_api_key(session, account.id)
    unknown_key = API_KEY_PREFIX + "a" * 52
    async with sessions.begin() as session:
        assert await authenticate(session, unknown_key) is None
        assert await authenticate(session, "") is None
        assert await authenticate(session, first_key + "a") is None
        assert await authenticate(session, first_key.upper()) is None
        assert await authenticate(session, first_key[:-1]) is None
        revoked = await revoke_key(session, first_key[: len(API_KEY_PREFIX) + 8])
    assert revoked.revoked_at_ms is not None
    async with sessions.begin() as session:
        assert await authenticate(session, first_key) is None
        principal = await authenticate(session, second_key)
    assert principal is not None
    assert principal.account_id == account.id
    assert principal.role is Role.BUILDER


async def test_a_key_is_revoked_by_id_prefix_or_value_once(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        account, raw_key = await create_account(session, Role.PROVIDER, "Grace")
        (key,) = await list_api_keys(session, account.id)
    async with sessions.begin() as session:
        first = await revoke_key(session, key.id, now_ms=1_000)
    async with sessions.begin() as session:
        again = await revoke_key(session, key.prefix, now_ms=2_000)
        by_value = await revoke_key(session, raw_key, now_ms=3_000)
    assert first.revoked_at_ms == again.revoked_at_ms == by_value.revoked_at_ms == 1_000
    async with sessions.begin() as session:
        with pytest.raises(KeyNotFound):
            await revoke_key(session, "key_doesnotexist")
        with pytest.raises(KeyNotFound):
            await revoke_key(session, "sk-sai-zzzzzzzz")
        with pytest.raises(KeyNotFound):
            await revoke_key(session, "acc_something")


async def test_a_prefix_shared_by_two_keys_is_refused_as_ambiguous(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        account, _ = await create_account(session, Role.CUSTOMER, "Ada")
        await issue_api_key(session, account.id)
        await session.execute(update(ApiKey).values(prefix="sk-sai-samesame"))
    async with sessions.begin() as session:
        with pytest.raises(AmbiguousKeyPrefix, match="give the key id"):
            await revoke_key(session, "sk-sai-samesame")
        keys = await list_api_keys(session, account.id)
    assert [key.revoked_at_ms for key in keys] == [None, None]


async def test_fifty_concurrent_credit_additions_sum_exactly(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        account, _ = await create_account(session, Role.CUSTOMER, "Ada", 7)

    async def add(micro_usd: int) -> int:
        async with sessions.begin() as session:
            return await add_credits(session, account.id, micro_usd)

    balances = await asyncio.gather(*(add(amount) for amount in range(1, 51)))
    expected = 7 + sum(range(1, 51))
    assert max(balances) == expected
    assert len(set(balances)) == 50  # every addition saw its own predecessor's result
    async with sessions.begin() as session:
        assert (await account_balances(session, account.id)).available_micro_usd == expected
        assert await audit(session) == []


async def test_credits_must_be_positive_whole_micro_usd_for_a_known_account(
    sessions: Sessions,
) -> None:
    async with sessions.begin() as session:
        account, _ = await create_account(session, Role.CUSTOMER, "Ada")
    async with sessions.begin() as session:
        for bad in (0, -1, MAX_AMOUNT_MICRO_USD + 1, True):
            with pytest.raises(InvalidAccountInput):
                await add_credits(session, account.id, bad)
        with pytest.raises(InvalidAccountInput):
            await add_credits(session, account.id, 1.5)  # type: ignore[arg-type]
        with pytest.raises(AccountNotFound):
            await add_credits(session, "acc_missing", 1)
        assert await add_credits(session, account.id, MAX_AMOUNT_MICRO_USD) == MAX_AMOUNT_MICRO_USD
    async with sessions.begin() as session:
        assert (await account_balances(session, account.id)).available_micro_usd == (
            MAX_AMOUNT_MICRO_USD
        )


async def test_credits_are_top_ups_in_the_ledger_and_an_id_adds_them_once(
    sessions: Sessions,
) -> None:
    async with sessions.begin() as session:
        account, _ = await create_account(session, Role.CUSTOMER, "Ada", 1_000)
    async with sessions.begin() as session:
        assert await add_credits(session, account.id, 500, transfer_id="invoice-42") == 1_500
    async with sessions.begin() as session:  # a retry of the same top-up adds nothing
        assert await add_credits(session, account.id, 500, transfer_id="invoice-42") == 1_500
        with pytest.raises(IdConflict):
            await add_credits(session, account.id, 501, transfer_id="invoice-42")
    async with sessions.begin() as session:
        kinds = (
            await session.execute(
                text("SELECT kind, debit_account_id, amount_micro_usd FROM ledger_transfers")
            )
        ).all()
        assert sorted(kinds) == [("top_up", "world", 500), ("top_up", "world", 1_000)]
        assert await audit(session) == []


async def test_create_account_validates_its_inputs(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        with pytest.raises(InvalidAccountInput, match="unknown role"):
            await create_account(session, "admin", "Ada")
        with pytest.raises(InvalidAccountInput, match="empty"):
            await create_account(session, Role.CUSTOMER, "   ")
        with pytest.raises(InvalidAccountInput, match="at most 200"):
            await create_account(session, Role.CUSTOMER, "x" * 201)
        with pytest.raises(InvalidAccountInput, match="control"):
            await create_account(session, Role.CUSTOMER, "Ada\nLovelace")
        with pytest.raises(InvalidAccountInput):
            await create_account(session, Role.CUSTOMER, "Ada", -1)
        account, _ = await create_account(session, "operator", "Ops")
    assert account.role is Role.OPERATOR
    async with sessions.begin() as session:
        assert [a.id for a in await list_accounts(session)] == [account.id]
        with pytest.raises(AccountNotFound):
            await issue_api_key(session, "acc_missing")


async def test_accounts_are_listed_oldest_first_and_filtered_by_role(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        provider, _ = await create_account(session, Role.PROVIDER, "P", now_ms=3_000)
        customer, _ = await create_account(session, Role.CUSTOMER, "C", now_ms=1_000)
        builder, _ = await create_account(session, Role.BUILDER, "B", now_ms=2_000)
    async with sessions.begin() as session:
        everyone = [account.id for account in await list_accounts(session)]
        providers = [account.id for account in await list_accounts(session, role=Role.PROVIDER)]
    assert everyone == [customer.id, builder.id, provider.id]
    assert providers == [provider.id]


async def test_a_failed_unit_of_work_leaves_nothing_behind(sessions: Sessions) -> None:
    async def create_then_fail() -> None:
        async with sessions.begin() as session:
            await create_account(session, Role.CUSTOMER, "Ada")
            await add_credits(session, "acc_missing", 1)

    with pytest.raises(AccountNotFound):
        await create_then_fail()
    async with sessions.begin() as session:
        assert await list_accounts(session) == []
        assert await authenticate(session, API_KEY_PREFIX + "a" * 52) is None


async def test_starting_credits_roll_back_with_the_account(sessions: Sessions) -> None:
    async def create_then_fail() -> None:
        async with sessions.begin() as session:
            await create_account(session, Role.CUSTOMER, "Ada", 5_000_000)
            await add_credits(session, "acc_missing", 1)

    with pytest.raises(AccountNotFound):
        await create_then_fail()
    async with sessions.begin() as session:
        for table in ("accounts", "ledger_accounts", "ledger_transfers"):
            count = (await session.execute(text(f"SELECT COUNT(*) FROM {table}"))).scalar_one()
            assert count == 0, table
