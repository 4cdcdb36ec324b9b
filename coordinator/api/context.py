"""What every request handler needs: the process's services and who is calling.

Handlers in :mod:`coordinator.app` and the other API modules read the :class:`Services` from the
Litestar app state (:func:`services_of`) and authenticate the caller's bearer key
(:func:`caller_of`, raising the OpenAI-style 401).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from litestar import Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.accounts.invites import SignupPolicy
from coordinator.api.completions import CompletionSettings
from coordinator.api.errors import ApiError
from coordinator.apps import DEFAULT_MAX_SURCHARGE_BPS
from coordinator.billing import AppTerms, Billing
from coordinator.catalogue import LiveCatalogue, ModelTokenizers
from coordinator.hub.dispatch import Dispatcher
from coordinator.hub.hub import NodeHub
from coordinator.hub.nodes import NodeRegistry
from coordinator.observe import Observer
from protocol import EnrollmentStatement

__all__ = [
    "AccountsGateway",
    "AppTermsLookup",
    "Caller",
    "Services",
    "caller_of",
    "services_of",
]


class AppTermsLookup(Protocol):
    async def __call__(self, app_id: str) -> AppTerms:
        """The app's Builder and current surcharge version; raises ApiError when unusable."""
        ...


@dataclass(frozen=True, slots=True)
class Caller:
    account_id: str
    role: Literal["customer", "provider", "builder", "operator"]
    name: str
    api_key_id: str | None = None
    app_id: str | None = None
    """Set when the key is an app-scoped key a customer issued for a Builder's app."""


class AccountsGateway(Protocol):
    """What the web layer needs from accounts (implemented over the database in accounts)."""

    async def authenticate(self, raw_key: str) -> Caller | None: ...

    async def enroll_node(
        self, caller: Caller, statement: EnrollmentStatement, proof: bytes, now_ms: int
    ) -> str:
        """Bind the node key to the caller (a Provider); returns the node id.

        Raises ApiError (400 bad proof, 403 wrong role, 409 key taken) on refusal.
        """
        ...

    async def enrollment_token_account(self, raw_token: str, now_ms: int) -> tuple[str, int]:
        """The Provider account a one-time enrollment token enrolls into, and when the token
        expires (unix ms). Raises ApiError 401 (unknown, used, expired or revoked token)."""
        ...

    async def enroll_node_with_token(
        self, raw_token: str, statement: EnrollmentStatement, proof: bytes, now_ms: int
    ) -> tuple[str, str]:
        """Use the one-time token to bind the node key to the token's Provider; returns the node
        id and the account id. Raises ApiError like :meth:`enroll_node`, and 401 for a token
        that cannot be used."""
        ...


@dataclass
class Services:
    accounts: AccountsGateway
    hub: NodeHub
    registry: NodeRegistry
    dispatcher: Dispatcher
    completion: CompletionSettings = field(default_factory=CompletionSettings)
    sessions: async_sessionmaker[AsyncSession] | None = None
    """The database, for handlers that read or write it directly (apps, generations)."""
    billing: Billing | None = None
    """Charging requests; ``None`` serves them unbilled (in-process tests of other parts)."""
    app_terms: AppTermsLookup | None = None
    """The Builder app terms of an app-scoped key (apps wiring); ``None``: no apps."""
    max_surcharge_bps: int = DEFAULT_MAX_SURCHARGE_BPS
    """The operator's maximum Builder surcharge, basis points of the provider price."""
    catalogue: LiveCatalogue = field(default_factory=LiveCatalogue)
    """The model catalogue in force (the registry names offers through it)."""
    tokenizers: ModelTokenizers | None = None
    """Which models the coordinator counts tokens for (shown in the catalogue)."""
    observer: Observer = field(default_factory=Observer)
    """Metrics and the per-request log line."""
    signup: SignupPolicy = field(default_factory=SignupPolicy)
    """Self-serve sign-up on ``/signup`` (off unless the operator's settings say otherwise)."""


def services_of(request: Request[Any, Any, Any]) -> Services:
    services: Services = request.app.state.services
    return services


async def caller_of(request: Request[Any, Any, Any]) -> Caller:
    """The authenticated caller; raises ApiError 401 without a valid bearer key."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401, "missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key"
        )
    caller = await services_of(request).accounts.authenticate(token.strip())
    if caller is None:
        raise ApiError(401, "invalid or revoked API key", code="invalid_api_key")
    return caller
