"""The node agent's session loop: connect out, handshake, serve, reconnect.

::

    NodeAgent.run()
      until shut down:
        connect to the hub (websockets: binary frames, compression off, max_size = decode limit)
        handshake: challenge (pinned key) -> hello (hardware, offers) -> welcome | reject
        HubLink.run(): heartbeats, jobs, cancel, drain (see node_agent.link)
        the session ended: wait a backoff delay (full jitter), reconnect

It returns normally after :meth:`NodeAgent.request_shutdown` (running jobs finish within the
drain grace period, then the socket closes with 1001). It raises :class:`AgentStopped` when
reconnecting cannot help: the key was revoked, the node suspended, the coordinator still does not
know the key after ``unknown_node_retries`` tries (enrollment can race the first connect), or the
coordinator presents a key other than the pinned one. Every other failure (unreachable hub,
dropped connection, protocol violation, an agent bug, logged with its traceback) is followed by a
reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from node_agent.backends.base import InferenceBackend
from node_agent.backoff import Backoff
from node_agent.config import AgentOptions, NodeConfig
from node_agent.errors import AgentStopped, ConfigError
from node_agent.hardware import detect_hardware
from node_agent.jobs import ModelTable
from node_agent.link import HubLink, LinkEnd
from node_agent.load import LoadReading, read_load
from protocol import (
    HandshakeTimeout,
    Hardware,
    Identity,
    MalformedFrame,
    NodeSession,
    ProtocolError,
    PublicKey,
    Reject,
    SessionConfig,
    UntrustedCoordinator,
    Welcome,
)

__all__ = ["NodeAgent", "agent_version"]

logger = logging.getLogger(__name__)


@functools.cache
def agent_version() -> str:
    """What the hello announces: ``shareai-node/<package version>``."""
    try:
        package = version("shareai")
    except PackageNotFoundError:
        package = "unknown"
    return f"shareai-node/{package}"[:64]


@dataclass(frozen=True, slots=True)
class _Attempt:
    """How one connection attempt ended."""

    welcomed: bool = False
    uptime_s: float = 0.0
    end: LinkEnd | None = None
    reject: Reject | None = None


class NodeAgent:
    """Keeps this node connected to its coordinator and serves jobs with ``backends``.

    The caller owns the backends (and closes them after :meth:`run`). ``hardware`` defaults to
    :func:`node_agent.detect_hardware`; ``load_reader``, ``rng`` and ``session_config`` are seams
    for tests.
    """

    def __init__(
        self,
        *,
        identity: Identity,
        coordinator_key: PublicKey,
        hub_url: str,
        backends: Sequence[InferenceBackend],
        options: AgentOptions | None = None,
        hardware: Hardware | None = None,
        session_config: SessionConfig | None = None,
        load_reader: Callable[[int], LoadReading] = read_load,
        rng: random.Random | None = None,
    ) -> None:
        self.identity = identity
        self.coordinator_key = coordinator_key
        self.hub_url = hub_url
        self.options = options or AgentOptions()
        self._backends = list(backends)
        self._hardware = hardware
        self._session_config = session_config or SessionConfig()
        self._load_reader = load_reader
        self._rng = rng
        self._shutdown = asyncio.Event()
        self._force = asyncio.Event()
        self._pre_session_scope: asyncio.Timeout | None = None
        self.sessions_established = 0

    @classmethod
    def from_config(
        cls, config: NodeConfig, identity: Identity, backends: Sequence[InferenceBackend]
    ) -> NodeAgent:
        return cls(
            identity=identity,
            coordinator_key=config.coordinator_public_key,
            hub_url=config.resolved_hub_url,
            backends=backends,
            options=config.agent,
        )

    @property
    def node_id(self) -> str:
        return self.identity.public_key.node_id

    def request_shutdown(self) -> None:
        """Drain and stop (call from the event loop, e.g. a signal handler).

        The first call stops taking jobs and lets running ones finish within ``drain_grace_s``;
        a second call cancels them at once.
        """
        if self._shutdown.is_set():
            self._force.set()
            return
        self._shutdown.set()
        if self._pre_session_scope is not None:  # connecting or handshaking: just stop
            self._pre_session_scope.reschedule(asyncio.get_running_loop().time())

    async def run(self) -> None:
        """Serve until shut down (returns) or refused for good (raises AgentStopped)."""
        try:
            models = ModelTable(self._backends)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        if not models.offers():
            raise ConfigError("the node has no model to offer")
        hardware = self._hardware
        if hardware is None:
            hardware = await asyncio.to_thread(detect_hardware)
        backoff = Backoff(self.options.reconnect_min_s, self.options.reconnect_max_s, rng=self._rng)
        unknown_node_rejects = 0
        while not self._shutdown.is_set():
            try:
                attempt = await self._attempt(models, hardware)
            except (AgentStopped, ConfigError):
                raise
            except Exception:
                logger.exception("the session failed inside the agent")
                attempt = _Attempt()
            if attempt.end is LinkEnd.SHUTDOWN or self._shutdown.is_set():
                break
            if attempt.welcomed:
                unknown_node_rejects = 0
            if attempt.welcomed and attempt.uptime_s >= self.options.backoff_reset_after_s:
                backoff.reset()
            delay_s = backoff.next_delay_s()
            if attempt.reject is not None:
                unknown_node_rejects = self._check_reject(attempt.reject, unknown_node_rejects)
                if attempt.reject.retry_after_ms is not None:
                    delay_s = max(delay_s, attempt.reject.retry_after_ms / 1000)
            logger.info("reconnecting in %.1f s", delay_s)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay_s):
                    await self._shutdown.wait()
        logger.info("node agent stopped")

    def _check_reject(self, reject: Reject, unknown_node_rejects: int) -> int:
        """Raise AgentStopped if retrying cannot help; else the new count of unknown_node."""
        said = _printable(reject.message)
        if reject.code == "revoked":
            raise AgentStopped(
                "revoked",
                f"the coordinator revoked this node's key ({self.node_id}): {said}; enroll a new"
                " key with `shareai node init --force`",
            )
        if reject.code == "suspended":
            raise AgentStopped(
                "suspended",
                f"the coordinator suspended this node ({self.node_id}): {said}; contact its"
                " operator",
            )
        if reject.code != "unknown_node":  # overloaded, duplicate_session: retry
            return unknown_node_rejects
        if unknown_node_rejects >= self.options.unknown_node_retries:
            raise AgentStopped(
                "unknown_node",
                f"the coordinator does not know this node's key ({self.node_id}) after"
                f" {unknown_node_rejects + 1} tries: enroll it with `shareai node init`",
            )
        return unknown_node_rejects + 1

    async def _attempt(self, models: ModelTable, hardware: Hardware) -> _Attempt:
        session = NodeSession(
            self.identity,
            self.coordinator_key,
            agent_version=agent_version(),
            config=self._session_config,
        )
        async with contextlib.AsyncExitStack() as stack:
            opened = await self._open(stack, session, models, hardware)
            if isinstance(opened, _Attempt):
                return opened
            websocket, decision = opened
            if isinstance(decision, Reject):
                logger.warning(
                    "the coordinator refused this node: %s: %s",
                    decision.code,
                    _printable(decision.message),
                )
                return _Attempt(reject=decision)
            self.sessions_established += 1
            logger.info(
                "connected to %s as %s (session %s, %d offer(s))",
                self.hub_url,
                decision.node_id,
                decision.session_id,
                len(models.offers()),
            )
            started_s = time.monotonic()
            link = HubLink(
                websocket,
                session,
                decision,
                models,
                hardware,
                drain_grace_s=self.options.drain_grace_s,
                load_reader=self._load_reader,
            )
            end = await link.run(self._shutdown, self._force)
            logger.info("session ended: %s", end.value)
            return _Attempt(welcomed=True, uptime_s=time.monotonic() - started_s, end=end)

    async def _open(
        self,
        stack: contextlib.AsyncExitStack,
        session: NodeSession,
        models: ModelTable,
        hardware: Hardware,
    ) -> tuple[ClientConnection, Welcome | Reject] | _Attempt:
        """Connect and handshake (the websocket joins ``stack``); an _Attempt if that failed.

        A shutdown requested meanwhile aborts at once: there are no jobs to drain yet.
        """
        scope = asyncio.timeout(None)
        try:
            async with scope:
                self._pre_session_scope = scope
                if self._shutdown.is_set():
                    return _Attempt(end=LinkEnd.SHUTDOWN)
                websocket = await stack.enter_async_context(
                    connect(
                        self.hub_url,
                        compression=None,
                        max_size=session.config.limits.max_frame_bytes,
                        open_timeout=self.options.connect_timeout_s,
                        close_timeout=5,
                        user_agent_header=agent_version(),
                    )
                )
                return websocket, await self._handshake(websocket, session, models, hardware)
        except TimeoutError:
            if scope.expired() and self._shutdown.is_set():
                return _Attempt(end=LinkEnd.SHUTDOWN)
            logger.warning("connection to %s failed: it timed out", self.hub_url)
        except (OSError, WebSocketException) as error:
            logger.warning("connection to %s failed: %s", self.hub_url, _describe(error))
        except _HandshakeFailed:
            pass
        finally:
            self._pre_session_scope = None
        return _Attempt()

    async def _handshake(
        self,
        websocket: ClientConnection,
        session: NodeSession,
        models: ModelTable,
        hardware: Hardware,
    ) -> Welcome | Reject:
        """Challenge, hello, decision. Closes the socket and raises _HandshakeFailed on errors."""
        try:
            await _receive_handshake_frame(websocket, session)  # the verified challenge
            await websocket.send(session.hello(hardware, models.offers()))
            decision = await _receive_handshake_frame(websocket, session)
        except UntrustedCoordinator:
            await websocket.close(int(UntrustedCoordinator.close_code), "untrusted coordinator")
            raise AgentStopped(
                "untrusted_coordinator",
                f"the coordinator at {self.hub_url} presented a key other than the pinned"
                f" {self.coordinator_key.to_text()}; if its operator rotated the key, update"
                " coordinator_key in node.toml",
            ) from None
        except ProtocolError as error:
            logger.warning(
                "handshake with %s failed: %s (close code %d)",
                self.hub_url,
                error,
                int(error.close_code),
            )
            await websocket.close(int(error.close_code), error.reason)
            raise _HandshakeFailed from None
        if not isinstance(decision, Welcome | Reject):  # pragma: no cover - the session checks
            raise _HandshakeFailed
        return decision


class _HandshakeFailed(Exception):
    pass


async def _receive_handshake_frame(websocket: ClientConnection, session: NodeSession) -> object:
    """The next handshake message, within the session's handshake deadline."""
    remaining_s = max(0.0, session.handshake_deadline_s - session.clock.monotonic())
    try:
        async with asyncio.timeout(remaining_s):
            frame = await websocket.recv()
    except TimeoutError:
        session.check_deadline()
        session.close()
        raise HandshakeTimeout("handshake did not complete before its deadline") from None
    if isinstance(frame, str):
        session.close()
        raise MalformedFrame("a text message: protocol frames are binary")
    return session.receive(frame)


def _describe(error: BaseException) -> str:
    return _printable(str(error)) or type(error).__name__


def _printable(text: str, limit: int = 200) -> str:
    """Peer-supplied text made safe for one log or terminal line."""
    line = "".join(ch if ch.isprintable() else " " for ch in text)
    line = " ".join(line.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
