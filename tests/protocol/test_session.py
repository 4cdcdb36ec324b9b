"""Established sessions: authenticated frames, sequence numbers, timestamps, receipts, limits."""

from __future__ import annotations

import tracemalloc

import msgpack
import pytest

from protocol import (
    AuthenticationFailed,
    BadSignature,
    Cancel,
    Chunk,
    CloseCode,
    CoordinatorSession,
    DecodeLimits,
    Done,
    Drain,
    Failed,
    FrameTooLarge,
    Heartbeat,
    Identity,
    InvalidMessage,
    Job,
    JobAccepted,
    JobRefused,
    MalformedFrame,
    Message,
    Offers,
    ProtocolError,
    SequenceViolation,
    SessionClosed,
    SessionConfig,
    SessionState,
    StaleFrame,
    Timings,
    UnexpectedMessage,
    Usage,
    UsageReceipt,
)
from protocol.crypto import frame_mac
from protocol.framing import SESSION_FRAME
from protocol.messages import FinishReason, GpuStats
from tests.protocol.peers import (
    Pair,
    established_pair,
    handshake,
    new_pair,
    sample_job,
    sample_offer,
    sample_tool_job,
)

COORDINATOR_KEY = Identity.from_seed(b"k" * 32).public_key.raw
NODE_MESSAGES: list[Message] = [
    Heartbeat(
        active_jobs=2,
        queued_jobs=1,
        free_slots=14,
        cpu_pct=12.5,
        memory_used_mib=4096,
        gpus=[
            GpuStats(
                utilization_pct=87.0,
                memory_used_mib=70_000,
                memory_total_mib=81_559,
                temperature_c=64.0,
            )
        ],
    ),
    Offers(offers=[sample_offer(), sample_offer("Qwen/Qwen2.5-7B-Instruct")]),
    JobAccepted(job_id="job_01"),
    JobRefused(job_id="job_02", reason="overloaded", message="16 of 16 slots busy"),
    Chunk(job_id="job_01", index=0, text="Hello", tokens=1, token_ids=[9906]),
    Chunk(job_id="job_01", index=1, text=", world ✓", tokens=3),
    Chunk(
        job_id="job_05",
        index=0,
        text="",
        tokens=1,
        tool_calls_json='[{"index":0,"id":"call_1","type":"function",'
        '"function":{"name":"get_weather","arguments":""}}]',
    ),
    Failed(job_id="job_03", code="backend_error", message="vLLM died", retryable=True),
    Drain(reason="maintenance", grace_ms=30_000),
]
COORDINATOR_MESSAGES: list[Message] = [
    sample_job(),
    sample_tool_job(),
    Job(
        job_id="job_09",
        model="gpt2",
        kind="completion",
        messages=None,
        prompt="Once upon a time",
        sampling=sample_job().sampling,
        deadline_ms=1_767_225_700_000,
    ),
    Cancel(job_id="job_01", reason="customer disconnected"),
    Drain(reason="coordinator restarting", grace_ms=10_000),
]


def fresh_pair() -> Pair:
    """The same established pair every call (fixed identities, nonces, clock): same keys."""
    return handshake(
        new_pair(
            coordinator_identity=Identity.from_seed(b"c" * 32),
            node_identity=Identity.from_seed(b"n" * 32),
        )
    )


def seal(pair: Pair, payload: bytes, seq: int | None = None, *, from_node: bool = True) -> bytes:
    """A correctly authenticated session frame around arbitrary payload bytes.

    ``seq`` defaults to the sender's next sequence number, so only the payload is wrong.
    """
    sender = pair.node if from_node else pair.coordinator
    if seq is None:
        seq = sender._send_seq
    header_and_payload = bytes((SESSION_FRAME,)) + seq.to_bytes(8, "big") + payload
    return header_and_payload + frame_mac(
        sender._send_key, sender._SEND_DIRECTION, header_and_payload
    )


def envelope(pair: Pair, body: object, *, type_: str = "chunk", seq: int | None = None) -> bytes:
    seq = pair.node._send_seq if seq is None else seq
    ts_ms = int(pair.clock.time() * 1000)
    return msgpack.packb({"v": 1, "type": type_, "seq": seq, "ts": ts_ms, "body": body})


@pytest.mark.parametrize("message", NODE_MESSAGES, ids=lambda m: m.TYPE)
def test_every_node_message_round_trips(message: Message) -> None:
    pair = established_pair()
    assert pair.coordinator.receive(pair.node.send(message)) == message


@pytest.mark.parametrize("message", COORDINATOR_MESSAGES, ids=lambda m: m.TYPE)
def test_every_coordinator_message_round_trips(message: Message) -> None:
    pair = established_pair()
    assert pair.node.receive(pair.coordinator.send(message)) == message


@pytest.mark.parametrize("finish_reason", ["stop", "length", "tool_calls", "content_filter"])
def test_done_round_trips_with_a_receipt_anyone_can_verify_later(
    finish_reason: FinishReason,
) -> None:
    pair = established_pair()
    usage = Usage(prompt_tokens=21, completion_tokens=9)
    frame = pair.node.done(
        job_id="job_01",
        model="meta-llama/Llama-3.1-8B-Instruct",
        usage=usage,
        finish_reason=finish_reason,
        timings=Timings(queue_ms=3, time_to_first_token_ms=41, total_ms=230),
    )
    done = pair.coordinator.receive(frame)
    assert isinstance(done, Done)
    assert done.usage == usage
    assert done.finish_reason == finish_reason
    # Stored evidence: the fields plus the signature verify against the node's public key alone.
    receipt = UsageReceipt.from_done(done, pair.coordinator_identity.public_key.raw)
    receipt.verify(pair.node_identity.public_key, done.receipt_signature)


def test_done_whose_receipt_is_signed_by_another_key_fails() -> None:
    pair = established_pair()
    usage = Usage(prompt_tokens=21, completion_tokens=9)
    receipt = UsageReceipt(pair.coordinator_identity.public_key.raw, "job_01", "m", 21, 9, "stop")
    forged = Done(
        job_id="job_01",
        model="m",
        usage=usage,
        finish_reason="stop",
        timings=Timings(queue_ms=0, time_to_first_token_ms=None, total_ms=1),
        receipt_signature=receipt.sign(Identity.generate()),
    )
    with pytest.raises(BadSignature) as caught:
        pair.coordinator.receive(pair.node.send(forged))
    assert caught.value.close_code == CloseCode.BAD_SIGNATURE


def test_done_whose_usage_differs_from_the_signed_receipt_fails() -> None:
    """An inflated count in the frame does not match what the node signed."""
    pair = established_pair()
    coordinator_key = pair.coordinator_identity.public_key.raw
    signed = UsageReceipt(coordinator_key, "job_01", "m", 21, 9, "stop").sign(pair.node_identity)
    inflated = Done(
        job_id="job_01",
        model="m",
        usage=Usage(prompt_tokens=21, completion_tokens=900),
        finish_reason="stop",
        timings=Timings(queue_ms=0, time_to_first_token_ms=None, total_ms=1),
        receipt_signature=signed,
    )
    with pytest.raises(BadSignature):
        pair.coordinator.receive(pair.node.send(inflated))


def test_done_whose_receipt_names_another_coordinator_fails() -> None:
    pair = established_pair()
    elsewhere = UsageReceipt(COORDINATOR_KEY, "job_01", "m", 21, 9, "stop")
    done = Done(
        job_id="job_01",
        model="m",
        usage=Usage(prompt_tokens=21, completion_tokens=9),
        finish_reason="stop",
        timings=Timings(queue_ms=0, time_to_first_token_ms=None, total_ms=1),
        receipt_signature=elsewhere.sign(pair.node_identity),
    )
    with pytest.raises(BadSignature):
        pair.coordinator.receive(pair.node.send(done))


@pytest.mark.parametrize(
    "field",
    ["coordinator_key", "job_id", "model", "prompt_tokens", "completion_tokens", "finish_reason"],
)
def test_a_receipt_changed_in_any_field_no_longer_verifies(field: str) -> None:
    identity = Identity.generate()
    receipt = UsageReceipt(COORDINATOR_KEY, "job_01", "m", 21, 9, "stop")
    signature = receipt.sign(identity)
    changes: dict[str, object] = {
        "coordinator_key": Identity.generate().public_key.raw,
        "job_id": "job_02",
        "model": "n",
        "prompt_tokens": 22,
        "completion_tokens": 10,
        "finish_reason": "length",
    }
    fields = {
        "coordinator_key": receipt.coordinator_key,
        "job_id": receipt.job_id,
        "model": receipt.model,
        "prompt_tokens": receipt.prompt_tokens,
        "completion_tokens": receipt.completion_tokens,
        "finish_reason": receipt.finish_reason,
        field: changes[field],
    }
    changed = UsageReceipt(**fields)  # type: ignore[arg-type]
    with pytest.raises(BadSignature):
        changed.verify(identity.public_key, signature)


def test_a_frame_tampered_in_any_byte_fails() -> None:
    reference = fresh_pair()
    frame = reference.node.send(Chunk(job_id="job_01", index=0, text="Hello", tokens=1))
    assert fresh_pair().coordinator.receive(frame) is not None  # the untouched frame is fine
    for position in range(len(frame)):
        for flip in (0x01, 0x80):
            tampered = bytearray(frame)
            tampered[position] ^= flip
            receiver = fresh_pair().coordinator
            with pytest.raises((AuthenticationFailed, MalformedFrame)) as caught:
                receiver.receive(bytes(tampered))
            if position == 0:
                assert isinstance(caught.value, MalformedFrame)  # the kind byte
            else:
                assert isinstance(caught.value, AuthenticationFailed), position
            assert receiver.state is SessionState.CLOSED


def test_truncated_and_extended_frames_fail() -> None:
    reference = fresh_pair()
    frame = reference.node.send(Chunk(job_id="job_01", index=0, text="Hello", tokens=1))
    for cut in (0, 1, 9, 41, len(frame) - 1):
        with pytest.raises((AuthenticationFailed, MalformedFrame)):
            fresh_pair().coordinator.receive(frame[:cut])
    with pytest.raises(AuthenticationFailed):
        fresh_pair().coordinator.receive(frame + b"\x00")


def test_a_frame_authenticated_under_another_sessions_key_fails() -> None:
    coordinator_identity = Identity.generate()
    node_identity = Identity.generate()
    first = handshake(
        new_pair(coordinator_identity=coordinator_identity, node_identity=node_identity, seed=1)
    )
    second = handshake(
        new_pair(coordinator_identity=coordinator_identity, node_identity=node_identity, seed=2)
    )
    frame = first.node.send(Chunk(job_id="job_01", index=0, text="Hi", tokens=1))
    with pytest.raises(AuthenticationFailed) as caught:
        second.coordinator.receive(frame)
    assert caught.value.close_code == CloseCode.AUTHENTICATION_FAILED


def test_a_frame_reflected_back_to_its_sender_fails() -> None:
    pair = established_pair()
    frame = pair.node.send(Drain(reason="bye", grace_ms=0))
    with pytest.raises(AuthenticationFailed):
        pair.node.receive(frame)


def test_a_replayed_frame_fails() -> None:
    pair = established_pair()
    frame = pair.node.send(Chunk(job_id="job_01", index=0, text="Hello", tokens=1))
    pair.coordinator.receive(frame)
    with pytest.raises(SequenceViolation, match="replayed or reordered") as caught:
        pair.coordinator.receive(frame)
    assert caught.value.close_code == CloseCode.SEQUENCE_VIOLATION


def test_reordered_frames_fail() -> None:
    pair = established_pair()
    first = pair.node.send(Chunk(job_id="job_01", index=0, text="a", tokens=1))
    second = pair.node.send(Chunk(job_id="job_01", index=1, text="b", tokens=1))
    with pytest.raises(SequenceViolation, match="skipped"):
        pair.coordinator.receive(second)
    assert first  # the first frame never reached the receiver: the second is a gap


def test_a_frame_whose_envelope_seq_differs_from_its_header_fails() -> None:
    pair = established_pair()
    body = Chunk(job_id="job_01", index=0, text="a", tokens=1).model_dump()
    frame = seal(pair, envelope(pair, body, seq=5))
    with pytest.raises(SequenceViolation, match="differs from frame seq"):
        pair.coordinator.receive(frame)


@pytest.mark.parametrize("skew_s", [-61.0, 61.0, -3600.0, 86_400.0])
def test_stale_or_future_frames_fail(skew_s: float) -> None:
    pair = established_pair()
    frame = pair.node.send(Chunk(job_id="job_01", index=0, text="a", tokens=1))
    pair.clock.set_wall(pair.clock.time() - skew_s)
    with pytest.raises(StaleFrame) as caught:
        pair.coordinator.receive(frame)
    assert caught.value.close_code == CloseCode.STALE_FRAME


def test_frames_inside_the_skew_window_pass() -> None:
    pair = established_pair()
    frame = pair.node.send(Chunk(job_id="job_01", index=0, text="a", tokens=1))
    pair.clock.advance(59)
    assert isinstance(pair.coordinator.receive(frame), Chunk)


def test_a_message_sent_in_the_wrong_direction_fails() -> None:
    pair = established_pair()
    # A node that forges a job frame towards the coordinator.
    frame = seal(pair, envelope(pair, sample_job().model_dump(), type_="job"))
    with pytest.raises(UnexpectedMessage, match="'job' is not allowed") as caught:
        pair.coordinator.receive(frame)
    assert caught.value.close_code == CloseCode.UNEXPECTED_MESSAGE


def test_a_handshake_message_after_the_handshake_fails() -> None:
    pair = established_pair()
    hello_body = pair.coordinator.hello
    assert hello_body is not None
    frame = seal(pair, envelope(pair, hello_body.model_dump(), type_="hello"))
    with pytest.raises(UnexpectedMessage):
        pair.coordinator.receive(frame)


def test_send_refuses_messages_this_side_may_not_send() -> None:
    pair = established_pair()
    with pytest.raises(ValueError, match="may not send 'job'"):
        pair.node.send(sample_job())
    with pytest.raises(ValueError, match="may not send 'chunk'"):
        pair.coordinator.send(Chunk(job_id="job_01", index=0, text="a", tokens=1))


def test_send_refuses_a_frame_over_the_peers_limit_without_breaking_the_sequence() -> None:
    pair = established_pair()
    pair.coordinator.peer_max_frame_bytes = 2048
    big = sample_job().model_copy(update={"prompt": None})
    too_big = Job.model_validate(
        {**big.model_dump(), "messages": [{"role": "user", "content": "x" * 4096, "name": None}]}
    )
    with pytest.raises(ValueError, match="exceeds the peer's limit of 2048"):
        pair.coordinator.send(too_big)
    assert pair.node.receive(pair.coordinator.send(sample_job())) == sample_job()


def test_sending_before_the_handshake_or_after_close_fails() -> None:
    pair = new_pair()
    with pytest.raises(RuntimeError, match="not established"):
        pair.node.send(Drain(reason="x", grace_ms=0))
    pair = established_pair()
    pair.node.close()
    with pytest.raises(SessionClosed):
        pair.node.send(Drain(reason="x", grace_ms=0))


def test_a_session_stays_closed_after_a_violation() -> None:
    pair = established_pair()
    good = pair.node.send(Chunk(job_id="job_01", index=0, text="a", tokens=1))
    with pytest.raises(AuthenticationFailed):
        pair.coordinator.receive(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(SessionClosed):
        pair.coordinator.receive(good)


def test_an_oversized_frame_fails_before_it_is_authenticated_or_decoded() -> None:
    pair = established_pair()
    limit = pair.coordinator.config.limits.max_frame_bytes
    with pytest.raises(FrameTooLarge) as caught:
        pair.coordinator.receive(b"\x02" + b"\x00" * limit)
    assert caught.value.close_code == CloseCode.FRAME_TOO_LARGE


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        # A 4-GiB array header, a 4-GiB string header, a 4-GiB map header, a 4-GiB bin header.
        (b"\xdd\xff\xff\xff\xff", "exceeds max_array_len"),
        (b"\xdb\xff\xff\xff\xff", "exceeds max_str_len|incomplete input"),
        (b"\xdf\xff\xff\xff\xff", "exceeds max_map_len"),
        (b"\xc6\xff\xff\xff\xff", "exceeds max_bin_len|incomplete input"),
        # An ext type, and the msgpack timestamp extension.
        (msgpack.packb(msgpack.ExtType(5, b"x")), "exceeds max_ext_len"),
        (msgpack.packb(msgpack.Timestamp(1, 0)), "exceeds max_ext_len"),
    ],
)
def test_length_headers_over_the_limits_fail_before_allocation(
    payload: bytes, message: str
) -> None:
    pair = established_pair()
    frame = seal(pair, payload)
    tracemalloc.start()
    try:
        with pytest.raises(MalformedFrame, match=message):
            pair.coordinator.receive(frame)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


@pytest.mark.parametrize("depth", [8, 1_000, 200_000])
def test_deep_nesting_fails_without_recursion_or_blow_up(depth: int) -> None:
    pair = established_pair()
    header = msgpack.packb(
        {"v": 1, "type": "chunk", "seq": pair.node._send_seq, "ts": int(pair.clock.time() * 1000)}
    )
    # Append a fifth key, "body", whose value nests `depth` arrays deep inside one map.
    payload = b"\x85" + header[1:] + b"\xa4body\x81\xa4text" + b"\x91" * depth + b"\x00"
    with pytest.raises(MalformedFrame, match=r"depth limit|msgpack"):
        pair.coordinator.receive(seal(pair, payload))


def test_nesting_at_the_depth_limit_reaches_schema_validation() -> None:
    pair = established_pair()
    header = msgpack.packb(
        {"v": 1, "type": "chunk", "seq": pair.node._send_seq, "ts": int(pair.clock.time() * 1000)}
    )
    payload = b"\x85" + header[1:] + b"\xa4body\x81\xa4text" + b"\x91" * 6 + b"\x00"
    with pytest.raises(InvalidMessage, match="invalid chunk"):
        pair.coordinator.receive(seal(pair, payload))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("x" * 2_000, "exceeds max_str_len"),
        (b"x" * 2_000, "exceeds max_bin_len"),
        (list(range(70_000)), "exceeds max_array_len"),
        ({f"k{i}": i for i in range(100)}, "exceeds max_map_len"),
    ],
)
def test_objects_over_the_decode_limits_fail(value: object, message: str) -> None:
    limits = DecodeLimits(max_str_bytes=1_024)
    pair = handshake(new_pair(config=SessionConfig(limits=limits)))
    payload = envelope(pair, {"text": value})
    with pytest.raises(MalformedFrame, match=message):
        pair.coordinator.receive(seal(pair, payload))


def test_a_map_with_a_duplicate_key_fails() -> None:
    """Last-key-wins decoders and strict decoders would read such a frame differently."""
    pair = established_pair()
    good = envelope(pair, {"job_id": "job_01", "index": 0, "text": "a", "tokens": 1})
    # Re-encode the body map with "tokens" twice: fixmap of 5 entries instead of 4.
    body_at = good.index(b"\x84\xa6job_id")
    payload = good[:body_at] + b"\x85" + good[body_at + 1 :] + b"\xa6tokens\x63"
    with pytest.raises(MalformedFrame, match="duplicate key"):
        pair.coordinator.receive(seal(pair, payload))


def test_malformed_envelopes_fail_with_specific_errors() -> None:
    cases: list[tuple[bytes, type[ProtocolError], str]] = [
        (b"\xc1", MalformedFrame, "not valid msgpack"),
        (msgpack.packb([1, 2]), MalformedFrame, "exactly the keys"),
        (msgpack.packb({"v": 1}), MalformedFrame, "exactly the keys"),
        (msgpack.packb(1) + b"\x00", MalformedFrame, "not valid msgpack"),
    ]
    for payload, error, message in cases:
        pair = fresh_pair()
        with pytest.raises(error, match=message):
            pair.coordinator.receive(seal(pair, payload))


def test_coordinator_session_exposes_the_node_identity() -> None:
    pair = established_pair()
    assert isinstance(pair.coordinator, CoordinatorSession)
    assert pair.coordinator.node_key == pair.node_identity.public_key
    assert pair.coordinator.node_id == pair.node.node_id
