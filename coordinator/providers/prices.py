"""A Provider's own prices: one per model, in force on all of the Provider's nodes.

A node announces its price with each offer; the Provider may set its own price for a model
instead (in the console or ``PUT /v1/provider/prices/{model}``), which the coordinator applies
to the offers of every node of the account, live ones at once and the rest when they connect or
change their offers (:meth:`coordinator.hub.nodes.NodeRegistry.set_price_overrides`). Clearing it
falls back to each node's own price. Only new jobs see a change: the scheduler and settlement
both read the price from the node's offer at decision time.

``model`` is the model's network id: its canonical catalogue id, or the name an uncatalogued model
is served under. Prices are integer micro-USD per 1M tokens. Like :mod:`coordinator.accounts`,
every function works inside the caller's transaction (it flushes, never commits).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.models import Account, ProviderPrice, Role
from coordinator.hub.nodes import PriceOverride
from coordinator.money import InvalidUsdAmount, parse_usd
from coordinator.providers.errors import (
    InvalidModelName,
    InvalidPrice,
    NotAProvider,
    TooManyPrices,
)

__all__ = [
    "MAX_MODEL_CHARS",
    "MAX_PRICES_PER_PROVIDER",
    "MAX_PRICE_MICRO_USD_PER_1M",
    "StoredPrice",
    "all_price_overrides",
    "checked_model",
    "clear_price",
    "list_prices",
    "parse_price_per_1m",
    "price_overrides_of",
    "set_price",
]

MAX_PRICE_MICRO_USD_PER_1M = 10**12
"""1,000,000 USD per 1M tokens: the most an offer may ask (the protocol's limit)."""
MAX_PRICES_PER_PROVIDER = 1_000
MAX_MODEL_CHARS = 256


@dataclass(frozen=True, slots=True)
class StoredPrice:
    """One of a Provider's own prices."""

    model: str
    input_micro_usd_per_1m: int
    output_micro_usd_per_1m: int
    updated_at_ms: int

    @property
    def override(self) -> PriceOverride:
        return PriceOverride(self.input_micro_usd_per_1m, self.output_micro_usd_per_1m)


def parse_price_per_1m(value: object, what: str) -> int:
    """A USD-per-1M-tokens price (``"0.20"``, ``0.2`` read as an exact decimal, ``1``) as integer
    micro-USD per 1M tokens. Raises :class:`InvalidPrice` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise InvalidPrice(f'{what}: write the price as a decimal string such as "0.20"')
    text = format(value, "f") if isinstance(value, Decimal) else str(value)
    try:
        micro_usd = parse_usd(text.strip())
    except InvalidUsdAmount:
        raise InvalidPrice(
            f"{what}: {text!r} is not a price: write USD per 1M tokens with at most 6 decimals,"
            " such as 0.20"
        ) from None
    if micro_usd > MAX_PRICE_MICRO_USD_PER_1M:
        raise InvalidPrice(f"{what}: at most 1000000 USD per 1M tokens")
    return micro_usd


def checked_model(model: str) -> str:
    """``model`` if it can name a model (1 to 256 printable characters, no surrounding
    spaces); else :class:`InvalidModelName`."""
    if (
        not model
        or len(model) > MAX_MODEL_CHARS
        or model != model.strip()
        or not model.isprintable()
    ):
        raise InvalidModelName(
            f"a model id is 1 to {MAX_MODEL_CHARS} printable characters without surrounding spaces"
        )
    return model


def _stored(row: ProviderPrice) -> StoredPrice:
    return StoredPrice(
        row.model,
        row.price_input_micro_usd_per_1m,
        row.price_output_micro_usd_per_1m,
        row.updated_at_ms,
    )


async def _provider(session: AsyncSession, account_id: str) -> Account:
    account = await session.get(Account, account_id)
    if account is None or account.role is not Role.PROVIDER:
        raise NotAProvider("only a Provider account has its own prices")
    return account


async def list_prices(session: AsyncSession, account_id: str) -> list[StoredPrice]:
    """The Provider's own prices, by model id."""
    rows = await session.scalars(
        select(ProviderPrice)
        .where(ProviderPrice.account_id == account_id)
        .order_by(ProviderPrice.model)
    )
    return [_stored(row) for row in rows]


async def price_overrides_of(session: AsyncSession, account_id: str) -> dict[str, PriceOverride]:
    """The Provider's own prices as the node registry applies them."""
    return {price.model: price.override for price in await list_prices(session, account_id)}


async def all_price_overrides(session: AsyncSession) -> dict[str, dict[str, PriceOverride]]:
    """Every Provider's own prices: account id -> model id -> price."""
    prices: dict[str, dict[str, PriceOverride]] = {}
    for row in await session.scalars(select(ProviderPrice)):
        prices.setdefault(row.account_id, {})[row.model] = PriceOverride(
            row.price_input_micro_usd_per_1m, row.price_output_micro_usd_per_1m
        )
    return prices


async def set_price(
    session: AsyncSession,
    account_id: str,
    model: str,
    *,
    input_micro_usd_per_1m: int,
    output_micro_usd_per_1m: int,
    now_ms: int | None = None,
) -> StoredPrice:
    """Set the Provider's own price for ``model`` (a network id), replacing any before.

    Raises :class:`NotAProvider`, :class:`InvalidModelName`, :class:`InvalidPrice` for a
    negative or too high price, :class:`TooManyPrices` past :data:`MAX_PRICES_PER_PROVIDER`.
    """
    await _provider(session, account_id)
    checked_model(model)
    for what, value in (("input", input_micro_usd_per_1m), ("output", output_micro_usd_per_1m)):
        if isinstance(value, bool) or not 0 <= value <= MAX_PRICE_MICRO_USD_PER_1M:
            raise InvalidPrice(f"{what}: a price is 0 to 1000000 USD per 1M tokens")
    at_ms = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    row = await session.get(ProviderPrice, (account_id, model))
    if row is None:
        count = await session.scalar(
            select(func.count()).where(ProviderPrice.account_id == account_id)
        )
        if (count or 0) >= MAX_PRICES_PER_PROVIDER:
            raise TooManyPrices(
                f"you already set your own price for {MAX_PRICES_PER_PROVIDER} models;"
                " clear some first"
            )
        row = ProviderPrice(
            account_id=account_id,
            model=model,
            price_input_micro_usd_per_1m=input_micro_usd_per_1m,
            price_output_micro_usd_per_1m=output_micro_usd_per_1m,
            updated_at_ms=at_ms,
        )
        try:
            # A savepoint: a concurrent first price for the same model must not abort the
            # caller's transaction; the later writer then updates the row the other made.
            async with session.begin_nested():
                session.add(row)
            return _stored(row)
        except IntegrityError:
            found = await session.get(ProviderPrice, (account_id, model), populate_existing=True)
            if found is None:
                raise
            row = found
    row.price_input_micro_usd_per_1m = input_micro_usd_per_1m
    row.price_output_micro_usd_per_1m = output_micro_usd_per_1m
    row.updated_at_ms = at_ms
    await session.flush()
    return _stored(row)


async def clear_price(session: AsyncSession, account_id: str, model: str) -> bool:
    """Drop the Provider's own price for ``model``: its nodes' own prices apply again. Returns
    whether there was one."""
    result = await session.execute(
        delete(ProviderPrice).where(
            ProviderPrice.account_id == account_id, ProviderPrice.model == model
        )
    )
    return bool(getattr(result, "rowcount", 0))
