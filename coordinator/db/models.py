"""ORM tables of the coordinator: storage rows, never wire schemas (no protocol message here).

Times are integer unix milliseconds (``*_ms``), like the protocol's timestamps; money is integer
micro-USD (``*_micro_usd``). The schema is created and changed only by the Alembic migrations in
``coordinator/db/migrations`` (see :func:`coordinator.db.migrate`); a change here needs a new
revision there.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Enum,
    ForeignKey,
    LargeBinary,
    MetaData,
    String,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["Account", "ApiKey", "Base", "NodeEnrollment", "Role"]

# Deterministic constraint names, so migrations can name what they alter on both databases.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Role(StrEnum):
    """What an account is for; an account has exactly one role."""

    CUSTOMER = "customer"
    PROVIDER = "provider"
    BUILDER = "builder"
    OPERATOR = "operator"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Account(Base):
    """A customer, provider, builder or operator, with a prepaid credit balance."""

    __tablename__ = "accounts"
    __table_args__ = (CheckConstraint("balance_micro_usd >= 0", name="balance_not_negative"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    role: Mapped[Role] = mapped_column(
        Enum(
            Role,
            name="role",
            native_enum=False,
            create_constraint=True,
            length=16,
            values_callable=lambda roles: [role.value for role in roles],
            validate_strings=True,
        )
    )
    name: Mapped[str] = mapped_column(String(200))
    # A plain balance until settlement lands: it will be replaced by a double-entry ledger
    # (transfers between wallets, earnings, holds and the platform), where a balance is a sum.
    balance_micro_usd: Mapped[int] = mapped_column(BigInteger, default=0)
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

    @property
    def active(self) -> bool:
        return self.revoked_at_ms is None
