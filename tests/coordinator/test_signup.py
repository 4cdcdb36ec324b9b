"""Self-serve sign-up: invite codes, the starter credit, the operator's settings and commands.

Storage tests run on SQLite and PostgreSQL (``sessions``); the race for a code's last use is a
real race of concurrent transactions on both.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import func, select

from coordinator.accounts import authenticate
from coordinator.accounts.invites import (
    STARTER_CREDIT_REFERENCE,
    InviteRefused,
    SignupMode,
    SignupPolicy,
    SignupRefused,
    create_invite,
    list_invites,
    redeem_invite,
    revoke_invite,
    sign_up,
)
from coordinator.db.models import Account, InviteCode, Role, TransferKind
from coordinator.ledger import account_balances, audit, customer_wallet, list_transfers
from coordinator.settings import SettingsError, load_settings
from coordinator.web.signup import SlidingWindowLimit
from tests.coordinator.conftest import Sessions
from tests.e2e.network import run_shareai

DAY_MS = 24 * 3600 * 1000
NOW_MS = 1_800_000_000_000
INVITE = SignupPolicy(SignupMode.INVITE, starter_credit_micro_usd=5_000_000)
OPEN = SignupPolicy(SignupMode.OPEN, starter_credit_micro_usd=2_500_000)


async def _invite(
    sessions: Sessions, *, max_uses: int = 1, expires_in_ms: int = DAY_MS, role: str | None = None
) -> str:
    async with sessions.begin() as session:
        _, code = await create_invite(
            session, max_uses=max_uses, expires_in_ms=expires_in_ms, role=role, now_ms=NOW_MS
        )
    return code


async def _sign_up(
    sessions: Sessions, policy: SignupPolicy, role: str, code: str = "", *, at_ms: int = NOW_MS
) -> Account:
    async with sessions.begin() as session:
        account, raw_key = await sign_up(session, policy, role, "Ada", code, now_ms=at_ms)
        principal = await authenticate(session, raw_key)
    assert principal is not None
    assert principal.account_id == account.id
    return account


@pytest.mark.asyncio
async def test_a_customer_signs_up_with_a_code_and_gets_the_promotional_starter_credit(
    sessions: Sessions,
) -> None:
    code = await _invite(sessions, max_uses=2)
    account = await _sign_up(sessions, INVITE, "customer", code)
    async with sessions() as session:
        balances = await account_balances(session, account.id)
        top_ups = await list_transfers(
            session, ledger_account_id=customer_wallet(account.id), kind=TransferKind.TOP_UP
        )
        invite = (await session.scalars(select(InviteCode))).one()
        assert await audit(session) == []
    assert account.role is Role.CUSTOMER
    assert balances.available_micro_usd == 5_000_000
    assert [(t.amount_micro_usd, t.reference) for t in top_ups] == [
        (5_000_000, STARTER_CREDIT_REFERENCE)
    ]
    assert (invite.uses, invite.max_uses) == (1, 2)
    assert code.encode() not in bytes(invite.code_hash)  # only the hash is stored
    assert invite.prefix == code[: len(invite.prefix)]


@pytest.mark.asyncio
@pytest.mark.parametrize("role", ["provider", "builder"])
async def test_providers_and_builders_sign_up_without_a_starter_credit(
    sessions: Sessions, role: str
) -> None:
    account = await _sign_up(sessions, OPEN, role)
    async with sessions() as session:
        balances = await account_balances(session, account.id)
        assert await list_transfers(session, ledger_account_id=customer_wallet(account.id)) == []
    assert account.role is Role(role)
    assert balances.available_micro_usd == 0


@pytest.mark.asyncio
async def test_nobody_signs_up_as_operator_or_when_sign_up_is_off(sessions: Sessions) -> None:
    with pytest.raises(SignupRefused, match="customer, a provider or a builder"):
        await _sign_up(sessions, OPEN, "operator")
    with pytest.raises(SignupRefused, match="switched off"):
        await _sign_up(sessions, SignupPolicy(), "customer")
    with pytest.raises(SignupRefused):
        async with sessions.begin() as session:
            await create_invite(session, expires_in_ms=DAY_MS, role="operator")
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Account)) == 0


@pytest.mark.asyncio
async def test_each_unusable_code_is_refused_with_its_own_reason(sessions: Sessions) -> None:
    used = await _invite(sessions, max_uses=1)
    await _sign_up(sessions, INVITE, "customer", used)
    expired = await _invite(sessions, expires_in_ms=1000)
    for_providers = await _invite(sessions, role="provider")
    revoked = await _invite(sessions)
    async with sessions.begin() as session:
        invite = next(i for i in await list_invites(session) if revoked.startswith(i.prefix))
        await revoke_invite(session, invite.id, now_ms=NOW_MS)
    cases = [
        ("", "needs an invite code"),
        ("sai-invite-not-a-real-code", "not valid"),
        (used, "used up"),
        (expired, "expired"),
        (for_providers, "for provider accounts only"),
        (revoked, "revoked"),
    ]
    for code, reason in cases:
        with pytest.raises(InviteRefused, match=reason):
            await _sign_up(sessions, INVITE, "customer", code, at_ms=NOW_MS + 5000)
    provider = await _sign_up(sessions, INVITE, "provider", for_providers)
    assert provider.role is Role.PROVIDER
    async with sessions() as session:  # refused sign-ups left nothing behind
        assert await session.scalar(select(func.count()).select_from(Account)) == 2


@pytest.mark.asyncio
async def test_a_code_with_one_use_left_signs_up_one_account_however_many_race(
    sessions: Sessions,
) -> None:
    code = await _invite(sessions, max_uses=3)
    await _sign_up(sessions, INVITE, "customer", code)
    await _sign_up(sessions, INVITE, "customer", code)

    async def attempt() -> str:
        try:
            await _sign_up(sessions, INVITE, "customer", code)
        except InviteRefused as refused:
            return str(refused)
        return "signed up"

    outcomes = await asyncio.gather(*(attempt() for _ in range(8)))
    assert (
        sorted(outcomes)
        == ["signed up"] + ["that invite code has been used up: ask for a new one"] * 7
    )
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Account)) == 3
        invite = (await session.scalars(select(InviteCode))).one()
        assert (invite.uses, invite.max_uses) == (3, 3)


@pytest.mark.asyncio
async def test_redeeming_is_counted_in_the_callers_transaction(sessions: Sessions) -> None:
    code = await _invite(sessions)

    async def redeem_then_fail() -> None:
        async with sessions.begin() as session:
            await redeem_invite(session, code, Role.CUSTOMER, now_ms=NOW_MS)
            raise RuntimeError("the account could not be made")

    with pytest.raises(RuntimeError):
        await redeem_then_fail()
    account = await _sign_up(sessions, INVITE, "customer", code)  # the use was rolled back
    assert account.role is Role.CUSTOMER


def test_the_signup_settings_are_validated_in_one_line() -> None:
    policy = load_settings(
        {"SHAREAI_SIGNUP": "invite", "SHAREAI_SIGNUP_STARTER_CREDIT_USD": "5"}
    ).signup_policy
    assert policy == SignupPolicy(SignupMode.INVITE, 5_000_000)
    assert load_settings({}).signup_policy == SignupPolicy(SignupMode.OFF, 0)
    for environ, message in [
        ({"SHAREAI_SIGNUP": "maybe"}, "invalid setting signup: must be off, open or invite"),
        ({"SHAREAI_SIGNUP_STARTER_CREDIT_USD": "-1"}, "invalid setting signup_starter_credit"),
        ({"SHAREAI_SIGNUP_STARTER_CREDIT_USD": "5000"}, "at most 1000.00 USD"),
    ]:
        with pytest.raises(SettingsError, match=message) as raised:
            load_settings(environ)
        assert "\n" not in str(raised.value)


def test_the_coordinator_refuses_to_start_with_a_bad_signup_setting(tmp_path: Path) -> None:
    result = subprocess.run(
        [*_shareai_command(), "coordinator", "--data-dir", str(tmp_path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"SHAREAI_SIGNUP": "sometimes", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "shareai: error: invalid setting signup: must be off, open or invite"
    ]


def _shareai_command() -> list[str]:
    from tests.e2e.network import shareai_executable  # noqa: PLC0415

    return [shareai_executable()]


def test_a_sliding_window_limits_each_client_separately() -> None:
    now = [0.0]
    limit = SlidingWindowLimit(2, 3600, clock=lambda: now[0])
    for _ in range(2):
        assert limit.wait_s("10.0.0.1") == 0
        limit.record("10.0.0.1")
    assert limit.wait_s("10.0.0.1") == 3600
    assert limit.wait_s("10.0.0.2") == 0
    now[0] = 3600.5
    assert limit.wait_s("10.0.0.1") == 0


def _admin(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_shareai("admin", *args, "--data-dir", str(data_dir))


def test_the_operator_creates_lists_and_revokes_invites(tmp_path: Path) -> None:
    made = _admin(tmp_path, "invite", "create", "--uses", "3", "--role", "builder", "--json")
    assert made.returncode == 0, made.stderr
    invite = json.loads(made.stdout)
    assert invite["code"].startswith(invite["prefix"])
    assert (invite["uses"], invite["max_uses"], invite["role"]) == (0, 3, "builder")
    assert invite["state"] == "active"

    people = _admin(tmp_path, "invite", "create", "--note", "for Ada")
    assert "shown only this once" in people.stdout

    listed = json.loads(_admin(tmp_path, "invite", "list", "--json").stdout)
    assert {row["invite_id"] for row in listed} >= {invite["invite_id"]}
    assert all("code" not in row for row in listed)  # the code is never shown again

    revoked = _admin(tmp_path, "invite", "revoke", invite["prefix"], "--json")
    assert revoked.returncode == 0, revoked.stderr
    assert json.loads(revoked.stdout)["state"] == "revoked"

    table = _admin(tmp_path, "invite", "list").stdout
    assert "revoked" in table
    assert "for Ada" in table

    unknown = _admin(tmp_path, "invite", "revoke", "inv_nothing")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("shareai: error: no invite code 'inv_nothing'")
    bad = _admin(tmp_path, "invite", "create", "--role", "operator")
    assert bad.returncode == 2
