"""Errors of Provider self-service (prices and enrollment tokens).

::

    ProvidersError
    ├── NotAProvider                  the account is not a Provider (or does not exist)
    ├── InvalidPrice                  not a decimal USD price within bounds
    ├── InvalidModelName              empty or too long a model id
    ├── InvalidPublicName             not a usable public name (the message says why)
    ├── PublicNameTaken               another Provider published that name
    ├── TooManyPrices                 the Provider already has the most own prices allowed
    ├── TooManyTokens                 the Provider already has the most pending tokens allowed
    ├── EnrollmentTokenNotFound       no pending token with that id in this account
    └── EnrollmentTokenRefused        a token cannot enroll a node (the subclass says why)
        ├── UnknownEnrollmentToken
        ├── EnrollmentTokenUsed
        ├── EnrollmentTokenExpired
        └── EnrollmentTokenRevoked

Messages are fit to show the Provider; they never contain a token.
"""

from __future__ import annotations

__all__ = [
    "EnrollmentTokenExpired",
    "EnrollmentTokenNotFound",
    "EnrollmentTokenRefused",
    "EnrollmentTokenRevoked",
    "EnrollmentTokenUsed",
    "InvalidModelName",
    "InvalidPrice",
    "InvalidPublicName",
    "NotAProvider",
    "ProvidersError",
    "PublicNameTaken",
    "TooManyPrices",
    "TooManyTokens",
    "UnknownEnrollmentToken",
]


class ProvidersError(Exception):
    """The root of this package's errors."""


class NotAProvider(ProvidersError):
    pass


class InvalidPrice(ProvidersError):
    pass


class InvalidModelName(ProvidersError):
    pass


class InvalidPublicName(ProvidersError):
    pass


class PublicNameTaken(ProvidersError):
    pass


class TooManyPrices(ProvidersError):
    pass


class TooManyTokens(ProvidersError):
    pass


class EnrollmentTokenNotFound(ProvidersError):
    pass


class EnrollmentTokenRefused(ProvidersError):
    """The token cannot enroll a node; ``code`` is the API error code for the reason."""

    code = "invalid_enroll_token"


class UnknownEnrollmentToken(EnrollmentTokenRefused):
    code = "invalid_enroll_token"


class EnrollmentTokenUsed(EnrollmentTokenRefused):
    code = "enroll_token_used"


class EnrollmentTokenExpired(EnrollmentTokenRefused):
    code = "enroll_token_expired"


class EnrollmentTokenRevoked(EnrollmentTokenRefused):
    code = "enroll_token_revoked"
