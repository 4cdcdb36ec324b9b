"""``GET /v1/network/status``: the network's public numbers, as the status page shows them.

Public and read-only: no key, no secrets, no per-customer figures. Nodes are shown by node id
with their Provider's anonymised handle (``pv_...``), never an account id. The sections:

- ``nodes``: live nodes with hardware (GPU model and memory when the node reports them), the
  models they serve with prices, jobs in flight, reputation, uptime and seconds since last heard;
  recently offline nodes (known to the router, not connected) with their uptime and seconds
  since last heard.
- ``models``: per model: nodes, capacity (concurrent jobs), jobs in flight, lowest and median
  price.
- ``traffic``: requests and tokens per minute, error rate, time to first token p50/p90 and
  requests by outcome over the last two minutes and the last hour, and a per-minute series.
- ``settlement``: customer spend, provider earnings, builder earnings and platform revenue for
  today and this month (UTC), in integer micro-USD, from posted generations.

:func:`network_numbers` computes them; the JSON endpoint and the status pages
(:mod:`coordinator.web.status`) both show what it returns.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime
from typing import Any

from litestar import Request, get
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.api.context import Services, services_of
from coordinator.db.generations import Generation
from coordinator.routing import provider_handle

__all__ = ["network_numbers", "network_status"]

_OFFLINE_SHOWN = 100


@get("/v1/network/status")
async def network_status(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return await network_numbers(services_of(request))


async def network_numbers(services: Services) -> dict[str, Any]:
    """The network's public numbers (see the module doc): no account id, name or key."""
    now = time.time()
    return {
        "object": "network.status",
        "generated_at_ms": int(now * 1000),
        "catalogue_version": services.catalogue.version,
        "nodes": _nodes(services),
        "models": _models(services),
        "traffic": services.observer.window.summary(),
        "settlement": await _settlement(services, now),
    }


def _nodes(services: Services) -> dict[str, Any]:
    router = services.dispatcher.router
    now = router.clock()
    monotonic = time.monotonic()
    live = []
    for node in sorted(services.registry.all(), key=lambda n: n.node_id):
        uptime = router.uptime.get(node.node_id)
        reputation = router.reputation.get(node.node_id)
        live.append(
            {
                "node": node.node_id,
                "provider": provider_handle(node.provider_account_id),
                "gpus": [
                    {"name": gpu.name, "memory_mib": gpu.memory_mib} for gpu in node.hardware.gpus
                ],
                "models": [
                    {
                        "model": model,
                        "price_input_micro_usd_per_1m": offer.price_input_micro_usd_per_1m,
                        "price_output_micro_usd_per_1m": offer.price_output_micro_usd_per_1m,
                        "max_concurrency": offer.max_concurrency,
                        "in_flight": node.in_flight.get(model, 0),
                    }
                    for model, offer in sorted(node.offers.items())
                ],
                "in_flight": sum(node.in_flight.values()),
                "reputation": round(reputation.score(now), 4) if reputation is not None else None,
                "probation": reputation.in_probation if reputation is not None else True,
                "uptime": round(uptime.ratio(now), 4) if uptime is not None else None,
                "last_heard_s": round(monotonic - node.last_seen_s, 1),
            }
        )
    offline_ids = sorted(router.uptime.idle_nodes(now, 0.0))[:_OFFLINE_SHOWN]
    offline = [
        {
            "node": node_id,
            "uptime": round(book.ratio(now), 4),
            "last_heard_s": round(max(0.0, now - book.last_event_s), 1),
        }
        for node_id in offline_ids
        if (book := router.uptime.get(node_id)) is not None
    ]
    return {"online": len(live), "offline": len(offline), "live": live, "recently_offline": offline}


def _models(services: Services) -> list[dict[str, Any]]:
    catalogue = services.catalogue.current
    rows: dict[str, dict[str, Any]] = {}
    prices: dict[str, tuple[list[int], list[int]]] = {}
    for node in services.registry.all():
        for model, offer in node.offers.items():
            row = rows.setdefault(
                model,
                {
                    "model": model,
                    "catalogued": catalogue.get(model) is not None,
                    "nodes": 0,
                    "capacity": 0,
                    "in_flight": 0,
                },
            )
            row["nodes"] += 1
            row["capacity"] += offer.max_concurrency
            row["in_flight"] += node.in_flight.get(model, 0)
            inputs, outputs = prices.setdefault(model, ([], []))
            inputs.append(offer.price_input_micro_usd_per_1m)
            outputs.append(offer.price_output_micro_usd_per_1m)
    for model, row in rows.items():
        inputs, outputs = prices[model]
        row["price_micro_usd_per_1m"] = {
            "lowest": {"input": min(inputs), "output": min(outputs)},
            "median": {
                "input": int(statistics.median_low(inputs)),
                "output": int(statistics.median_low(outputs)),
            },
        }
    return [rows[model] for model in sorted(rows)]


async def _settlement(services: Services, now: float) -> dict[str, Any] | None:
    if services.sessions is None:
        return None
    today = datetime.fromtimestamp(now, tz=UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    month = today.replace(day=1)
    async with services.sessions() as session:
        return {
            "unit": "micro-USD",
            "today": await _totals_since(session, int(today.timestamp() * 1000)),
            "this_month": await _totals_since(session, int(month.timestamp() * 1000)),
        }


async def _totals_since(session: AsyncSession, since_ms: int) -> dict[str, int]:
    provider, builder, platform, requests = (
        await session.execute(
            select(
                func.coalesce(func.sum(Generation.provider_micro_usd), 0),
                func.coalesce(func.sum(Generation.builder_micro_usd), 0),
                func.coalesce(func.sum(Generation.platform_micro_usd), 0),
                func.count(),
            ).where(Generation.created_at_ms >= since_ms)
        )
    ).one()
    return {
        "requests": int(requests),
        "customer_spend": int(provider) + int(builder) + int(platform),
        "provider_earnings": int(provider),
        "builder_earnings": int(builder),
        "platform_revenue": int(platform),
    }
