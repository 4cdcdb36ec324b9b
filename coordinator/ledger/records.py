"""What ledger operations return: frozen values, detached from any database session."""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.db.models import HoldState, TransferKind

__all__ = ["AccountBalances", "Credit", "Hold", "Settlement", "Transfer"]


@dataclass(frozen=True, slots=True)
class Transfer:
    """One movement of ``amount_micro_usd`` from ``debit_account_id`` to ``credit_account_id``."""

    id: str
    kind: TransferKind
    debit_account_id: str
    credit_account_id: str
    amount_micro_usd: int
    reference: str | None
    hold_id: str | None
    reverses_id: str | None
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class Hold:
    """Money held from ``account_id``'s wallet until posted, released or expired."""

    id: str
    account_id: str
    amount_micro_usd: int
    posted_micro_usd: int
    state: HoldState
    reference: str | None
    created_at_ms: int
    expires_at_ms: int
    resolved_at_ms: int | None

    @property
    def released_micro_usd(self) -> int:
        """What went back to the wallet (0 while open)."""
        if self.state is HoldState.OPEN:
            return 0
        return self.amount_micro_usd - self.posted_micro_usd


@dataclass(frozen=True, slots=True)
class Credit:
    """One part of a posted hold: ``amount_micro_usd`` (>= 0) to ledger account
    ``account_id`` (e.g. :func:`~coordinator.ledger.provider_earnings` of the node's Provider)."""

    account_id: str
    amount_micro_usd: int


@dataclass(frozen=True, slots=True)
class Settlement:
    """A posted hold: the resolved hold and the credits it paid, by account id, in id order
    (credits to one account are merged, zero credits left out)."""

    hold: Hold
    credits: tuple[Credit, ...]

    @property
    def charged_micro_usd(self) -> int:
        return self.hold.posted_micro_usd

    @property
    def released_micro_usd(self) -> int:
        return self.hold.released_micro_usd


@dataclass(frozen=True, slots=True)
class AccountBalances:
    """The money of one coordinator account, micro-USD."""

    available_micro_usd: int  # the wallet: what new requests may hold
    held_micro_usd: int  # held for requests in flight
    provider_earnings_micro_usd: int
    builder_earnings_micro_usd: int

    @property
    def credits_micro_usd(self) -> int:
        """Available plus held: the customer's credits before requests in flight settle."""
        return self.available_micro_usd + self.held_micro_usd
