"""Settlement's ledger: integer micro-USD, double-entry, append-only, each movement once.

Every movement of money is a :class:`Transfer` between two ledger accounts (customer wallets and
their held parts, provider and builder earnings, platform revenue, the outside world) with a
caller-chosen id that takes effect at most once; corrections are reversing transfers. A request
is paid through a :class:`Hold`::

    pricing = Pricing(node_input_price, node_output_price, surcharge_bps, platform_fee_bps)
    async with sessions.begin() as session:           # before dispatch; 402 on InsufficientFunds
        await place_hold(session, request_id, customer_id,
                         hold_amount_for(pricing, prompt_tokens, max_tokens))
    ...                                               # the job runs
    charge = charge_for(pricing, prompt_tokens, completion_tokens)
    async with sessions.begin() as session:           # after the job (or batched: post_holds)
        await post_hold(session, request_id,
                        credits_for(charge, provider_account_id=..., builder_account_id=...))

A failed or empty request is :func:`release_hold`; a hold nobody resolves (a crash) is returned
by :func:`expire_holds`. :func:`audit` checks every invariant. Every function works inside the
caller's transaction (it never commits) and takes ``now_ms`` (unix milliseconds) to pin time.
Details: docs/settlement.md.
"""

from coordinator.db.models import HoldState, LedgerAccountKind, TransferKind
from coordinator.ledger.audit import DEFAULT_OVERDUE_GRACE_MS, AuditCheck, Violation, audit
from coordinator.ledger.balances import (
    account_balances,
    balance,
    balances_by_account,
    ledger_totals,
    list_transfers,
)
from coordinator.ledger.charges import (
    BPS_PER_PERCENT,
    MAX_RATE_BPS,
    Charge,
    Pricing,
    charge_for,
    credits_for,
    hold_amount_for,
    parse_percent,
)
from coordinator.ledger.errors import (
    HoldExceeded,
    HoldNotFound,
    HoldNotOpen,
    IdConflict,
    InsufficientFunds,
    InvalidLedgerInput,
    LedgerError,
    NotReversible,
    TransferNotFound,
)
from coordinator.ledger.holds import (
    DEFAULT_HOLD_TTL_MS,
    Posting,
    expire_holds,
    get_hold,
    place_hold,
    post_hold,
    post_holds,
    release_hold,
)
from coordinator.ledger.ids import (
    PLATFORM_REVENUE,
    WORLD,
    builder_earnings,
    customer_holds,
    customer_wallet,
    provider_earnings,
)
from coordinator.ledger.payouts import (
    DEFAULT_HOLDBACK_DAYS,
    Payout,
    PayoutStatus,
    pay_out_period,
    period_bounds_ms,
)
from coordinator.ledger.records import AccountBalances, Credit, Hold, Settlement, Transfer
from coordinator.ledger.transfers import get_transfer, reverse_transfer, top_up, transfer

__all__ = [
    "BPS_PER_PERCENT",
    "DEFAULT_HOLDBACK_DAYS",
    "DEFAULT_HOLD_TTL_MS",
    "DEFAULT_OVERDUE_GRACE_MS",
    "MAX_RATE_BPS",
    "PLATFORM_REVENUE",
    "WORLD",
    "AccountBalances",
    "AuditCheck",
    "Charge",
    "Credit",
    "Hold",
    "HoldExceeded",
    "HoldNotFound",
    "HoldNotOpen",
    "HoldState",
    "IdConflict",
    "InsufficientFunds",
    "InvalidLedgerInput",
    "LedgerAccountKind",
    "LedgerError",
    "NotReversible",
    "Payout",
    "PayoutStatus",
    "Posting",
    "Pricing",
    "Settlement",
    "Transfer",
    "TransferKind",
    "TransferNotFound",
    "Violation",
    "account_balances",
    "audit",
    "balance",
    "balances_by_account",
    "builder_earnings",
    "charge_for",
    "credits_for",
    "customer_holds",
    "customer_wallet",
    "expire_holds",
    "get_hold",
    "get_transfer",
    "hold_amount_for",
    "ledger_totals",
    "list_transfers",
    "parse_percent",
    "pay_out_period",
    "period_bounds_ms",
    "place_hold",
    "post_hold",
    "post_holds",
    "provider_earnings",
    "release_hold",
    "reverse_transfer",
    "top_up",
    "transfer",
]
