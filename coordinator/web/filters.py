"""Jinja filters of the console templates: money, prices, times and rates for people."""

from __future__ import annotations

import time

from coordinator.apps.service import format_percent
from coordinator.money import format_usd

__all__ = ["FILTERS", "NONE", "ago", "per_million", "percent", "usd", "when"]

NONE = "\u2013"
"""What a missing value shows as (an en dash)."""


def usd(micro_usd: int | None) -> str:
    """Micro-USD as ``$1.234567`` (exact: every digit the ledger has)."""
    if micro_usd is None:
        return NONE
    return ("-$" if micro_usd < 0 else "$") + format_usd(abs(micro_usd))


def per_million(micro_usd: int | None) -> str:
    """A price in micro-USD per 1M tokens as ``$0.20 / 1M``."""
    if micro_usd is None:
        return NONE
    if micro_usd >= 10_000:  # a cent or more: two decimals read best
        return f"${micro_usd / 1_000_000:,.2f} / 1M"
    return f"{usd(micro_usd)} / 1M"


def when(ms: int | float | None) -> str:
    """Unix milliseconds as ``2026-11-25 08:33 UTC``."""
    if ms is None:
        return NONE
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ms / 1000))


def ago(seconds: float | None) -> str:
    """A duration in the past, short: ``4 s``, ``12 min``, ``3 h``, ``2 d``."""
    if seconds is None:
        return NONE
    seconds = max(0.0, seconds)
    for size, unit in ((86_400, "d"), (3_600, "h"), (60, "min")):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def percent(bps: int | None) -> str:
    """Basis points as ``2.5 %``."""
    return NONE if bps is None else f"{format_percent(bps)} %"


FILTERS = {"usd": usd, "per_million": per_million, "when": when, "ago": ago, "percent": percent}
