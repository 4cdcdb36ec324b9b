"""The signed challenge/hello/welcome handshake, its checks and its deadline."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from protocol import (
    BadSignature,
    Challenge,
    CloseCode,
    HandshakeMismatch,
    HandshakeTimeout,
    Hello,
    Identity,
    Job,
    MalformedFrame,
    ManualClock,
    NodeSession,
    Reject,
    SessionConfig,
    SessionState,
    StaleFrame,
    UnexpectedMessage,
    UnsupportedVersion,
    UntrustedCoordinator,
    Welcome,
)
from protocol.crypto import handshake_signing_input
from protocol.framing import SIGNED_FRAME, DecodeLimits, encode_envelope
from tests.protocol.peers import (
    AGENT_VERSION,
    handshake,
    new_pair,
    sample_hardware,
    sample_job,
    sample_offer,
)


def test_happy_path_establishes_both_sides_with_matching_identities() -> None:
    pair = new_pair()
    challenge = pair.node.receive(pair.coordinator.start())
    assert isinstance(challenge, Challenge)
    assert challenge.coordinator_key == pair.coordinator_identity.public_key.raw
    assert pair.node.state is SessionState.CHALLENGED

    hello = pair.coordinator.receive(pair.node.hello(sample_hardware(), [sample_offer()]))
    assert isinstance(hello, Hello)
    assert hello.offers == [sample_offer()]
    assert hello.hardware == sample_hardware()
    assert hello.agent_version == AGENT_VERSION
    assert pair.coordinator.node_id == pair.node_identity.public_key.node_id
    assert pair.coordinator.state is SessionState.AWAIT_DECISION

    welcome = pair.node.receive(
        pair.coordinator.accept(
            heartbeat_interval_ms=5_000, max_jobs_in_flight=64, session_id="ses_1"
        )
    )
    assert isinstance(welcome, Welcome)
    assert welcome.node_id == pair.node.node_id
    assert welcome.session_id == "ses_1"
    assert pair.coordinator.established
    assert pair.node.established

    # Traffic flows both ways under the derived keys.
    job = pair.node.receive(pair.coordinator.send(sample_job()))
    assert job == sample_job()


def test_reject_reaches_the_node_and_closes_both_sides() -> None:
    pair = new_pair()
    pair.node.receive(pair.coordinator.start())
    pair.coordinator.receive(pair.node.hello(sample_hardware(), []))
    reject = pair.node.receive(pair.coordinator.reject("unknown_node", "enroll this key first"))
    assert isinstance(reject, Reject)
    assert reject.code == "unknown_node"
    assert pair.node.state is SessionState.CLOSED
    assert pair.coordinator.state is SessionState.CLOSED


def test_node_refuses_a_coordinator_other_than_the_pinned_one() -> None:
    impostor = Identity.generate()
    pair = new_pair(pinned=Identity.generate(), coordinator_identity=impostor)
    with pytest.raises(UntrustedCoordinator) as caught:
        pair.node.receive(pair.coordinator.start())
    assert caught.value.close_code == CloseCode.BAD_SIGNATURE
    assert pair.node.state is SessionState.CLOSED


def test_challenge_signed_by_another_key_fails() -> None:
    """A challenge that names the pinned key in its header but was signed by another key."""
    pair = new_pair()
    frame = bytearray(pair.coordinator.start())
    forger = Identity.generate()
    payload = bytes(frame[33:-64])
    frame[-64:] = forger.sign(handshake_signing_input((), payload))
    with pytest.raises(BadSignature):
        pair.node.receive(bytes(frame))


def test_hello_signed_by_another_key_than_it_names_fails() -> None:
    pair = new_pair()
    pair.node.receive(pair.coordinator.start())
    frame = pair.node.hello(sample_hardware(), [])
    # Re-sign the same payload with another key and put that key in the header: the signature
    # verifies, but the hello names the original node key.
    other = Identity.generate()
    payload = frame[33:-64]
    challenge_payload = pair.coordinator._handshake_payloads[0]
    forged = (
        bytes((SIGNED_FRAME,))
        + other.public_key.raw
        + payload
        + other.sign(handshake_signing_input((challenge_payload,), payload))
    )
    with pytest.raises(HandshakeMismatch, match="other than the one that signed it"):
        pair.coordinator.receive(forged)


def test_hello_with_a_tampered_signature_fails() -> None:
    pair = new_pair()
    pair.node.receive(pair.coordinator.start())
    frame = bytearray(pair.node.hello(sample_hardware(), []))
    frame[-1] ^= 0x01
    with pytest.raises(BadSignature):
        pair.coordinator.receive(bytes(frame))


def _forge_hello(
    pair_node: NodeSession, identity: Identity, challenge_payload: bytes, **changes: object
) -> bytes:
    """A hello correctly signed by ``identity`` but with some fields changed."""
    assert pair_node.challenge is not None
    fields: dict[str, object] = {
        "nonce": pair_node.challenge.nonce,
        "audience": pair_node.coordinator_key.raw,
        "node_key": identity.public_key.raw,
        "ephemeral_key": bytes(range(32)),
        "version": 1,
        "agent_version": AGENT_VERSION,
        "max_frame_bytes": 1 << 20,
        "hardware": sample_hardware(),
        "offers": [],
    }
    fields.update(changes)
    hello = Hello.model_validate(fields)
    payload = encode_envelope(hello, seq=0, ts_ms=int(pair_node.clock.time() * 1000), version=1)
    signature = identity.sign(handshake_signing_input((challenge_payload,), payload))
    return bytes((SIGNED_FRAME,)) + identity.public_key.raw + payload + signature


def test_wrong_nonce_echo_fails() -> None:
    pair = new_pair()
    pair.node.receive(pair.coordinator.start())
    frame = _forge_hello(
        pair.node, pair.node_identity, pair.coordinator._handshake_payloads[0], nonce=b"\x00" * 32
    )
    with pytest.raises(HandshakeMismatch, match="nonce") as caught:
        pair.coordinator.receive(frame)
    assert caught.value.close_code == CloseCode.HANDSHAKE_MISMATCH


def test_hello_for_another_audience_fails() -> None:
    pair = new_pair()
    pair.node.receive(pair.coordinator.start())
    frame = _forge_hello(
        pair.node,
        pair.node_identity,
        pair.coordinator._handshake_payloads[0],
        audience=Identity.generate().public_key.raw,
    )
    with pytest.raises(HandshakeMismatch, match="another coordinator"):
        pair.coordinator.receive(frame)


def test_hello_replayed_into_a_new_session_fails() -> None:
    """A hello captured from one session is useless against the next challenge."""
    coordinator_identity = Identity.generate()
    node_identity = Identity.generate()
    first = new_pair(coordinator_identity=coordinator_identity, node_identity=node_identity)
    first.node.receive(first.coordinator.start())
    captured = first.node.hello(sample_hardware(), [])
    second = new_pair(
        coordinator_identity=coordinator_identity, node_identity=node_identity, seed=5
    )
    second.coordinator.start()
    with pytest.raises(BadSignature):
        second.coordinator.receive(captured)


def test_node_choosing_an_unknown_protocol_version_fails() -> None:
    pair = new_pair()
    pair.node.receive(pair.coordinator.start())
    frame = _forge_hello(
        pair.node, pair.node_identity, pair.coordinator._handshake_payloads[0], version=2
    )
    with pytest.raises(UnsupportedVersion) as caught:
        pair.coordinator.receive(frame)
    assert caught.value.close_code == CloseCode.UNSUPPORTED_VERSION


def test_coordinator_offering_only_unknown_versions_fails_on_the_node() -> None:
    clock = ManualClock()
    pair = new_pair(clock=clock)
    pair.coordinator.config = SessionConfig(supported_versions=(1,))
    pair.node.config = SessionConfig(supported_versions=(2,))
    with pytest.raises(UnsupportedVersion, match="version 1 is not accepted"):
        pair.node.receive(pair.coordinator.start())


def test_versions_negotiate_to_the_highest_common_one() -> None:
    """A coordinator that also speaks a future v2 frames its challenge as v1 for older nodes."""
    pair = new_pair()
    pair.coordinator.config = SessionConfig(supported_versions=(1, 2))
    pair.coordinator.version = 1
    challenge = pair.node.receive(pair.coordinator.start())
    assert isinstance(challenge, Challenge)
    assert challenge.versions == [1, 2]
    pair.coordinator.receive(pair.node.hello(sample_hardware(), []))
    assert pair.node.version == pair.coordinator.version == 1


def test_hello_framed_in_another_version_than_it_chooses_fails() -> None:
    pair = new_pair()
    pair.coordinator.config = SessionConfig(supported_versions=(1, 2))
    pair.node.receive(pair.coordinator.start())
    frame = _forge_hello(
        pair.node,
        pair.node_identity,
        pair.coordinator._handshake_payloads[0],
        version=2,
    )
    with pytest.raises(HandshakeMismatch, match="framed as version 1"):
        pair.coordinator.receive(frame)


def test_envelope_with_an_unknown_protocol_version_fails() -> None:
    pair = new_pair()
    frame = pair.coordinator.start()
    payload = frame[33:-64]
    # The envelope's first key is "v" (fixmap, fixstr "v", positive fixint 1).
    assert payload[1:4] == b"\xa1v\x01"
    bad_payload = payload[:3] + b"\x07" + payload[4:]
    forged = (
        frame[:33]
        + bad_payload
        + pair.coordinator_identity.sign(handshake_signing_input((), bad_payload))
    )
    with pytest.raises(UnsupportedVersion, match="version 7"):
        pair.node.receive(forged)


def test_expired_handshake_fails_on_the_coordinator() -> None:
    pair = new_pair(config=SessionConfig(handshake_timeout_ms=2_000))
    pair.node.receive(pair.coordinator.start())
    hello = pair.node.hello(sample_hardware(), [])
    pair.clock.advance(2.5)
    with pytest.raises(HandshakeTimeout) as caught:
        pair.coordinator.receive(hello)
    assert caught.value.close_code == CloseCode.HANDSHAKE_TIMEOUT
    assert pair.coordinator.state is SessionState.CLOSED


def test_expired_handshake_fails_on_the_node() -> None:
    pair = new_pair(config=SessionConfig(handshake_timeout_ms=2_000))
    pair.node.receive(pair.coordinator.start())
    pair.coordinator.receive(pair.node.hello(sample_hardware(), []))
    welcome = pair.coordinator.accept(heartbeat_interval_ms=5_000, max_jobs_in_flight=64)
    pair.clock.advance(3)
    with pytest.raises(HandshakeTimeout):
        pair.node.receive(welcome)


def test_check_deadline_lets_the_shell_time_out_a_silent_peer() -> None:
    pair = new_pair(config=SessionConfig(handshake_timeout_ms=1_000))
    pair.coordinator.start()
    pair.coordinator.check_deadline()  # not yet
    pair.clock.advance(1.001)
    with pytest.raises(HandshakeTimeout):
        pair.coordinator.check_deadline()


def test_deadline_no_longer_applies_once_established() -> None:
    pair = handshake(new_pair(config=SessionConfig(handshake_timeout_ms=1_000)))
    pair.clock.advance(3_600)
    pair.coordinator.check_deadline()
    frame = pair.coordinator.send(sample_job())
    assert isinstance(pair.node.receive(frame), Job)


def test_stale_challenge_fails() -> None:
    pair = new_pair()
    frame = pair.coordinator.start()
    pair.clock.set_wall(pair.clock.time() + 120)  # node's clock is two minutes ahead
    with pytest.raises(StaleFrame):
        pair.node.receive(frame)


def test_frames_out_of_handshake_order_fail() -> None:
    pair = new_pair()
    challenge = pair.coordinator.start()
    # The coordinator does not accept its own challenge back.
    with pytest.raises(UntrustedCoordinator):
        new_pair(pinned=Identity.generate()).node.receive(challenge)
    pair.node.receive(challenge)
    pair.coordinator.receive(pair.node.hello(sample_hardware(), []))
    # Awaiting its own accept/reject decision, the coordinator takes no further frame.
    with pytest.raises(UnexpectedMessage):
        pair.coordinator.receive(challenge)


def test_a_session_frame_during_the_handshake_fails() -> None:
    established = handshake(new_pair())
    job_frame = established.coordinator.send(sample_job())
    pair = new_pair()
    pair.coordinator.start()
    with pytest.raises(MalformedFrame, match="signed handshake frame") as caught:
        pair.coordinator.receive(job_frame)
    assert caught.value.close_code == CloseCode.MALFORMED_FRAME


def test_hello_from_a_small_order_key_fails_even_with_a_valid_looking_signature() -> None:
    pair = new_pair()
    pair.node.receive(pair.coordinator.start())
    frame = pair.node.hello(sample_hardware(), [])
    weak_key = (1).to_bytes(32, "little")
    forged = bytes((SIGNED_FRAME,)) + weak_key + frame[33:-64] + weak_key + bytes(32)
    with pytest.raises(BadSignature, match="small-order"):
        pair.coordinator.receive(forged)


def test_a_degenerate_ephemeral_key_closes_the_node_session() -> None:
    pair = new_pair()
    frame = bytearray(pair.coordinator.start())
    pair.node.receive(bytes(frame))
    assert pair.node.challenge is not None
    pair.node.challenge = pair.node.challenge.model_copy(update={"ephemeral_key": bytes(32)})
    with pytest.raises(HandshakeMismatch, match="ephemeral"):
        pair.node.hello(sample_hardware(), [])
    assert pair.node.state is SessionState.CLOSED
    assert pair.node._send_seq == 0  # nothing was signed or sent


def test_limits_are_announced_and_adopted() -> None:
    coordinator_config = SessionConfig(max_clock_skew_ms=5_000)
    pair = new_pair()
    pair.coordinator.config = coordinator_config
    pair.node.config = SessionConfig(limits=DecodeLimits(max_frame_bytes=65_536))
    handshake(pair)
    # The coordinator learns the node's frame limit from the hello ...
    assert pair.coordinator.peer_max_frame_bytes == 65_536
    # ... and the node adopts the coordinator's frame limit and skew window from the welcome.
    assert pair.node.peer_max_frame_bytes == coordinator_config.limits.max_frame_bytes
    assert pair.node.config.max_clock_skew_ms == 5_000
    frame = pair.coordinator.send(sample_job())
    pair.clock.set_wall(pair.clock.time() + 6)
    with pytest.raises(StaleFrame):
        pair.node.receive(frame)


def test_reject_after_the_deadline_times_out() -> None:
    pair = new_pair(config=SessionConfig(handshake_timeout_ms=1_000))
    pair.node.receive(pair.coordinator.start())
    pair.coordinator.receive(pair.node.hello(sample_hardware(), []))
    pair.clock.advance(2)
    with pytest.raises(HandshakeTimeout):
        pair.coordinator.reject("overloaded", "later")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (lambda: SessionConfig(handshake_timeout_ms=0), "handshake_timeout_ms"),
        (lambda: SessionConfig(max_clock_skew_ms=0), "max_clock_skew_ms"),
        (lambda: SessionConfig(max_clock_skew_ms=3_600_000), "max_clock_skew_ms"),
        (lambda: SessionConfig(limits=DecodeLimits(max_frame_bytes=100)), "max_frame_bytes"),
        (lambda: SessionConfig(supported_versions=()), "supported_versions"),
    ],
)
def test_a_bad_session_config_fails_when_it_is_made(
    config: Callable[[], SessionConfig], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        config()


def test_a_reject_too_large_for_the_node_is_refused_without_consuming_anything() -> None:
    pair = new_pair()
    pair.node.config = SessionConfig(limits=DecodeLimits(max_frame_bytes=1024))
    pair.node.receive(pair.coordinator.start())
    pair.coordinator.receive(pair.node.hello(sample_hardware(), []))
    with pytest.raises(ValueError, match="exceeds the peer's limit of 1024"):
        pair.coordinator.reject("suspended", "é" * 1000)
    assert pair.coordinator.state is SessionState.AWAIT_DECISION
    reject = pair.node.receive(pair.coordinator.reject("suspended", "suspended by the operator"))
    assert isinstance(reject, Reject)
