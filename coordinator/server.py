"""Running the coordinator: identity, database, hub, app and the ASGI server in one process.

``serve(settings)`` migrates the database, loads (or creates) the coordinator's Ed25519 key,
loads the model catalogue (storing the starter set on first start), builds the services, and
serves HTTP and the node hub with uvicorn until SIGINT/SIGTERM. Background tasks close live
sessions of node keys revoked in the database (for example by ``shareai admin`` from another
process), mark live nodes suspended or restored as the database says, and pick up catalogue
changes and Providers' own prices made elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import uvicorn

from coordinator.api.accounts_gateway import DatabaseAccounts
from coordinator.api.apps import DatabaseAppTerms
from coordinator.app import Services, create_app
from coordinator.billing import Billing, BillingSettings, CreditGate
from coordinator.catalogue import LiveCatalogue, ModelTokenizers, ensure_catalogue
from coordinator.db import create_engine, create_session_factory, migrate
from coordinator.hub.dispatch import Dispatcher
from coordinator.hub.hub import HubSettings, NodeHub
from coordinator.hub.nodes import NodeRegistry
from coordinator.observe import Observer
from coordinator.providers.sync import (
    load_price_overrides,
    load_public_names,
    watch_price_overrides,
)
from coordinator.routing import Router
from coordinator.settings import Settings
from protocol import Identity, SessionConfig

__all__ = ["load_or_create_identity", "serve"]

logger = logging.getLogger(__name__)

REVOCATION_SWEEP_INTERVAL_S = 2.0


def load_or_create_identity(path: Path) -> Identity:
    """The coordinator's key at ``path``, created (mode 0600) on first start."""
    if path.exists():
        return Identity.load(path)
    identity = Identity.generate()
    identity.save(path)
    logger.info("created coordinator key %s at %s", identity.public_key.to_text(), path)
    return identity


async def _sweep_revocations(hub: NodeHub, accounts: DatabaseAccounts) -> None:
    while True:
        await asyncio.sleep(REVOCATION_SWEEP_INTERVAL_S)
        try:
            live = [node.node_id for node in hub.registry.all()]
            for node_id in await accounts.revoked_among(live):
                if await hub.revoke(node_id):
                    logger.info("closed the session of revoked node %s", node_id)
            await _sync_suspensions(hub.registry, accounts)
        except Exception:
            logger.exception("revocation sweep failed; retrying")


async def _sync_suspensions(registry: NodeRegistry, accounts: DatabaseAccounts) -> None:
    """Mark live nodes suspended or not as the database says (``shareai admin suspend-node``
    and other replicas write only the database). A node whose mark changed here while the
    database was read (this process's own suspend or restore) is left for the next sweep."""
    before = {node.node_id: node for node in registry.all()}
    marks = {node_id: node.suspended for node_id, node in before.items()}
    suspended = await accounts.suspended_among(list(before))
    for node_id, node in before.items():
        if registry.get(node_id) is node and node.suspended == marks[node_id]:
            wanted = node_id in suspended
            if registry.set_suspended(node_id, wanted) and wanted != marks[node_id]:
                logger.info(
                    "node %s %s", node_id, "suspended" if wanted else "restored (suspension lifted)"
                )


async def serve(settings: Settings) -> None:
    """Serve until interrupted. Raises KeyFileError or database errors at start-up."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    await migrate(settings.database_url)
    identity = load_or_create_identity(settings.coordinator_key_file)
    engine = create_engine(settings.database_url)
    sessions = create_session_factory(engine)
    accounts = DatabaseAccounts(sessions, identity.public_key)
    overrides = settings.tokenizer_map
    overrides.validate()  # a missing or broken tokenizer.json stops the start, not a request
    version, starting_catalogue = await ensure_catalogue(sessions)
    catalogue = LiveCatalogue(starting_catalogue, version)
    tokenizers = ModelTokenizers(overrides)
    catalogue.listen(tokenizers.update)
    registry = NodeRegistry()
    catalogue.listen(registry.use_catalogue)
    await load_price_overrides(registry, sessions)  # Providers' own prices, before any node
    await load_public_names(registry, sessions)  # and the names they chose to publish
    session_config = SessionConfig(handshake_timeout_ms=settings.handshake_timeout_ms)
    hub = NodeHub(
        identity,
        registry,
        accounts.admission,
        HubSettings(heartbeat_interval_ms=settings.heartbeat_interval_ms, session=session_config),
    )
    router = Router(registry, hedge_default=settings.hedge_by_default)
    gate = CreditGate(sessions, lease_chunk_micro_usd=settings.credit_lease_micro_usd)
    billing = Billing(
        gate,
        router,
        BillingSettings(platform_fee_bps=settings.platform_fee_bps, tokenizers=tokenizers),
    )
    app = create_app(
        Services(
            accounts=accounts,
            hub=hub,
            registry=registry,
            dispatcher=Dispatcher(registry, router=router),
            sessions=sessions,
            billing=billing,
            app_terms=DatabaseAppTerms(sessions),
            max_surcharge_bps=settings.max_surcharge_bps,
            catalogue=catalogue,
            tokenizers=tokenizers,
            signup=settings.signup_policy,
            observer=Observer(
                catalogue=catalogue,
                nodes=registry,
                gate=gate,
                sessions_open=lambda: hub.sessions_open,
            ),
        )
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ws_max_size=session_config.limits.max_frame_bytes,
        ws_per_message_deflate=False,
        log_level="info",
        access_log=False,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    logger.info(
        "coordinator %s on http://%s:%d (database %s)",
        identity.public_key.coordinator_id,
        settings.host,
        settings.port,
        engine.url.render_as_string(hide_password=True),
    )
    sweep = asyncio.create_task(_sweep_revocations(hub, accounts))
    flusher = asyncio.create_task(gate.run())
    watcher = asyncio.create_task(catalogue.watch(sessions, settings.catalogue_refresh_s))
    prices = asyncio.create_task(watch_price_overrides(registry, sessions))
    try:
        await server.serve()
    finally:
        for task in (sweep, flusher, watcher, prices):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await gate.close()  # post what was charged; leases still in use expire
        await engine.dispose()
