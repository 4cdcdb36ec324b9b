"""Accounts, API keys, credits and node enrollments: the coordinator's identity service.

No web code: the HTTP layer calls these functions and maps :class:`AccountsError` subclasses to
statuses. Every function takes an ``AsyncSession`` and works inside the caller's transaction
(it flushes, never commits)::

    async with sessions.begin() as session:
        account, raw_key = await create_account(session, Role.PROVIDER, "Grace")

Money is integer micro-USD and lives in the settlement ledger (:mod:`coordinator.ledger`):
credits are top-ups of the account's wallet there. Times are unix milliseconds (``now_ms``). Raw
API keys are returned once by :func:`create_account` and :func:`issue_api_key`; only their
SHA-256 is stored.
"""

from coordinator.accounts.errors import (
    AccountNotFound,
    AccountsError,
    AmbiguousKeyPrefix,
    EnrollmentMismatch,
    EnrollmentRefused,
    InvalidAccountInput,
    InvalidEnrollmentProof,
    KeyNotFound,
    NodeEnrolledElsewhere,
    NodeNotFound,
    NodeRevoked,
    NotPermitted,
    RoleNotAllowed,
)
from coordinator.accounts.keys import API_KEY_PREFIX, hash_api_key, key_display_prefix
from coordinator.accounts.nodes import (
    MAX_SUSPENSION_REASON_CHARS,
    OPERATOR,
    Revoker,
    enroll_node,
    find_enrollment,
    list_nodes,
    restore_node,
    revoke_node,
    suspend_node,
    suspended_nodes,
)
from coordinator.accounts.service import (
    MAX_NAME_CHARS,
    Principal,
    add_credits,
    authenticate,
    create_account,
    get_account,
    issue_api_key,
    list_accounts,
    list_api_keys,
    revoke_key,
)
from coordinator.db.models import Account, ApiKey, NodeEnrollment, Role

__all__ = [
    "API_KEY_PREFIX",
    "MAX_NAME_CHARS",
    "MAX_SUSPENSION_REASON_CHARS",
    "OPERATOR",
    "Account",
    "AccountNotFound",
    "AccountsError",
    "AmbiguousKeyPrefix",
    "ApiKey",
    "EnrollmentMismatch",
    "EnrollmentRefused",
    "InvalidAccountInput",
    "InvalidEnrollmentProof",
    "KeyNotFound",
    "NodeEnrolledElsewhere",
    "NodeEnrollment",
    "NodeNotFound",
    "NodeRevoked",
    "NotPermitted",
    "Principal",
    "Revoker",
    "Role",
    "RoleNotAllowed",
    "add_credits",
    "authenticate",
    "create_account",
    "enroll_node",
    "find_enrollment",
    "get_account",
    "hash_api_key",
    "issue_api_key",
    "key_display_prefix",
    "list_accounts",
    "list_api_keys",
    "list_nodes",
    "restore_node",
    "revoke_key",
    "revoke_node",
    "suspend_node",
    "suspended_nodes",
]
