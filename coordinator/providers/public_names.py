"""A Provider's public display name: opt-in, shown next to its anonymised ``pv_`` handle.

Without one a Provider is only its handle (:func:`coordinator.routing.provider_handle`) on the
marketplace. A name is 2 to 60 printable characters after trimming, unique among public names
case-insensitively, and may not look like an id (``pv_``, ``nd_``, ``acc_``). Clearing it makes
the Provider anonymous again. The handle never changes, so ``provider.only`` / ``order`` keep
working either way. Like :mod:`coordinator.providers.prices`, every function works inside the
caller's transaction (it flushes, never commits); the live map the pages read is the node
registry's (:meth:`coordinator.hub.nodes.NodeRegistry.use_public_names`).
"""

from __future__ import annotations

import time

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.models import Account, ProviderPublicName, Role
from coordinator.providers.errors import InvalidPublicName, NotAProvider, PublicNameTaken

__all__ = [
    "MAX_PUBLIC_NAME_CHARS",
    "MIN_PUBLIC_NAME_CHARS",
    "all_public_names",
    "checked_public_name",
    "clear_public_name",
    "public_name_of",
    "set_public_name",
]

MIN_PUBLIC_NAME_CHARS = 2
MAX_PUBLIC_NAME_CHARS = 60
_ID_PREFIXES = ("pv_", "nd_", "acc_")


def _key(name: str) -> str:
    return name.casefold()  # at most 3 characters per character: fits String(180)


def checked_public_name(raw: str) -> str:
    """``raw`` trimmed, or :class:`InvalidPublicName` saying what is wrong with it."""
    name = raw.strip()
    if not MIN_PUBLIC_NAME_CHARS <= len(name) <= MAX_PUBLIC_NAME_CHARS:
        raise InvalidPublicName(
            f"a public name is {MIN_PUBLIC_NAME_CHARS} to {MAX_PUBLIC_NAME_CHARS} characters"
        )
    if not name.isprintable():
        raise InvalidPublicName("a public name is printable characters only (no tabs or newlines)")
    if name.casefold().startswith(_ID_PREFIXES):
        raise InvalidPublicName(
            "a public name may not start with pv_, nd_ or acc_: it would look like an id"
        )
    return name


async def _provider(session: AsyncSession, account_id: str) -> Account:
    account = await session.get(Account, account_id)
    if account is None or account.role is not Role.PROVIDER:
        raise NotAProvider("only a Provider account has a public name")
    return account


async def public_name_of(session: AsyncSession, account_id: str) -> str | None:
    """The Provider's public name, or None (anonymous)."""
    row = await session.get(ProviderPublicName, account_id, populate_existing=True)
    return row.name if row is not None else None


async def all_public_names(session: AsyncSession) -> dict[str, str]:
    """Every published name: Provider account id -> name."""
    rows = await session.execute(select(ProviderPublicName.account_id, ProviderPublicName.name))
    return {str(account_id): str(name) for account_id, name in rows}


async def set_public_name(
    session: AsyncSession, account_id: str, raw: str, *, now_ms: int | None = None
) -> str:
    """Publish ``raw`` (trimmed) as the Provider's name, replacing any before; returns it.

    Raises :class:`NotAProvider`, :class:`InvalidPublicName`, :class:`PublicNameTaken` when
    another Provider published the same name (in any case).
    """
    name = checked_public_name(raw)
    await _provider(session, account_id)
    key = _key(name)
    at_ms = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    holder = await session.scalar(
        select(ProviderPublicName.account_id).where(ProviderPublicName.name_key == key)
    )
    if holder is not None and holder != account_id:
        raise PublicNameTaken(f"the public name {name!r} is taken: choose another")
    try:
        # A savepoint: a concurrent writer of the same name must not abort the caller's
        # transaction; the unique name_key decides who gets it.
        async with session.begin_nested():
            row = await session.get(ProviderPublicName, account_id)
            if row is None:
                session.add(
                    ProviderPublicName(
                        account_id=account_id, name=name, name_key=key, updated_at_ms=at_ms
                    )
                )
            else:
                row.name, row.name_key, row.updated_at_ms = name, key, at_ms
    except IntegrityError:
        raise PublicNameTaken(f"the public name {name!r} is taken: choose another") from None
    return name


async def clear_public_name(session: AsyncSession, account_id: str) -> bool:
    """Go back to anonymous; returns whether a name was published."""
    result = await session.execute(
        delete(ProviderPublicName).where(ProviderPublicName.account_id == account_id)
    )
    return bool(getattr(result, "rowcount", 0))
