"""Builder apps: registration with a capped, versioned surcharge, and customers' authorizations
that issue app-scoped keys.

A Builder registers an app with a surcharge in basis points of the provider price, at most the
operator's maximum (:data:`DEFAULT_MAX_SURCHARGE_BPS` unless configured). A change of surcharge is
a new version and applies only to new requests: :func:`current_surcharge` is the version a new
request records on its usage record. A customer authorises an app and gets an app-scoped key
(:func:`authorize_app`): requests with it are billed to the customer, attributed to the app, and
pay the surcharge to the Builder. :func:`revoke_authorization` kills those keys.

No web code: :mod:`coordinator.api.apps` maps :class:`AppsError` subclasses to HTTP. Every
function works inside the caller's transaction (it flushes, never commits)::

    async with sessions.begin() as session:
        details = await register_app(session, builder_id, "Chat Pal", 250, max_surcharge_bps=2000)
    async with sessions.begin() as session:
        authorization, raw_key = await authorize_app(session, customer_id, details.app.id)
"""

from coordinator.apps.errors import (
    AppDisabled,
    AppNotFound,
    AppsError,
    AuthorizationNotFound,
    AuthorizationRevoked,
    InvalidAppInput,
    InvalidSurcharge,
    NotYourApp,
    SurchargeAboveMaximum,
    UnknownAccount,
    WrongRole,
)
from coordinator.apps.service import (
    DEFAULT_MAX_SURCHARGE_BPS,
    AppDetails,
    AppSurcharge,
    authorize_app,
    current_surcharge,
    disable_app,
    format_percent,
    get_app,
    list_apps,
    list_authorizations,
    parse_surcharge_percent,
    register_app,
    revoke_authorization,
    set_surcharge,
    surcharge_version,
)
from coordinator.db.models import App, AppAuthorization, AppSurchargeVersion

__all__ = [
    "DEFAULT_MAX_SURCHARGE_BPS",
    "App",
    "AppAuthorization",
    "AppDetails",
    "AppDisabled",
    "AppNotFound",
    "AppSurcharge",
    "AppSurchargeVersion",
    "AppsError",
    "AuthorizationNotFound",
    "AuthorizationRevoked",
    "InvalidAppInput",
    "InvalidSurcharge",
    "NotYourApp",
    "SurchargeAboveMaximum",
    "UnknownAccount",
    "WrongRole",
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
