"""What a request costs, itemised, in integer micro-USD: pure functions, no I/O.

Prices are integer micro-USD per one million tokens (as nodes announce them), rates are integer
basis points (1 bp = 0.01 %). For a request the exact cost is a fraction of a micro-USD:

    provider = (prompt_tokens * input_price + completion_tokens * output_price) / 1_000_000
    builder  = provider * surcharge_bps / 10_000
    platform = provider * platform_fee_bps / 10_000

The builder surcharge and the platform fee are both percentages **of the provider price**, added
on top: the customer pays ``provider * (1 + surcharge + fee)``.

**The rounding rule** (the only one in the ledger): *cumulative sums are rounded to the nearest
micro-USD, ties to even* (banker's rounding). With ``R`` that rounding::

    provider part = R(provider)
    builder part  = R(provider + builder) - R(provider)
    platform part = R(provider + builder + platform) - R(provider + builder)
    total charge  = R(provider + builder + platform)

so the parts add up to the charge by construction, the charge is within half a micro-USD of the
exact total, every part is within one micro-USD of its exact value, and no part is negative. The
charge never decreases when a token count grows, which is why :func:`hold_amount_for` (the charge
at ``max_tokens``) covers every charge for at most that many completion tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from coordinator.ledger.errors import InvalidLedgerInput
from coordinator.ledger.ids import PLATFORM_REVENUE, builder_earnings, provider_earnings
from coordinator.ledger.records import Credit

__all__ = [
    "BPS_PER_PERCENT",
    "MAX_PRICE_MICRO_USD_PER_1M",
    "MAX_RATE_BPS",
    "MAX_TOKENS",
    "Charge",
    "Pricing",
    "charge_for",
    "credits_for",
    "hold_amount_for",
    "parse_percent",
]

BPS_PER_PERCENT = 100
_BPS_WHOLE = 10_000
_TOKENS_PER_PRICE = 1_000_000
# The protocol's bound on an announced price (1,000,000 USD per million tokens).
MAX_PRICE_MICRO_USD_PER_1M = 10**12
# 100 %: a surcharge or fee may at most double the provider price each.
MAX_RATE_BPS = 100 * BPS_PER_PERCENT
MAX_TOKENS = 10**9
_DENOMINATOR = _TOKENS_PER_PRICE * _BPS_WHOLE
_PERCENT_TEXT = re.compile(r"(?P<whole>[0-9]{1,3})(?:\.(?P<fraction>[0-9]{1,2}))?")


def _checked_int(value: int, what: str, maximum: int) -> int:
    # bool is an int subclass; True tokens is a bug, not a count.
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidLedgerInput(f"{what} must be an integer, not {value!r}")
    if not 0 <= value <= maximum:
        raise InvalidLedgerInput(f"{what} must be 0 to {maximum}, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class Pricing:
    """The rates one request is charged at: the chosen node's prices, the Builder's surcharge
    (0 without an app) and the operator's platform fee. Raises :class:`InvalidLedgerInput`."""

    input_micro_usd_per_1m: int
    output_micro_usd_per_1m: int
    surcharge_bps: int = 0
    platform_fee_bps: int = 0

    def __post_init__(self) -> None:
        _checked_int(self.input_micro_usd_per_1m, "the input price", MAX_PRICE_MICRO_USD_PER_1M)
        _checked_int(self.output_micro_usd_per_1m, "the output price", MAX_PRICE_MICRO_USD_PER_1M)
        _checked_int(self.surcharge_bps, "the surcharge (basis points)", MAX_RATE_BPS)
        _checked_int(self.platform_fee_bps, "the platform fee (basis points)", MAX_RATE_BPS)


@dataclass(frozen=True, slots=True)
class Charge:
    """A charge split into its parts, each whole micro-USD; ``total_micro_usd`` is their sum."""

    provider_micro_usd: int
    builder_micro_usd: int
    platform_micro_usd: int

    @property
    def total_micro_usd(self) -> int:
        return self.provider_micro_usd + self.builder_micro_usd + self.platform_micro_usd


def _round_half_even(numerator: int, denominator: int) -> int:
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2 == 1):
        return quotient + 1
    return quotient


def charge_for(pricing: Pricing, prompt_tokens: int, completion_tokens: int) -> Charge:
    """The itemised charge for a request that used these tokens (the module's rounding rule).

    Raises :class:`InvalidLedgerInput` for a token count outside 0..MAX_TOKENS.
    """
    prompt = _checked_int(prompt_tokens, "prompt_tokens", MAX_TOKENS)
    completion = _checked_int(completion_tokens, "completion_tokens", MAX_TOKENS)
    # All amounts below are in units of 1 / _DENOMINATOR micro-USD, so they are exact integers.
    base = prompt * pricing.input_micro_usd_per_1m + completion * pricing.output_micro_usd_per_1m
    provider = base * _BPS_WHOLE
    with_builder = provider + base * pricing.surcharge_bps
    total = with_builder + base * pricing.platform_fee_bps
    provider_rounded = _round_half_even(provider, _DENOMINATOR)
    with_builder_rounded = _round_half_even(with_builder, _DENOMINATOR)
    total_rounded = _round_half_even(total, _DENOMINATOR)
    return Charge(
        provider_micro_usd=provider_rounded,
        builder_micro_usd=with_builder_rounded - provider_rounded,
        platform_micro_usd=total_rounded - with_builder_rounded,
    )


def hold_amount_for(pricing: Pricing, prompt_tokens: int, max_tokens: int) -> int:
    """The worst-case charge of a request: its prompt plus ``max_tokens`` of output, surcharge and
    fee included. Hold this much before dispatch; the actual charge is never more as long as the
    request used at most ``prompt_tokens`` and ``max_tokens``. Raises :class:`InvalidLedgerInput`.
    """
    return charge_for(pricing, prompt_tokens, max_tokens).total_micro_usd


def credits_for(
    charge: Charge, *, provider_account_id: str, builder_account_id: str | None = None
) -> tuple[Credit, ...]:
    """The credits that post ``charge`` (:func:`~coordinator.ledger.post_hold`): the provider
    part to the Provider's earnings, the surcharge to the Builder's, the fee to the platform.

    Raises :class:`InvalidLedgerInput` for a surcharge without a Builder.
    """
    if charge.builder_micro_usd and builder_account_id is None:
        raise InvalidLedgerInput("a charge with a builder surcharge needs the Builder's account")
    credits = [
        Credit(provider_earnings(provider_account_id), charge.provider_micro_usd),
        Credit(PLATFORM_REVENUE, charge.platform_micro_usd),
    ]
    if builder_account_id is not None:
        credits.append(Credit(builder_earnings(builder_account_id), charge.builder_micro_usd))
    return tuple(credits)


def parse_percent(text: str) -> int:
    """``"2.5"`` -> ``250``: a percentage from 0 to 100 with at most 2 decimals, as basis points.

    For operator settings (the platform fee) and Builder input (a surcharge); exact, no floats.
    Raises :class:`InvalidLedgerInput`.
    """
    match = _PERCENT_TEXT.fullmatch(text.strip())
    if match is None:
        raise InvalidLedgerInput(
            f"invalid percentage {text!r}: write 0 to 100 with at most 2 decimals, e.g. 2.5"
        )
    bps = int(match["whole"]) * BPS_PER_PERCENT + int((match["fraction"] or "").ljust(2, "0"))
    if bps > MAX_RATE_BPS:
        raise InvalidLedgerInput(f"invalid percentage {text!r}: at most 100")
    return bps
