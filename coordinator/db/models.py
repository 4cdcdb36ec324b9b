"""ORM tables of the coordinator: storage rows, never wire schemas (no protocol message here).

Times are integer unix milliseconds (``*_ms``), like the protocol's timestamps; money is integer
micro-USD (``*_micro_usd``). The schema is created and changed only by the Alembic migrations in
``coordinator/db/migrations`` (see :func:`coordinator.db.migrate`); a change here needs a new
revision there.

The ``app*`` tables are written only by :mod:`coordinator.apps`: surcharge versions are
append-only (a change is a new version), so a request that recorded a version keeps its rate.

The ``ledger_*`` tables are written only by :mod:`coordinator.ledger`, which keeps their
invariants (docs/settlement.md): transfers are append-only, and an account's cached balance
changes in the same transaction as the transfers that move it.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Account",
    "ApiKey",
    "App",
    "AppAuthorization",
    "AppSurchargeVersion",
    "Base",
    "ConsoleSession",
    "EnrollmentToken",
    "HoldState",
    "InviteCode",
    "LedgerAccount",
    "LedgerAccountKind",
    "LedgerHold",
    "LedgerTransfer",
    "NodeEnrollment",
    "ProviderPrice",
    "Role",
    "TransferKind",
]

# Deterministic constraint names, so migrations can name what they alter on both databases.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# 100 %: the most any surcharge row may hold (coordinator.ledger.MAX_RATE_BPS, which Pricing
# accepts). The operator's maximum, enforced by coordinator.apps, is at most this.
_MAX_SURCHARGE_BPS = 10_000


class Role(StrEnum):
    """What an account is for; an account has exactly one role."""

    CUSTOMER = "customer"
    PROVIDER = "provider"
    BUILDER = "builder"
    OPERATOR = "operator"


class LedgerAccountKind(StrEnum):
    """What a ledger account holds (see :mod:`coordinator.ledger.accounts` for the ids)."""

    CUSTOMER_WALLET = "customer_wallet"  # prepaid credits an account may spend
    CUSTOMER_HOLDS = "customer_holds"  # the part of a wallet held for requests in flight
    PROVIDER_EARNINGS = "provider_earnings"
    BUILDER_EARNINGS = "builder_earnings"
    PLATFORM_REVENUE = "platform_revenue"
    WORLD = "world"  # outside the ledger: top-ups come from it, payouts go to it


class TransferKind(StrEnum):
    """Why money moved. Only ``top_up``, ``payout`` and ``adjustment`` are made directly; the
    others are made by the hold operations and by :func:`coordinator.ledger.reverse_transfer`."""

    TOP_UP = "top_up"
    HOLD = "hold"
    POST = "post"
    RELEASE = "release"
    EXPIRE = "expire"
    PAYOUT = "payout"
    REVERSAL = "reversal"
    ADJUSTMENT = "adjustment"


class HoldState(StrEnum):
    """A hold is ``open`` until it is resolved, exactly once, by one of the other three."""

    OPEN = "open"
    POSTED = "posted"
    RELEASED = "released"
    EXPIRED = "expired"


def _string_enum(enum: type[StrEnum], name: str, length: int) -> Enum:
    """A VARCHAR column holding the enum's values, with a CHECK on both databases."""
    return Enum(
        enum,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=length,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Account(Base):
    """A customer, provider, builder or operator. Its money lives in the ledger's accounts
    (:func:`coordinator.ledger.account_balances`), never in this row."""

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    role: Mapped[Role] = mapped_column(_string_enum(Role, "role", 16))
    name: Mapped[str] = mapped_column(String(200))
    created_at_ms: Mapped[int] = mapped_column(BigInteger)


class ApiKey(Base):
    """An API key of an account. Only the SHA-256 of the key is stored, never the key."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    # The first characters of the key (``sk-sai-XXXXXXXX``): enough for a person to tell keys
    # apart in a list, far too few to guess the rest. Not unique.
    prefix: Mapped[str] = mapped_column(String(32), index=True)
    key_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    revoked_at_ms: Mapped[int | None] = mapped_column(BigInteger, default=None)
    last_used_at_ms: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # Set for an app-scoped key: a customer's key bound to the Builder app the customer
    # authorised. It authenticates only while that authorization stands and the app is enabled.
    app_id: Mapped[str | None] = mapped_column(ForeignKey("apps.id"), default=None)

    @property
    def active(self) -> bool:
        return self.revoked_at_ms is None


class NodeEnrollment(Base):
    """A node key bound to the Provider account that enrolled it."""

    __tablename__ = "node_enrollments"

    # protocol.PublicKey(public_key).node_id: derived from the key, so it is stable and unique.
    node_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    enrolled_at_ms: Mapped[int] = mapped_column(BigInteger)
    revoked_at_ms: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # The account id that revoked the node, or "operator" for the operator's tools.
    revoked_by: Mapped[str | None] = mapped_column(String(40), default=None)
    # Set while an operator keeps the node from new jobs (it stays connected; restoring clears
    # all three). Suspension is not revocation: the key stays enrolled.
    suspended_at_ms: Mapped[int | None] = mapped_column(BigInteger, default=None)
    suspended_by: Mapped[str | None] = mapped_column(String(40), default=None)
    suspended_reason: Mapped[str | None] = mapped_column(String(500), default=None)

    @property
    def active(self) -> bool:
        return self.revoked_at_ms is None


class ConsoleSession(Base):
    """A browser's login to the web consoles, made with one of the account's API keys.

    Only the SHA-256 of the cookie's token is stored. The session dies with its key (revoking
    the key logs the browser out), at ``expires_at_ms``, or at logout.
    """

    __tablename__ = "console_sessions"

    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    # Forms carry it back (synchroniser token); it never leaves the server otherwise.
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    expires_at_ms: Mapped[int] = mapped_column(BigInteger, index=True)


class LedgerAccount(Base):
    """One account of the double-entry ledger, with its balance cached.

    ``balance_micro_usd`` is credits minus debits: what the account holds. It changes only in the
    transaction that inserts the transfers moving it, so reads are one row. Only the world account
    may go below zero (it is money that came in from outside); the CHECK makes the database itself
    refuse any other negative balance.
    """

    __tablename__ = "ledger_accounts"
    __table_args__ = (
        CheckConstraint("kind = 'world' OR balance_micro_usd >= 0", name="balance_not_negative"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[LedgerAccountKind] = mapped_column(
        _string_enum(LedgerAccountKind, "ledger_account_kind", 24)
    )
    # The coordinator account it belongs to; None for the platform and world accounts.
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    balance_micro_usd: Mapped[int] = mapped_column(BigInteger)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)


class LedgerHold(Base):
    """Money held from a customer's wallet for one request, until posted, released or expired.

    While open, ``amount_micro_usd`` sits in the customer's holds account. Resolving it moves that
    amount out again exactly once: to the payees (``posted_micro_usd``) and back to the wallet
    (the rest).
    """

    __tablename__ = "ledger_holds"
    __table_args__ = (
        CheckConstraint("amount_micro_usd >= 0", name="amount_not_negative"),
        CheckConstraint(
            "posted_micro_usd >= 0 AND posted_micro_usd <= amount_micro_usd",
            name="posted_within_amount",
        ),
        CheckConstraint("state = 'posted' OR posted_micro_usd = 0", name="posted_only_if_posted"),
        CheckConstraint("(state = 'open') = (resolved_at_ms IS NULL)", name="resolved_unless_open"),
        # The expiry sweep: open holds, oldest expiry first.
        Index("ix_ledger_holds_state_expires_at_ms", "state", "expires_at_ms"),
    )

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    # The coordinator account whose wallet the money is held from.
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    amount_micro_usd: Mapped[int] = mapped_column(BigInteger)
    posted_micro_usd: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[HoldState] = mapped_column(_string_enum(HoldState, "hold_state", 16))
    reference: Mapped[str | None] = mapped_column(String(200), index=True)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    expires_at_ms: Mapped[int] = mapped_column(BigInteger)
    resolved_at_ms: Mapped[int | None] = mapped_column(BigInteger)


class LedgerTransfer(Base):
    """One movement of money: ``amount_micro_usd`` from the debit to the credit account.

    Append-only: a row is never updated or deleted; a correction is another transfer that names
    the one it reverses (at most one reversal per transfer).
    """

    __tablename__ = "ledger_transfers"
    __table_args__ = (
        CheckConstraint("amount_micro_usd > 0", name="amount_positive"),
        CheckConstraint("debit_account_id <> credit_account_id", name="two_accounts"),
    )

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[TransferKind] = mapped_column(_string_enum(TransferKind, "transfer_kind", 16))
    debit_account_id: Mapped[str] = mapped_column(ForeignKey("ledger_accounts.id"), index=True)
    credit_account_id: Mapped[str] = mapped_column(ForeignKey("ledger_accounts.id"), index=True)
    amount_micro_usd: Mapped[int] = mapped_column(BigInteger)
    hold_id: Mapped[str | None] = mapped_column(ForeignKey("ledger_holds.id"), index=True)
    reverses_id: Mapped[str | None] = mapped_column(ForeignKey("ledger_transfers.id"), unique=True)
    reference: Mapped[str | None] = mapped_column(String(200), index=True)
    created_at_ms: Mapped[int] = mapped_column(BigInteger, index=True)


class App(Base):
    """A Builder's app: traffic through its app-scoped keys is attributed to it and pays its
    surcharge (the newest :class:`AppSurchargeVersion`) to the Builder."""

    __tablename__ = "apps"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    builder_account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    # A disabled app takes no new requests: its keys stop authenticating, its surcharge cannot
    # change and no customer may authorise it. Nothing is deleted.
    disabled_at_ms: Mapped[int | None] = mapped_column(BigInteger, default=None)

    @property
    def enabled(self) -> bool:
        return self.disabled_at_ms is None


class AppSurchargeVersion(Base):
    """One version of an app's surcharge, in basis points of the provider price.

    Append-only: versions are 1, 2, ... per app and a row is never updated, so the version a
    request recorded always says what it was charged.
    """

    __tablename__ = "app_surcharges"
    __table_args__ = (
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint(
            f"surcharge_bps >= 0 AND surcharge_bps <= {_MAX_SURCHARGE_BPS}",
            name="surcharge_bps_within_bounds",
        ),
    )

    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    surcharge_bps: Mapped[int] = mapped_column(Integer)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)


class AppAuthorization(Base):
    """A customer's consent that an app may call on the customer's account (and bill it).

    At most one is active (``revoked_at_ms`` null) per app and customer; the partial unique
    index makes the database refuse a second. Revoked rows stay as history.
    """

    __tablename__ = "app_authorizations"
    __table_args__ = (
        Index(
            "ix_app_authorizations_one_active",
            "app_id",
            "customer_account_id",
            unique=True,
            sqlite_where=text("revoked_at_ms IS NULL"),
            postgresql_where=text("revoked_at_ms IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id"), index=True)
    customer_account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    revoked_at_ms: Mapped[int | None] = mapped_column(BigInteger, default=None)

    @property
    def active(self) -> bool:
        return self.revoked_at_ms is None


class ProviderPrice(Base):
    """A Provider's own price for one model, in force on all of the Provider's nodes.

    ``model`` is the model's network id (its canonical catalogue id, or the name an uncatalogued
    model is served under). The coordinator applies it to the offers of every node of the
    account in place of the price the node announces, for new jobs; deleting the row falls back
    to the node's own price. Written only by :mod:`coordinator.providers`.
    """

    __tablename__ = "provider_prices"
    __table_args__ = (
        CheckConstraint(
            "price_input_micro_usd_per_1m >= 0 AND price_input_micro_usd_per_1m <= 1000000000000"
            " AND price_output_micro_usd_per_1m >= 0"
            " AND price_output_micro_usd_per_1m <= 1000000000000",
            name="prices_within_bounds",
        ),
    )

    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    model: Mapped[str] = mapped_column(String(256), primary_key=True)
    price_input_micro_usd_per_1m: Mapped[int] = mapped_column(BigInteger)
    price_output_micro_usd_per_1m: Mapped[int] = mapped_column(BigInteger)
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)


class EnrollmentToken(Base):
    """A one-time token that enrolls one node key under a Provider's account.

    Made in the Provider console so the Provider's API key never goes onto a node. Only the
    SHA-256 of the token is stored. It works once (``used_at_ms``), until ``expires_at_ms``,
    unless revoked. Written only by :mod:`coordinator.providers`.
    """

    __tablename__ = "enrollment_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    # ``sai-enroll-XXXXXXXX``: tells tokens apart in a list, far too short to guess the rest.
    prefix: Mapped[str] = mapped_column(String(32))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    expires_at_ms: Mapped[int] = mapped_column(BigInteger)
    used_at_ms: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # The node the token enrolled (set with ``used_at_ms``).
    node_id: Mapped[str | None] = mapped_column(String(40), default=None)
    revoked_at_ms: Mapped[int | None] = mapped_column(BigInteger, default=None)


class InviteCode(Base):
    """An operator's invite code for self-serve sign-up (``SHAREAI_SIGNUP=invite``).

    Only the SHA-256 of the code is stored. It signs up at most ``max_uses`` accounts (``uses``
    counts them, raised by one conditional UPDATE so concurrent sign-ups cannot overspend it),
    until ``expires_at_ms``, unless revoked; ``role`` restricts it to one role (None: any role a
    person may sign up with). Written only by :mod:`coordinator.accounts.invites`.
    """

    __tablename__ = "invite_codes"
    __table_args__ = (CheckConstraint("uses >= 0 AND uses <= max_uses", name="uses_within_limit"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    code_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    # ``sai-invite-XXXXXXXX``: tells codes apart in a list, far too short to guess the rest.
    prefix: Mapped[str] = mapped_column(String(32))
    role: Mapped[Role | None] = mapped_column(_string_enum(Role, "role", 16), default=None)
    max_uses: Mapped[int] = mapped_column(Integer)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    note: Mapped[str] = mapped_column(String(200), default="")
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    expires_at_ms: Mapped[int] = mapped_column(BigInteger)
    revoked_at_ms: Mapped[int | None] = mapped_column(BigInteger, default=None)


class ProviderPublicName(Base):
    """The public display name a Provider chose for the marketplace (opt-in).

    Without a row a Provider is shown only by its anonymised ``pv_`` handle. ``name_key`` is the
    name case-folded, unique, so no two Providers publish names that differ only in case.
    Written only by :mod:`coordinator.providers.public_names`.
    """

    __tablename__ = "provider_public_names"

    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(60))
    name_key: Mapped[str] = mapped_column(String(180), unique=True)  # casefold: <= 3x
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)
