"""Settings of the coordinator: one frozen, validated value built at start-up.

Sources, strongest first: explicit overrides (command-line flags), ``SHAREAI_*`` environment
variables, then defaults. Paths that are not given are derived from ``data_dir``::

    data_dir              ./.shareai                                   SHAREAI_DATA_DIR
    database_url          sqlite+aiosqlite:///<data_dir>/coordinator.db SHAREAI_DATABASE_URL
    coordinator_key_file  <data_dir>/coordinator.key                    SHAREAI_COORDINATOR_KEY_FILE
    host                  127.0.0.1                                    SHAREAI_HOST
    port                  8000  (0: any free port)                     SHAREAI_PORT
    heartbeat_interval_ms 15000                                        SHAREAI_HEARTBEAT_INTERVAL_MS
    handshake_timeout_ms  10000                                        SHAREAI_HANDSHAKE_TIMEOUT_MS
    hedge_by_default      false (hedge requests that do not say)       SHAREAI_HEDGE_BY_DEFAULT
    platform_fee_percent  "5" (% of the provider price)               SHAREAI_PLATFORM_FEE_PERCENT
    tokenizers            "" (MODEL=PATH/tokenizer.json,...)           SHAREAI_TOKENIZERS
    credit_lease_usd      "1" (reserved per customer per lease)        SHAREAI_CREDIT_LEASE_USD
    max_surcharge_percent "20" (cap on Builder surcharges)             SHAREAI_MAX_SURCHARGE_PERCENT
    catalogue_refresh_s   2.0 (how soon other writers' catalogue       SHAREAI_CATALOGUE_REFRESH_S
                          changes apply here)
    signup                off | open | invite (self-serve /signup)     SHAREAI_SIGNUP
    signup_starter_credit_usd "0" (promotional credit per new customer, never paid out):
                          SHAREAI_SIGNUP_STARTER_CREDIT_USD

:func:`load_settings` raises :class:`SettingsError`, one line naming each bad setting; building
:class:`Settings` directly raises pydantic's ``ValidationError``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from coordinator.accounts.invites import SignupMode, SignupPolicy
from coordinator.db.engine import normalize_database_url
from coordinator.ledger import parse_percent
from coordinator.metering import TokenizerMap, parse_tokenizer_map
from coordinator.money import format_usd, parse_usd

__all__ = ["ENV_PREFIX", "Settings", "SettingsError", "load_settings"]

ENV_PREFIX = "SHAREAI_"
DEFAULT_DATA_DIR = Path(".shareai")
MAX_STARTER_CREDIT_MICRO_USD = 1_000 * 1_000_000
"""A starter credit above 1,000 USD is surely a typo."""


class SettingsError(ValueError):
    """Settings that cannot be used; the message names each bad setting."""


class Settings(BaseModel):
    """The coordinator's configuration. Frozen: build a new one to change anything."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8000, ge=0, le=65_535)
    data_dir: Path = DEFAULT_DATA_DIR
    # Left out (or empty), these two are derived from data_dir as the module docstring shows.
    database_url: str = ""
    coordinator_key_file: Path = Path()
    # The Welcome message allows 100 ms .. 10 min (protocol.messages.Welcome).
    heartbeat_interval_ms: int = Field(default=15_000, ge=100, le=600_000)
    handshake_timeout_ms: int = Field(default=10_000, ge=100, le=120_000)
    # Requests without provider.hedge race a second node when the first one's first token is
    # late against its own p90 (see docs/scheduling.md, "Hedging").
    hedge_by_default: bool = False
    # Settlement (docs/settlement.md): the platform's fee on top of the provider price, the
    # tokenizers the coordinator counts tokens with, and the size of a credit lease.
    platform_fee_percent: str = "5"
    tokenizers: str = ""
    credit_lease_usd: str = "1"
    max_surcharge_percent: str = "20"
    # The model catalogue (docs/routing.md): changes made by `shareai admin catalogue` or by
    # another replica apply here within this many seconds (this process's own API: at once).
    catalogue_refresh_s: float = Field(default=2.0, ge=0.1, le=3600)
    # Self-serve sign-up on /signup (docs/operators.md, "Sign-up"): off, open to anyone, or
    # with an operator's invite code; new customers may get a promotional starter credit.
    signup: str = "off"
    signup_starter_credit_usd: str = "0"

    @field_validator("signup")
    @classmethod
    def _check_signup(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in {"off", "open", "invite"}:
            raise ValueError("must be off, open or invite")
        return value

    @field_validator("signup_starter_credit_usd")
    @classmethod
    def _check_starter_credit(cls, value: str) -> str:
        if parse_usd(value) > MAX_STARTER_CREDIT_MICRO_USD:
            raise ValueError(f"must be at most {format_usd(MAX_STARTER_CREDIT_MICRO_USD)} USD")
        return value

    @property
    def signup_policy(self) -> SignupPolicy:
        return SignupPolicy(SignupMode(self.signup), parse_usd(self.signup_starter_credit_usd))

    @field_validator("max_surcharge_percent")
    @classmethod
    def _check_max_surcharge(cls, value: str) -> str:
        parse_percent(value)
        return value

    @property
    def max_surcharge_bps(self) -> int:
        return parse_percent(self.max_surcharge_percent)

    @field_validator("platform_fee_percent")
    @classmethod
    def _check_fee(cls, value: str) -> str:
        parse_percent(value)  # raises InvalidLedgerInput, a ValueError naming the problem
        return value

    @field_validator("tokenizers")
    @classmethod
    def _check_tokenizers(cls, value: str) -> str:
        parse_tokenizer_map(value)
        return value

    @field_validator("credit_lease_usd")
    @classmethod
    def _check_lease(cls, value: str) -> str:
        if parse_usd(value) <= 0:
            raise ValueError("must be more than 0")
        return value

    @property
    def platform_fee_bps(self) -> int:
        return parse_percent(self.platform_fee_percent)

    @property
    def tokenizer_map(self) -> TokenizerMap:
        return TokenizerMap.parse(self.tokenizers)

    @property
    def credit_lease_micro_usd(self) -> int:
        return parse_usd(self.credit_lease_usd)

    @model_validator(mode="before")
    @classmethod
    def _derive_paths(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        data_dir = Path(data.get("data_dir") or DEFAULT_DATA_DIR).expanduser()
        data["data_dir"] = data_dir
        if not data.get("database_url"):
            data["database_url"] = f"sqlite+aiosqlite:///{(data_dir / 'coordinator.db').as_posix()}"
        if data.get("coordinator_key_file") in (None, "", Path()):
            data["coordinator_key_file"] = data_dir / "coordinator.key"
        return data

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        return normalize_database_url(value)

    @field_validator("coordinator_key_file")
    @classmethod
    def _expand_user(cls, value: Path) -> Path:
        return value.expanduser()


_ENV_FIELDS = (
    "host",
    "port",
    "data_dir",
    "database_url",
    "coordinator_key_file",
    "heartbeat_interval_ms",
    "handshake_timeout_ms",
    "hedge_by_default",
    "platform_fee_percent",
    "tokenizers",
    "credit_lease_usd",
    "max_surcharge_percent",
    "catalogue_refresh_s",
    "signup",
    "signup_starter_credit_usd",
)


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from ``environ`` (default ``os.environ``) and ``overrides``.

    An override of None means "not given" (so argparse defaults can be passed straight in); an
    empty environment variable counts as unset. Raises :class:`SettingsError`.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name in _ENV_FIELDS:
        text = environ.get(ENV_PREFIX + name.upper(), "")
        if text:
            values[name] = text
    values.update({name: value for name, value in overrides.items() if value is not None})
    try:
        return Settings(**values)
    except ValidationError as error:
        raise SettingsError(_describe(error)) from None


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "settings"
        message = str(item["msg"]).removeprefix("Value error, ")
        problems.append(f"invalid setting {where}: {message}")
    return "; ".join(problems)
