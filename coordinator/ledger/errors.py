"""Typed errors of the ledger. The web layer maps them to HTTP statuses at the edge.

Hierarchy::

    LedgerError                  (root)
    ├── InvalidLedgerInput       a malformed id, an amount out of range, bad parts or rates
    │                            (also a ValueError)
    ├── InsufficientFunds        the account's available balance is below the amount (-> 402)
    ├── IdConflict               an id already used for a different movement
    ├── HoldNotFound             no hold with that id
    ├── HoldNotOpen              the hold was already resolved otherwise (.state says how)
    ├── HoldExceeded             posting more than the hold holds
    ├── TransferNotFound         no transfer with that id
    └── NotReversible            a hold movement, a reversal, or a transfer reversed already

A ledger function that raises one of these has written nothing: the caller's transaction may go
on. Database errors (SQLAlchemy's) are not wrapped; after one, roll the transaction back.
"""

from __future__ import annotations

__all__ = [
    "HoldExceeded",
    "HoldNotFound",
    "HoldNotOpen",
    "IdConflict",
    "InsufficientFunds",
    "InvalidLedgerInput",
    "LedgerError",
    "NotReversible",
    "TransferNotFound",
]


class LedgerError(Exception):
    """Root of every error the ledger raises on purpose."""


class InvalidLedgerInput(LedgerError, ValueError):
    pass


class InsufficientFunds(LedgerError):
    """``available_micro_usd`` (what the account had) is less than ``requested_micro_usd``."""

    def __init__(self, account_id: str, available_micro_usd: int, requested_micro_usd: int):
        super().__init__(
            f"insufficient funds in {account_id}: {available_micro_usd} micro-USD available,"
            f" {requested_micro_usd} needed"
        )
        self.account_id = account_id
        self.available_micro_usd = available_micro_usd
        self.requested_micro_usd = requested_micro_usd


class IdConflict(LedgerError):
    pass


class HoldNotFound(LedgerError):
    pass


class HoldNotOpen(LedgerError):
    """The hold is ``state`` already (a :class:`~coordinator.db.models.HoldState` value)."""

    def __init__(self, message: str, state: str):
        super().__init__(message)
        self.state = state


class HoldExceeded(LedgerError):
    pass


class TransferNotFound(LedgerError):
    pass


class NotReversible(LedgerError):
    pass
