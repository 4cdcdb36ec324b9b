"""Builder apps: registration, versioned surcharges, and customers' authorizations with their
app-scoped keys.

Like :mod:`coordinator.accounts`, every function takes an ``AsyncSession`` and works inside the
caller's transaction (it flushes, never commits)::

    async with sessions.begin() as session:
        details = await register_app(session, builder_id, "Chat Pal", 250, max_surcharge_bps=2000)

Surcharges are integer basis points of the provider price (250 = 2.5 %), at most the operator's
``max_surcharge_bps`` when they are set. They are versioned and append-only: a change is version
n + 1, and :func:`current_surcharge` is what a *new* request uses. The request stores that
version on its usage record, so a later change never touches it (:func:`surcharge_version` reads
a recorded one back). Lowering the operator's maximum does not rewrite existing versions; it
applies to the next registration or change.

Times default to the wall clock; pass ``now_ms`` (unix milliseconds) to pin them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.accounts import MAX_NAME_CHARS, OPERATOR, Revoker, issue_api_key
from coordinator.accounts.keys import random_id
from coordinator.apps.errors import (
    AppDisabled,
    AppNotFound,
    AuthorizationNotFound,
    AuthorizationRevoked,
    InvalidAppInput,
    InvalidSurcharge,
    NotYourApp,
    SurchargeAboveMaximum,
    UnknownAccount,
    WrongRole,
)
from coordinator.db.models import (
    Account,
    ApiKey,
    App,
    AppAuthorization,
    AppSurchargeVersion,
    Role,
)
from coordinator.ledger import BPS_PER_PERCENT, MAX_RATE_BPS, InvalidLedgerInput, parse_percent

__all__ = [
    "DEFAULT_MAX_SURCHARGE_BPS",
    "AppDetails",
    "AppSurcharge",
    "authorize_app",
    "current_surcharge",
    "disable_app",
    "format_percent",
    "get_app",
    "list_apps",
    "list_authorizations",
    "parse_surcharge_percent",
    "register_app",
    "revoke_authorization",
    "set_surcharge",
    "surcharge_version",
]

DEFAULT_MAX_SURCHARGE_BPS = 20 * BPS_PER_PERCENT
"""The operator's maximum surcharge unless configured otherwise: 20 % of the provider price."""


@dataclass(frozen=True, slots=True)
class AppSurcharge:
    """The surcharge of one version of an app, and the Builder it is credited to.

    From :func:`current_surcharge` it is what a new request through the app pays: put
    ``surcharge_bps`` in its :class:`coordinator.ledger.Pricing`, ``builder_account_id`` in
    :func:`coordinator.ledger.credits_for`, and ``app_id`` and ``version`` on its usage record.
    """

    app_id: str
    version: int
    surcharge_bps: int
    builder_account_id: str


@dataclass(frozen=True, slots=True)
class AppDetails:
    """An app with all its surcharge versions, oldest first (never empty)."""

    app: App
    surcharges: tuple[AppSurchargeVersion, ...]

    @property
    def current(self) -> AppSurchargeVersion:
        """The newest version: what new requests pay."""
        return self.surcharges[-1]


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def format_percent(bps: int) -> str:
    """``250`` -> ``"2.5"``, ``2000`` -> ``"20"``: basis points as the shortest exact percent."""
    sign = "-" if bps < 0 else ""
    whole, hundredths = divmod(abs(bps), BPS_PER_PERCENT)
    if not hundredths:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{hundredths:02d}".rstrip("0")


def parse_surcharge_percent(text: str) -> int:
    """``"2.5"`` (or ``"2.5%"``) -> ``250``: a surcharge percentage (0 to 100, at most 2
    decimals) as basis points. Exact, no floats. Does not apply the operator's maximum (the
    service does). Raises :class:`InvalidSurcharge`.
    """
    number = text.strip().removesuffix("%")
    if number.strip().startswith("-"):
        raise InvalidSurcharge(f"a surcharge cannot be negative, got {text!r}")
    try:
        return parse_percent(number)
    except InvalidLedgerInput as error:
        raise InvalidSurcharge(str(error)) from None


def _checked_surcharge(surcharge_bps: int, max_surcharge_bps: int) -> int:
    # The maximum is the operator's configuration: a bad one is a bug, not the Builder's input.
    if (
        not isinstance(max_surcharge_bps, int)
        or isinstance(max_surcharge_bps, bool)
        or not 0 <= max_surcharge_bps <= MAX_RATE_BPS
    ):
        raise ValueError(
            f"max_surcharge_bps must be an integer from 0 to {MAX_RATE_BPS}, not"
            f" {max_surcharge_bps!r}"
        )
    # bool is an int subclass; True basis points is a bug, not a rate.
    if not isinstance(surcharge_bps, int) or isinstance(surcharge_bps, bool):
        raise InvalidSurcharge(f"a surcharge is an integer of basis points, not {surcharge_bps!r}")
    if surcharge_bps < 0:
        raise InvalidSurcharge(f"a surcharge cannot be negative, got {surcharge_bps} bp")
    if surcharge_bps > MAX_RATE_BPS:
        raise InvalidSurcharge(f"a surcharge is at most 100%, got {format_percent(surcharge_bps)}%")
    if surcharge_bps > max_surcharge_bps:
        raise SurchargeAboveMaximum(
            f"a surcharge of {format_percent(surcharge_bps)}% is above this coordinator's"
            f" maximum of {format_percent(max_surcharge_bps)}%",
            surcharge_bps=surcharge_bps,
            max_surcharge_bps=max_surcharge_bps,
        )
    return surcharge_bps


def _checked_name(name: str) -> str:
    if not isinstance(name, str):
        raise InvalidAppInput(f"an app name is a string, not {name!r}")
    name = name.strip()
    if not name:
        raise InvalidAppInput("an app name must not be empty")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidAppInput(f"an app name has at most {MAX_NAME_CHARS} characters")
    if not name.isprintable():
        raise InvalidAppInput("an app name must not contain control characters")
    return name


async def _account_of_role(session: AsyncSession, account_id: str, role: Role, doing: str) -> None:
    account = await session.get(Account, account_id)
    if account is None:
        raise UnknownAccount(f"no account {account_id!r}")
    if account.role is not role:
        raise WrongRole(f"only {role.value} accounts {doing}; this is a {account.role.value}")


async def _app(session: AsyncSession, app_id: str, *, for_update: bool = False) -> App:
    query = select(App).where(App.id == app_id)
    if for_update:
        # PostgreSQL: concurrent changes of one app queue here, so versions stay 1, 2, ...
        # (SQLite ignores FOR UPDATE; its transactions are serialized by BEGIN IMMEDIATE.)
        query = query.with_for_update()
    app = (await session.scalars(query)).one_or_none()
    if app is None:
        raise AppNotFound(f"no app {app_id!r}")
    return app


async def _own_app(
    session: AsyncSession, app_id: str, builder_account_id: str, *, for_update: bool = False
) -> App:
    await _account_of_role(session, builder_account_id, Role.BUILDER, "register and change apps")
    app = await _app(session, app_id, for_update=for_update)
    if app.builder_account_id != builder_account_id:
        raise NotYourApp(f"app {app_id} belongs to another builder account")
    return app


def _refuse_disabled(app: App) -> None:
    if app.disabled_at_ms is not None:
        raise AppDisabled(f"app {app.id} is disabled")


async def _surcharges(session: AsyncSession, app_ids: list[str]) -> list[AppSurchargeVersion]:
    query = (
        select(AppSurchargeVersion)
        .where(AppSurchargeVersion.app_id.in_(app_ids))
        .order_by(AppSurchargeVersion.app_id, AppSurchargeVersion.version)
    )
    return list((await session.scalars(query)).all())


async def register_app(
    session: AsyncSession,
    builder_account_id: str,
    name: str,
    surcharge_bps: int,
    *,
    max_surcharge_bps: int,
    now_ms: int | None = None,
) -> AppDetails:
    """Register an app of the Builder ``builder_account_id`` with surcharge version 1.

    ``name`` is stripped (names need not be unique). Raises :class:`UnknownAccount`,
    :class:`WrongRole` unless the account is a builder, :class:`InvalidAppInput` for a bad name,
    :class:`InvalidSurcharge` for a negative or over-100 % surcharge and
    :class:`SurchargeAboveMaximum` above ``max_surcharge_bps``.
    """
    await _account_of_role(session, builder_account_id, Role.BUILDER, "register apps")
    checked_name = _checked_name(name)
    bps = _checked_surcharge(surcharge_bps, max_surcharge_bps)
    at_ms = now_ms if now_ms is not None else _wall_clock_ms()
    app = App(
        id=random_id("app_"),
        builder_account_id=builder_account_id,
        name=checked_name,
        created_at_ms=at_ms,
    )
    session.add(app)
    await session.flush()  # the surcharge's foreign key needs the app row first
    first = AppSurchargeVersion(app_id=app.id, version=1, surcharge_bps=bps, created_at_ms=at_ms)
    session.add(first)
    await session.flush()
    return AppDetails(app=app, surcharges=(first,))


async def set_surcharge(
    session: AsyncSession,
    app_id: str,
    builder_account_id: str,
    surcharge_bps: int,
    *,
    max_surcharge_bps: int,
    now_ms: int | None = None,
) -> int:
    """Change the app's surcharge; return the version new requests will use.

    A change appends version n + 1; setting the current rate again changes nothing and returns
    the current version. Requests that recorded an older version keep it. Raises
    :class:`UnknownAccount`, :class:`WrongRole`, :class:`AppNotFound`, :class:`NotYourApp`,
    :class:`AppDisabled`, :class:`InvalidSurcharge` and :class:`SurchargeAboveMaximum`.
    """
    app = await _own_app(session, app_id, builder_account_id, for_update=True)
    _refuse_disabled(app)
    bps = _checked_surcharge(surcharge_bps, max_surcharge_bps)
    newest = (
        await session.scalars(
            select(AppSurchargeVersion)
            .where(AppSurchargeVersion.app_id == app_id)
            .order_by(AppSurchargeVersion.version.desc())
            .limit(1)
        )
    ).one()
    if newest.surcharge_bps == bps:
        return newest.version
    session.add(
        AppSurchargeVersion(
            app_id=app_id,
            version=newest.version + 1,
            surcharge_bps=bps,
            created_at_ms=now_ms if now_ms is not None else _wall_clock_ms(),
        )
    )
    await session.flush()
    return newest.version + 1


async def get_app(session: AsyncSession, app_id: str) -> AppDetails:
    """The app and its surcharge versions, whoever owns it. Raises :class:`AppNotFound`."""
    app = await _app(session, app_id)
    return AppDetails(app=app, surcharges=tuple(await _surcharges(session, [app_id])))


async def list_apps(session: AsyncSession, builder_account_id: str) -> list[AppDetails]:
    """The Builder's apps, disabled ones included, oldest first, each with its versions.

    Raises :class:`UnknownAccount` and :class:`WrongRole` unless the account is a builder.
    """
    await _account_of_role(session, builder_account_id, Role.BUILDER, "have apps")
    apps = list(
        (
            await session.scalars(
                select(App)
                .where(App.builder_account_id == builder_account_id)
                .order_by(App.created_at_ms, App.id)
            )
        ).all()
    )
    versions: dict[str, list[AppSurchargeVersion]] = {app.id: [] for app in apps}
    for version in await _surcharges(session, list(versions)):
        versions[version.app_id].append(version)
    return [AppDetails(app=app, surcharges=tuple(versions[app.id])) for app in apps]


async def current_surcharge(session: AsyncSession, app_id: str) -> AppSurcharge:
    """The surcharge a new request through ``app_id`` pays: the newest version (one query).

    Store its ``version`` on the request's usage record. Raises :class:`AppNotFound` and
    :class:`AppDisabled` (a disabled app takes no new requests).
    """
    row = (
        await session.execute(
            select(
                App.builder_account_id,
                App.disabled_at_ms,
                AppSurchargeVersion.version,
                AppSurchargeVersion.surcharge_bps,
            )
            .join(AppSurchargeVersion, AppSurchargeVersion.app_id == App.id)
            .where(App.id == app_id)
            .order_by(AppSurchargeVersion.version.desc())
            .limit(1)
        )
    ).one_or_none()
    if row is None:
        raise AppNotFound(f"no app {app_id!r}")
    builder_account_id, disabled_at_ms, version, bps = row
    if disabled_at_ms is not None:
        raise AppDisabled(f"app {app_id} is disabled")
    return AppSurcharge(app_id, version, bps, builder_account_id)


async def surcharge_version(session: AsyncSession, app_id: str, version: int) -> AppSurcharge:
    """Version ``version`` of the app's surcharge, as a request that recorded it was charged
    (disabled apps included). Raises :class:`AppNotFound` for an unknown app or version."""
    row = (
        await session.execute(
            select(App.builder_account_id, AppSurchargeVersion.surcharge_bps)
            .join(AppSurchargeVersion, AppSurchargeVersion.app_id == App.id)
            .where(App.id == app_id, AppSurchargeVersion.version == version)
        )
    ).one_or_none()
    if row is None:
        raise AppNotFound(f"no surcharge version {version} of app {app_id!r}")
    builder_account_id, bps = row
    return AppSurcharge(app_id, version, bps, builder_account_id)


async def disable_app(
    session: AsyncSession, app_id: str, *, by: Revoker, now_ms: int | None = None
) -> App:
    """Disable the app: its keys stop authenticating, and it can no longer be authorised or
    have its surcharge changed. Disabling twice changes nothing (the first time is kept).

    ``by`` is the app's Builder, an operator account, or :data:`coordinator.accounts.OPERATOR`
    (the operator's tools). Raises :class:`AppNotFound`, :class:`UnknownAccount` and
    :class:`NotYourApp` for any other account.
    """
    app = await _app(session, app_id, for_update=True)
    if by is not OPERATOR:
        account = await session.get(Account, by)
        if account is None:
            raise UnknownAccount(f"no account {by!r}")
        if account.role is not Role.OPERATOR and account.id != app.builder_account_id:
            raise NotYourApp(f"app {app_id} belongs to another builder account")
    if app.disabled_at_ms is None:
        app.disabled_at_ms = now_ms if now_ms is not None else _wall_clock_ms()
        await session.flush()
    return app


async def _active_authorization(
    session: AsyncSession, customer_account_id: str, app_id: str
) -> AppAuthorization | None:
    query = select(AppAuthorization).where(
        AppAuthorization.app_id == app_id,
        AppAuthorization.customer_account_id == customer_account_id,
        AppAuthorization.revoked_at_ms.is_(None),
    )
    return (await session.scalars(query)).one_or_none()


async def authorize_app(
    session: AsyncSession, customer_account_id: str, app_id: str, *, now_ms: int | None = None
) -> tuple[AppAuthorization, str]:
    """The customer authorises the app; return the authorization and a new app-scoped key.

    The raw key exists only in the return value: hand it to the app once. Requests with it are
    the customer's (billed to the customer's wallet) and attributed to the app. Authorising an
    app that is already authorised keeps that authorization and issues one more key for it.
    Raises :class:`UnknownAccount`, :class:`WrongRole` unless the account is a customer,
    :class:`AppNotFound` and :class:`AppDisabled`.
    """
    await _account_of_role(session, customer_account_id, Role.CUSTOMER, "authorise apps")
    app = await _app(session, app_id)
    _refuse_disabled(app)
    at_ms = now_ms if now_ms is not None else _wall_clock_ms()
    authorization = await _active_authorization(session, customer_account_id, app_id)
    if authorization is None:
        authorization = AppAuthorization(
            id=random_id("auth_"),
            app_id=app_id,
            customer_account_id=customer_account_id,
            created_at_ms=at_ms,
        )
        try:
            # A savepoint: losing a race with a concurrent authorization of the same app (the
            # partial unique index refuses a second active one) must not abort the caller.
            async with session.begin_nested():
                session.add(authorization)
        except IntegrityError:
            authorization = await _active_authorization(session, customer_account_id, app_id)
            if authorization is None:
                raise
    raw_key = await issue_api_key(session, customer_account_id, app_id=app_id, now_ms=at_ms)
    return authorization, raw_key


async def revoke_authorization(
    session: AsyncSession, customer_account_id: str, app_id: str, *, now_ms: int | None = None
) -> AppAuthorization:
    """Revoke the customer's authorization of the app and every app-scoped key it issued for
    it; return the authorization. Works on disabled apps too.

    Raises :class:`UnknownAccount`, :class:`WrongRole` unless the account is a customer,
    :class:`AppNotFound`, :class:`AuthorizationRevoked` when the only authorizations left are
    revoked already, and :class:`AuthorizationNotFound` when there never was one.
    """
    await _account_of_role(session, customer_account_id, Role.CUSTOMER, "authorise apps")
    await _app(session, app_id)
    authorization = await _active_authorization(session, customer_account_id, app_id)
    if authorization is None:
        earlier = await session.scalar(
            select(func.count())
            .select_from(AppAuthorization)
            .where(
                AppAuthorization.app_id == app_id,
                AppAuthorization.customer_account_id == customer_account_id,
            )
        )
        if earlier:
            raise AuthorizationRevoked(f"your authorization of app {app_id} is already revoked")
        raise AuthorizationNotFound(f"you have not authorised app {app_id}")
    at_ms = now_ms if now_ms is not None else _wall_clock_ms()
    authorization.revoked_at_ms = at_ms
    await session.execute(
        update(ApiKey)
        .where(
            ApiKey.account_id == customer_account_id,
            ApiKey.app_id == app_id,
            ApiKey.revoked_at_ms.is_(None),
        )
        .values(revoked_at_ms=at_ms)
        .execution_options(synchronize_session="fetch")
    )
    await session.flush()
    return authorization


async def list_authorizations(
    session: AsyncSession, customer_account_id: str
) -> list[AppAuthorization]:
    """The customer's authorizations, revoked ones included, oldest first."""
    query = (
        select(AppAuthorization)
        .where(AppAuthorization.customer_account_id == customer_account_id)
        .order_by(AppAuthorization.created_at_ms, AppAuthorization.id)
    )
    return list((await session.scalars(query)).all())
