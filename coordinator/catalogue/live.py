"""The catalogue a running coordinator uses, kept up to date with the database.

:class:`LiveCatalogue` holds the version in force and tells its listeners (the node registry,
which re-names every offer; the tokenizers) when a new one is installed. Changes made through
this process's operator API are installed at once; changes from elsewhere (``shareai admin
catalogue`` or another replica) within ``refresh_s`` by :meth:`LiveCatalogue.watch`, which reads
one integer per interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.catalogue.entries import Catalogue
from coordinator.catalogue.store import latest_version_number, load_latest_catalogue

__all__ = ["CatalogueListener", "LiveCatalogue"]

logger = logging.getLogger(__name__)

CatalogueListener = Callable[[Catalogue], None]


class LiveCatalogue:
    def __init__(self, catalogue: Catalogue | None = None, version: int = 0) -> None:
        self.current = catalogue if catalogue is not None else Catalogue()
        self.version = version
        self._listeners: list[CatalogueListener] = []

    def listen(self, listener: CatalogueListener) -> None:
        """Call ``listener`` with the current catalogue now and with every later one."""
        self._listeners.append(listener)
        listener(self.current)

    def install(self, version: int, catalogue: Catalogue) -> bool:
        """Make ``version`` current unless a newer one already is; True when it changed."""
        if version <= self.version:
            return False
        self.version, self.current = version, catalogue
        for listener in self._listeners:
            listener(catalogue)
        logger.info("catalogue version %d in force (%d models)", version, len(catalogue))
        return True

    async def refresh(self, sessions: async_sessionmaker[AsyncSession]) -> bool:
        """Install the database's latest version if it is newer; True when it changed."""
        async with sessions() as session:
            if await latest_version_number(session) <= self.version:
                return False
            version, catalogue = await load_latest_catalogue(session)
        return self.install(version, catalogue)

    async def watch(self, sessions: async_sessionmaker[AsyncSession], refresh_s: float) -> None:
        """Refresh every ``refresh_s`` seconds, forever (a background task)."""
        while True:
            await asyncio.sleep(refresh_s)
            try:
                await self.refresh(sessions)
            except Exception:
                logger.exception("catalogue refresh failed; keeping version %d", self.version)
