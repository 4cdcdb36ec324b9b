"""Sans-I/O protocol sessions: one object per websocket, fed frames, returning messages and frames.

The I/O shell (the coordinator's websocket handler, the node agent's client) only moves bytes::

    coordinator                                  node
    -----------                                  ----
    frame = session.start()      -- challenge -> session.receive(frame)   -> Challenge
    session.receive(frame)       <-  hello  ---- frame = session.hello(hardware, offers)
       -> Hello (check enrollment, then)
    frame = session.accept(...)  -- welcome  -> session.receive(frame)   -> Welcome
      or  session.reject(...)    -- reject   ->                          -> Reject
    ... established: session.send(message) -> frame, session.receive(frame) -> message ...

Every method that fails because of the peer raises a :class:`~protocol.errors.ProtocolError`
whose ``close_code`` the shell sends, and the session is closed from then on. Time comes from an
injected :class:`~protocol.clock.Clock`; randomness from an injected ``random_bytes`` function.
"""

from __future__ import annotations

import hmac
import os
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import TypeVar

from protocol.clock import Clock, SystemClock
from protocol.crypto import (
    DIRECTION_COORDINATOR_TO_NODE,
    DIRECTION_NODE_TO_COORDINATOR,
    EphemeralKey,
    derive_session_keys,
    frame_mac,
    handshake_signing_input,
)
from protocol.errors import (
    AuthenticationFailed,
    BadSignature,
    HandshakeMismatch,
    HandshakeTimeout,
    ProtocolError,
    SequenceViolation,
    SessionClosed,
    StaleFrame,
    UnexpectedMessage,
    UnsupportedVersion,
    UntrustedCoordinator,
)
from protocol.framing import (
    SESSION_FRAME,
    SESSION_HEADER_BYTES,
    SIGNED_FRAME,
    SIGNED_HEADER_BYTES,
    DecodeLimits,
    Envelope,
    decode_envelope,
    encode_envelope,
    parse_body,
    split_session_frame,
    split_signed_frame,
)
from protocol.identity import Identity, PublicKey
from protocol.messages import (
    MAX_FRAME_BYTES,
    MAX_SKEW_MS,
    MIN_FRAME_BYTES,
    MIN_SKEW_MS,
    SUPPORTED_VERSIONS,
    Cancel,
    Challenge,
    Chunk,
    Done,
    Drain,
    Failed,
    FinishReason,
    Hardware,
    Heartbeat,
    Hello,
    Job,
    JobAccepted,
    JobRefused,
    Message,
    Offer,
    Offers,
    Reject,
    RejectCode,
    SessionLimits,
    Timings,
    Usage,
    Welcome,
)
from protocol.receipts import UsageReceipt

__all__ = [
    "CoordinatorSession",
    "NodeSession",
    "SessionConfig",
    "SessionState",
]

_NODE_SENDS: frozenset[type[Message]] = frozenset(
    {Heartbeat, Offers, JobAccepted, JobRefused, Chunk, Done, Failed, Drain}
)
_COORDINATOR_SENDS: frozenset[type[Message]] = frozenset({Job, Cancel, Drain})
_SEQ_LIMIT = 2**64
_M = TypeVar("_M", bound=Message)


class SessionState(Enum):
    START = "start"
    AWAIT_HELLO = "await_hello"  # coordinator: challenge sent
    AWAIT_DECISION = "await_decision"  # coordinator: hello verified, accept() or reject() next
    AWAIT_CHALLENGE = "await_challenge"  # node: connected, nothing received yet
    CHALLENGED = "challenged"  # node: challenge verified, hello() next
    AWAIT_WELCOME = "await_welcome"  # node: hello sent
    ESTABLISHED = "established"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Tunables of one side of a session (defaults are protocol v1's)."""

    handshake_timeout_ms: int = 10_000
    max_clock_skew_ms: int = 60_000
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    supported_versions: tuple[int, ...] = SUPPORTED_VERSIONS

    def __post_init__(self) -> None:
        # Checked here, so a bad configuration fails at start-up, not mid-handshake.
        if not 1 <= self.handshake_timeout_ms <= 2**31 - 1:
            raise ValueError("handshake_timeout_ms must be between 1 and 2**31-1")
        if not MIN_SKEW_MS <= self.max_clock_skew_ms <= MAX_SKEW_MS:
            raise ValueError(f"max_clock_skew_ms must be between {MIN_SKEW_MS} and {MAX_SKEW_MS}")
        if not MIN_FRAME_BYTES <= self.limits.max_frame_bytes <= MAX_FRAME_BYTES:
            raise ValueError(
                f"limits.max_frame_bytes must be between {MIN_FRAME_BYTES} and {MAX_FRAME_BYTES}"
            )
        if not self.supported_versions or not all(
            1 <= v <= 65_535 for v in self.supported_versions
        ):
            raise ValueError("supported_versions must name at least one version in 1..65535")


class _Session(ABC):
    """What both sides share: sequence numbers, timestamps, the deadline and frame sealing."""

    _SENDS: frozenset[type[Message]] = frozenset()
    _RECEIVES: frozenset[type[Message]] = frozenset()
    _SEND_DIRECTION: bytes = b""
    _RECEIVE_DIRECTION: bytes = b""

    def __init__(
        self,
        identity: Identity,
        *,
        clock: Clock | None,
        config: SessionConfig | None,
        random_bytes: Callable[[int], bytes] | None,
    ) -> None:
        self.identity = identity
        self.clock: Clock = clock or SystemClock()
        self.config = config or SessionConfig()
        self._random_bytes = random_bytes or os.urandom
        self.state = SessionState.START
        # Until negotiated, frames go out in the lowest version this side speaks (so a peer that
        # knows only older versions can still read the challenge and its list of versions).
        self.version = min(self.config.supported_versions)
        self._version_negotiated = False
        self._send_seq = 0
        self._receive_seq = 0
        self._send_key = b""
        self._receive_key = b""
        self._handshake_payloads: list[bytes] = []
        self._ephemeral = EphemeralKey(self._random_bytes)
        self.peer_max_frame_bytes = self.config.limits.max_frame_bytes
        self.handshake_deadline_s = self.clock.monotonic() + self.config.handshake_timeout_ms / 1000

    # -- established traffic -------------------------------------------------------------------

    def send(self, message: Message) -> bytes:
        """Seal ``message`` into a session frame to write to the websocket."""
        self._require_state(SessionState.ESTABLISHED)
        if type(message) not in self._SENDS:
            raise ValueError(f"this side may not send {message.TYPE!r} messages")
        seq = self._send_seq
        payload = encode_envelope(message, seq, self._now_ms(), self.version)
        header_and_payload = b"".join((bytes((SESSION_FRAME,)), seq.to_bytes(8, "big"), payload))
        frame = header_and_payload + frame_mac(
            self._send_key, self._SEND_DIRECTION, header_and_payload
        )
        if len(frame) > self.peer_max_frame_bytes:
            # Nothing was consumed: the caller may split the message or fail the job instead.
            raise ValueError(
                f"{message.TYPE} frame of {len(frame)} bytes exceeds the peer's limit of"
                f" {self.peer_max_frame_bytes}"
            )
        self._next_send_seq()
        return frame

    def receive(self, frame: bytes) -> Message:
        """Authenticate, decode and validate one received frame; returns its message.

        Raises a ProtocolError subclass (and closes the session) on any violation.
        """
        try:
            return self._receive(frame)
        except ProtocolError:
            self.state = SessionState.CLOSED
            raise

    def close(self) -> None:
        """Mark the session closed (after the websocket closed for any reason)."""
        self.state = SessionState.CLOSED

    def check_deadline(self) -> None:
        """Raise HandshakeTimeout (and close) if the handshake is unfinished past its deadline."""
        if (
            self.state is not SessionState.ESTABLISHED
            and self.state is not SessionState.CLOSED
            and self.clock.monotonic() > self.handshake_deadline_s
        ):
            self.state = SessionState.CLOSED
            raise HandshakeTimeout("handshake did not complete before its deadline")

    @property
    def established(self) -> bool:
        return self.state is SessionState.ESTABLISHED

    def _receive(self, frame: bytes) -> Message:
        if self.state is SessionState.ESTABLISHED:
            return self._receive_session_frame(frame)
        if self.state is SessionState.CLOSED:
            raise SessionClosed("session is closed")
        self.check_deadline()
        return self._receive_handshake_frame(frame)

    @abstractmethod
    def _receive_handshake_frame(self, frame: bytes) -> Message:
        """Handle a frame received before the session is established (side-specific)."""

    def _receive_session_frame(self, frame: bytes) -> Message:
        limits = self.config.limits
        seq, header_and_payload, mac = split_session_frame(frame, limits)
        expected_mac = frame_mac(self._receive_key, self._RECEIVE_DIRECTION, header_and_payload)
        if not hmac.compare_digest(mac, expected_mac):
            raise AuthenticationFailed("frame MAC does not verify under this session's key")
        self._check_seq(seq)
        envelope = decode_envelope(
            header_and_payload[SESSION_HEADER_BYTES:], limits, (self.version,)
        )
        if envelope.seq != seq:
            raise SequenceViolation(f"envelope seq {envelope.seq} differs from frame seq {seq}")
        self._check_timestamp(envelope)
        message = parse_body(envelope)
        if type(message) not in self._RECEIVES:
            raise UnexpectedMessage(f"{message.TYPE!r} is not allowed from this peer")
        return message

    # -- handshake helpers -----------------------------------------------------------------------

    def _seal_signed(self, message: Message) -> bytes:
        """Sign a handshake frame; ValueError (nothing consumed) if the peer can't take it."""
        payload = encode_envelope(message, self._send_seq, self._now_ms(), self.version)
        signature = self.identity.sign(
            handshake_signing_input(tuple(self._handshake_payloads), payload)
        )
        frame = b"".join((bytes((SIGNED_FRAME,)), self.identity.public_key.raw, payload, signature))
        if len(frame) > self.peer_max_frame_bytes:
            raise ValueError(
                f"{message.TYPE} frame of {len(frame)} bytes exceeds the peer's limit of"
                f" {self.peer_max_frame_bytes}"
            )
        self._next_send_seq()
        self._handshake_payloads.append(payload)
        return frame

    def _open_signed(
        self, frame: bytes, signer: PublicKey | None, expected: tuple[type[_M], ...]
    ) -> tuple[_M, int]:
        """Verify, then decode, a signed handshake frame; returns the message and its ``v``.

        ``signer`` is the key that must have signed it. None means the key in the frame header
        (the node's self-signed hello), which the decoded hello must then name as its node key.
        """
        signer_raw, payload, signature = split_signed_frame(frame, self.config.limits)
        if signer is None:
            try:
                signer = PublicKey(signer_raw)
            except ValueError as exc:
                raise BadSignature(f"signer key refused: {exc}") from None
        elif signer_raw != signer.raw:
            raise UntrustedCoordinator(
                "frame is signed by a key other than the pinned coordinator key"
            )
        signer.verify(signature, handshake_signing_input(tuple(self._handshake_payloads), payload))
        versions = (self.version,) if self._version_negotiated else self.config.supported_versions
        envelope = decode_envelope(payload, self.config.limits, versions)
        message = parse_body(envelope)
        if not isinstance(message, expected):
            wanted = " or ".join(repr(cls.TYPE) for cls in expected)
            raise UnexpectedMessage(f"expected {wanted}, got {message.TYPE!r}")
        self._check_seq(envelope.seq)
        self._check_timestamp(envelope)
        self._handshake_payloads.append(payload)
        return message, envelope.version

    @staticmethod
    def _handshake_signer(frame: bytes) -> bytes:
        return frame[1:SIGNED_HEADER_BYTES]

    def _establish(self, shared_secret: bytes, *, coordinator: bool) -> None:
        keys = derive_session_keys(
            shared_secret, self._handshake_payloads[0], self._handshake_payloads[1]
        )
        if coordinator:
            self._send_key, self._receive_key = keys.coordinator_to_node, keys.node_to_coordinator
        else:
            self._send_key, self._receive_key = keys.node_to_coordinator, keys.coordinator_to_node

    # -- sequence numbers and time -----------------------------------------------------------------

    def _next_send_seq(self) -> int:
        seq = self._send_seq
        if seq >= _SEQ_LIMIT:
            raise SessionClosed("sequence numbers exhausted; reconnect")
        self._send_seq = seq + 1
        return seq

    def _check_seq(self, seq: int) -> None:
        expected = self._receive_seq
        if seq != expected:
            kind = "replayed or reordered" if seq < expected else "skipped"
            raise SequenceViolation(f"{kind} frame: seq {seq}, expected {expected}")
        self._receive_seq = expected + 1

    def _check_timestamp(self, envelope: Envelope) -> None:
        skew_ms = envelope.ts_ms - self._now_ms()
        if abs(skew_ms) > self.config.max_clock_skew_ms:
            raise StaleFrame(
                f"frame timestamp is {skew_ms / 1000:+.1f} s from local time"
                f" (allowed ±{self.config.max_clock_skew_ms / 1000:.0f} s)"
            )

    def _now_ms(self) -> int:
        return int(self.clock.time() * 1000)

    def _require_state(self, *states: SessionState) -> None:
        if self.state not in states:
            if self.state is SessionState.CLOSED:
                raise SessionClosed("session is closed")
            allowed = ", ".join(s.value for s in states)
            raise RuntimeError(f"session is in state {self.state.value}, not {allowed}")


class CoordinatorSession(_Session):
    """The coordinator's side of one node's websocket."""

    _SENDS = _COORDINATOR_SENDS
    _RECEIVES = _NODE_SENDS
    _SEND_DIRECTION = DIRECTION_COORDINATOR_TO_NODE
    _RECEIVE_DIRECTION = DIRECTION_NODE_TO_COORDINATOR

    def __init__(
        self,
        identity: Identity,
        *,
        clock: Clock | None = None,
        config: SessionConfig | None = None,
        random_bytes: Callable[[int], bytes] | None = None,
    ) -> None:
        super().__init__(identity, clock=clock, config=config, random_bytes=random_bytes)
        self._nonce = self._random_bytes(32)
        self.hello: Hello | None = None
        self.node_key: PublicKey | None = None
        self.session_id = ""

    @property
    def node_id(self) -> str:
        if self.node_key is None:
            raise RuntimeError("node is not known before its hello is verified")
        return self.node_key.node_id

    def start(self) -> bytes:
        """The signed challenge frame, the first frame of the session."""
        self._require_state(SessionState.START)
        challenge = Challenge(
            nonce=self._nonce,
            coordinator_key=self.identity.public_key.raw,
            ephemeral_key=self._ephemeral.public_bytes,
            versions=list(self.config.supported_versions),
            handshake_timeout_ms=self.config.handshake_timeout_ms,
        )
        frame = self._seal_signed(challenge)
        self.state = SessionState.AWAIT_HELLO
        return frame

    def _receive_handshake_frame(self, frame: bytes) -> Message:
        if self.state is not SessionState.AWAIT_HELLO:
            raise UnexpectedMessage(f"no frame expected in state {self.state.value}")
        message, envelope_version = self._open_signed(frame, None, (Hello,))
        if message.node_key != self._handshake_signer(frame):
            raise HandshakeMismatch("hello names a node key other than the one that signed it")
        if not hmac.compare_digest(message.nonce, self._nonce):
            raise HandshakeMismatch("hello does not echo this session's challenge nonce")
        if message.audience != self.identity.public_key.raw:
            raise HandshakeMismatch("hello is addressed to another coordinator")
        if message.version not in self.config.supported_versions:
            raise UnsupportedVersion(f"node chose protocol version {message.version}")
        if message.version != envelope_version:
            raise HandshakeMismatch(
                f"hello chooses version {message.version} but is framed as version"
                f" {envelope_version}"
            )
        self._establish(self._ephemeral.exchange(message.ephemeral_key), coordinator=True)
        self.hello = message
        self.node_key = PublicKey(message.node_key)
        self.version = message.version
        self._version_negotiated = True
        self.peer_max_frame_bytes = message.max_frame_bytes
        self.state = SessionState.AWAIT_DECISION
        return message

    def accept(
        self,
        *,
        heartbeat_interval_ms: int,
        max_jobs_in_flight: int,
        session_id: str | None = None,
    ) -> bytes:
        """Admit the node: the signed welcome frame. The session is established after this.

        The welcome's frame-size and skew limits are this session's own (``config``), so the
        node is never promised more than this side accepts.
        """
        self._require_state(SessionState.AWAIT_DECISION)
        self.check_deadline()
        welcome = Welcome(
            node_id=self.node_id,
            session_id=session_id or f"ses_{secrets.token_hex(12)}",
            heartbeat_interval_ms=heartbeat_interval_ms,
            limits=SessionLimits(
                max_frame_bytes=self.config.limits.max_frame_bytes,
                max_clock_skew_ms=self.config.max_clock_skew_ms,
                max_jobs_in_flight=max_jobs_in_flight,
            ),
        )
        frame = self._seal_signed(welcome)
        self.session_id = welcome.session_id
        self.state = SessionState.ESTABLISHED
        return frame

    def reject(self, code: RejectCode, message: str, retry_after_ms: int | None = None) -> bytes:
        """Refuse the node: the signed reject frame. Close the websocket with code 4011 after it.

        Keep ``message`` short: the frame must fit the node's announced ``max_frame_bytes``
        (ValueError otherwise, and the session stays undecided).
        """
        self._require_state(SessionState.AWAIT_DECISION)
        self.check_deadline()
        frame = self._seal_signed(Reject(code=code, message=message, retry_after_ms=retry_after_ms))
        self.state = SessionState.CLOSED
        return frame

    def _receive_session_frame(self, frame: bytes) -> Message:
        message = super()._receive_session_frame(frame)
        if type(message) is Done and self.node_key is not None:
            # A done frame is billing evidence: its receipt must verify under the node's key.
            receipt = UsageReceipt.from_done(message, self.identity.public_key.raw)
            receipt.verify(self.node_key, message.receipt_signature)
        return message


class NodeSession(_Session):
    """The node agent's side of its websocket to the coordinator.

    ``coordinator_key`` is the pinned key: a challenge signed by any other key is refused.
    """

    _SENDS = _NODE_SENDS
    _RECEIVES = _COORDINATOR_SENDS
    _SEND_DIRECTION = DIRECTION_NODE_TO_COORDINATOR
    _RECEIVE_DIRECTION = DIRECTION_COORDINATOR_TO_NODE

    def __init__(
        self,
        identity: Identity,
        coordinator_key: PublicKey,
        *,
        agent_version: str,
        clock: Clock | None = None,
        config: SessionConfig | None = None,
        random_bytes: Callable[[int], bytes] | None = None,
    ) -> None:
        super().__init__(identity, clock=clock, config=config, random_bytes=random_bytes)
        self.coordinator_key = coordinator_key
        self.agent_version = agent_version
        self.challenge: Challenge | None = None
        self.welcome: Welcome | None = None
        self.state = SessionState.AWAIT_CHALLENGE

    @property
    def node_id(self) -> str:
        return self.identity.public_key.node_id

    def _receive_handshake_frame(self, frame: bytes) -> Message:
        if self.state is SessionState.AWAIT_CHALLENGE:
            return self._receive_challenge(frame)
        if self.state is SessionState.AWAIT_WELCOME:
            return self._receive_decision(frame)
        raise UnexpectedMessage(f"no frame expected in state {self.state.value}")

    def _receive_challenge(self, frame: bytes) -> Message:
        message, _ = self._open_signed(frame, self.coordinator_key, (Challenge,))
        if message.coordinator_key != self.coordinator_key.raw:
            raise HandshakeMismatch("challenge names a coordinator key other than its signer")
        common = set(message.versions) & set(self.config.supported_versions)
        if not common:
            raise UnsupportedVersion(
                f"coordinator speaks versions {message.versions}, this node"
                f" {list(self.config.supported_versions)}"
            )
        self.version = max(common)
        self._version_negotiated = True
        self.challenge = message
        self.state = SessionState.CHALLENGED
        return message

    def hello(self, hardware: Hardware, offers: Iterable[Offer]) -> bytes:
        """The signed hello frame answering the verified challenge."""
        self._require_state(SessionState.CHALLENGED)
        self.check_deadline()
        if self.challenge is None:  # unreachable: CHALLENGED is entered with the challenge set
            raise RuntimeError("no verified challenge to answer")
        hello = Hello(
            nonce=self.challenge.nonce,
            audience=self.coordinator_key.raw,
            node_key=self.identity.public_key.raw,
            ephemeral_key=self._ephemeral.public_bytes,
            version=self.version,
            agent_version=self.agent_version,
            max_frame_bytes=self.config.limits.max_frame_bytes,
            hardware=hardware,
            offers=list(offers),
        )
        try:
            shared_secret = self._ephemeral.exchange(self.challenge.ephemeral_key)
        except ProtocolError:
            self.state = SessionState.CLOSED
            raise
        frame = self._seal_signed(hello)
        self._establish(shared_secret, coordinator=False)
        self.state = SessionState.AWAIT_WELCOME
        return frame

    def _receive_decision(self, frame: bytes) -> Message:
        message, _ = self._open_signed(frame, self.coordinator_key, (Welcome, Reject))
        if isinstance(message, Welcome):
            if message.node_id != self.node_id:
                raise HandshakeMismatch("welcome names another node id")
            self.welcome = message
            # The coordinator sets the session's limits: its frame size and the skew window.
            self.peer_max_frame_bytes = message.limits.max_frame_bytes
            self.config = replace(self.config, max_clock_skew_ms=message.limits.max_clock_skew_ms)
            self.state = SessionState.ESTABLISHED
        else:
            self.state = SessionState.CLOSED
        return message

    def done(
        self,
        *,
        job_id: str,
        model: str,
        usage: Usage,
        finish_reason: FinishReason,
        timings: Timings,
    ) -> bytes:
        """Seal a ``done`` frame carrying this node's signed usage receipt."""
        receipt = UsageReceipt(
            coordinator_key=self.coordinator_key.raw,
            job_id=job_id,
            model=model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            finish_reason=finish_reason,
        )
        done = Done(
            job_id=job_id,
            model=model,
            usage=usage,
            finish_reason=finish_reason,
            timings=timings,
            receipt_signature=receipt.sign(self.identity),
        )
        return self.send(done)
