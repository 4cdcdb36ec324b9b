"""Ledger account ids and caller-supplied movement ids: pure functions, no I/O.

Every coordinator account may own ledger accounts, named after it::

    wallet:<account id>        its prepaid credits (customer wallet)
    wallet:<account id>:held   the part of those credits held for requests in flight
    provider:<account id>      what it earned serving requests as a Provider
    builder:<account id>       what it earned as a Builder (app surcharges)
    platform                   the platform's revenue (fees)
    world                      outside the ledger: top-ups come from it, payouts go to it

Ledger accounts are created by the first movement that credits them. Operations update account
rows in ascending id order, and a wallet sorts before its held part, so concurrent transactions
never wait on each other in a cycle (no deadlocks on PostgreSQL).

Ids of transfers and holds are chosen by the caller (a request id makes a good hold id) and make
each movement take effect once. They are 1 to 100 printable ASCII characters without spaces and
without ``#``, which the ledger keeps for the transfers it derives (``<hold id>#release``).
"""

from __future__ import annotations

import re

from coordinator.db.models import LedgerAccountKind
from coordinator.ledger.errors import InvalidLedgerInput

__all__ = [
    "MAX_ID_CHARS",
    "PLATFORM_REVENUE",
    "WORLD",
    "builder_earnings",
    "checked_id",
    "customer_holds",
    "customer_wallet",
    "owner_and_kind",
    "provider_earnings",
]

MAX_ID_CHARS = 100
PLATFORM_REVENUE = "platform"
WORLD = "world"
_HELD_SUFFIX = ":held"
_ID_TEXT = re.compile(rf"[!-\"$-~]{{1,{MAX_ID_CHARS}}}")  # printable ASCII but space and '#'
_OWNER_TEXT = re.compile(r"[A-Za-z0-9_-]{1,40}")


def _owner(account_id: str) -> str:
    if not isinstance(account_id, str) or _OWNER_TEXT.fullmatch(account_id) is None:
        raise InvalidLedgerInput(f"invalid account id {account_id!r}")
    return account_id


def customer_wallet(account_id: str) -> str:
    """The id of ``account_id``'s wallet: its credits, available to spend."""
    return f"wallet:{_owner(account_id)}"


def customer_holds(account_id: str) -> str:
    """The id of the account holding ``account_id``'s credits held for requests in flight."""
    return f"wallet:{_owner(account_id)}{_HELD_SUFFIX}"


def provider_earnings(account_id: str) -> str:
    """The id of Provider ``account_id``'s earnings."""
    return f"provider:{_owner(account_id)}"


def builder_earnings(account_id: str) -> str:
    """The id of Builder ``account_id``'s earnings (surcharges of their apps)."""
    return f"builder:{_owner(account_id)}"


def owner_and_kind(ledger_account_id: str) -> tuple[str | None, LedgerAccountKind]:
    """``"provider:acc_x"`` -> ``("acc_x", PROVIDER_EARNINGS)``: who owns an id, and its kind.

    Raises :class:`InvalidLedgerInput` for a string that is no ledger account id.
    """
    if ledger_account_id == PLATFORM_REVENUE:
        return None, LedgerAccountKind.PLATFORM_REVENUE
    if ledger_account_id == WORLD:
        return None, LedgerAccountKind.WORLD
    prefix, _, rest = ledger_account_id.partition(":")
    if prefix == "wallet" and rest.endswith(_HELD_SUFFIX):
        owner, kind = rest.removesuffix(_HELD_SUFFIX), LedgerAccountKind.CUSTOMER_HOLDS
    else:
        kinds = {
            "wallet": LedgerAccountKind.CUSTOMER_WALLET,
            "provider": LedgerAccountKind.PROVIDER_EARNINGS,
            "builder": LedgerAccountKind.BUILDER_EARNINGS,
        }
        if prefix not in kinds:
            raise InvalidLedgerInput(f"{ledger_account_id!r} is not a ledger account id")
        owner, kind = rest, kinds[prefix]
    if _OWNER_TEXT.fullmatch(owner) is None:
        raise InvalidLedgerInput(f"{ledger_account_id!r} is not a ledger account id")
    return owner, kind


def checked_id(value: str, what: str) -> str:
    """``value`` if it is a valid caller-supplied ``what`` id, else :class:`InvalidLedgerInput`."""
    if not isinstance(value, str) or _ID_TEXT.fullmatch(value) is None:
        raise InvalidLedgerInput(
            f"invalid {what} id {value!r}: 1 to {MAX_ID_CHARS} printable ASCII characters,"
            " no spaces, no '#'"
        )
    return value
