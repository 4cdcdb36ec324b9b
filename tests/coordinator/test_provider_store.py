"""Provider self-service storage on SQLite and PostgreSQL: own prices and enrollment tokens."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from sqlalchemy import select

from coordinator.accounts import (
    InvalidEnrollmentProof,
    NodeEnrolledElsewhere,
    Role,
    create_account,
    list_nodes,
)
from coordinator.db.models import EnrollmentToken, ProviderPrice
from coordinator.hub.nodes import NodeRegistry, PriceOverride
from coordinator.providers import (
    ENROLLMENT_TOKEN_LIFETIME_MS,
    MAX_PENDING_TOKENS,
    MAX_PRICES_PER_PROVIDER,
    EnrollmentTokenExpired,
    EnrollmentTokenNotFound,
    EnrollmentTokenRevoked,
    EnrollmentTokenUsed,
    InvalidModelName,
    InvalidPrice,
    NotAProvider,
    TooManyPrices,
    TooManyTokens,
    UnknownEnrollmentToken,
    all_price_overrides,
    check_enrollment_token,
    clear_price,
    create_enrollment_token,
    enroll_with_token,
    list_prices,
    parse_price_per_1m,
    pending_enrollment_tokens,
    revoke_enrollment_token,
    set_price,
)
from coordinator.providers.sync import apply_provider_prices, load_price_overrides
from protocol import EnrollmentStatement, Identity
from tests.coordinator.conftest import Sessions

pytestmark = pytest.mark.asyncio

NOW_MS = 1_767_225_600_000
COORDINATOR = Identity.from_seed(b"c" * 32)
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


async def new_account(sessions: Sessions, role: Role = Role.PROVIDER, name: str = "Grace") -> str:
    async with sessions.begin() as session:
        account, _ = await create_account(session, role, name)
    return account.id


async def set_own(
    sessions: Sessions, account: str, model: str, price_in: int, price_out: int, at_ms: int = NOW_MS
) -> None:
    async with sessions.begin() as session:
        await set_price(
            session,
            account,
            model,
            input_micro_usd_per_1m=price_in,
            output_micro_usd_per_1m=price_out,
            now_ms=at_ms,
        )


# --- own prices -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "micro_usd"),
    [("0.20", 200_000), ("0", 0), (Decimal("1.5"), 1_500_000), (3, 3_000_000), (" 2 ", 2_000_000)],
)
async def test_prices_are_read_exactly_in_usd_per_million(text: object, micro_usd: int) -> None:
    assert parse_price_per_1m(text, "input_usd_per_1m") == micro_usd


@pytest.mark.parametrize("text", ["-1", "0.1234567", "1e3", "abc", "", 0.2, True, None, "1000001"])
async def test_a_bad_price_is_refused_naming_the_field(text: object) -> None:
    with pytest.raises(InvalidPrice, match=r"^output_usd_per_1m: "):
        parse_price_per_1m(text, "output_usd_per_1m")


async def test_a_provider_sets_replaces_lists_and_clears_its_own_prices(
    sessions: Sessions,
) -> None:
    provider = await new_account(sessions)
    other = await new_account(sessions, name="Mallory")
    await set_own(sessions, provider, MODEL, 200_000, 600_000)
    await set_own(sessions, provider, "mock/tiny", 0, 0)
    await set_own(sessions, other, MODEL, 1, 2)
    await set_own(sessions, provider, MODEL, 250_000, 700_000, at_ms=NOW_MS + 5)
    async with sessions() as session:
        mine = await list_prices(session, provider)
        everyone = await all_price_overrides(session)
    assert [(p.model, p.input_micro_usd_per_1m, p.output_micro_usd_per_1m) for p in mine] == [
        (MODEL, 250_000, 700_000),
        ("mock/tiny", 0, 0),
    ]
    assert mine[0].updated_at_ms == NOW_MS + 5
    assert everyone == {
        provider: {MODEL: PriceOverride(250_000, 700_000), "mock/tiny": PriceOverride(0, 0)},
        other: {MODEL: PriceOverride(1, 2)},
    }
    async with sessions.begin() as session:
        assert await clear_price(session, provider, MODEL) is True
        assert await clear_price(session, provider, MODEL) is False
        assert [p.model for p in await list_prices(session, provider)] == ["mock/tiny"]
        assert [p.model for p in await list_prices(session, other)] == [MODEL]


async def test_only_providers_have_prices_and_values_stay_in_bounds(sessions: Sessions) -> None:
    customer = await new_account(sessions, Role.CUSTOMER)
    provider = await new_account(sessions)
    with pytest.raises(NotAProvider):
        await set_own(sessions, customer, MODEL, 1, 1)
    with pytest.raises(NotAProvider):
        await set_own(sessions, "acc_missing", MODEL, 1, 1)
    for bad in (-1, 10**12 + 1):
        with pytest.raises(InvalidPrice):
            await set_own(sessions, provider, MODEL, bad, 1)
    for name in ("", " padded", "x" * 257, "tab\there"):
        with pytest.raises(InvalidModelName):
            await set_own(sessions, provider, name, 1, 1)
    await set_own(sessions, provider, "x" * 256, 10**12, 10**12)
    async with sessions() as session:
        assert len(await list_prices(session, provider)) == 1


async def test_a_provider_has_at_most_so_many_own_prices(sessions: Sessions) -> None:
    provider = await new_account(sessions)
    async with sessions.begin() as session:
        session.add_all(
            ProviderPrice(
                account_id=provider,
                model=f"model-{i}",
                price_input_micro_usd_per_1m=1,
                price_output_micro_usd_per_1m=1,
                updated_at_ms=NOW_MS,
            )
            for i in range(MAX_PRICES_PER_PROVIDER)
        )
    with pytest.raises(TooManyPrices):
        await set_own(sessions, provider, "one-more", 1, 1)
    await set_own(sessions, provider, "model-7", 5, 5)  # changing one is fine


async def test_concurrent_first_prices_for_one_model_store_one_row(sessions: Sessions) -> None:
    provider = await new_account(sessions)
    await asyncio.gather(*(set_own(sessions, provider, MODEL, i, i) for i in range(1, 9)))
    async with sessions() as session:
        (price,) = await list_prices(session, provider)
    assert 1 <= price.input_micro_usd_per_1m <= 8
    assert price.input_micro_usd_per_1m == price.output_micro_usd_per_1m


async def test_the_registry_follows_the_database(sessions: Sessions) -> None:
    provider = await new_account(sessions)
    registry = NodeRegistry()
    await set_own(sessions, provider, MODEL, 7, 8)
    assert await load_price_overrides(registry, sessions) is True
    assert registry.price_overrides(provider) == {MODEL: PriceOverride(7, 8)}
    async with sessions.begin() as session:
        await clear_price(session, provider, MODEL)
    await apply_provider_prices(registry, sessions, provider)
    assert registry.price_overrides(provider) == {}


# --- enrollment tokens ------------------------------------------------------------------------


def statement_for(account_id: str, node: Identity, at_ms: int = NOW_MS) -> EnrollmentStatement:
    return EnrollmentStatement(
        coordinator_key=COORDINATOR.public_key,
        node_key=node.public_key,
        account_id=account_id,
        issued_at_ms=at_ms,
    )


async def new_token(sessions: Sessions, account: str, at_ms: int = NOW_MS) -> str:
    async with sessions.begin() as session:
        raw, _ = await create_enrollment_token(session, account, now_ms=at_ms)
    return raw


async def use(
    sessions: Sessions, raw: str, node: Identity, account: str, at_ms: int = NOW_MS
) -> str:
    statement = statement_for(account, node, at_ms)
    async with sessions.begin() as session:
        enrollment = await enroll_with_token(
            session,
            raw,
            statement,
            statement.sign(node),
            at_ms,
            coordinator_key=COORDINATOR.public_key,
        )
        return enrollment.account_id


async def test_a_token_is_random_stored_hashed_and_enrolls_one_node_once(
    sessions: Sessions,
) -> None:
    provider = await new_account(sessions)
    async with sessions.begin() as session:
        raw, token = await create_enrollment_token(session, provider, now_ms=NOW_MS)
        other_raw, _ = await create_enrollment_token(session, provider, now_ms=NOW_MS)
    assert raw.startswith("sai-enroll-")
    assert len(raw) == len("sai-enroll-") + 52
    assert raw != other_raw
    assert token.prefix == raw[:19]
    assert token.expires_at_ms == NOW_MS + ENROLLMENT_TOKEN_LIFETIME_MS
    async with sessions() as session:
        stored = (await session.scalars(select(EnrollmentToken))).all()
        assert all(
            raw.encode() not in row.token_hash and len(row.token_hash) == 32 for row in stored
        )
        found = await check_enrollment_token(session, raw, now_ms=NOW_MS + 1)
    assert found.account_id == provider

    node = Identity.generate()
    assert await use(sessions, raw, node, provider, NOW_MS + 10) == provider
    async with sessions() as session:
        assert [n.node_id for n in await list_nodes(session, provider)] == [node.public_key.node_id]
        used = await session.get(EnrollmentToken, token.id)
        assert used is not None
        assert (used.used_at_ms, used.node_id) == (NOW_MS + 10, node.public_key.node_id)
        assert [
            t.id for t in await pending_enrollment_tokens(session, provider, now_ms=NOW_MS)
        ] == [t.id for t in stored if t.id != token.id]
    with pytest.raises(
        EnrollmentTokenUsed, match=f"already used, by node {node.public_key.node_id}"
    ):
        await use(sessions, raw, Identity.generate(), provider, NOW_MS + 20)


async def test_unknown_expired_and_revoked_tokens_are_refused_each_with_its_reason(
    sessions: Sessions,
) -> None:
    provider = await new_account(sessions)
    node = Identity.generate()
    with pytest.raises(UnknownEnrollmentToken, match="unknown enrollment token"):
        await use(sessions, "sai-enroll-" + "a" * 52, node, provider)
    with pytest.raises(UnknownEnrollmentToken):
        await use(sessions, "sk-sai-" + "a" * 52, node, provider)

    expiring = await new_token(sessions, provider)
    at_expiry = NOW_MS + ENROLLMENT_TOKEN_LIFETIME_MS
    with pytest.raises(EnrollmentTokenExpired, match="expired"):
        await use(sessions, expiring, node, provider, at_expiry)
    assert await use(sessions, expiring, node, provider, at_expiry - 1) == provider

    revoked = await new_token(sessions, provider)
    async with sessions.begin() as session:
        (pending,) = await pending_enrollment_tokens(session, provider, now_ms=NOW_MS)
        await revoke_enrollment_token(session, provider, pending.id, now_ms=NOW_MS + 1)
        assert await pending_enrollment_tokens(session, provider, now_ms=NOW_MS) == []
    with pytest.raises(EnrollmentTokenRevoked, match="revoked"):
        await use(sessions, revoked, Identity.generate(), provider)


async def test_a_refused_enrollment_leaves_the_token_unused(sessions: Sessions) -> None:
    provider = await new_account(sessions)
    other = await new_account(sessions, name="Mallory")
    raw = await new_token(sessions, provider)
    node = Identity.generate()
    statement = statement_for(provider, node)
    async with sessions.begin() as session:
        with pytest.raises(InvalidEnrollmentProof):
            await enroll_with_token(
                session,
                raw,
                statement,
                b"\x00" * 64,
                NOW_MS,
                coordinator_key=COORDINATOR.public_key,
            )
        await session.rollback()
    taken = Identity.generate()
    await use(sessions, await new_token(sessions, other), taken, other)
    with pytest.raises(NodeEnrolledElsewhere):
        await use(sessions, raw, taken, provider)
    assert await use(sessions, raw, node, provider) == provider  # still good after both


async def test_of_nodes_racing_with_one_token_exactly_one_is_enrolled(sessions: Sessions) -> None:
    provider = await new_account(sessions)
    raw = await new_token(sessions, provider)
    nodes = [Identity.generate() for _ in range(6)]
    results = await asyncio.gather(
        *(use(sessions, raw, node, provider) for node in nodes), return_exceptions=True
    )
    assert sum(result == provider for result in results) == 1
    assert all(
        isinstance(result, EnrollmentTokenUsed) for result in results if result != provider
    ), results
    async with sessions() as session:
        assert len(await list_nodes(session, provider)) == 1


async def test_tokens_belong_to_a_provider_and_are_revoked_only_by_it(sessions: Sessions) -> None:
    provider = await new_account(sessions)
    other = await new_account(sessions, name="Mallory")
    customer = await new_account(sessions, Role.CUSTOMER)
    async with sessions.begin() as session:
        with pytest.raises(NotAProvider):
            await create_enrollment_token(session, customer, now_ms=NOW_MS)
        _, token = await create_enrollment_token(session, provider, now_ms=NOW_MS)
    async with sessions.begin() as session:
        for account, token_id in ((other, token.id), (provider, "et_missing")):
            with pytest.raises(EnrollmentTokenNotFound, match="of yours"):
                await revoke_enrollment_token(session, account, token_id, now_ms=NOW_MS)
        assert await pending_enrollment_tokens(session, other, now_ms=NOW_MS) == []
        assert len(await pending_enrollment_tokens(session, provider, now_ms=NOW_MS)) == 1


async def test_a_provider_has_at_most_so_many_pending_tokens(sessions: Sessions) -> None:
    provider = await new_account(sessions)
    for _ in range(MAX_PENDING_TOKENS):
        await new_token(sessions, provider)
    with pytest.raises(TooManyTokens):
        await new_token(sessions, provider)
    # Expired ones do not count.
    await new_token(sessions, provider, NOW_MS + ENROLLMENT_TOKEN_LIFETIME_MS)
