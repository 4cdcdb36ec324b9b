"""Provider self-service: own prices per model, one-time enrollment tokens, a public name.

No web code: the Provider console (:mod:`coordinator.web.provider`) and the JSON API
(:mod:`coordinator.api.provider`) call these functions and show
:class:`~coordinator.providers.errors.ProvidersError` subclasses to the Provider. Every function
takes an ``AsyncSession`` and works inside the caller's transaction. Applying prices to live
nodes is the node registry's job (:meth:`coordinator.hub.nodes.NodeRegistry.set_price_overrides`).
"""

from coordinator.providers.enrollment_tokens import (
    ENROLLMENT_TOKEN_LIFETIME_MS,
    ENROLLMENT_TOKEN_PREFIX,
    MAX_PENDING_TOKENS,
    check_enrollment_token,
    create_enrollment_token,
    enroll_with_token,
    is_enrollment_token,
    pending_enrollment_tokens,
    revoke_enrollment_token,
)
from coordinator.providers.errors import (
    EnrollmentTokenExpired,
    EnrollmentTokenNotFound,
    EnrollmentTokenRefused,
    EnrollmentTokenRevoked,
    EnrollmentTokenUsed,
    InvalidModelName,
    InvalidPrice,
    InvalidPublicName,
    NotAProvider,
    ProvidersError,
    PublicNameTaken,
    TooManyPrices,
    TooManyTokens,
    UnknownEnrollmentToken,
)
from coordinator.providers.prices import (
    MAX_MODEL_CHARS,
    MAX_PRICE_MICRO_USD_PER_1M,
    MAX_PRICES_PER_PROVIDER,
    StoredPrice,
    all_price_overrides,
    checked_model,
    clear_price,
    list_prices,
    parse_price_per_1m,
    price_overrides_of,
    set_price,
)
from coordinator.providers.public_names import (
    MAX_PUBLIC_NAME_CHARS,
    MIN_PUBLIC_NAME_CHARS,
    all_public_names,
    checked_public_name,
    clear_public_name,
    public_name_of,
    set_public_name,
)

__all__ = [
    "ENROLLMENT_TOKEN_LIFETIME_MS",
    "ENROLLMENT_TOKEN_PREFIX",
    "MAX_MODEL_CHARS",
    "MAX_PENDING_TOKENS",
    "MAX_PRICES_PER_PROVIDER",
    "MAX_PRICE_MICRO_USD_PER_1M",
    "MAX_PUBLIC_NAME_CHARS",
    "MIN_PUBLIC_NAME_CHARS",
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
    "StoredPrice",
    "TooManyPrices",
    "TooManyTokens",
    "UnknownEnrollmentToken",
    "all_price_overrides",
    "all_public_names",
    "check_enrollment_token",
    "checked_model",
    "checked_public_name",
    "clear_price",
    "clear_public_name",
    "create_enrollment_token",
    "enroll_with_token",
    "is_enrollment_token",
    "list_prices",
    "parse_price_per_1m",
    "pending_enrollment_tokens",
    "price_overrides_of",
    "public_name_of",
    "revoke_enrollment_token",
    "set_price",
    "set_public_name",
]
