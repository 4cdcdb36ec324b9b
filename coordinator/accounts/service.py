"""Accounts, API keys and credits.

Every function takes an :class:`~sqlalchemy.ext.asyncio.AsyncSession` and works inside the
caller's transaction: it flushes, never commits, so several calls can form one unit of work.
The caller owns the transaction::

    async with sessions.begin() as session:  # commits at the end, rolls back on an exception
        account, raw_key = await create_account(session, Role.CUSTOMER, "Ada")

Times default to the wall clock; pass ``now_ms`` (unix milliseconds) to pin them. Credits live
in the settlement ledger (:mod:`coordinator.ledger`): adding credits is a top-up transfer from the
world account to the account's wallet, and balances are read with
:func:`coordinator.ledger.account_balances`.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.accounts.errors import (
    AccountNotFound,
    AmbiguousKeyPrefix,
    InvalidAccountInput,
    KeyNotFound,
)
from coordinator.accounts.keys import (
    API_KEY_PREFIX,
    generate_api_key,
    hash_api_key,
    is_well_formed_api_key,
    key_display_prefix,
    random_id,
)
from coordinator.db.models import Account, ApiKey, App, AppAuthorization, Role
from coordinator.ledger import account_balances, top_up
from coordinator.money import MAX_AMOUNT_MICRO_USD, format_usd

__all__ = [
    "MAX_NAME_CHARS",
    "Principal",
    "add_credits",
    "authenticate",
    "create_account",
    "get_account",
    "issue_api_key",
    "list_accounts",
    "list_api_keys",
    "revoke_key",
]

MAX_NAME_CHARS = 200


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is from: the account behind a valid, unrevoked API key.

    ``app_id`` is set for an app-scoped key: the request comes from that Builder app, on behalf
    of (and billed to) the customer ``account_id``.
    """

    account_id: str
    role: Role
    key_id: str
    app_id: str | None = None


def _wall_clock_ms() -> int:
    """Wall-clock unix time in milliseconds."""
    return time.time_ns() // 1_000_000


def _checked_role(role: Role | str) -> Role:
    try:
        return Role(role)
    except ValueError:
        choices = ", ".join(member.value for member in Role)
        raise InvalidAccountInput(f"unknown role {role!r}: choose one of {choices}") from None


def _checked_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise InvalidAccountInput("an account name must not be empty")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidAccountInput(f"an account name has at most {MAX_NAME_CHARS} characters")
    if not name.isprintable():
        raise InvalidAccountInput("an account name must not contain control characters")
    return name


def _checked_micro_usd(micro_usd: int, *, allow_zero: bool) -> int:
    # bool is an int subclass; True micro-dollars is a bug, not an amount.
    if not isinstance(micro_usd, int) or isinstance(micro_usd, bool):
        raise InvalidAccountInput(f"an amount is an integer of micro-USD, not {micro_usd!r}")
    low = 0 if allow_zero else 1
    if not low <= micro_usd <= MAX_AMOUNT_MICRO_USD:
        raise InvalidAccountInput(
            f"an amount must be {low} to {MAX_AMOUNT_MICRO_USD} micro-USD"
            f" ({format_usd(low)} to {format_usd(MAX_AMOUNT_MICRO_USD)} USD), got {micro_usd}"
        )
    return micro_usd


async def get_account(session: AsyncSession, account_id: str) -> Account:
    """The account ``account_id``. Raises :class:`AccountNotFound`."""
    account = await session.get(Account, account_id)
    if account is None:
        raise AccountNotFound(f"no account {account_id!r}")
    return account


async def create_account(
    session: AsyncSession,
    role: Role | str,
    name: str,
    credits_micro_usd: int = 0,
    *,
    now_ms: int | None = None,
) -> tuple[Account, str]:
    """Create an account and its first API key; return the account and the raw key.

    Starting credits are a top-up of the new account's wallet (in the same transaction). The raw
    key exists only in the return value: show it once, it cannot be recovered. ``name`` is
    stripped; raises :class:`InvalidAccountInput` for an unknown role, an empty, over-long or
    control-character name, or credits outside 0..MAX_AMOUNT_MICRO_USD.
    """
    at_ms = now_ms if now_ms is not None else _wall_clock_ms()
    credits = _checked_micro_usd(credits_micro_usd, allow_zero=True)
    account = Account(
        id=random_id("acc_"),
        role=_checked_role(role),
        name=_checked_name(name),
        created_at_ms=at_ms,
    )
    session.add(account)
    await session.flush()  # the key's and the wallet's foreign keys need the account row first
    raw_key = await issue_api_key(session, account.id, now_ms=at_ms)
    if credits:
        await top_up(
            session,
            account.id,
            credits,
            transfer_id=random_id("topup_"),
            reference="starting credits",
            now_ms=at_ms,
        )
    return account, raw_key


async def issue_api_key(
    session: AsyncSession,
    account_id: str,
    *,
    app_id: str | None = None,
    now_ms: int | None = None,
) -> str:
    """A new API key for ``account_id``; returns the raw key (shown once, stored as a hash).

    With ``app_id`` the key is app-scoped: it only authenticates while the account's
    authorization of that app stands. Issue those through :func:`coordinator.apps.authorize_app`,
    which checks the authorization; this function does not. Raises :class:`AccountNotFound`.
    """
    await get_account(session, account_id)
    raw_key = generate_api_key()
    session.add(
        ApiKey(
            id=random_id("key_"),
            account_id=account_id,
            prefix=key_display_prefix(raw_key),
            key_hash=hash_api_key(raw_key),
            created_at_ms=now_ms if now_ms is not None else _wall_clock_ms(),
            app_id=app_id,
        )
    )
    await session.flush()
    return raw_key


async def authenticate(session: AsyncSession, raw_key: str) -> Principal | None:
    """The principal of ``raw_key``, or None for a malformed, unknown or revoked key, and for
    an app-scoped key whose app is disabled or no longer authorised by the key's account.

    Looks the key up by its SHA-256 (an indexed equality), so the time taken does not depend on
    how close a guess is; one query, app-scoped or not. Read-only: it does not record
    ``last_used_at_ms``.
    """
    if not is_well_formed_api_key(raw_key):
        return None
    digest = hash_api_key(raw_key)
    # Revoking an authorization revokes its keys too; checking the authorization here as well
    # keeps a key dead even if one was issued, or left unrevoked, behind the service's back.
    authorized = (
        select(AppAuthorization.id)
        .where(
            AppAuthorization.app_id == ApiKey.app_id,
            AppAuthorization.customer_account_id == ApiKey.account_id,
            AppAuthorization.revoked_at_ms.is_(None),
        )
        .exists()
    )
    row = (
        await session.execute(
            select(ApiKey.id, ApiKey.key_hash, Account.id, Account.role, ApiKey.app_id)
            .join(Account, Account.id == ApiKey.account_id)
            .outerjoin(App, App.id == ApiKey.app_id)
            .where(
                ApiKey.key_hash == digest,
                ApiKey.revoked_at_ms.is_(None),
                or_(ApiKey.app_id.is_(None), and_(App.disabled_at_ms.is_(None), authorized)),
            )
        )
    ).one_or_none()
    if row is None:
        return None
    key_id, stored_hash, account_id, role, app_id = row
    # The index already matched the hash; compare again without an early exit all the same,
    # so no future change of the lookup can turn this into a byte-by-byte timing oracle.
    if not hmac.compare_digest(bytes(stored_hash), digest):
        return None
    return Principal(account_id=account_id, role=role, key_id=key_id, app_id=app_id)


async def revoke_key(
    session: AsyncSession,
    key_id_or_prefix: str,
    *,
    account_id: str | None = None,
    now_ms: int | None = None,
) -> ApiKey:
    """Revoke one key, named by its id (``key_...``), its prefix (``sk-sai-XXXXXXXX``) or the
    raw key itself; return it. Revoking a revoked key changes nothing (its time is kept).

    With ``account_id``, only that account's keys are looked at: another account's key is
    :class:`KeyNotFound`, exactly like an unknown one (for self-service, where a key id must
    not reveal whether it exists elsewhere). Raises :class:`KeyNotFound`, or
    :class:`AmbiguousKeyPrefix` when a prefix names several keys (then use the key id).
    """
    if key_id_or_prefix.startswith("key_"):
        condition = ApiKey.id == key_id_or_prefix
    elif is_well_formed_api_key(key_id_or_prefix):
        condition = ApiKey.key_hash == hash_api_key(key_id_or_prefix)
    elif key_id_or_prefix.startswith(API_KEY_PREFIX):
        condition = ApiKey.prefix == key_id_or_prefix
    else:
        raise KeyNotFound(
            f"{key_id_or_prefix!r} is neither a key id (key_...) nor a key prefix (sk-sai-...)"
        )
    if account_id is not None:
        condition = condition & (ApiKey.account_id == account_id)
    keys = list((await session.scalars(select(ApiKey).where(condition).limit(10))).all())
    if not keys:
        raise KeyNotFound(f"no API key {key_id_or_prefix!r}")
    if len(keys) > 1:
        ids = ", ".join(sorted(key.id for key in keys))
        raise AmbiguousKeyPrefix(
            f"prefix {key_id_or_prefix!r} matches several keys ({ids}): give the key id"
        )
    key = keys[0]
    if key.revoked_at_ms is None:
        key.revoked_at_ms = now_ms if now_ms is not None else _wall_clock_ms()
        await session.flush()
    return key


async def add_credits(
    session: AsyncSession,
    account_id: str,
    micro_usd: int,
    *,
    transfer_id: str | None = None,
    now_ms: int | None = None,
) -> int:
    """Top up the account's wallet with ``micro_usd`` (> 0); return its new available balance.

    A top-up transfer from the world account: concurrent calls never lose an addition. With a
    ``transfer_id`` the top-up happens at most once (a repeat adds nothing; the same id with
    another amount raises :class:`coordinator.ledger.IdConflict`). Raises
    :class:`InvalidAccountInput` for a non-positive or too large amount,
    :class:`AccountNotFound` for an unknown account.
    """
    amount = _checked_micro_usd(micro_usd, allow_zero=False)
    await get_account(session, account_id)
    await top_up(
        session,
        account_id,
        amount,
        transfer_id=transfer_id if transfer_id is not None else random_id("topup_"),
        reference="credits added by the operator",
        now_ms=now_ms,
    )
    return (await account_balances(session, account_id)).available_micro_usd


async def list_accounts(session: AsyncSession, *, role: Role | None = None) -> list[Account]:
    """Every account (or every account of ``role``), oldest first."""
    query = select(Account).order_by(Account.created_at_ms, Account.id)
    if role is not None:
        query = query.where(Account.role == role)
    return list((await session.scalars(query)).all())


async def list_api_keys(session: AsyncSession, account_id: str) -> list[ApiKey]:
    """The account's keys, revoked ones included, oldest first (hashes, never raw keys)."""
    query = (
        select(ApiKey)
        .where(ApiKey.account_id == account_id)
        .order_by(ApiKey.created_at_ms, ApiKey.id)
    )
    return list((await session.scalars(query)).all())
