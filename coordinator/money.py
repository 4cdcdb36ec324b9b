"""Money as integers: USD amounts are integer micro-dollars (1 USD = 1,000,000 micro-USD).

Floats never touch money. Amounts typed by people (the operator CLI, a future top-up form) are
decimal strings converted exactly by :func:`parse_usd`; amounts shown to people are formatted by
:func:`format_usd`, which round-trips through :func:`parse_usd`.
"""

from __future__ import annotations

import re

__all__ = [
    "MAX_AMOUNT_MICRO_USD",
    "MICRO_USD_PER_USD",
    "InvalidUsdAmount",
    "format_usd",
    "parse_usd",
]

MICRO_USD_PER_USD = 1_000_000
# One billion dollars in one operation: far beyond any top-up, far below a 64-bit column's limit.
MAX_AMOUNT_MICRO_USD = 1_000_000_000 * MICRO_USD_PER_USD

_USD_TEXT = re.compile(r"(?P<whole>[0-9]+)(?:\.(?P<fraction>[0-9]+))?")


class InvalidUsdAmount(ValueError):
    """A USD amount that is not a plain non-negative decimal with at most 6 decimals."""


def parse_usd(text: str) -> int:
    """``"12.5"`` -> ``12_500_000``: a non-negative decimal USD string as integer micro-USD.

    Accepts digits with an optional ``.`` and 1 to 6 decimals (``"0"``, ``"10"``, ``"0.000001"``).
    Refuses signs, exponents, ``NaN``/``Infinity``, separators, spaces, more than 6 decimals (they
    would need rounding) and amounts over :data:`MAX_AMOUNT_MICRO_USD`. Raises
    :class:`InvalidUsdAmount` (a ValueError) with a message fit for a person.
    """
    match = _USD_TEXT.fullmatch(text)
    if match is None:
        raise InvalidUsdAmount(
            f"invalid USD amount {text!r}: write a non-negative decimal such as 10 or 12.50"
        )
    fraction = match["fraction"] or ""
    if len(fraction) > 6:
        raise InvalidUsdAmount(
            f"invalid USD amount {text!r}: at most 6 decimals (1 micro-USD is 0.000001)"
        )
    micro_usd = int(match["whole"]) * MICRO_USD_PER_USD + int(fraction.ljust(6, "0") or "0")
    if micro_usd > MAX_AMOUNT_MICRO_USD:
        raise InvalidUsdAmount(
            f"invalid USD amount {text!r}: at most {format_usd(MAX_AMOUNT_MICRO_USD)} at once"
        )
    return micro_usd


def format_usd(micro_usd: int) -> str:
    """``12_500_000`` -> ``"12.50"``: at least 2 decimals, more only when they are not zero."""
    sign = "-" if micro_usd < 0 else ""
    whole, fraction = divmod(abs(micro_usd), MICRO_USD_PER_USD)
    decimals = f"{fraction:06d}".rstrip("0").ljust(2, "0")
    return f"{sign}{whole}.{decimals}"
