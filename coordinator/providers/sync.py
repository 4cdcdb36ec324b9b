"""Keeping the live network at the prices the database holds.

The console and the API apply a Provider's price change to the node registry at once
(:func:`coordinator.api.provider.set_own_price`); :func:`watch_price_overrides` also reloads
every Provider's prices now and then, so changes made by another coordinator replica (or by hand
in the database) reach this one too. Providers' public names ride along: the console applies a
change at once (:func:`apply_public_name`) and the same reload refreshes them all, so the public
pages read names from memory, never from the database per request.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.hub.nodes import NodeRegistry
from coordinator.providers.prices import all_price_overrides, price_overrides_of
from coordinator.providers.public_names import all_public_names, public_name_of

__all__ = [
    "PRICE_REFRESH_INTERVAL_S",
    "apply_provider_prices",
    "apply_public_name",
    "load_price_overrides",
    "load_public_names",
    "watch_price_overrides",
]

logger = logging.getLogger(__name__)

PRICE_REFRESH_INTERVAL_S = 5.0


async def load_price_overrides(
    registry: NodeRegistry, sessions: async_sessionmaker[AsyncSession]
) -> bool:
    """Apply every Provider's prices as stored now; False (nothing applied) when a change was
    applied in this process while the database was read, since it is newer than the read."""
    generation = registry.price_generation
    async with sessions() as session:
        prices = await all_price_overrides(session)
    if registry.price_generation != generation:
        return False
    registry.use_price_overrides(prices)
    return True


async def load_public_names(
    registry: NodeRegistry, sessions: async_sessionmaker[AsyncSession]
) -> bool:
    """Use every Provider's public name as stored now; False (nothing applied) when a name
    change was applied in this process while the database was read."""
    generation = registry.names_generation
    async with sessions() as session:
        names = await all_public_names(session)
    if registry.names_generation != generation:
        return False
    registry.use_public_names(names)
    return True


async def apply_public_name(
    registry: NodeRegistry, sessions: async_sessionmaker[AsyncSession], account_id: str
) -> None:
    """Show the Provider ``account_id`` under the name the database holds, after a change this
    process committed (read again when another change was applied meanwhile)."""
    while True:
        generation = registry.names_generation
        async with sessions() as session:
            name = await public_name_of(session, account_id)
        if registry.names_generation == generation:
            registry.set_public_name(account_id, name)
            return


async def apply_provider_prices(
    registry: NodeRegistry, sessions: async_sessionmaker[AsyncSession], account_id: str
) -> None:
    """Re-price the Provider ``account_id``'s live nodes from what the database holds, after a
    change this process committed. Read again when another change was applied meanwhile (its
    read may predate this change), so the last one applied always includes it."""
    while True:
        generation = registry.price_generation
        async with sessions() as session:
            prices = await price_overrides_of(session, account_id)
        if registry.price_generation == generation:
            registry.set_price_overrides(account_id, prices)
            return


async def watch_price_overrides(
    registry: NodeRegistry,
    sessions: async_sessionmaker[AsyncSession],
    interval_s: float = PRICE_REFRESH_INTERVAL_S,
) -> None:
    """Reload prices and public names every ``interval_s`` seconds, forever (a background task;
    errors are logged)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await load_price_overrides(registry, sessions)
            await load_public_names(registry, sessions)
        except Exception:
            logger.exception("reloading Provider prices and names failed; retrying")
