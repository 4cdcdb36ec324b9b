"""A minimal coordinator for the agent's tests: real sockets on 127.0.0.1, the real protocol.

- :class:`FakeHub`: a ``websockets`` server at ``/v1/hub`` driving a
  :class:`~protocol.CoordinatorSession` per connection (challenge, hello, welcome or reject),
  which hands each admitted session to the test as a :class:`HubSide`; it also answers
  ``GET /v1/hub/info``. It can drop connections and restart on the same port.
- :class:`FakeCoordinatorApi`: the coordinator's small HTTP API for ``shareai node init``
  (``/v1/hub/info``, ``/v1/me``, ``/v1/nodes/enroll`` checking the proof of possession), on a
  thread, so in-process and subprocess callers can both use it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from protocol import (
    CoordinatorSession,
    EnrollmentStatement,
    Heartbeat,
    Hello,
    Identity,
    Message,
    ProtocolError,
    PublicKey,
    SessionConfig,
)
from protocol.messages import RejectCode

M = TypeVar("M", bound=Message)

HUB_PATH = "/v1/hub"
WAIT_S = 10.0  # generous: these waits end on events, the timeout only catches a hang

Admission = Callable[[Hello], tuple[RejectCode, str] | None]


def hub_info(identity: Identity) -> dict[str, Any]:
    return {
        "coordinator_key": identity.public_key.to_text(),
        "coordinator_id": identity.public_key.coordinator_id,
        "hub_path": HUB_PATH,
        "protocol_versions": [1],
    }


@dataclass(eq=False)
class HubSide:
    """One admitted node session, as the coordinator sees it."""

    session: CoordinatorSession
    websocket: ServerConnection
    hello: Hello
    inbox: asyncio.Queue[Message] = field(default_factory=asyncio.Queue)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, message: Message) -> None:
        async with self._lock:
            await self.websocket.send(self.session.send(message))

    async def expect(self, kind: type[M], *, skip: tuple[type[Message], ...] = (Heartbeat,)) -> M:
        """The next message of type ``kind``, skipping ``skip`` types; fails on anything else."""
        while True:
            message = await self.next_message()
            if isinstance(message, kind):
                return message
            if not isinstance(message, skip):
                pytest.fail(f"expected {kind.TYPE}, got {message!r}")

    async def next_message(self) -> Message:
        get = asyncio.ensure_future(self.inbox.get())
        closed = asyncio.ensure_future(self.closed.wait())
        try:
            done, _ = await asyncio.wait(
                {get, closed}, timeout=WAIT_S, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            closed.cancel()
            if not get.done():
                get.cancel()
        if get in done:
            return get.result()
        if not self.inbox.empty():
            return self.inbox.get_nowait()
        if closed in done:
            raise AssertionError(f"the node closed the session (code {self.close_code})")
        raise AssertionError(f"no message from the node within {WAIT_S} s")

    async def wait_closed(self) -> int | None:
        """The close code the node's side ended with (None if the socket just dropped)."""
        await asyncio.wait_for(self.closed.wait(), WAIT_S)
        return self.close_code

    def drop(self) -> None:
        """Cut the TCP connection without a closing handshake (a network failure)."""
        self.websocket.transport.abort()


class FakeHub:
    """A websocket hub on 127.0.0.1 that admits (or rejects) nodes with the real protocol."""

    def __init__(
        self,
        identity: Identity | None = None,
        *,
        heartbeat_interval_ms: int = 5_000,
        max_jobs_in_flight: int = 64,
        admission: Admission | None = None,
        session_config: SessionConfig | None = None,
    ) -> None:
        self.identity = identity or Identity.generate()
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.max_jobs_in_flight = max_jobs_in_flight
        self.admission: Admission = admission or (lambda hello: None)
        self.session_config = session_config
        self.port = 0
        self.handshakes = 0
        self.rejected: list[RejectCode] = []
        self.sides: asyncio.Queue[HubSide] = asyncio.Queue()
        self._server: Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hub_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{HUB_PATH}"

    async def start(self) -> None:
        self._server = await serve(
            self._serve,
            "127.0.0.1",
            self.port,
            compression=None,
            process_request=self._http,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and close every connection (1001)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def restart(self) -> None:
        """Stop, then listen again on the same port (a coordinator restart)."""
        await self.stop()
        await self.start()

    async def next_side(self) -> HubSide:
        """The next node session the hub admitted."""
        return await asyncio.wait_for(self.sides.get(), WAIT_S)

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path == HUB_PATH:
            return None  # the websocket handshake proceeds
        if request.path == "/v1/hub/info":
            body = json.dumps(hub_info(self.identity)).encode()
            headers = Headers([("Content-Type", "application/json")])
            return Response(200, "OK", headers, body)
        return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")

    async def _serve(self, websocket: ServerConnection) -> None:
        session = CoordinatorSession(self.identity, config=self.session_config)
        side: HubSide | None = None
        try:
            await websocket.send(session.start())
            hello = session.receive(_binary(await websocket.recv()))
            assert isinstance(hello, Hello)
            self.handshakes += 1
            refusal = self.admission(hello)
            if refusal is not None:
                self.rejected.append(refusal[0])
                await websocket.send(session.reject(*refusal))
                await websocket.close(4011, refusal[0])
                return
            await websocket.send(
                session.accept(
                    heartbeat_interval_ms=self.heartbeat_interval_ms,
                    max_jobs_in_flight=self.max_jobs_in_flight,
                )
            )
            side = HubSide(session, websocket, hello)
            self.sides.put_nowait(side)
            async for frame in websocket:
                side.inbox.put_nowait(session.receive(_binary(frame)))
        except ProtocolError as error:
            await websocket.close(int(error.close_code), error.reason)
        except ConnectionClosed:
            pass
        finally:
            if side is not None:
                received = websocket.protocol.close_rcvd
                side.close_code = received.code if received is not None else None
                side.closed.set()


def _binary(frame: str | bytes) -> bytes:
    assert isinstance(frame, bytes), "protocol frames are binary"
    return frame


# -- the HTTP API for shareai node init ----------------------------------------------------------


@dataclass
class Enrolled:
    node_key: PublicKey
    account_id: str


class FakeCoordinatorApi:
    """``/v1/hub/info``, ``/v1/me`` and ``/v1/nodes/enroll`` on a thread (127.0.0.1)."""

    def __init__(
        self,
        identity: Identity | None = None,
        *,
        api_key: str = "sk-provider-test",
        account_id: str = "acct_provider1",
        role: str = "provider",
    ) -> None:
        self.identity = identity or Identity.generate()
        self.api_key = api_key
        self.account_id = account_id
        self.role = role
        self.enrolled: list[Enrolled] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/v1/hub/info":
                    self._answer(200, hub_info(api.identity))
                elif self.path == "/v1/me":
                    if self._authorized():
                        self._answer(
                            200, {"account_id": api.account_id, "role": api.role, "name": "P"}
                        )
                else:
                    self._error(404, "not_found", "no such endpoint")

            def do_POST(self) -> None:
                if self.path != "/v1/nodes/enroll":
                    self._error(404, "not_found", "no such endpoint")
                    return
                if not self._authorized():
                    return
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                try:
                    node_key = PublicKey.from_text(body["node_key"])
                    proof = base64.urlsafe_b64decode(body["proof"] + "==")
                    EnrollmentStatement(
                        api.identity.public_key, node_key, body["account_id"], body["issued_at_ms"]
                    ).verify(proof, now_ms=int(time.time() * 1000))
                except Exception as error:  # any bad proof is a 400
                    self._error(400, "invalid_proof", str(error))
                    return
                if body["account_id"] != api.account_id:
                    self._error(403, "wrong_account", "the proof names another account")
                    return
                api.enrolled.append(Enrolled(node_key, body["account_id"]))
                self._answer(201, {"node_id": node_key.node_id, "account_id": api.account_id})

            def _authorized(self) -> bool:
                if self.headers.get("Authorization") == f"Bearer {api.api_key}":
                    return True
                self._error(401, "invalid_api_key", "Incorrect API key provided")
                return False

            def _error(self, status: int, code: str, message: str) -> None:
                self._answer(
                    status,
                    {"error": {"message": message, "type": "invalid_request_error", "code": code}},
                )

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeCoordinatorApi:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        if self._thread is not None:
            self._thread.join()
        self.close()

    def close(self) -> None:
        """Stop listening (the port then refuses connections)."""
        self._server.server_close()
