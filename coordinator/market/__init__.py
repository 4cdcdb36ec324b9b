"""The public marketplace's data: what the models and Providers pages (and their JSON) show.

- :mod:`coordinator.market.history`: :class:`MarketHistory`, the bounded in-memory per-model
  history (requests served per minute, and when each model was offered at all), fed by the
  router.
- :mod:`coordinator.market.views`: the rows the pages and ``/v1/market/...`` show, computed from
  the registry, the router's books and the history (imported from there, not here, because it
  needs the router, which needs the history).
"""

from __future__ import annotations

from coordinator.market.history import MarketHistory, MinutePoint

__all__ = ["MarketHistory", "MinutePoint"]
