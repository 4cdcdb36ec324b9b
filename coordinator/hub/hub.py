"""The node hub: runs each node's handshake and session over its websocket.

The websocket layer hands :meth:`NodeHub.serve` three callables (receive one binary message,
send one, close with a code); the hub drives a :class:`~protocol.CoordinatorSession`, admits or
rejects the node, keeps it in the :class:`NodeRegistry` while its heartbeats arrive, and routes
job messages to their streams. A node silent for ``heartbeat_timeout_factor`` heartbeat intervals
is closed (4012) and its open jobs fail over or fail cleanly (see the dispatcher).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from coordinator.hub.nodes import LiveNode, NodeLink, NodeRegistry
from protocol import (
    Chunk,
    CloseCode,
    CoordinatorSession,
    Done,
    Drain,
    Failed,
    Heartbeat,
    Hello,
    Identity,
    JobAccepted,
    JobRefused,
    Offers,
    ProtocolError,
    PublicKey,
    SessionConfig,
)
from protocol.messages import RejectCode

__all__ = [
    "HEARTBEAT_TIMEOUT_CLOSE_CODE",
    "REVOKED_CLOSE_CODE",
    "Admission",
    "AdmitNode",
    "HubSettings",
    "NodeHub",
    "PeerGone",
]

logger = logging.getLogger(__name__)

# Close codes of the hub beyond the protocol's (documented in docs/protocol.md and docs/operators).
HEARTBEAT_TIMEOUT_CLOSE_CODE = 4012
REVOKED_CLOSE_CODE = 4013
SUPERSEDED_CLOSE_CODE = 4014


class PeerGone(Exception):
    """The websocket closed (the node disconnected or the network dropped)."""


@dataclass(frozen=True, slots=True)
class Admission:
    """The hub's decision on a node key: its Provider, or why it is refused.

    An admitted node may be ``suspended`` by the operator: it is admitted (it stays connected
    and heartbeats) but gets no new jobs until restored.
    """

    provider_account_id: str | None
    refusal: RejectCode | None = None
    message: str = ""
    suspended: bool = False


AdmitNode = Callable[[PublicKey], Awaitable[Admission]]


@dataclass(frozen=True, slots=True)
class HubSettings:
    heartbeat_interval_ms: int = 5_000
    heartbeat_timeout_factor: float = 3.0
    max_jobs_in_flight: int = 256
    session: SessionConfig = field(default_factory=SessionConfig)


class NodeHub:
    """Admits nodes and keeps their sessions; one instance per coordinator process."""

    def __init__(
        self,
        identity: Identity,
        registry: NodeRegistry,
        admit: AdmitNode,
        settings: HubSettings | None = None,
    ) -> None:
        self.identity = identity
        self.registry = registry
        self._admit = admit
        self.settings = settings or HubSettings()
        self.sessions_open = 0
        """Websockets being served now, handshakes in progress included (a metric)."""

    async def serve(
        self,
        receive: Callable[[], Awaitable[bytes]],
        send: Callable[[bytes], Awaitable[None]],
        close: Callable[[int, str], Awaitable[None]],
    ) -> None:
        """Run one node's websocket to its end. ``receive`` raises PeerGone when it closes."""
        session = CoordinatorSession(self.identity, config=self.settings.session)
        node: LiveNode | None = None
        self.sessions_open += 1
        try:
            await send(session.start())
            hello = await self._handshake(session, receive)
            admission = await self._admit(PublicKey(hello.node_key))
            if admission.refusal is not None or admission.provider_account_id is None:
                await send(session.reject(admission.refusal or "unknown_node", admission.message))
                await close(CloseCode.REJECTED, admission.refusal or "unknown_node")
                return
            await send(
                session.accept(
                    heartbeat_interval_ms=self.settings.heartbeat_interval_ms,
                    max_jobs_in_flight=self.settings.max_jobs_in_flight,
                )
            )
            welcome_session_id = session.session_id
            node = LiveNode(
                node_id=session.node_id,
                provider_account_id=admission.provider_account_id,
                session_id=welcome_session_id,
                agent_version=hello.agent_version,
                hardware=hello.hardware,
                offers={offer.model: offer for offer in hello.offers},
                link=NodeLink(session, send, close),
                heartbeat_interval_s=self.settings.heartbeat_interval_ms / 1000,
                suspended=admission.suspended,
            )
            previous = self.registry.add(node)
            if previous is not None:
                # The same key connected again (a restart the old socket has not noticed yet).
                previous.link.fail_open_jobs("superseded by a new session of the same node")
                await previous.link.close(SUPERSEDED_CLOSE_CODE, "superseded by a new session")
            logger.info("node %s connected (%d offers)", node.node_id, len(node.offers))
            await self._session_loop(node, receive)
        except ProtocolError as error:
            logger.warning("closing node session: %s (%d)", error, error.close_code)
            await _close_quietly(close, int(error.close_code), error.reason)
        except PeerGone:
            pass
        except TimeoutError:
            await _close_quietly(close, HEARTBEAT_TIMEOUT_CLOSE_CODE, "heartbeat deadline missed")
        finally:
            self.sessions_open -= 1
            session.close()
            if node is not None:
                self.registry.remove(node)
                node.link.fail_open_jobs("node disconnected")
                logger.info("node %s disconnected", node.node_id)

    async def _handshake(
        self, session: CoordinatorSession, receive: Callable[[], Awaitable[bytes]]
    ) -> Hello:
        remaining_s = max(0.0, session.handshake_deadline_s - time.monotonic())
        try:
            async with asyncio.timeout(remaining_s):
                frame = await receive()
        except TimeoutError:
            session.check_deadline()  # raises HandshakeTimeout with its close code
            raise
        message = session.receive(frame)
        if not isinstance(message, Hello):  # pragma: no cover - the session guarantees it
            raise TypeError("the first message of a node must be its hello")
        return message

    async def _session_loop(self, node: LiveNode, receive: Callable[[], Awaitable[bytes]]) -> None:
        silence_limit_s = (
            self.settings.heartbeat_interval_ms / 1000 * self.settings.heartbeat_timeout_factor
        )
        session = node.link.session
        while True:
            async with asyncio.timeout(silence_limit_s):
                frame = await receive()
            message = session.receive(frame)
            self.registry.heard(node)
            if isinstance(message, Heartbeat):
                node.heartbeat = message
            elif isinstance(message, Offers):
                self.registry.set_offers(node, message.offers)
            elif isinstance(message, Drain):
                self.registry.set_offers(node, [])  # no new jobs; running ones finish
            elif isinstance(message, (JobAccepted, JobRefused, Chunk, Done, Failed)) and (
                not node.link.route(message)
            ):
                raise _UnknownJob(f"{message.TYPE} for job {message.job_id} never given")

    async def revoke(self, node_id: str) -> bool:
        """Close a live session whose key was revoked; True if one was open."""
        node = self.registry.get(node_id)
        if node is None:
            return False
        self.registry.remove(node)
        node.link.fail_open_jobs("node key revoked")
        await node.link.close(REVOKED_CLOSE_CODE, "node key revoked")
        return True


class _UnknownJob(ProtocolError):
    close_code = CloseCode.UNEXPECTED_MESSAGE


async def _close_quietly(
    close: Callable[[int, str], Awaitable[None]], code: int, reason: str
) -> None:
    try:
        await close(code, reason)
    except Exception:
        logger.debug("close after error failed", exc_info=True)
