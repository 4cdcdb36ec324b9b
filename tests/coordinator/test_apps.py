"""Builder apps, versioned surcharges and app-scoped keys, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select

from coordinator.accounts import (
    OPERATOR,
    Principal,
    Role,
    authenticate,
    create_account,
    issue_api_key,
    list_api_keys,
)
from coordinator.api.accounts_gateway import DatabaseAccounts
from coordinator.apps import (
    DEFAULT_MAX_SURCHARGE_BPS,
    AppAuthorization,
    AppDisabled,
    AppNotFound,
    AppSurcharge,
    AuthorizationNotFound,
    AuthorizationRevoked,
    InvalidAppInput,
    InvalidSurcharge,
    NotYourApp,
    SurchargeAboveMaximum,
    UnknownAccount,
    WrongRole,
    authorize_app,
    current_surcharge,
    disable_app,
    format_percent,
    get_app,
    list_apps,
    list_authorizations,
    parse_surcharge_percent,
    register_app,
    revoke_authorization,
    set_surcharge,
    surcharge_version,
)
from protocol import Identity
from tests.coordinator.conftest import Sessions

CAP = DEFAULT_MAX_SURCHARGE_BPS


async def _account(sessions: Sessions, role: Role, name: str) -> tuple[str, str]:
    async with sessions.begin() as session:
        account, raw_key = await create_account(session, role, name)
    return account.id, raw_key


async def _app(sessions: Sessions, builder_id: str, surcharge_bps: int = 250) -> str:
    async with sessions.begin() as session:
        details = await register_app(
            session, builder_id, "Chat Pal", surcharge_bps, max_surcharge_bps=CAP
        )
    return details.app.id


async def _principal(sessions: Sessions, raw_key: str) -> Principal | None:
    async with sessions.begin() as session:
        return await authenticate(session, raw_key)


def test_surcharge_percentages_parse_exactly_and_refuse_what_is_not_one() -> None:
    assert parse_surcharge_percent("2.5") == 250
    assert parse_surcharge_percent(" 2.5% ") == 250
    assert parse_surcharge_percent("20") == 2000
    assert parse_surcharge_percent("0.01") == 1
    assert parse_surcharge_percent("100") == 10_000
    for bad in ("-1", "-0.5", " -2%", "2.555", "abc", "", "%", "101", "1e1", "2,5"):
        with pytest.raises(InvalidSurcharge):
            parse_surcharge_percent(bad)
    with pytest.raises(InvalidSurcharge, match="negative"):
        parse_surcharge_percent("-1")
    assert [format_percent(bps) for bps in (0, 1, 10, 250, 2000, 10_000)] == [
        "0",
        "0.01",
        "0.1",
        "2.5",
        "20",
        "100",
    ]


@given(st.integers(min_value=0, max_value=10_000))
def test_formatting_a_surcharge_and_parsing_it_back_is_exact(bps: int) -> None:
    assert parse_surcharge_percent(format_percent(bps)) == bps


@pytest.mark.asyncio
async def test_a_builder_registers_an_app_with_surcharge_version_one(sessions: Sessions) -> None:
    builder_id, _ = await _account(sessions, Role.BUILDER, "Lin")
    async with sessions.begin() as session:
        details = await register_app(
            session, builder_id, "  Chat Pal  ", 250, max_surcharge_bps=CAP, now_ms=1_000
        )
    app = details.app
    assert app.id.startswith("app_")
    assert len(app.id) == len("app_") + 26
    assert (app.name, app.builder_account_id, app.created_at_ms) == ("Chat Pal", builder_id, 1_000)
    assert app.disabled_at_ms is None
    assert [(v.version, v.surcharge_bps) for v in details.surcharges] == [(1, 250)]
    async with sessions.begin() as session:
        assert await current_surcharge(session, app.id) == AppSurcharge(app.id, 1, 250, builder_id)
        listed = await list_apps(session, builder_id)
    assert [(d.app.id, d.current.version, d.current.surcharge_bps) for d in listed] == [
        (app.id, 1, 250)
    ]


@pytest.mark.asyncio
async def test_a_change_is_a_new_version_and_a_recorded_version_keeps_its_rate(
    sessions: Sessions,
) -> None:
    builder_id, _ = await _account(sessions, Role.BUILDER, "Lin")
    app_id = await _app(sessions, builder_id, 250)
    async with sessions.begin() as session:
        recorded = await current_surcharge(session, app_id)  # what an earlier request stored
    async with sessions.begin() as session:
        assert await set_surcharge(session, app_id, builder_id, 400, max_surcharge_bps=CAP) == 2
    async with sessions.begin() as session:
        # Setting the current rate again is no change: no new version.
        assert await set_surcharge(session, app_id, builder_id, 400, max_surcharge_bps=CAP) == 2
        assert await set_surcharge(session, app_id, builder_id, 0, max_surcharge_bps=CAP) == 3
    async with sessions.begin() as session:
        assert await current_surcharge(session, app_id) == AppSurcharge(app_id, 3, 0, builder_id)
        assert await surcharge_version(session, app_id, recorded.version) == recorded
        assert recorded == AppSurcharge(app_id, 1, 250, builder_id)
        assert (await surcharge_version(session, app_id, 2)).surcharge_bps == 400
        with pytest.raises(AppNotFound):
            await surcharge_version(session, app_id, 4)
        details = await get_app(session, app_id)
    assert [(v.version, v.surcharge_bps) for v in details.surcharges] == [
        (1, 250),
        (2, 400),
        (3, 0),
    ]
    assert details.current.version == 3


@pytest.mark.asyncio
async def test_surcharges_are_capped_by_the_operator_and_never_negative(
    sessions: Sessions,
) -> None:
    builder_id, _ = await _account(sessions, Role.BUILDER, "Lin")
    async with sessions.begin() as session:
        with pytest.raises(SurchargeAboveMaximum) as above:
            await register_app(session, builder_id, "Greedy", 2001, max_surcharge_bps=2000)
        assert (above.value.surcharge_bps, above.value.max_surcharge_bps) == (2001, 2000)
        assert "20.01%" in str(above.value)
        assert "maximum of 20%" in str(above.value)
        for bad in (-1, 10_001, True):
            with pytest.raises(InvalidSurcharge):
                await register_app(session, builder_id, "Bad", bad, max_surcharge_bps=10_000)
        with pytest.raises(ValueError, match="max_surcharge_bps"):
            await register_app(session, builder_id, "Bad", 0, max_surcharge_bps=10_001)
        at_cap = await register_app(session, builder_id, "Fair", 2000, max_surcharge_bps=2000)
        free = await register_app(session, builder_id, "Free", 0, max_surcharge_bps=0)
        app_id = at_cap.app.id
        with pytest.raises(SurchargeAboveMaximum):
            await set_surcharge(session, app_id, builder_id, 2500, max_surcharge_bps=2000)
        with pytest.raises(InvalidSurcharge, match="negative"):
            await set_surcharge(session, app_id, builder_id, -5, max_surcharge_bps=2000)
        for bad_name in ("", "   ", "x" * 201, "tab\there"):
            with pytest.raises(InvalidAppInput):
                await register_app(session, builder_id, bad_name, 0, max_surcharge_bps=2000)
    async with sessions.begin() as session:
        assert (await current_surcharge(session, app_id)).version == 1
        assert (await current_surcharge(session, free.app.id)).surcharge_bps == 0
        # A lower maximum later applies to the next change, not to what is stored.
        assert (await current_surcharge(session, app_id)).surcharge_bps == 2000
        with pytest.raises(SurchargeAboveMaximum):
            await set_surcharge(session, app_id, builder_id, 1500, max_surcharge_bps=1000)


@pytest.mark.asyncio
async def test_only_builders_manage_apps_and_only_their_own(sessions: Sessions) -> None:
    builder_id, _ = await _account(sessions, Role.BUILDER, "Lin")
    other_builder_id, _ = await _account(sessions, Role.BUILDER, "Max")
    customer_id, _ = await _account(sessions, Role.CUSTOMER, "Ada")
    provider_id, _ = await _account(sessions, Role.PROVIDER, "Grace")
    operator_id, _ = await _account(sessions, Role.OPERATOR, "Op")
    app_id = await _app(sessions, builder_id)
    async with sessions.begin() as session:
        for account_id in (customer_id, provider_id, operator_id):
            with pytest.raises(WrongRole, match="only builder accounts"):
                await register_app(session, account_id, "Mine", 0, max_surcharge_bps=CAP)
            with pytest.raises(WrongRole):
                await set_surcharge(session, app_id, account_id, 0, max_surcharge_bps=CAP)
            with pytest.raises(WrongRole):
                await list_apps(session, account_id)
        with pytest.raises(NotYourApp):
            await set_surcharge(session, app_id, other_builder_id, 0, max_surcharge_bps=CAP)
        with pytest.raises(AppNotFound):
            await set_surcharge(session, "app_missing", builder_id, 0, max_surcharge_bps=CAP)
        with pytest.raises(UnknownAccount):
            await register_app(session, "acc_missing", "Mine", 0, max_surcharge_bps=CAP)
        assert await list_apps(session, other_builder_id) == []
        with pytest.raises(WrongRole, match="only customer accounts"):
            await authorize_app(session, builder_id, app_id)
        with pytest.raises(WrongRole):
            await revoke_authorization(session, provider_id, app_id)
        with pytest.raises(AppNotFound):
            await authorize_app(session, customer_id, "app_missing")
    async with sessions.begin() as session:
        assert (await current_surcharge(session, app_id)).version == 1


@pytest.mark.asyncio
async def test_an_authorization_issues_an_app_scoped_key_of_the_customer(
    sessions: Sessions,
) -> None:
    builder_id, _ = await _account(sessions, Role.BUILDER, "Lin")
    customer_id, account_key = await _account(sessions, Role.CUSTOMER, "Ada")
    app_id = await _app(sessions, builder_id)
    async with sessions.begin() as session:
        authorization, app_key = await authorize_app(session, customer_id, app_id, now_ms=5)
    assert authorization.id.startswith("auth_")
    assert (authorization.app_id, authorization.customer_account_id) == (app_id, customer_id)
    assert (authorization.created_at_ms, authorization.revoked_at_ms) == (5, None)
    assert app_key != account_key

    principal = await _principal(sessions, app_key)
    assert principal is not None
    assert (principal.account_id, principal.role, principal.app_id) == (
        customer_id,
        Role.CUSTOMER,
        app_id,
    )
    plain = await _principal(sessions, account_key)
    assert plain is not None
    assert plain.app_id is None
    async with sessions.begin() as session:
        keys = await list_api_keys(session, customer_id)
    assert {key.id: key.app_id for key in keys} == {plain.key_id: None, principal.key_id: app_id}

    # Authorising again keeps the one authorization and issues one more key for it.
    async with sessions.begin() as session:
        again, second_key = await authorize_app(session, customer_id, app_id)
    assert again.id == authorization.id
    second = await _principal(sessions, second_key)
    assert second is not None
    assert second.app_id == app_id
    assert second.key_id != principal.key_id


@pytest.mark.asyncio
async def test_the_gateway_fills_the_callers_key_and_app(sessions: Sessions) -> None:
    builder_id, _ = await _account(sessions, Role.BUILDER, "Lin")
    customer_id, account_key = await _account(sessions, Role.CUSTOMER, "Ada")
    app_id = await _app(sessions, builder_id)
    async with sessions.begin() as session:
        _, app_key = await authorize_app(session, customer_id, app_id)
        keys = {key.app_id: key.id for key in await list_api_keys(session, customer_id)}
    gateway = DatabaseAccounts(sessions, Identity.generate().public_key)
    caller = await gateway.authenticate(app_key)
    assert caller is not None
    assert (caller.account_id, caller.role, caller.name) == (customer_id, "customer", "Ada")
    assert (caller.api_key_id, caller.app_id) == (keys[app_id], app_id)
    plain = await gateway.authenticate(account_key)
    assert plain is not None
    assert (plain.api_key_id, plain.app_id) == (keys[None], None)
    async with sessions.begin() as session:
        await revoke_authorization(session, customer_id, app_id)
    assert await gateway.authenticate(app_key) is None
    assert await gateway.authenticate(account_key) is not None


@pytest.mark.asyncio
async def test_revoking_an_authorization_kills_its_keys_and_only_those(sessions: Sessions) -> None:
    builder_id, _ = await _account(sessions, Role.BUILDER, "Lin")
    customer_id, account_key = await _account(sessions, Role.CUSTOMER, "Ada")
    other_customer_id, _ = await _account(sessions, Role.CUSTOMER, "Bob")
    app_id = await _app(sessions, builder_id)
    other_app_id = await _app(sessions, builder_id)
    async with sessions.begin() as session:
        _, first_key = await authorize_app(session, customer_id, app_id)
        _, second_key = await authorize_app(session, customer_id, app_id)
        _, other_app_key = await authorize_app(session, customer_id, other_app_id)
        _, other_customer_key = await authorize_app(session, other_customer_id, app_id)
    async with sessions.begin() as session:
        revoked = await revoke_authorization(session, customer_id, app_id, now_ms=9)
    assert revoked.revoked_at_ms == 9
    assert await _principal(sessions, first_key) is None
    assert await _principal(sessions, second_key) is None
    for still_valid in (account_key, other_app_key, other_customer_key):
        assert await _principal(sessions, still_valid) is not None
    async with sessions.begin() as session:
        keys = await list_api_keys(session, customer_id)
        assert sorted((key.app_id == app_id, key.revoked_at_ms) for key in keys) == [
            (False, None),
            (False, None),
            (True, 9),
            (True, 9),
        ]
        with pytest.raises(AuthorizationRevoked):
            await revoke_authorization(session, customer_id, app_id)
        with pytest.raises(AuthorizationNotFound):
            await revoke_authorization(session, other_customer_id, other_app_id)

    # A new authorization is a new row with a new key; the old keys stay dead.
    async with sessions.begin() as session:
        renewed, renewed_key = await authorize_app(session, customer_id, app_id)
    assert renewed.id != revoked.id
    assert await _principal(sessions, renewed_key) is not None
    assert await _principal(sessions, first_key) is None
    async with sessions.begin() as session:
        history = await list_authorizations(session, customer_id)
    assert [(a.app_id, a.revoked_at_ms is None) for a in history] == [
        (app_id, False),
        (other_app_id, True),
        (app_id, True),
    ]


@pytest.mark.asyncio
async def test_an_app_scoped_key_without_a_standing_authorization_never_authenticates(
    sessions: Sessions,
) -> None:
    builder_id, _ = await _account(sessions, Role.BUILDER, "Lin")
    customer_id, _ = await _account(sessions, Role.CUSTOMER, "Ada")
    app_id = await _app(sessions, builder_id)
    async with sessions.begin() as session:
        # Issued behind the service's back: no authorization stands behind it.
        stray_key = await issue_api_key(session, customer_id, app_id=app_id)
    assert await _principal(sessions, stray_key) is None
    async with sessions.begin() as session:
        await authorize_app(session, customer_id, app_id)
    assert await _principal(sessions, stray_key) is not None


@pytest.mark.asyncio
async def test_a_disabled_app_takes_no_requests_changes_or_authorizations(
    sessions: Sessions,
) -> None:
    builder_id, _ = await _account(sessions, Role.BUILDER, "Lin")
    other_builder_id, _ = await _account(sessions, Role.BUILDER, "Max")
    customer_id, _ = await _account(sessions, Role.CUSTOMER, "Ada")
    operator_id, _ = await _account(sessions, Role.OPERATOR, "Op")
    app_id = await _app(sessions, builder_id)
    second_app_id = await _app(sessions, builder_id)
    async with sessions.begin() as session:
        _, app_key = await authorize_app(session, customer_id, app_id)
        with pytest.raises(NotYourApp):
            await disable_app(session, app_id, by=other_builder_id)
        with pytest.raises(AppNotFound):
            await disable_app(session, "app_missing", by=OPERATOR)
        app = await disable_app(session, app_id, by=builder_id, now_ms=7)
        assert app.disabled_at_ms == 7
        assert (await disable_app(session, app_id, by=OPERATOR, now_ms=8)).disabled_at_ms == 7
        assert (await disable_app(session, second_app_id, by=operator_id)).disabled_at_ms
    assert await _principal(sessions, app_key) is None
    async with sessions.begin() as session:
        with pytest.raises(AppDisabled):
            await current_surcharge(session, app_id)
        with pytest.raises(AppDisabled):
            await authorize_app(session, customer_id, app_id)
        with pytest.raises(AppDisabled):
            await set_surcharge(session, app_id, builder_id, 100, max_surcharge_bps=CAP)
        assert (await surcharge_version(session, app_id, 1)).surcharge_bps == 250
        # The customer can still clean up.
        await revoke_authorization(session, customer_id, app_id)
        listed = await list_apps(session, builder_id)
    assert [d.app.id for d in listed] == [app_id, second_app_id]
    assert listed[0].app.disabled_at_ms == 7
    assert listed[1].app.disabled_at_ms is not None


@pytest.mark.asyncio
async def test_concurrent_changes_number_versions_without_gaps(sessions: Sessions) -> None:
    builder_id, _ = await _account(sessions, Role.BUILDER, "Lin")
    app_id = await _app(sessions, builder_id, 0)

    async def change(bps: int) -> int:
        async with sessions.begin() as session:
            return await set_surcharge(session, app_id, builder_id, bps, max_surcharge_bps=CAP)

    versions = await asyncio.gather(*(change(bps) for bps in range(100, 900, 100)))
    assert sorted(versions) == list(range(2, 10))
    async with sessions.begin() as session:
        details = await get_app(session, app_id)
    assert [v.version for v in details.surcharges] == list(range(1, 10))


@pytest.mark.asyncio
async def test_concurrent_authorizations_share_one_active_authorization(
    sessions: Sessions,
) -> None:
    builder_id, _ = await _account(sessions, Role.BUILDER, "Lin")
    customer_id, _ = await _account(sessions, Role.CUSTOMER, "Ada")
    app_id = await _app(sessions, builder_id)

    async def authorize() -> tuple[str, str]:
        async with sessions.begin() as session:
            authorization, raw_key = await authorize_app(session, customer_id, app_id)
            return authorization.id, raw_key

    results = await asyncio.gather(*(authorize() for _ in range(6)))
    assert len({authorization_id for authorization_id, _ in results}) == 1
    for _, raw_key in results:
        assert await _principal(sessions, raw_key) is not None
    async with sessions.begin() as session:
        active = await session.scalar(
            select(func.count())
            .select_from(AppAuthorization)
            .where(AppAuthorization.revoked_at_ms.is_(None))
        )
    assert active == 1
