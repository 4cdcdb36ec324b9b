"""Live nodes and their links: who is connected, what they serve, and the jobs running on them.

A :class:`NodeLink` owns one node's websocket after the handshake: it seals messages through the
node's :class:`~protocol.CoordinatorSession` and routes received job messages to the
:class:`JobStream` of their job. The :class:`NodeRegistry` is the in-memory view of the network
the dispatcher chooses from. Everything here runs on one event loop; no locks beyond the
websocket write lock are needed.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from coordinator.catalogue import Catalogue
from protocol import (
    Cancel,
    Chunk,
    CoordinatorSession,
    Done,
    Failed,
    Hardware,
    Heartbeat,
    JobAccepted,
    JobRefused,
    Message,
    Offer,
)

__all__ = [
    "JobEvent",
    "JobStream",
    "LiveNode",
    "ModelSummary",
    "NodeGone",
    "NodeLink",
    "NodeRegistry",
    "PriceOverride",
    "RegistryListener",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NodeGone:
    """The node's session ended while the job was open."""

    reason: str


JobEvent = JobAccepted | JobRefused | Chunk | Done | Failed | NodeGone


class JobStream:
    """The events of one job on one node, in order."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self._queue: asyncio.Queue[JobEvent] = asyncio.Queue()

    def put(self, event: JobEvent) -> None:
        self._queue.put_nowait(event)

    async def next(self) -> JobEvent:
        return await self._queue.get()


class NodeLink:
    """One node's established session: sending frames and routing what comes back."""

    def __init__(
        self,
        session: CoordinatorSession,
        send_bytes: Callable[[bytes], Awaitable[None]],
        close: Callable[[int, str], Awaitable[None]],
    ) -> None:
        self.session = session
        self._send_bytes = send_bytes
        self._close = close
        self._write_lock = asyncio.Lock()
        self._jobs: dict[str, JobStream] = {}
        # Jobs cancelled by us: late chunks for them are expected and dropped, not violations.
        self._cancelled: set[str] = set()
        self.closed = False  # the session ended: no more frames for open jobs
        self._close_sent = False

    async def send(self, message: Message) -> None:
        frame = self.session.send(message)
        async with self._write_lock:
            await self._send_bytes(frame)

    def open_job(self, job_id: str) -> JobStream:
        stream = JobStream(job_id)
        self._jobs[job_id] = stream
        return stream

    def finish_job(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

    async def cancel_job(self, job_id: str, reason: str) -> None:
        """Tell the node to stop ``job_id``; later frames for it are dropped."""
        if self._jobs.pop(job_id, None) is None or self.closed:
            return
        self._cancelled.add(job_id)
        await self.send(Cancel(job_id=job_id, reason=reason))

    def route(self, message: JobAccepted | JobRefused | Chunk | Done | Failed) -> bool:
        """Deliver a job message; False when the job is unknown (a protocol violation)."""
        stream = self._jobs.get(message.job_id)
        if stream is None:
            if message.job_id in self._cancelled:
                if isinstance(message, (Done, Failed)):
                    self._cancelled.discard(message.job_id)
                return True
            return False
        stream.put(message)
        if isinstance(message, (Done, Failed, JobRefused)):
            self._jobs.pop(message.job_id, None)
        return True

    def fail_open_jobs(self, reason: str) -> None:
        """The session ended: every open job learns it now."""
        self.closed = True
        for stream in self._jobs.values():
            stream.put(NodeGone(reason))
        self._jobs.clear()

    async def close(self, code: int, reason: str) -> None:
        """Close the websocket (once); the node's serve loop then ends and cleans up."""
        if not self._close_sent:
            self._close_sent = True
            await self._close(code, reason)


@dataclass
class LiveNode:
    """A connected, admitted node.

    ``offers`` and ``in_flight`` are keyed by the model's network id (its canonical catalogue
    id, or its own name when uncatalogued); each offer keeps the node's own name for the model
    in ``Offer.model``, which is what a job sent to the node names.
    """

    node_id: str
    provider_account_id: str
    session_id: str
    agent_version: str
    hardware: Hardware
    offers: dict[str, Offer]
    link: NodeLink
    connected_at_s: float = field(default_factory=time.time)
    last_seen_s: float = field(default_factory=time.monotonic)
    heartbeat: Heartbeat | None = None
    heartbeat_interval_s: float = 15.0
    in_flight: dict[str, int] = field(default_factory=dict)
    announced: tuple[Offer, ...] = ()
    """The offers as the node sent them (``offers`` is them named through the catalogue)."""
    names: dict[str, str] = field(default_factory=dict)
    """Each announced model name -> its network id (two names of one model share an id)."""
    suspended: bool = False
    """The operator keeps the node from new jobs: it stays connected and its running jobs
    finish (set through :meth:`NodeRegistry.set_suspended`, so the router hears of it)."""

    def free_slots(self, model: str) -> int:
        offer = self.offers.get(model)
        if offer is None:
            return 0
        return offer.max_concurrency - self.in_flight.get(model, 0)

    def key_of(self, local_name: str) -> str | None:
        """The network id under which this node now offers its model ``local_name``."""
        return self.names.get(local_name)


@dataclass(frozen=True, slots=True)
class PriceOverride:
    """A Provider's own price for one model, in force on all of its nodes (micro-USD per 1M
    tokens); it replaces the price each node announces for that model."""

    input_micro_usd_per_1m: int
    output_micro_usd_per_1m: int


@dataclass(frozen=True, slots=True)
class ModelSummary:
    model: str
    nodes: int
    context_length: int
    min_price_input_micro_usd_per_1m: int
    min_price_output_micro_usd_per_1m: int
    median_price_input_micro_usd_per_1m: int
    median_price_output_micro_usd_per_1m: int
    served_as: tuple[str, ...] = ()
    """The names the nodes' own servers use for the model, sorted."""


class RegistryListener(Protocol):
    """Told about every change of the live network (the router keeps uptime with it)."""

    def node_added(self, node: LiveNode) -> None: ...

    def node_removed(self, node: LiveNode) -> None: ...

    def node_offers_changed(self, node: LiveNode) -> None: ...

    def node_heard(self, node: LiveNode) -> None:
        """A frame (heartbeat or other) arrived from ``node``."""
        ...


class NodeRegistry:
    """The live network, as the dispatcher and the models endpoint see it.

    ``version`` changes whenever a node joins or leaves or a node's offers change, so a view
    built from the registry knows when it is out of date. Offers are named through the model
    catalogue (:meth:`use_catalogue`): nodes that call one model differently serve it under one
    network id, and a catalogue change re-names every live offer at once.
    """

    def __init__(self) -> None:
        self._nodes: dict[str, LiveNode] = {}
        self.catalogue = Catalogue()
        self._listeners: list[RegistryListener] = []
        self._prices: dict[str, dict[str, PriceOverride]] = {}
        """Provider account id -> network model id -> the Provider's own price."""
        self.price_generation = 0
        """Changes whenever a Provider's own prices change (a reload from the database that
        read before a newer change applies nothing)."""
        self._public_names: dict[str, str] = {}
        """Provider account id -> the public name it chose (absent: anonymous)."""
        self.names_generation = 0
        """Changes whenever a public name changes (like :attr:`price_generation`)."""
        self.version = 0
        self.lookup = self._nodes.get
        """``get`` without the method call in between (for per-decision hot loops)."""

    def listen(self, listener: RegistryListener) -> None:
        self._listeners.append(listener)

    def __len__(self) -> int:
        return len(self._nodes)

    def get(self, node_id: str) -> LiveNode | None:
        return self._nodes.get(node_id)

    def key_offers(self, offers: Iterable[Offer]) -> dict[str, Offer]:
        """``offers`` keyed by network id, context lengths capped at the catalogue's.

        Two of one node's names for one model (``llama3.1:8b`` and its Hugging Face id) are one
        offer: the first listed is kept.
        """
        keyed: dict[str, Offer] = {}
        for offer in offers:
            entry = self.catalogue.resolve(offer.model)
            key = offer.model if entry is None else entry.id
            if key in keyed:
                logger.info("offer %r duplicates %r as %s", offer.model, keyed[key].model, key)
                continue
            if entry is not None and offer.context_length > entry.context_length:
                keyed[key] = offer.model_copy(update={"context_length": entry.context_length})
            else:
                keyed[key] = offer
        return keyed

    def _announce(self, node: LiveNode, offers: tuple[Offer, ...]) -> None:
        node.announced = offers
        node.offers = self._priced(node.provider_account_id, self.key_offers(offers))
        node.names = {offer.model: self.catalogue.network_id(offer.model) for offer in offers}

    def _priced(self, account_id: str, offers: dict[str, Offer]) -> dict[str, Offer]:
        """``offers`` at the Provider's own prices where it set one (the scheduler and
        settlement both read a node's price from ``LiveNode.offers``)."""
        prices = self._prices.get(account_id)
        if not prices:
            return offers
        priced: dict[str, Offer] = {}
        for key, offer in offers.items():
            price = prices.get(key)
            priced[key] = (
                offer
                if price is None
                else offer.model_copy(
                    update={
                        "price_input_micro_usd_per_1m": price.input_micro_usd_per_1m,
                        "price_output_micro_usd_per_1m": price.output_micro_usd_per_1m,
                    }
                )
            )
        return priced

    def price_overrides(self, account_id: str) -> dict[str, PriceOverride]:
        """The Provider's own prices now in force, by network model id."""
        return dict(self._prices.get(account_id, {}))

    def set_price_overrides(self, account_id: str, prices: Mapping[str, PriceOverride]) -> None:
        """Replace the Provider ``account_id``'s own prices and re-price its live nodes at once
        (new jobs only: a decision already made keeps the price it was made at)."""
        wanted = dict(prices)
        if self._prices.get(account_id, {}) == wanted:
            return
        if wanted:
            self._prices[account_id] = wanted
        else:
            self._prices.pop(account_id, None)
        self.price_generation += 1
        for node in list(self._nodes.values()):
            if node.provider_account_id == account_id:
                self._announce(node, node.announced)
                self._offers_changed(node)

    def use_price_overrides(self, prices: Mapping[str, Mapping[str, PriceOverride]]) -> None:
        """Replace every Provider's own prices (at start-up, and when the database says so)."""
        for account_id in set(self._prices) | set(prices):
            self.set_price_overrides(account_id, prices.get(account_id, {}))

    def public_name(self, account_id: str) -> str | None:
        """The public name the Provider ``account_id`` chose, or None (shown by handle only)."""
        return self._public_names.get(account_id)

    def set_public_name(self, account_id: str, name: str | None) -> None:
        """Show the Provider under ``name`` from now on (None: anonymous again)."""
        if self._public_names.get(account_id) == name:
            return
        if name is None:
            self._public_names.pop(account_id, None)
        else:
            self._public_names[account_id] = name
        self.names_generation += 1

    def use_public_names(self, names: Mapping[str, str]) -> None:
        """Replace every Provider's public name (at start-up, and when the database says so)."""
        if names != self._public_names:
            self._public_names = dict(names)
            self.names_generation += 1

    def use_catalogue(self, catalogue: Catalogue) -> None:
        """Name every offer through ``catalogue`` from now on (a LiveCatalogue listener)."""
        self.catalogue = catalogue
        for node in list(self._nodes.values()):
            old_names = node.names
            self._announce(node, node.announced)
            # Running jobs follow their model to its new key; two offers merged into one add
            # up. Jobs of models no longer offered (a draining node) keep their keys.
            moved = {
                old: node.names[local] for local, old in old_names.items() if local in node.names
            }
            in_flight: dict[str, int] = {}
            for key, count in node.in_flight.items():
                new_key = moved.get(key, key)
                in_flight[new_key] = in_flight.get(new_key, 0) + count
            node.in_flight = in_flight
            self._offers_changed(node)

    def add(self, node: LiveNode) -> LiveNode | None:
        """Register ``node``; returns the previous session of the same node, if any."""
        self._announce(node, tuple(node.offers.values()))
        previous = self._nodes.get(node.node_id)
        self._nodes[node.node_id] = node
        self.version += 1
        for listener in self._listeners:
            listener.node_added(node)
        return previous

    def remove(self, node: LiveNode) -> None:
        if self._nodes.get(node.node_id) is node:
            del self._nodes[node.node_id]
            self.version += 1
            for listener in self._listeners:
                listener.node_removed(node)

    def set_offers(self, node: LiveNode, offers: Iterable[Offer]) -> None:
        """Replace what ``node`` serves (an Offers update, or nothing at all while it drains)."""
        self._announce(node, tuple(offers))
        self._offers_changed(node)

    def _offers_changed(self, node: LiveNode) -> None:
        self.version += 1
        for listener in self._listeners:
            listener.node_offers_changed(node)

    def set_suspended(self, node_id: str, suspended: bool) -> bool:
        """Mark the live node ``node_id`` suspended (no new jobs) or not; False when it is not
        connected here. A change counts as an offers change: the router re-reads the node."""
        node = self._nodes.get(node_id)
        if node is None:
            return False
        if node.suspended != suspended:
            node.suspended = suspended
            self._offers_changed(node)
        return True

    def heard(self, node: LiveNode) -> None:
        """A frame arrived from ``node``: it is alive."""
        node.last_seen_s = time.monotonic()
        for listener in self._listeners:
            listener.node_heard(node)

    def all(self) -> list[LiveNode]:
        return list(self._nodes.values())

    def node_counts(self) -> dict[str, int]:
        """How many live nodes offer each model (by network id)."""
        counts: dict[str, int] = {}
        for node in self._nodes.values():
            for model in node.offers:
                counts[model] = counts.get(model, 0) + 1
        return counts

    def serves(self, model: str) -> bool:
        return any(model in node.offers for node in self._nodes.values())

    def summaries(self) -> list[ModelSummary]:
        """Per model served now: its nodes, context and prices (suspended nodes left out)."""
        offers_by_model: dict[str, list[Offer]] = {}
        for node in self._nodes.values():
            if node.suspended:  # takes no jobs: not part of what the network serves now
                continue
            for model, offer in node.offers.items():
                offers_by_model.setdefault(model, []).append(offer)
        summaries = []
        for model in sorted(offers_by_model):
            offers = offers_by_model[model]
            inputs = [o.price_input_micro_usd_per_1m for o in offers]
            outputs = [o.price_output_micro_usd_per_1m for o in offers]
            summaries.append(
                ModelSummary(
                    model=model,
                    nodes=len(offers),
                    context_length=max(o.context_length for o in offers),
                    min_price_input_micro_usd_per_1m=min(inputs),
                    min_price_output_micro_usd_per_1m=min(outputs),
                    median_price_input_micro_usd_per_1m=int(statistics.median_low(inputs)),
                    median_price_output_micro_usd_per_1m=int(statistics.median_low(outputs)),
                    served_as=tuple(sorted({o.model for o in offers})),
                )
            )
        return summaries
