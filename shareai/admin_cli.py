"""``shareai admin``: the operator's commands against the coordinator's database.

Each command applies pending migrations first, so it works on a fresh data directory. The
database is ``--database-url``, else ``SHAREAI_DATABASE_URL``, else the SQLite file in
``--data-dir`` (``SHAREAI_DATA_DIR``, default ``./.shareai``). Amounts are USD decimal strings
(``12.50``), converted exactly to micro-USD. Failures print one line on stderr and exit 1; bad
argument values exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from coordinator.money import InvalidUsdAmount, format_usd, parse_usd

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from coordinator.accounts import Account, NodeEnrollment
    from coordinator.ledger import AccountBalances


__all__ = ["ROLES", "AdminDatabase", "add_database_options", "register", "run_admin"]


@dataclass(frozen=True, slots=True)
class AdminDatabase:
    """The migrated database a command works on."""

    url: str
    sessions: async_sessionmaker[AsyncSession]


_ParserT = TypeVar("_ParserT", bound=argparse.ArgumentParser)
# coordinator.db.Role's values, spelled out so that building the parser imports no SQLAlchemy
# (every `shareai` command builds it); tests/coordinator/test_admin_cli.py checks they agree.
ROLES = ("customer", "provider", "builder", "operator")


def register(subparsers: argparse._SubParsersAction[_ParserT]) -> None:
    """Add the ``admin`` command group to the ``shareai`` command's subparsers."""
    admin = subparsers.add_parser(
        "admin",
        help="operator commands: migrate, accounts and credits, keys and nodes, ledger audit,"
        " model catalogue, sign-up invites",
        description="Operator commands against the coordinator's database.",
    )
    commands = admin.add_subparsers(dest="admin_command", required=True, metavar="COMMAND")
    migrate_command = commands.add_parser("migrate", help="create or upgrade the database schema")
    add_database_options(migrate_command)
    migrate_command.set_defaults(handler=run_admin(_migrate))

    create = commands.add_parser(
        "create-account", help="create an account and print its API key (shown only once)"
    )
    add_database_options(create, with_json=True)
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--name", required=True, help="a name people will recognise")
    create.add_argument(
        "--credits", type=_usd, default=0, metavar="USD", help="starting credits, e.g. 25.00"
    )
    create.set_defaults(handler=run_admin(_create_account))

    credit = commands.add_parser("add-credits", help="add USD credits to an account")
    add_database_options(credit, with_json=True)
    credit.add_argument("--account", required=True, metavar="ACCOUNT_ID")
    credit.add_argument("--usd", required=True, type=_usd, metavar="AMOUNT", help="e.g. 10.50")
    credit.set_defaults(handler=run_admin(_add_credits))

    listing = commands.add_parser("list-accounts", help="list accounts and their balances")
    add_database_options(listing, with_json=True)
    listing.set_defaults(handler=run_admin(_list_accounts))

    revoke = commands.add_parser("revoke-key", help="revoke an API key")
    add_database_options(revoke, with_json=True)
    revoke.add_argument(
        "--key-id",
        required=True,
        metavar="ID_OR_PREFIX",
        help="the key id (key_...) or the prefix shown in lists (sk-sai-XXXXXXXX)",
    )
    revoke.set_defaults(handler=run_admin(_revoke_key))

    revoke_node = commands.add_parser(
        "revoke-node",
        help="revoke a node key for good; a running coordinator closes its session within seconds",
    )
    add_database_options(revoke_node, with_json=True)
    revoke_node.add_argument("--node-id", required=True, help="the node id (nd_...)")
    revoke_node.set_defaults(handler=run_admin(_revoke_node))

    _register_suspension(commands)

    ledger = commands.add_parser(
        "ledger", help="show the ledger's totals: customer credits, earnings, platform revenue"
    )
    add_database_options(ledger, with_json=True)
    ledger.set_defaults(handler=run_admin(_ledger))

    audit = commands.add_parser(
        "audit",
        help="check every ledger invariant; exit 1 and print each violation if any is broken",
    )
    add_database_options(audit, with_json=True)
    audit.set_defaults(handler=run_admin(_audit))

    payouts = commands.add_parser(
        "payouts",
        help="pay Providers and Builders what they earned by the end of a month (once per month)",
    )
    add_database_options(payouts, with_json=True)
    payouts.add_argument(
        "--period", required=True, type=_period, metavar="YYYY-MM", help="a month that is over"
    )
    payouts.add_argument(
        "--holdback-days",
        type=int,
        default=30,
        metavar="DAYS",
        help="Providers younger than this at the month's end are paid with a later month"
        " (default: 30)",
    )
    payouts.set_defaults(handler=run_admin(_payouts))

    statement = commands.add_parser(
        "statement",
        help="per Provider or Builder: requests, tokens, gross, fees and net for a month",
    )
    add_database_options(statement, with_json=True)
    statement.add_argument(
        "--period", required=True, type=_period, metavar="YYYY-MM", help="the month (UTC)"
    )
    statement.add_argument("--kind", choices=("provider", "builder"), default="provider")
    statement.add_argument("--account", metavar="ID", help="only this Provider or Builder")
    statement.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    statement.set_defaults(handler=run_admin(_statement))

    from shareai import catalogue_cli, invite_cli  # noqa: PLC0415 - they import these helpers

    catalogue_cli.register(commands)
    invite_cli.register(commands)


def _register_suspension(commands: argparse._SubParsersAction[_ParserT]) -> None:
    suspend_node = commands.add_parser(
        "suspend-node",
        help="keep a node from new jobs (it stays connected; running jobs finish) until restored",
    )
    add_database_options(suspend_node, with_json=True)
    suspend_node.add_argument("--node-id", required=True, help="the node id (nd_...)")
    suspend_node.add_argument(
        "--reason", required=True, help="why, for operators (shown on the operator's page)"
    )
    suspend_node.set_defaults(handler=run_admin(_suspend_node))

    restore_node = commands.add_parser(
        "restore-node", help="lift a node's suspension: it takes new jobs again"
    )
    add_database_options(restore_node, with_json=True)
    restore_node.add_argument("--node-id", required=True, help="the node id (nd_...)")
    restore_node.set_defaults(handler=run_admin(_restore_node))


def add_database_options(parser: argparse.ArgumentParser, *, with_json: bool = False) -> None:
    parser.add_argument(
        "--database-url",
        help="SQLAlchemy URL (sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB);"
        " default: SHAREAI_DATABASE_URL, else coordinator.db in the data directory",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="the coordinator's data directory (default: SHAREAI_DATA_DIR, else ./.shareai)",
    )
    if with_json:
        parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _usd(text: str) -> int:
    try:
        return parse_usd(text)
    except InvalidUsdAmount as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _period(text: str) -> str:
    digits = text[:4] + text[5:]
    if len(text) != 7 or text[4] != "-" or not (digits.isascii() and digits.isdigit()):
        raise argparse.ArgumentTypeError(f"invalid period {text!r}: write YYYY-MM, e.g. 2026-03")
    if not 1 <= int(text[5:]) <= 12:
        raise argparse.ArgumentTypeError(f"invalid period {text!r}: the month is 01 to 12")
    return text


def _shown(database_url: str) -> str:
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    return make_url(database_url).render_as_string(hide_password=True)


def _fail(error: BaseException | str) -> int:
    # Database errors span lines (SQL, parameters, a link); the first line says what happened.
    lines = str(error).strip().splitlines() or [type(error).__name__]
    print(f"shareai: error: {lines[0]}", file=sys.stderr)
    return 1


def run_admin(
    body: Callable[[argparse.Namespace, AdminDatabase], Awaitable[int | None]],
) -> Callable[[argparse.Namespace], int]:
    """A handler: load settings, migrate, run ``body`` with a session factory, close the engine.

    The exit status is what ``body`` returns (None: 0). Failures the operator can act on (bad
    settings, an unknown account, a refused ledger operation, an unreachable database) become one
    line on stderr and exit 1; anything else is a bug and keeps its traceback.
    """

    def handler(args: argparse.Namespace) -> int:
        # Imported here, not at the top: `shareai --help` and the node commands need none of it.
        from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415

        from coordinator.accounts import AccountsError  # noqa: PLC0415
        from coordinator.catalogue import CatalogueError  # noqa: PLC0415
        from coordinator.db import (  # noqa: PLC0415
            InvalidDatabaseUrl,
            create_engine,
            create_session_factory,
            migrate,
        )
        from coordinator.ledger import LedgerError  # noqa: PLC0415
        from coordinator.settings import SettingsError, load_settings  # noqa: PLC0415

        failures = (AccountsError, CatalogueError, LedgerError, InvalidDatabaseUrl, SQLAlchemyError)

        async def main(database_url: str) -> int | None:
            await migrate(database_url)
            engine = create_engine(database_url)
            try:
                return await body(args, AdminDatabase(database_url, create_session_factory(engine)))
            finally:
                await engine.dispose()

        try:
            settings = load_settings(database_url=args.database_url, data_dir=args.data_dir)
        except SettingsError as error:
            return _fail(error)
        try:
            status = asyncio.run(main(settings.database_url))
        except failures as error:
            return _fail(error)
        except OSError as error:  # unreachable server, refused connection, unwritable directory
            return _fail(f"cannot open the database {_shown(settings.database_url)}: {error}")
        return status or 0

    return handler


def _print(fields: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(fields))
    else:
        width = max(len(name) for name in fields) + 2
        for name, value in fields.items():
            print(f"{name:<{width}}{value}")


def _iso(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, tz=UTC).isoformat(timespec="seconds")


def _account_fields(account: Account, balances: AccountBalances) -> dict[str, Any]:
    earnings = balances.provider_earnings_micro_usd + balances.builder_earnings_micro_usd
    return {
        "account_id": account.id,
        "role": account.role.value,
        "name": account.name,
        "balance_micro_usd": balances.available_micro_usd,
        "balance_usd": format_usd(balances.available_micro_usd),
        "held_micro_usd": balances.held_micro_usd,
        "earnings_micro_usd": earnings,
        "created_at": _iso(account.created_at_ms),
    }


async def _migrate(_args: argparse.Namespace, database: AdminDatabase) -> None:
    from coordinator.db import head_revision  # noqa: PLC0415

    print(f"database {_shown(database.url)} is at revision {head_revision()}")


async def _create_account(args: argparse.Namespace, database: AdminDatabase) -> None:
    from coordinator.accounts import create_account, key_display_prefix  # noqa: PLC0415
    from coordinator.ledger import account_balances  # noqa: PLC0415

    async with database.sessions.begin() as session:
        account, raw_key = await create_account(session, args.role, args.name, args.credits)
        balances = await account_balances(session, account.id)
    fields = _account_fields(account, balances)
    fields["api_key_prefix"] = key_display_prefix(raw_key)
    fields["api_key"] = raw_key
    _print(fields, as_json=args.json)
    if not args.json:
        print("The API key is shown only this once: store it now.")


async def _add_credits(args: argparse.Namespace, database: AdminDatabase) -> None:
    from coordinator.accounts import add_credits  # noqa: PLC0415

    async with database.sessions.begin() as session:
        balance = await add_credits(session, args.account, args.usd)
    fields = {
        "account_id": args.account,
        "added_micro_usd": args.usd,
        "added_usd": format_usd(args.usd),
        "balance_micro_usd": balance,
        "balance_usd": format_usd(balance),
    }
    _print(fields, as_json=args.json)


async def _list_accounts(args: argparse.Namespace, database: AdminDatabase) -> None:
    from coordinator.accounts import list_accounts  # noqa: PLC0415
    from coordinator.ledger import balances_by_account  # noqa: PLC0415

    async with database.sessions.begin() as session:
        accounts = await list_accounts(session)
        balances = await balances_by_account(session, [account.id for account in accounts])
    rows = [_account_fields(account, balances[account.id]) for account in accounts]
    if args.json:
        print(json.dumps(rows))
        return
    if not accounts:
        print("no accounts")
        return
    print(
        f"{'ACCOUNT':<30} {'ROLE':<9} {'BALANCE_USD':>16} {'HELD_USD':>12} {'EARNINGS_USD':>14}"
        f"  {'CREATED':<25} NAME"
    )
    for row in rows:
        print(
            f"{row['account_id']:<30} {row['role']:<9} {row['balance_usd']:>16}"
            f" {format_usd(row['held_micro_usd']):>12} {format_usd(row['earnings_micro_usd']):>14}"
            f"  {row['created_at']:<25} {row['name']}"
        )


async def _revoke_node(args: argparse.Namespace, database: AdminDatabase) -> None:
    from coordinator.accounts import OPERATOR, revoke_node  # noqa: PLC0415

    async with database.sessions.begin() as session:
        enrollment = await revoke_node(session, args.node_id, by=OPERATOR)
    fields = {
        "node_id": enrollment.node_id,
        "account_id": enrollment.account_id,
        "revoked_at": _iso(enrollment.revoked_at_ms) if enrollment.revoked_at_ms else None,
    }
    _print(fields, as_json=args.json)


def _suspension_fields(enrollment: NodeEnrollment) -> dict[str, Any]:
    return {
        "node_id": enrollment.node_id,
        "account_id": enrollment.account_id,
        "suspended": enrollment.suspended_at_ms is not None,
        "suspended_at": _iso(enrollment.suspended_at_ms) if enrollment.suspended_at_ms else None,
        "suspended_by": enrollment.suspended_by,
        "reason": enrollment.suspended_reason,
    }


async def _suspend_node(args: argparse.Namespace, database: AdminDatabase) -> None:
    from coordinator.accounts import OPERATOR, suspend_node  # noqa: PLC0415

    async with database.sessions.begin() as session:
        enrollment = await suspend_node(session, args.node_id, by=OPERATOR, reason=args.reason)
    _print(_suspension_fields(enrollment), as_json=args.json)


async def _restore_node(args: argparse.Namespace, database: AdminDatabase) -> None:
    from coordinator.accounts import OPERATOR, restore_node  # noqa: PLC0415

    async with database.sessions.begin() as session:
        enrollment = await restore_node(session, args.node_id, by=OPERATOR)
    _print(_suspension_fields(enrollment), as_json=args.json)


async def _revoke_key(args: argparse.Namespace, database: AdminDatabase) -> None:
    from coordinator.accounts import revoke_key  # noqa: PLC0415

    async with database.sessions.begin() as session:
        key = await revoke_key(session, args.key_id)
    assert key.revoked_at_ms is not None  # revoke_key always leaves it revoked
    fields = {
        "key_id": key.id,
        "prefix": key.prefix,
        "account_id": key.account_id,
        "revoked_at": _iso(key.revoked_at_ms),
    }
    _print(fields, as_json=args.json)


async def _ledger(args: argparse.Namespace, database: AdminDatabase) -> None:
    from coordinator.ledger import ledger_totals  # noqa: PLC0415

    async with database.sessions.begin() as session:
        totals = await ledger_totals(session)
    if args.json:
        _print({f"{name}_micro_usd": micro_usd for name, micro_usd in totals.items()}, as_json=True)
    else:
        _print(
            {f"{name}_usd": format_usd(micro_usd) for name, micro_usd in totals.items()},
            as_json=False,
        )


async def _audit(args: argparse.Namespace, database: AdminDatabase) -> int:
    import time  # noqa: PLC0415

    from coordinator.billing.audit import generations_settled  # noqa: PLC0415
    from coordinator.ledger import audit  # noqa: PLC0415

    async with database.sessions.begin() as session:
        if session.get_bind().dialect.name == "postgresql":
            # One snapshot for every check, so concurrent traffic cannot fake a mismatch.
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        violations = await audit(
            session, now_ms=time.time_ns() // 1_000_000, extra_checks=(generations_settled,)
        )
    if args.json:
        print(
            json.dumps(
                {
                    "healthy": not violations,
                    "violations": [
                        {"code": v.code, "subject": v.subject, "message": v.message}
                        for v in violations
                    ],
                }
            )
        )
    elif violations:
        for violation in violations:
            print(violation)
    else:
        print("ledger healthy: every invariant holds")
    return 1 if violations else 0


async def _statement(args: argparse.Namespace, database: AdminDatabase) -> None:
    from dataclasses import asdict  # noqa: PLC0415

    from coordinator.billing.statements import statement, to_csv  # noqa: PLC0415
    from coordinator.ledger import period_bounds_ms  # noqa: PLC0415

    since_ms, until_ms = period_bounds_ms(args.period)
    async with database.sessions() as session:
        lines = await statement(session, args.kind, since_ms, until_ms, account_id=args.account)
    if args.json:
        print(json.dumps([{**asdict(line), "period": args.period} for line in lines]))
        return
    if args.csv:
        print(to_csv(lines), end="")
        return
    if not lines:
        print(f"no {args.kind} traffic in {args.period}")
        return
    print(
        f"{'ACCOUNT':<30} {'REQUESTS':>9} {'TOKENS':>12} {'GROSS_USD':>14} {'FEES_USD':>14}"
        f" {'NET_USD':>14}"
    )
    for line in lines:
        print(
            f"{line.account_id:<30} {line.requests:>9}"
            f" {line.prompt_tokens + line.completion_tokens:>12}"
            f" {format_usd(line.gross_micro_usd):>14} {format_usd(line.fees_micro_usd):>14}"
            f" {format_usd(line.net_micro_usd):>14}"
        )


async def _payouts(args: argparse.Namespace, database: AdminDatabase) -> None:
    from coordinator.ledger import PayoutStatus, pay_out_period  # noqa: PLC0415

    async with database.sessions.begin() as session:
        payouts = await pay_out_period(session, args.period, holdback_days=args.holdback_days)
    rows = [
        {
            "account_id": payout.account_id,
            "ledger_account_id": payout.ledger_account_id,
            "period": payout.period,
            "status": payout.status.value,
            "amount_micro_usd": payout.amount_micro_usd,
            "transfer_id": payout.transfer_id,
        }
        for payout in payouts
    ]
    if args.json:
        print(json.dumps(rows))
        return
    if not payouts:
        print(f"no Provider or Builder has earnings: nothing to pay for {args.period}")
        return
    print(f"{'LEDGER_ACCOUNT':<40} {'STATUS':<13} {'AMOUNT_USD':>14}")
    for payout in payouts:
        print(
            f"{payout.ledger_account_id:<40} {payout.status.value:<13}"
            f" {format_usd(payout.amount_micro_usd):>14}"
        )
    paid_now = sum(p.amount_micro_usd for p in payouts if p.status is PayoutStatus.PAID)
    print(f"paid now for {args.period}: {format_usd(paid_now)} USD")
