"""``shareai admin invite``: invite codes for self-serve sign-up (``SHAREAI_SIGNUP=invite``).

``create`` prints the code once (only its hash is stored); ``list`` shows every code with its
uses, expiry and state; ``revoke`` stops a code at once (the running coordinator reads the
database on every sign-up). See docs/operators.md, "Sign-up".
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from shareai._args import positive_int

if TYPE_CHECKING:
    from coordinator.db.models import InviteCode
    from shareai.admin_cli import AdminDatabase

__all__ = ["register"]

_ParserT = TypeVar("_ParserT", bound=argparse.ArgumentParser)
_SIGNUP_ROLES = ("customer", "provider", "builder")
_DAY_MS = 24 * 3600 * 1000


def register(admin_commands: argparse._SubParsersAction[_ParserT]) -> None:
    """Add ``invite`` to the ``shareai admin`` subcommands."""
    from shareai.admin_cli import add_database_options, run_admin  # noqa: PLC0415 - a cycle

    invite = admin_commands.add_parser(
        "invite",
        help="invite codes for self-serve sign-up: create, list, revoke",
        description="Invite codes people give on /signup when SHAREAI_SIGNUP=invite.",
    )
    commands = invite.add_subparsers(dest="invite_command", required=True, metavar="COMMAND")

    create = commands.add_parser("create", help="make a code and print it (shown only once)")
    add_database_options(create, with_json=True)
    create.add_argument(
        "--uses", type=positive_int, default=1, help="how many accounts it signs up (default 1)"
    )
    create.add_argument(
        "--expires-in-days",
        type=positive_int,
        default=14,
        metavar="DAYS",
        help="it stops working after this many days (default 14)",
    )
    create.add_argument("--role", choices=_SIGNUP_ROLES, help="only for this role (default: any)")
    create.add_argument("--note", default="", help="who it is for, for operators")
    create.set_defaults(handler=run_admin(_create))

    listing = commands.add_parser("list", help="every code: uses, expiry, state")
    add_database_options(listing, with_json=True)
    listing.set_defaults(handler=run_admin(_list))

    revoke = commands.add_parser("revoke", help="stop a code from signing up anyone else")
    add_database_options(revoke, with_json=True)
    revoke.add_argument("invite", metavar="ID_OR_PREFIX", help="inv_... or sai-invite-XXXXXXXX")
    revoke.set_defaults(handler=run_admin(_revoke))


def _iso(at_ms: int | None) -> str | None:
    if at_ms is None:
        return None
    return datetime.fromtimestamp(at_ms / 1000, tz=UTC).isoformat(timespec="seconds")


def _state(invite: InviteCode, now_ms: int) -> str:
    if invite.revoked_at_ms is not None:
        return "revoked"
    if invite.expires_at_ms <= now_ms:
        return "expired"
    if invite.uses >= invite.max_uses:
        return "used up"
    return "active"


def _fields(invite: InviteCode, now_ms: int) -> dict[str, Any]:
    return {
        "invite_id": invite.id,
        "prefix": invite.prefix,
        "role": invite.role.value if invite.role is not None else "any",
        "uses": invite.uses,
        "max_uses": invite.max_uses,
        "expires_at": _iso(invite.expires_at_ms),
        "revoked_at": _iso(invite.revoked_at_ms),
        "state": _state(invite, now_ms),
        "note": invite.note,
        "created_at": _iso(invite.created_at_ms),
    }


def _now_ms() -> int:
    return int(datetime.now(tz=UTC).timestamp() * 1000)


def _print(fields: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(fields))
        return
    width = max(len(name) for name in fields) + 2
    for name, value in fields.items():
        print(f"{name:<{width}}{'' if value is None else value}")


async def _create(args: argparse.Namespace, database: AdminDatabase) -> None:
    from coordinator.accounts.invites import create_invite  # noqa: PLC0415

    now_ms = _now_ms()
    async with database.sessions.begin() as session:
        invite, raw_code = await create_invite(
            session,
            max_uses=args.uses,
            expires_in_ms=args.expires_in_days * _DAY_MS,
            role=args.role,
            note=args.note,
            now_ms=now_ms,
        )
        fields = _fields(invite, now_ms) | {"code": raw_code}
    _print(fields, as_json=args.json)
    if not args.json:
        print("The code is shown only this once: send it to the person now.")


async def _list(args: argparse.Namespace, database: AdminDatabase) -> None:
    from coordinator.accounts.invites import list_invites  # noqa: PLC0415

    now_ms = _now_ms()
    async with database.sessions() as session:
        rows = [_fields(invite, now_ms) for invite in await list_invites(session)]
    if args.json:
        print(json.dumps(rows))
        return
    if not rows:
        print("no invite codes")
        return
    print(
        f"{'INVITE':<30} {'PREFIX':<20} {'ROLE':<9} {'USES':>11}  {'STATE':<8} {'EXPIRES':<26}NOTE"
    )
    for row in rows:
        uses = f"{row['uses']}/{row['max_uses']}"
        print(
            f"{row['invite_id']:<30} {row['prefix']:<20} {row['role']:<9} {uses:>11}"
            f"  {row['state']:<8} {row['expires_at']:<26}{row['note']}"
        )


async def _revoke(args: argparse.Namespace, database: AdminDatabase) -> None:
    from coordinator.accounts.invites import revoke_invite  # noqa: PLC0415

    now_ms = _now_ms()
    async with database.sessions.begin() as session:
        invite = await revoke_invite(session, args.invite, now_ms=now_ms)
        fields = _fields(invite, now_ms)
    _print(fields, as_json=args.json)
