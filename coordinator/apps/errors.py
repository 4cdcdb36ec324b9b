"""Typed errors of the apps service. The web layer (:mod:`coordinator.api.apps`) maps them to
HTTP statuses; nothing here knows about HTTP.

Hierarchy::

    AppsError                      (root)
    ├── InvalidAppInput            an empty, over-long or control-character app name
    │                              (also a ValueError)
    ├── InvalidSurcharge           not a percentage: negative, not a number, more than 2
    │   │                          decimals, over 100 % (also a ValueError)
    │   └── SurchargeAboveMaximum  a valid percentage above the operator's maximum
    ├── UnknownAccount             no account with that id
    ├── WrongRole                  the account's role may not do this (a customer registering
    │                              an app, a builder authorising one)
    ├── AppNotFound                no app with that id
    ├── NotYourApp                 the app belongs to another Builder
    ├── AppDisabled                the app is disabled: no new surcharge, authorization or request
    ├── AuthorizationNotFound      the customer never authorised this app
    └── AuthorizationRevoked       the customer's authorization of this app was revoked
"""

from __future__ import annotations

__all__ = [
    "AppDisabled",
    "AppNotFound",
    "AppsError",
    "AuthorizationNotFound",
    "AuthorizationRevoked",
    "InvalidAppInput",
    "InvalidSurcharge",
    "NotYourApp",
    "SurchargeAboveMaximum",
    "UnknownAccount",
    "WrongRole",
]


class AppsError(Exception):
    """Root of every error the apps service raises on purpose."""


class InvalidAppInput(AppsError, ValueError):
    pass


class InvalidSurcharge(AppsError, ValueError):
    pass


class SurchargeAboveMaximum(InvalidSurcharge):
    """A surcharge above the operator's maximum; both are kept, in basis points."""

    def __init__(self, message: str, *, surcharge_bps: int, max_surcharge_bps: int) -> None:
        super().__init__(message)
        self.surcharge_bps = surcharge_bps
        self.max_surcharge_bps = max_surcharge_bps


class UnknownAccount(AppsError):
    pass


class WrongRole(AppsError):
    pass


class AppNotFound(AppsError):
    pass


class NotYourApp(AppsError):
    pass


class AppDisabled(AppsError):
    pass


class AuthorizationNotFound(AppsError):
    pass


class AuthorizationRevoked(AppsError):
    pass
