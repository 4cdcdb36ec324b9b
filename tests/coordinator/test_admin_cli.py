"""``shareai admin``, run as the real console script against a temporary SQLite data directory."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from coordinator.accounts import Role, authenticate, create_account
from coordinator.db import create_engine, create_session_factory, head_revision
from coordinator.ledger import PLATFORM_REVENUE, Credit, place_hold, post_hold, provider_earnings
from shareai.admin_cli import ROLES


def shareai(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("shareai", path=str(Path(sys.executable).parent))
    assert executable is not None, "the shareai console script is not installed in this venv"
    environ = {name: value for name, value in os.environ.items() if not name.startswith("SHAREAI_")}
    return subprocess.run(
        [executable, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=environ,
        cwd=cwd,
    )


def admin(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return shareai("admin", *args, "--data-dir", str(data_dir))


def admin_json(data_dir: Path, *args: str) -> object:
    result = admin(data_dir, *args, "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return json.loads(result.stdout)


def one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def authenticates(data_dir: Path, raw_key: str) -> bool:
    async def check() -> bool:
        engine = create_engine(f"sqlite+aiosqlite:///{data_dir / 'coordinator.db'}")
        try:
            async with create_session_factory(engine).begin() as session:
                return await authenticate(session, raw_key) is not None
        finally:
            await engine.dispose()

    return asyncio.run(check())


def test_the_role_choices_are_the_account_roles() -> None:
    assert tuple(role.value for role in Role) == ROLES


def test_migrate_creates_the_database_and_can_run_again(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    for _ in range(2):
        result = admin(data_dir, "migrate")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().endswith(f"is at revision {head_revision()}")
    assert (data_dir / "coordinator.db").is_file()


def test_migrate_uses_the_default_data_directory_in_the_working_directory(tmp_path: Path) -> None:
    result = shareai("admin", "migrate", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ".shareai" / "coordinator.db").is_file()


def test_an_operator_creates_an_account_tops_it_up_and_revokes_its_key(tmp_path: Path) -> None:
    create = ("create-account", "--role", "customer", "--name", "Ada Lovelace", "--credits", "25")
    created = admin_json(tmp_path, *create)
    assert isinstance(created, dict)
    assert created["role"] == "customer"
    assert created["name"] == "Ada Lovelace"
    assert created["balance_micro_usd"] == 25_000_000
    raw_key = created["api_key"]
    assert raw_key.startswith(created["api_key_prefix"])
    assert authenticates(tmp_path, raw_key)

    topped_up = admin_json(
        tmp_path, "add-credits", "--account", created["account_id"], "--usd", "0.000001"
    )
    assert topped_up == {
        "account_id": created["account_id"],
        "added_micro_usd": 1,
        "added_usd": "0.000001",
        "balance_micro_usd": 25_000_001,
        "balance_usd": "25.000001",
    }

    listed = admin_json(tmp_path, "list-accounts")
    assert isinstance(listed, list)
    assert [(a["account_id"], a["balance_micro_usd"]) for a in listed] == [
        (created["account_id"], 25_000_001)
    ]
    table = admin(tmp_path, "list-accounts")
    assert table.returncode == 0
    assert created["account_id"] in table.stdout
    assert "25.000001" in table.stdout
    assert "Ada Lovelace" in table.stdout
    # The key was shown once; nothing prints it or stores it again.
    assert raw_key not in json.dumps(listed) + table.stdout
    for path in tmp_path.glob("coordinator.db*"):
        assert raw_key.encode() not in path.read_bytes()
        assert raw_key[len(created["api_key_prefix"]) :].encode() not in path.read_bytes()

    revoked = admin_json(tmp_path, "revoke-key", "--key-id", created["api_key_prefix"])
    assert isinstance(revoked, dict)
    assert revoked["account_id"] == created["account_id"]
    assert revoked["prefix"] == created["api_key_prefix"]
    assert revoked["key_id"].startswith("key_")
    assert not authenticates(tmp_path, raw_key)


def test_create_account_prints_the_key_once_for_people(tmp_path: Path) -> None:
    result = admin(tmp_path, "create-account", "--role", "provider", "--name", "Grace")
    assert result.returncode == 0, result.stderr
    fields = dict(line.split(maxsplit=1) for line in result.stdout.splitlines()[:-1])
    assert fields["role"] == "provider"
    assert fields["balance_usd"] == "0.00"
    assert fields["api_key"].startswith("sk-sai-")
    assert result.stdout.splitlines()[-1] == "The API key is shown only this once: store it now."
    assert authenticates(tmp_path, fields["api_key"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("add-credits", "--account", "acc_missing", "--usd", "1"), "no account 'acc_missing'"),
        (("revoke-key", "--key-id", "sk-sai-zzzzzzzz"), "no API key 'sk-sai-zzzzzzzz'"),
        (("revoke-key", "--key-id", "whatever"), "neither a key id"),
        (("create-account", "--role", "customer", "--name", " "), "must not be empty"),
    ],
)
def test_failures_are_one_line_and_exit_1(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    line = one_line_error(admin(tmp_path, *args), 1)
    assert line.startswith("shareai: error: ")
    assert message in line


def test_a_bad_database_url_is_one_line_and_exit_1(tmp_path: Path) -> None:
    line = one_line_error(
        shareai("admin", "list-accounts", "--database-url", "mysql://db/shareai"), 1
    )
    assert "unsupported database 'mysql'" in line
    unreachable = shareai(
        "admin", "migrate", "--database-url", "postgresql://u:secret@127.0.0.1:1/shareai"
    )
    line = one_line_error(unreachable, 1)
    assert line.startswith("shareai: error: cannot open the database")
    assert "secret" not in line


@pytest.mark.parametrize(
    "args",
    [
        ("add-credits", "--account", "acc_x", "--usd", "-1"),
        ("add-credits", "--account", "acc_x", "--usd", "1.1234567"),
        ("add-credits", "--account", "acc_x", "--usd", "NaN"),
        ("add-credits", "--account", "acc_x", "--usd", "1e3"),
        ("add-credits", "--account", "acc_x"),
        ("create-account", "--role", "admin", "--name", "x"),
        ("create-account", "--role", "customer", "--name", "x", "--credits", "0.0000001"),
    ],
)
def test_bad_argument_values_exit_2_before_touching_the_database(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    line = one_line_error(admin(tmp_path, *args), 2)
    assert "error:" in line
    assert not (tmp_path / "coordinator.db").exists()


def tamper(data_dir: Path, statement: str) -> None:
    async def run() -> None:
        engine = create_engine(f"sqlite+aiosqlite:///{data_dir / 'coordinator.db'}")
        try:
            async with engine.begin() as connection:
                await connection.execute(text(statement))
        finally:
            await engine.dispose()

    asyncio.run(run())


def hold_and_settle(data_dir: Path, customer: str, provider: str) -> None:
    async def run() -> None:
        engine = create_engine(f"sqlite+aiosqlite:///{data_dir / 'coordinator.db'}")
        try:
            async with create_session_factory(engine).begin() as session:
                await place_hold(session, "req-1", customer, 3_000_000)
                await post_hold(
                    session,
                    "req-1",
                    [
                        Credit(provider_earnings(provider), 1_000_000),
                        Credit(PLATFORM_REVENUE, 50_000),
                    ],
                )
                await place_hold(session, "req-2", customer, 500_000)
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_the_operator_sees_balances_holds_earnings_and_platform_revenue(tmp_path: Path) -> None:
    customer = admin_json(
        tmp_path, "create-account", "--role", "customer", "--name", "Ada", "--credits", "10"
    )
    provider = admin_json(tmp_path, "create-account", "--role", "provider", "--name", "Grace")
    assert isinstance(customer, dict)
    assert isinstance(provider, dict)
    hold_and_settle(tmp_path, customer["account_id"], provider["account_id"])

    listed = admin_json(tmp_path, "list-accounts")
    assert isinstance(listed, list)
    by_id = {row["account_id"]: row for row in listed}
    ada, grace = by_id[customer["account_id"]], by_id[provider["account_id"]]
    assert (ada["balance_micro_usd"], ada["held_micro_usd"]) == (8_450_000, 500_000)
    assert (grace["balance_micro_usd"], grace["earnings_micro_usd"]) == (0, 1_000_000)
    table = admin(tmp_path, "list-accounts").stdout
    assert "HELD_USD" in table
    assert "EARNINGS_USD" in table
    assert "8.45" in table

    totals = admin_json(tmp_path, "ledger")
    assert totals == {
        "customer_available_micro_usd": 8_450_000,
        "customer_held_micro_usd": 500_000,
        "provider_earnings_micro_usd": 1_000_000,
        "builder_earnings_micro_usd": 0,
        "platform_revenue_micro_usd": 50_000,
        "paid_in_micro_usd": 10_000_000,
    }
    shown = admin(tmp_path, "ledger")
    assert shown.returncode == 0
    assert "platform_revenue_usd" in shown.stdout
    assert "0.05" in shown.stdout


def test_audit_exits_0_when_healthy_and_1_with_each_violation_on_its_own_line(
    tmp_path: Path,
) -> None:
    customer = admin_json(
        tmp_path, "create-account", "--role", "customer", "--name", "Ada", "--credits", "10"
    )
    provider = admin_json(tmp_path, "create-account", "--role", "provider", "--name", "Grace")
    assert isinstance(customer, dict)
    assert isinstance(provider, dict)
    hold_and_settle(tmp_path, customer["account_id"], provider["account_id"])

    healthy = admin(tmp_path, "audit")
    assert (healthy.returncode, healthy.stderr) == (0, "")
    assert healthy.stdout.strip() == "ledger healthy: every invariant holds"
    assert json.loads(admin(tmp_path, "audit", "--json").stdout) == {
        "healthy": True,
        "violations": [],
    }

    tamper(
        tmp_path,
        "UPDATE ledger_accounts SET balance_micro_usd = balance_micro_usd + 5"
        " WHERE id = 'platform'",
    )
    broken = admin(tmp_path, "audit")
    assert broken.returncode == 1
    assert broken.stderr == ""
    lines = broken.stdout.strip().splitlines()
    assert lines == [
        "unbalanced: the balances add up to 5 micro-USD, not 0",
        "balance_mismatch: platform shows 50005 micro-USD but its transfers add up to 50000",
    ]
    as_json = admin(tmp_path, "audit", "--json")
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert report["healthy"] is False
    assert [v["code"] for v in report["violations"]] == ["unbalanced", "balance_mismatch"]
    assert report["violations"][1]["subject"] == "platform"


def test_payouts_pay_each_payee_once_per_month(tmp_path: Path) -> None:
    assert admin(tmp_path, "migrate").returncode == 0
    january = 1_768_000_000_000  # 2026-01-09

    async def earn() -> str:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'coordinator.db'}")
        try:
            async with create_session_factory(engine).begin() as session:
                customer, _ = await create_account(
                    session, Role.CUSTOMER, "Ada", 5_000_000, now_ms=january - 90 * 86_400_000
                )
                provider, _ = await create_account(
                    session, Role.PROVIDER, "Grace", now_ms=january - 90 * 86_400_000
                )
                await place_hold(session, "req-1", customer.id, 2_000_000, now_ms=january)
                await post_hold(
                    session,
                    "req-1",
                    [Credit(provider_earnings(provider.id), 1_250_000)],
                    now_ms=january,
                )
                return provider.id
        finally:
            await engine.dispose()

    provider_id = asyncio.run(earn())
    first = admin_json(tmp_path, "payouts", "--period", "2026-01")
    assert first == [
        {
            "account_id": provider_id,
            "ledger_account_id": f"provider:{provider_id}",
            "period": "2026-01",
            "status": "paid",
            "amount_micro_usd": 1_250_000,
            "transfer_id": f"payout#2026-01#provider:{provider_id}",
        }
    ]
    again = admin(tmp_path, "payouts", "--period", "2026-01")
    assert again.returncode == 0, again.stderr
    assert "already_paid" in again.stdout
    assert again.stdout.strip().endswith("paid now for 2026-01: 0.00 USD")
    totals = admin_json(tmp_path, "ledger")
    assert isinstance(totals, dict)
    assert totals["provider_earnings_micro_usd"] == 0
    assert totals["paid_in_micro_usd"] == 5_000_000 - 1_250_000
    assert admin(tmp_path, "audit").returncode == 0

    line = one_line_error(admin(tmp_path, "payouts", "--period", "2999-01"), 1)
    assert "not over yet" in line
    assert "YYYY-MM" in one_line_error(admin(tmp_path, "payouts", "--period", "2026-1"), 2)
