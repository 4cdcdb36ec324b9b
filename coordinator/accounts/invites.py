"""Invite codes for self-serve sign-up, and the sign-up itself.

The operator makes codes (``shareai admin invite create``); a person signing up on ``/signup``
gives one when the coordinator runs with ``SHAREAI_SIGNUP=invite``. Only a code's SHA-256 is
stored. Redeeming is one conditional ``UPDATE ... SET uses = uses + 1 WHERE uses < max_uses
AND ...``: the database serialises concurrent updates of the row (SQLite: one writer;
PostgreSQL: the row lock, after which the condition is evaluated again), so a code with one use
left signs up one account however many people race for it.

Like the rest of :mod:`coordinator.accounts`, functions flush and never commit: the redemption,
the account, its key and its starter credit are one transaction of the caller.

Errors (all :class:`~coordinator.accounts.AccountsError`)::

    SignupRefused          sign-up is off, or a role that cannot sign up (the message says why)
    └── InviteRefused      no code, or an unknown, used-up, expired, revoked or wrong-role code
    InviteNotFound         revoking a code that does not exist
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.accounts.errors import AccountsError, InvalidAccountInput
from coordinator.accounts.keys import random_id
from coordinator.accounts.service import create_account
from coordinator.db.models import Account, InviteCode, Role
from coordinator.ledger import top_up
from coordinator.money import MAX_AMOUNT_MICRO_USD

__all__ = [
    "INVITE_PREFIX",
    "SIGNUP_ROLES",
    "STARTER_CREDIT_REFERENCE",
    "InviteNotFound",
    "InviteRefused",
    "SignupMode",
    "SignupPolicy",
    "SignupRefused",
    "create_invite",
    "list_invites",
    "redeem_invite",
    "revoke_invite",
    "sign_up",
]

INVITE_PREFIX = "sai-invite-"
_DISPLAY_CHARS = 8
MAX_INVITE_USES = 1_000_000
STARTER_CREDIT_REFERENCE = "promotional: starter credit"
"""The ledger reference of a starter credit. Customer wallets are never paid out (payouts pay
only Provider and Builder earnings), so promotional money can only be spent on requests."""

SIGNUP_ROLES = (Role.CUSTOMER, Role.PROVIDER, Role.BUILDER)
"""The roles a person may sign up with; an operator account is only made by an operator."""


class SignupMode(StrEnum):
    OFF = "off"
    OPEN = "open"
    INVITE = "invite"


@dataclass(frozen=True, slots=True)
class SignupPolicy:
    """The operator's sign-up settings: ``SHAREAI_SIGNUP`` and the starter credit of new
    customers (``SHAREAI_SIGNUP_STARTER_CREDIT_USD``, micro-USD here)."""

    mode: SignupMode = SignupMode.OFF
    starter_credit_micro_usd: int = 0

    @property
    def enabled(self) -> bool:
        return self.mode is not SignupMode.OFF


class SignupRefused(AccountsError):
    """A sign-up that is not accepted; the message is for the person signing up."""


class InviteRefused(SignupRefused):
    """The invite code cannot be used; the message says why (unknown, used up, expired...)."""


class InviteNotFound(AccountsError):
    pass


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _digest(code: str) -> bytes:
    return hashlib.sha256(code.strip().encode("utf-8")).digest()


async def create_invite(
    session: AsyncSession,
    *,
    max_uses: int = 1,
    expires_in_ms: int,
    role: Role | str | None = None,
    note: str = "",
    now_ms: int | None = None,
) -> tuple[InviteCode, str]:
    """A new invite code; returns the row and the raw code (shown once, stored as a hash).

    Raises :class:`InvalidAccountInput` for a use limit outside 1..1,000,000, a non-positive
    lifetime or a note over 200 characters, and :class:`SignupRefused` for the operator role.
    """
    if not 1 <= max_uses <= MAX_INVITE_USES:
        raise InvalidAccountInput(f"an invite is good for 1 to {MAX_INVITE_USES} sign-ups")
    if expires_in_ms <= 0:
        raise InvalidAccountInput("an invite must expire in the future")
    checked_role = _signup_role(role) if role is not None else None
    if len(note) > 200 or not note.isprintable():
        raise InvalidAccountInput("an invite note is at most 200 printable characters")
    at_ms = now_ms if now_ms is not None else _now_ms()
    raw_code = INVITE_PREFIX + secrets.token_urlsafe(24)
    invite = InviteCode(
        id=random_id("inv_"),
        code_hash=_digest(raw_code),
        prefix=raw_code[: len(INVITE_PREFIX) + _DISPLAY_CHARS],
        role=checked_role,
        max_uses=max_uses,
        uses=0,
        note=note,
        created_at_ms=at_ms,
        expires_at_ms=at_ms + expires_in_ms,
    )
    session.add(invite)
    await session.flush()
    return invite, raw_code


async def list_invites(session: AsyncSession) -> list[InviteCode]:
    """Every invite code, newest first."""
    query = select(InviteCode).order_by(InviteCode.created_at_ms.desc(), InviteCode.id)
    return list((await session.scalars(query)).all())


async def revoke_invite(
    session: AsyncSession, invite_id_or_prefix: str, *, now_ms: int | None = None
) -> InviteCode:
    """Revoke a code named by its id (``inv_...``) or its prefix; revoking twice keeps the first
    time. Raises :class:`InviteNotFound` (also when a prefix names several codes)."""
    name = invite_id_or_prefix.strip()
    condition = InviteCode.id == name if name.startswith("inv_") else InviteCode.prefix == name
    invites = list((await session.scalars(select(InviteCode).where(condition).limit(2))).all())
    if len(invites) != 1:
        what = "several invite codes" if invites else "no invite code"
        raise InviteNotFound(f"{what} {name!r}: name it by its id (inv_...)")
    invite = invites[0]
    if invite.revoked_at_ms is None:
        invite.revoked_at_ms = now_ms if now_ms is not None else _now_ms()
        await session.flush()
    return invite


async def redeem_invite(
    session: AsyncSession, raw_code: str, role: Role, *, now_ms: int | None = None
) -> str:
    """Use one sign-up of ``raw_code`` for an account of ``role``; returns the invite's id.

    Atomic (see the module docstring). Raises :class:`InviteRefused` naming why it cannot be
    used: unknown, revoked, expired, used up, or for another role.
    """
    at_ms = now_ms if now_ms is not None else _now_ms()
    digest = _digest(raw_code)
    claimed = await session.execute(
        update(InviteCode)
        .where(
            InviteCode.code_hash == digest,
            InviteCode.revoked_at_ms.is_(None),
            InviteCode.expires_at_ms > at_ms,
            InviteCode.uses < InviteCode.max_uses,
            or_(InviteCode.role.is_(None), InviteCode.role == role),
        )
        .values(uses=InviteCode.uses + 1)
        .returning(InviteCode.id)
        .execution_options(synchronize_session=False)
    )
    invite_id = claimed.scalar_one_or_none()
    if invite_id is not None:
        return invite_id
    invite = (
        await session.scalars(select(InviteCode).where(InviteCode.code_hash == digest))
    ).one_or_none()
    if invite is None:
        raise InviteRefused("that invite code is not valid: check it for typos")
    if invite.revoked_at_ms is not None:
        raise InviteRefused("that invite code was revoked by the operator")
    if invite.expires_at_ms <= at_ms:
        raise InviteRefused("that invite code has expired: ask for a new one")
    if invite.role is not None and invite.role != role:
        raise InviteRefused(f"that invite code is for {invite.role.value} accounts only")
    raise InviteRefused("that invite code has been used up: ask for a new one")


def _signup_role(role: Role | str) -> Role:
    try:
        checked = Role(role)
    except ValueError:
        checked = None
    if checked is None or checked not in SIGNUP_ROLES:
        raise SignupRefused("you can sign up as a customer, a provider or a builder")
    return checked


async def sign_up(
    session: AsyncSession,
    policy: SignupPolicy,
    role: Role | str,
    name: str,
    invite_code: str = "",
    *,
    now_ms: int | None = None,
) -> tuple[Account, str]:
    """Self-serve sign-up: a new account of ``role`` and its first API key (the raw key, shown
    once). A customer gets the policy's starter credit, a ledger top-up with the reference
    :data:`STARTER_CREDIT_REFERENCE`; Providers and Builders get none.

    Raises :class:`SignupRefused` (sign-up off, operator or unknown role),
    :class:`InviteRefused` (mode ``invite``: missing or unusable code) and
    :class:`InvalidAccountInput` (a bad name).
    """
    if not policy.enabled:
        raise SignupRefused("sign-up is switched off on this network: ask its operator")
    checked_role = _signup_role(role)
    at_ms = now_ms if now_ms is not None else _now_ms()
    if policy.mode is SignupMode.INVITE:
        if not invite_code.strip():
            raise InviteRefused("sign-up on this network needs an invite code")
        await redeem_invite(session, invite_code, checked_role, now_ms=at_ms)
    account, raw_key = await create_account(session, checked_role, name, now_ms=at_ms)
    credit = policy.starter_credit_micro_usd
    if checked_role is Role.CUSTOMER and credit > 0:
        await top_up(
            session,
            account.id,
            min(credit, MAX_AMOUNT_MICRO_USD),
            transfer_id=random_id("topup_"),
            reference=STARTER_CREDIT_REFERENCE,
            now_ms=at_ms,
        )
    return account, raw_key
