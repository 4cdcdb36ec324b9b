"""Typed errors of the accounts service. Web handlers map them to HTTP statuses at the edge.

Hierarchy::

    AccountsError                  (root)
    ├── InvalidAccountInput        bad role, empty or long name, credit amount out of range,
    │                              empty or long suspension reason (also a ValueError)
    ├── AccountNotFound            no account with that id
    ├── RoleNotAllowed             the account's role may not do this (e.g. a customer enrolling,
    │                              anyone but the operator suspending a node)
    ├── KeyNotFound                no API key with that id, prefix or value
    ├── AmbiguousKeyPrefix         a prefix that matches several keys: use the key id
    ├── EnrollmentRefused          a node enrollment that is not accepted
    │   ├── InvalidEnrollmentProof bad signature, too old or from the future
    │   ├── EnrollmentMismatch     the statement names another account or another coordinator
    │   ├── NodeEnrolledElsewhere  the key is enrolled under another Provider
    │   └── NodeRevoked            the key was revoked; a revoked key never comes back
    ├── NodeNotFound               no enrollment with that node id
    └── NotPermitted               the caller may not act on this node (not its Provider)
"""

from __future__ import annotations

__all__ = [
    "AccountNotFound",
    "AccountsError",
    "AmbiguousKeyPrefix",
    "EnrollmentMismatch",
    "EnrollmentRefused",
    "InvalidAccountInput",
    "InvalidEnrollmentProof",
    "KeyNotFound",
    "NodeEnrolledElsewhere",
    "NodeNotFound",
    "NodeRevoked",
    "NotPermitted",
    "RoleNotAllowed",
]


class AccountsError(Exception):
    """Root of every error the accounts service raises on purpose."""


class InvalidAccountInput(AccountsError, ValueError):
    pass


class AccountNotFound(AccountsError):
    pass


class RoleNotAllowed(AccountsError):
    pass


class KeyNotFound(AccountsError):
    pass


class AmbiguousKeyPrefix(AccountsError):
    pass


class EnrollmentRefused(AccountsError):
    pass


class InvalidEnrollmentProof(EnrollmentRefused):
    pass


class EnrollmentMismatch(EnrollmentRefused):
    pass


class NodeEnrolledElsewhere(EnrollmentRefused):
    pass


class NodeRevoked(EnrollmentRefused):
    pass


class NodeNotFound(AccountsError):
    pass


class NotPermitted(AccountsError):
    pass
