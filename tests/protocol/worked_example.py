"""The worked example of ``docs/protocol.md``: one deterministic session, rendered as Markdown.

A real :class:`~protocol.CoordinatorSession` and :class:`~protocol.NodeSession` run the handshake
and exchange a ``job``, a ``chunk`` and a ``done`` frame, with fixed Ed25519 seeds, scripted
"random" bytes for the nonce and the X25519 ephemeral keys, and a manual clock. The values a reader
is invited to recompute (ids, transcript hashes, the X25519 secret, HKDF, MACs, the receipt) are
recomputed here from the spec's description, independently of ``protocol/``, and checked against
the frames the sessions produced, so the prose, the numbers and the code cannot drift apart. The
handshake fields the spec constrains (the negotiated version in every envelope, the hello's
audience and receive limit, the welcome's limits, acceptable Ed25519 keys) are checked the same
way.

    python -m tests.protocol.worked_example           # print the section
    python -m tests.protocol.worked_example --write   # replace it in docs/protocol.md

``tests/protocol/test_docs_example.py`` fails when the section in the doc differs from
:func:`render`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
import sys
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from protocol import (
    Challenge,
    ChatMessage,
    Chunk,
    CoordinatorSession,
    Done,
    GpuInfo,
    Hardware,
    Hello,
    Identity,
    Job,
    ManualClock,
    NodeSession,
    Offer,
    SamplingParams,
    Timings,
    Usage,
    Welcome,
)

__all__ = [
    "DOC_PATH",
    "END_MARKER",
    "REGENERATE_COMMAND",
    "START_MARKER",
    "extract_section",
    "main",
    "render",
    "write_section",
]

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
START_MARKER = "<!-- worked-example:start -->\n"
END_MARKER = "<!-- worked-example:end -->"
REGENERATE_COMMAND = "python -m tests.protocol.worked_example --write"

# The inputs. Readable byte ranges rather than anything clever: a reader types them in.
COORDINATOR_SEED = bytes(range(0x20))
NODE_SEED = bytes(range(0x20, 0x40))
COORDINATOR_EPHEMERAL_PRIVATE = bytes(range(0x40, 0x60))
CHALLENGE_NONCE = bytes(range(0x60, 0x80))
NODE_EPHEMERAL_PRIVATE = bytes(range(0x80, 0xA0))
AGENT_VERSION = "0.1.0"
SESSION_ID = "ses_0123456789abcdef01234567"
HEARTBEAT_INTERVAL_MS = 5_000
# Binary fractions of a second, so that int(time * 1000) is exact on the manual clock.
STEP_S = 0.125

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
HARDWARE = Hardware(
    cpu_model="AMD EPYC 9454",
    cpu_cores=48,
    memory_mib=262_144,
    os="Linux 6.8",
    gpus=[GpuInfo(name="NVIDIA H100 80GB HBM3", memory_mib=81_559)],
)
OFFER = Offer(
    model=MODEL,
    weights_hash=None,
    context_length=131_072,
    max_concurrency=16,
    price_input_micro_usd_per_1m=50_000,
    price_output_micro_usd_per_1m=150_000,
    supported_parameters=[
        "frequency_penalty",
        "max_tokens",
        "parallel_tool_calls",
        "presence_penalty",
        "response_format",
        "seed",
        "stop",
        "temperature",
        "tool_choice",
        "tools",
        "top_p",
    ],
)
MAX_JOBS_IN_FLIGHT = 64
JOB_ID = "job_01"
CHUNK = Chunk(job_id=JOB_ID, index=0, text="Hello!", tokens=2, token_ids=[9906, 0])
USAGE = Usage(prompt_tokens=12, completion_tokens=2)
TIMINGS = Timings(queue_ms=3, time_to_first_token_ms=41, total_ms=58)

# The spec's constants, spelled out here rather than imported, so the example checks the doc.
HANDSHAKE_DOMAIN = b"shareai/v1 handshake\x00"
SESSION_KEYS_INFO = b"shareai/v1 session keys"
ID_DOMAIN = b"shareai/v1 id\x00"
RECEIPT_DOMAIN = b"shareai/v1 usage-receipt\x00"
PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME_BYTES = 1_048_576
DEFAULT_MAX_CLOCK_SKEW_MS = 60_000
ED25519_FIELD_PRIME = 2**255 - 19
# The y-coordinates of the small-order points of edwards25519, as the spec lists them (§3.1).
SMALL_ORDER_Y = frozenset(
    int.from_bytes(bytes.fromhex(encoded), "little")
    for encoded in (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    )
)
SIGNED_KIND = 0x01
SESSION_KIND = 0x02
HEX_PER_LINE = 64


class ScriptedRandom:
    """A ``random_bytes`` function that hands out a fixed list of values, in order."""

    def __init__(self, side: str, draws: Sequence[bytes]) -> None:
        self._side = side
        self._draws = deque(draws)

    def __call__(self, n: int) -> bytes:
        if not self._draws:
            raise RuntimeError(f"the {self._side} drew more random bytes than the example scripts")
        value = self._draws.popleft()
        if len(value) != n:
            raise RuntimeError(
                f"the {self._side} asked for {n} random bytes, scripted {len(value)}"
            )
        return value

    def check_used_up(self) -> None:
        if self._draws:
            raise RuntimeError(f"the {self._side} drew fewer random bytes than the example scripts")


@dataclass(frozen=True, slots=True)
class Frame:
    number: int
    type: str
    sender: str
    data: bytes

    @property
    def direction(self) -> str:
        return "coordinator → node" if self.sender == "coordinator" else "node → coordinator"

    @property
    def signed(self) -> bool:
        return self.data[0] == SIGNED_KIND

    @property
    def payload(self) -> bytes:
        return self.data[33:-64] if self.signed else self.data[9:-32]


@dataclass(frozen=True, slots=True)
class Session:
    """What the example run produced."""

    coordinator: Identity
    node: Identity
    start_ms: int
    frames: tuple[Frame, ...]


def job_for(deadline_ms: int) -> Job:
    return Job(
        job_id=JOB_ID,
        model=MODEL,
        kind="chat",
        messages=[ChatMessage(role="user", content="Say hello.")],
        prompt=None,
        sampling=SamplingParams(max_tokens=16, temperature=0.0, seed=7),
        deadline_ms=deadline_ms,
    )


def run_session() -> Session:
    """Handshake, then job, chunk and done, through the real session objects."""
    clock = ManualClock()
    start_ms = int(clock.time() * 1000)
    coordinator_identity = Identity.from_seed(COORDINATOR_SEED)
    node_identity = Identity.from_seed(NODE_SEED)
    coordinator_random = ScriptedRandom(
        "coordinator", [COORDINATOR_EPHEMERAL_PRIVATE, CHALLENGE_NONCE]
    )
    node_random = ScriptedRandom("node", [NODE_EPHEMERAL_PRIVATE])
    coordinator = CoordinatorSession(
        coordinator_identity, clock=clock, random_bytes=coordinator_random
    )
    node = NodeSession(
        node_identity,
        coordinator_identity.public_key,
        agent_version=AGENT_VERSION,
        clock=clock,
        random_bytes=node_random,
    )
    frames: list[Frame] = []

    def record(type_: str, sender: str, data: bytes) -> bytes:
        frames.append(Frame(len(frames) + 1, type_, sender, data))
        clock.advance(STEP_S)
        return data

    challenge = record("challenge", "coordinator", coordinator.start())
    _require(isinstance(node.receive(challenge), Challenge), "the node reads the challenge")
    hello = record("hello", "node", node.hello(HARDWARE, [OFFER]))
    _require(isinstance(coordinator.receive(hello), Hello), "the coordinator reads the hello")
    welcome = coordinator.accept(
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        max_jobs_in_flight=MAX_JOBS_IN_FLIGHT,
        session_id=SESSION_ID,
    )
    record("welcome", "coordinator", welcome)
    _require(isinstance(node.receive(welcome), Welcome), "the node reads the welcome")
    _require(coordinator.established and node.established, "both sides are established")

    job = job_for(deadline_ms=int(clock.time() * 1000) + 60_000)
    job_frame = record("job", "coordinator", coordinator.send(job))
    _require(node.receive(job_frame) == job, "the node reads the job")
    chunk_frame = record("chunk", "node", node.send(CHUNK))
    _require(coordinator.receive(chunk_frame) == CHUNK, "the coordinator reads the chunk")
    done_frame = node.done(
        job_id=JOB_ID, model=MODEL, usage=USAGE, finish_reason="stop", timings=TIMINGS
    )
    record("done", "node", done_frame)
    # The coordinator verifies the usage receipt while reading a done frame.
    _require(isinstance(coordinator.receive(done_frame), Done), "the coordinator reads the done")

    coordinator_random.check_used_up()
    node_random.check_used_up()
    return Session(coordinator_identity, node_identity, start_ms, tuple(frames))


# --- the spec, reimplemented -------------------------------------------------------------------


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise RuntimeError(f"worked example: check failed: {what}")


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def transcript_hash(*payloads: bytes) -> bytes:
    return _sha256(b"".join(_sha256(payload) for payload in payloads))


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> tuple[bytes, bytes]:
    """RFC 5869: (PRK, OKM)."""
    prk = hmac.digest(salt, ikm, "sha256")
    okm = b""
    block = b""
    counter = 1
    while len(okm) < length:
        block = hmac.digest(prk, block + info + bytes((counter,)), "sha256")
        okm += block
        counter += 1
    return prk, okm[:length]


def derive_id(prefix: str, public_key: bytes) -> str:
    digest = _sha256(ID_DOMAIN + public_key)
    return prefix + base64.b32encode(digest[:17]).decode("ascii").lower()[:26]


def public_key_text(public_key: bytes) -> str:
    return "ed25519:" + base64.urlsafe_b64encode(public_key).decode("ascii").rstrip("=")


def acceptable_public_key(public_key: bytes) -> bool:
    """§3.1: 32 bytes, y (the low 255 bits) canonical and not that of a small-order point."""
    y = int.from_bytes(public_key, "little") & ((1 << 255) - 1)
    return len(public_key) == 32 and y < ED25519_FIELD_PRIME and y not in SMALL_ORDER_Y


def receipt_signing_bytes(coordinator_key: bytes, done: dict[str, Any]) -> bytes:
    job_id = done["job_id"].encode("ascii")
    model = done["model"].encode("utf-8")
    reason = done["finish_reason"].encode("ascii")
    usage = done["usage"]
    return b"".join(
        (
            RECEIPT_DOMAIN,
            coordinator_key,
            len(job_id).to_bytes(1, "big"),
            job_id,
            len(model).to_bytes(2, "big"),
            model,
            usage["prompt_tokens"].to_bytes(8, "big"),
            usage["completion_tokens"].to_bytes(8, "big"),
            len(reason).to_bytes(1, "big"),
            reason,
        )
    )


def _ed25519_verifies(public_key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except InvalidSignature:
        return False
    return True


def _x25519_public(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def _x25519(private: bytes, peer_public: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).exchange(
        X25519PublicKey.from_public_bytes(peer_public)
    )


def _decode(payload: bytes) -> dict[str, Any]:
    decoded = msgpack.unpackb(payload, raw=False)
    _require(isinstance(decoded, dict), "a payload is a msgpack map")
    envelope: dict[str, Any] = decoded
    return envelope


# --- rendering --------------------------------------------------------------------------------


def _hex_block(data: bytes) -> list[str]:
    text = data.hex()
    lines = [text[i : i + HEX_PER_LINE] for i in range(0, len(text), HEX_PER_LINE)] or [""]
    return ["```text", *lines, "```"]


def _code(data: bytes) -> str:
    return f"`{data.hex()}`"


def _scalar(value: object) -> str:
    if value is None:
        return "nil"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, bytes):
        return f"h'{value.hex()}'"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    raise TypeError(f"unexpected msgpack value {value!r}")


def _diagnostic(value: object, indent: str = "") -> str:
    """Decoded msgpack in a JSON-like notation: h'..' is bin, nil is nil, 1.0 is a float."""
    inner = indent + "  "
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{_scalar(k)}: {_diagnostic(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(value, list):
        if not any(isinstance(item, dict | list) for item in value):
            return "[" + ", ".join(_scalar(item) for item in value) + "]"
        items = [f"{inner}{_diagnostic(item, inner)}" for item in value]
        return "[\n" + ",\n".join(items) + f"\n{indent}]"
    return _scalar(value)


_FIXED_INTS = {
    0xCC: ("uint8", 1, False),
    0xCD: ("uint16", 2, False),
    0xCE: ("uint32", 4, False),
    0xCF: ("uint64", 8, False),
    0xD0: ("int8", 1, True),
    0xD1: ("int16", 2, True),
    0xD2: ("int32", 4, True),
    0xD3: ("int64", 8, True),
}
_SIZED = {  # marker: (family, length-field bytes, kind)
    0xC4: ("bin8", 1, "bin"),
    0xC5: ("bin16", 2, "bin"),
    0xC6: ("bin32", 4, "bin"),
    0xD9: ("str8", 1, "str"),
    0xDA: ("str16", 2, "str"),
    0xDB: ("str32", 4, "str"),
    0xDC: ("array16", 2, "array"),
    0xDD: ("array32", 4, "array"),
    0xDE: ("map16", 2, "map"),
    0xDF: ("map32", 4, "map"),
}


class _Annotator:
    """A byte-by-byte msgpack listing (the subset v1 payloads use; ext types are refused)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.rows: list[tuple[int, bytes, str]] = []

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        _require(len(chunk) == n, "msgpack item is complete")
        self.pos += n
        return chunk

    def item(self, depth: int, label: str = "") -> None:
        start = self.pos
        marker = self.take(1)[0]
        pad = "  " * depth + label
        if marker <= 0x7F:
            self.rows.append((start, bytes((marker,)), f"{pad}positive fixint {marker}"))
        elif marker >= 0xE0:
            self.rows.append((start, bytes((marker,)), f"{pad}negative fixint {marker - 0x100}"))
        elif 0x80 <= marker <= 0x8F:
            self.container(start, marker & 0x0F, "fixmap", "map", depth, pad)
        elif 0x90 <= marker <= 0x9F:
            self.container(start, marker & 0x0F, "fixarray", "array", depth, pad)
        elif 0xA0 <= marker <= 0xBF:
            self.string(start, marker & 0x1F, "fixstr", pad)
        elif marker in (0xC0, 0xC2, 0xC3):
            name = {0xC0: "nil", 0xC2: "false", 0xC3: "true"}[marker]
            self.rows.append((start, bytes((marker,)), f"{pad}{name}"))
        elif marker in (0xCA, 0xCB):
            size, fmt = (4, ">f") if marker == 0xCA else (8, ">d")
            raw = self.take(size)
            value = struct.unpack(fmt, raw)[0]
            family = "float32" if size == 4 else "float64"
            self.rows.append((start, self.data[start : self.pos], f"{pad}{family} {value!r}"))
        elif marker in _FIXED_INTS:
            family, size, signed = _FIXED_INTS[marker]
            value = int.from_bytes(self.take(size), "big", signed=signed)
            self.rows.append((start, self.data[start : self.pos], f"{pad}{family} {value}"))
        elif marker in _SIZED:
            family, size, kind = _SIZED[marker]
            length = int.from_bytes(self.take(size), "big")
            if kind in ("map", "array"):
                self.container(start, length, family, kind, depth, pad)
            elif kind == "str":
                self.string(start, length, family, pad)
            else:
                value = self.take(length)
                description = f"{pad}{family} ({length} bytes) h'{value.hex()}'"
                self.rows.append((start, self.data[start : self.pos], description))
        else:
            raise RuntimeError(f"worked example: msgpack marker 0x{marker:02x} not annotated")

    def container(
        self, start: int, count: int, family: str, kind: str, depth: int, pad: str
    ) -> None:
        noun = "entries" if kind == "map" else "items"
        self.rows.append((start, self.data[start : self.pos], f"{pad}{family} ({count} {noun})"))
        for _ in range(count):
            if kind == "map":
                self.item(depth + 1, "key ")
                self.item(depth + 1, "val ")
            else:
                self.item(depth + 1, "item ")

    def string(self, start: int, length: int, family: str, pad: str) -> None:
        text = self.take(length).decode("utf-8")
        description = f"{pad}{family} {json.dumps(text, ensure_ascii=False)}"
        self.rows.append((start, self.data[start : self.pos], description))


def _annotate_msgpack(payload: bytes, base_offset: int) -> list[str]:
    annotator = _Annotator(payload)
    annotator.item(0)
    _require(annotator.pos == len(payload), "the annotated payload is one msgpack map")
    width = max(len(raw.hex(" ")) for _, raw, _ in annotator.rows)
    return [
        f"{base_offset + offset:04x}  {raw.hex(' '):<{width}}  {description}"
        for offset, raw, description in annotator.rows
    ]


def _utc(ts_ms: int) -> str:
    moment = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


def _section_inputs(session: Session) -> list[str]:
    coordinator_key = session.coordinator.public_key.raw
    node_key = session.node.public_key.raw
    _require(
        public_key_text(coordinator_key) == session.coordinator.public_key.to_text()
        and public_key_text(node_key) == session.node.public_key.to_text(),
        "public key text form",
    )
    _require(
        derive_id("co_", coordinator_key) == session.coordinator.public_key.coordinator_id
        and derive_id("nd_", node_key) == session.node.public_key.node_id,
        "id derivation",
    )
    _require(
        acceptable_public_key(coordinator_key) and acceptable_public_key(node_key),
        "both Ed25519 public keys are canonical and not of small order",
    )
    coordinator_ephemeral = _x25519_public(COORDINATOR_EPHEMERAL_PRIVATE)
    node_ephemeral = _x25519_public(NODE_EPHEMERAL_PRIVATE)
    node_id_digest = _sha256(ID_DOMAIN + node_key)
    node_id = f"`{derive_id('nd_', node_key)}`"
    rows = [
        ("coordinator Ed25519 seed (private key)", _code(COORDINATOR_SEED)),
        ("coordinator public key", f"`{public_key_text(coordinator_key)}`"),
        ("coordinator public key, hex", _code(coordinator_key)),
        ("coordinator id", f"`{derive_id('co_', coordinator_key)}`"),
        ("node Ed25519 seed (private key)", _code(NODE_SEED)),
        ("node public key", f"`{public_key_text(node_key)}`"),
        ("node public key, hex", _code(node_key)),
        ("SHA-256(`shareai/v1 id\\x00` ‖ node public key)", _code(node_id_digest)),
        ("node id: `nd_` + base32 of its first 17 bytes, lower case, first 26 chars", node_id),
        (
            "coordinator X25519 ephemeral private key (its 1st random draw)",
            _code(COORDINATOR_EPHEMERAL_PRIVATE),
        ),
        ("coordinator X25519 ephemeral public key", _code(coordinator_ephemeral)),
        ("challenge nonce (the coordinator's 2nd random draw)", _code(CHALLENGE_NONCE)),
        ("node X25519 ephemeral private key (its only random draw)", _code(NODE_EPHEMERAL_PRIVATE)),
        ("node X25519 ephemeral public key", _code(node_ephemeral)),
        ("session id (chosen by the coordinator)", f"`{SESSION_ID}`"),
        (
            "`welcome.heartbeat_interval_ms` (chosen by the coordinator)",
            f"{HEARTBEAT_INTERVAL_MS} ms",
        ),
        (
            "`welcome.limits.max_jobs_in_flight` (chosen by the coordinator)",
            f"{MAX_JOBS_IN_FLIGHT}",
        ),
        ("clock at the first frame", f"{session.start_ms} ms ({_utc(session.start_ms)})"),
    ]
    return [
        "### Inputs",
        "",
        "Both sides run with the default `SessionConfig` (versions"
        f" ({PROTOCOL_VERSION}), `max_frame_bytes` {DEFAULT_MAX_FRAME_BYTES:,},"
        f" `max_clock_skew_ms` {DEFAULT_MAX_CLOCK_SKEW_MS:,}), share one manual clock that"
        f' advances {int(STEP_S * 1000)} ms after each frame, and draw their "random" bytes from'
        " the values below. So every frame is written with `v` ="
        f" {PROTOCOL_VERSION}, the hello announces the node's receive limit"
        f" (`max_frame_bytes` {DEFAULT_MAX_FRAME_BYTES:,}) and the welcome the coordinator's"
        f" limits ({DEFAULT_MAX_FRAME_BYTES:,} bytes, {DEFAULT_MAX_CLOCK_SKEW_MS:,} ms).",
        "",
        "| input | value |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows),
        "",
    ]


def _check_handshake_fields(session: Session) -> None:
    """The handshake values §7 and §12 prescribe, read back from the frames as sent."""
    frames = session.frames
    envelopes = [_decode(frame.payload) for frame in frames]
    _require(
        all(envelope["v"] == PROTOCOL_VERSION for envelope in envelopes),
        "every frame carries the negotiated version",
    )
    challenge, hello, welcome = (envelope["body"] for envelope in envelopes[:3])
    coordinator_key = session.coordinator.public_key.raw
    _require(
        challenge["versions"] == [PROTOCOL_VERSION] and hello["version"] == PROTOCOL_VERSION,
        "the node chooses the highest common version",
    )
    _require(
        challenge["coordinator_key"] == hello["audience"] == coordinator_key,
        "the challenge names and the hello addresses the coordinator's key",
    )
    _require(
        hello["node_key"] == session.node.public_key.raw == frames[1].data[1:33],
        "the hello names its signer",
    )
    _require(
        hello["max_frame_bytes"] == DEFAULT_MAX_FRAME_BYTES,
        "the hello announces the node's receive limit",
    )
    _require(
        welcome["node_id"] == derive_id("nd_", hello["node_key"]),
        "the welcome names the node id derived from hello.node_key",
    )
    _require(
        welcome["limits"]
        == {
            "max_frame_bytes": DEFAULT_MAX_FRAME_BYTES,
            "max_clock_skew_ms": DEFAULT_MAX_CLOCK_SKEW_MS,
            "max_jobs_in_flight": MAX_JOBS_IN_FLIGHT,
        },
        "the welcome announces the coordinator's own limits",
    )


def _section_signed_frame(session: Session, frame: Frame, prior: Sequence[Frame]) -> list[str]:
    data = frame.data
    signer, payload, signature = data[1:33], frame.payload, data[-64:]
    prior_payloads = [p.payload for p in prior]
    transcript = transcript_hash(*prior_payloads)
    expected_signer = (
        session.coordinator.public_key.raw
        if frame.sender == "coordinator"
        else session.node.public_key.raw
    )
    _require(signer == expected_signer, f"{frame.type} signer key")
    _require(
        _ed25519_verifies(signer, signature, HANDSHAKE_DOMAIN + transcript + payload),
        f"{frame.type} signature over domain ‖ transcript hash ‖ payload",
    )
    covered = ", ".join(p.type for p in prior) or "nothing"
    return [
        f"#### Frame {frame.number}: `{frame.type}`, {frame.direction}"
        f" (signed frame, {len(data)} bytes)",
        "",
        *_hex_block(data),
        "",
        "| bytes | field | value |",
        "|---|---|---|",
        "| 0 | kind | `01` |",
        f"| 1-32 | signer's Ed25519 public key | {_code(signer)} |",
        f"| 33-{32 + len(payload)} | payload ({len(payload)} bytes of msgpack) | decoded below |",
        f"| {33 + len(payload)}-{len(data) - 1} | Ed25519 signature (64 bytes) | below |",
        "",
        f"Transcript hash of the prior handshake payloads ({covered}): {_code(transcript)}.",
        "The signature covers `shareai/v1 handshake\\x00` ‖ that hash ‖ the payload:",
        "",
        *_hex_block(signature),
        "",
        "Payload:",
        "",
        "```text",
        _diagnostic(_decode(payload)),
        "```",
        "",
    ]


def _section_keys(frames: Sequence[Frame]) -> tuple[list[str], bytes, bytes]:
    challenge, hello = frames[0], frames[1]
    challenge_body = _decode(challenge.payload)["body"]
    hello_body = _decode(hello.payload)["body"]
    secret = _x25519(COORDINATOR_EPHEMERAL_PRIVATE, hello_body["ephemeral_key"])
    _require(
        secret == _x25519(NODE_EPHEMERAL_PRIVATE, challenge_body["ephemeral_key"]),
        "both sides compute the same X25519 secret",
    )
    salt = transcript_hash(challenge.payload, hello.payload)
    prk, okm = hkdf_sha256(secret, salt, SESSION_KEYS_INFO, 64)
    coordinator_to_node, node_to_coordinator = okm[:32], okm[32:]
    rows = [
        ("SHA-256(challenge payload)", _code(_sha256(challenge.payload))),
        ("SHA-256(hello payload)", _code(_sha256(hello.payload))),
        ("salt = transcript_hash(challenge, hello)", _code(salt)),
        ("IKM = X25519 shared secret", _code(secret)),
        ("info", f"`shareai/v1 session keys` = {_code(SESSION_KEYS_INFO)}"),
        ("PRK = HMAC-SHA256(salt, IKM)", _code(prk)),
        ("OKM[0:32]: coordinator → node key", _code(coordinator_to_node)),
        ("OKM[32:64]: node → coordinator key", _code(node_to_coordinator)),
    ]
    lines = [
        "### Session keys",
        "",
        "Both sides derive these after the hello (HKDF-SHA256, L = 64); the welcome is not an"
        " input.",
        "",
        "| value | hex |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows),
        "",
    ]
    return lines, coordinator_to_node, node_to_coordinator


def _check_mac(frame: Frame, key: bytes) -> tuple[bytes, bytes]:
    direction = b"C" if frame.sender == "coordinator" else b"N"
    mac_input = direction + frame.data[:-32]
    mac = hmac.digest(key, mac_input, "sha256")
    _require(mac == frame.data[-32:], f"{frame.type} MAC under the {frame.direction} key")
    return mac_input, mac


def _section_session_frame(frame: Frame, key: bytes) -> list[str]:
    data = frame.data
    _require(data[0] == SESSION_KIND, f"{frame.type} is a session frame")
    seq = int.from_bytes(data[1:9], "big")
    envelope = _decode(frame.payload)
    _require(envelope["seq"] == seq, f"{frame.type} envelope seq equals header seq")
    _check_mac(frame, key)
    return [
        f"#### Frame {frame.number}: `{frame.type}`, {frame.direction}"
        f" (session frame, {len(data)} bytes)",
        "",
        *_hex_block(data),
        "",
        f"Kind `02`, seq {seq}, {len(frame.payload)} bytes of payload, MAC {_code(data[-32:])}."
        " Payload:",
        "",
        "```text",
        _diagnostic(envelope),
        "```",
        "",
    ]


def _section_chunk(frame: Frame, key: bytes) -> list[str]:
    data = frame.data
    _require(data[0] == SESSION_KIND, f"{frame.type} is a session frame")
    seq = int.from_bytes(data[1:9], "big")
    payload = frame.payload
    _require(_decode(payload)["seq"] == seq, f"{frame.type} envelope seq equals header seq")
    mac_input, mac = _check_mac(frame, key)
    end = 9 + len(payload)
    return [
        f"#### Frame {frame.number}: `{frame.type}`, {frame.direction}"
        f" (session frame, {len(data)} bytes), annotated",
        "",
        *_hex_block(data),
        "",
        "| bytes | field | value |",
        "|---|---|---|",
        "| 0 | kind | `02` (session frame) |",
        f"| 1-8 | seq, uint64 big-endian | {_code(data[1:9])} = {seq} |",
        f"| 9-{end - 1} | payload ({len(payload)} bytes of msgpack) | annotated below |",
        f"| {end}-{len(data) - 1} | HMAC-SHA256 | {_code(mac)} |",
        "",
        "The payload, item by item (frame offset, bytes, msgpack format and value):",
        "",
        "```text",
        *_annotate_msgpack(payload, base_offset=9),
        "```",
        "",
        "The MAC is HMAC-SHA256 under the node → coordinator key"
        f" {_code(key)} over `N` (`4e`) ‖ kind ‖ seq ‖ payload, i.e. over these"
        f" {len(mac_input)} bytes:",
        "",
        *_hex_block(mac_input),
        "",
    ]


def _section_done(session: Session, frame: Frame, key: bytes) -> list[str]:
    lines = _section_session_frame(frame, key)
    body = _decode(frame.payload)["body"]
    # The node signs for its pinned coordinator key: the one its hello named as audience.
    coordinator_key = _decode(session.frames[1].payload)["body"]["audience"]
    receipt = receipt_signing_bytes(coordinator_key, body)
    _require(
        _ed25519_verifies(session.node.public_key.raw, body["receipt_signature"], receipt),
        "the receipt signature verifies under the node key",
    )
    _require(
        not _ed25519_verifies(
            session.node.public_key.raw,
            body["receipt_signature"],
            receipt_signing_bytes(bytes(32), body),
        ),
        "the receipt signature is bound to the coordinator's key",
    )
    job_id, model = body["job_id"].encode("ascii"), body["model"].encode("utf-8")
    reason = body["finish_reason"].encode("ascii")
    usage = body["usage"]
    parts = [
        ("domain", RECEIPT_DOMAIN, "`shareai/v1 usage-receipt\\x00`"),
        (
            "coordinator public key",
            coordinator_key,
            "`hello.audience`, the node's pinned coordinator key",
        ),
        ("u8 len(job_id)", len(job_id).to_bytes(1, "big"), str(len(job_id))),
        ("job_id", job_id, f"`{body['job_id']}`"),
        ("u16 len(model)", len(model).to_bytes(2, "big"), str(len(model))),
        ("model", model, f"`{body['model']}`"),
        ("u64 prompt_tokens", usage["prompt_tokens"].to_bytes(8, "big"), ""),
        ("u64 completion_tokens", usage["completion_tokens"].to_bytes(8, "big"), ""),
        ("u8 len(finish_reason)", len(reason).to_bytes(1, "big"), str(len(reason))),
        ("finish_reason", reason, f"`{body['finish_reason']}`"),
    ]
    return [
        *lines,
        f"The usage receipt the node signed ({len(receipt)} bytes; `receipt_signature` above is"
        " its Ed25519 signature under the node key). Its second field is the coordinator's"
        " public key: the node writes its pinned coordinator key there, and the coordinator"
        " rebuilds these bytes with its own key to verify the signature:",
        "",
        "| field | hex | value |",
        "|---|---|---|",
        *(
            f"| {name} | {_code(raw)} | {text or int.from_bytes(raw, 'big')} |"
            for name, raw, text in parts
        ),
        "",
    ]


def render() -> str:
    """The Markdown of the worked-example section (ends with a newline)."""
    session = run_session()
    frames = session.frames
    key_lines, coordinator_to_node, node_to_coordinator = _section_keys(frames)
    _check_handshake_fields(session)
    lines = [*_section_inputs(session), "### Handshake", ""]
    for index in range(3):
        lines += _section_signed_frame(session, frames[index], frames[:index])
    lines += key_lines
    lines += ["### Established session", ""]
    lines += _section_session_frame(frames[3], coordinator_to_node)
    lines += _section_chunk(frames[4], node_to_coordinator)
    lines += _section_done(session, frames[5], node_to_coordinator)
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def extract_section(document: str) -> str:
    """The text between the worked-example marker lines of ``document``."""
    if document.count(START_MARKER) != 1 or document.count(END_MARKER) != 1:
        raise ValueError(f"expected one {START_MARKER.strip()!r} and one {END_MARKER!r} line")
    after_start = document.split(START_MARKER, 1)[1]
    if END_MARKER not in after_start:
        raise ValueError("the end marker comes before the start marker")
    return after_start.split(END_MARKER, 1)[0]


def write_section(path: Path = DOC_PATH) -> bool:
    """Replace the section in ``path``; returns whether anything changed."""
    document = path.read_text(encoding="utf-8")
    current = extract_section(document)
    section = render()
    if current == section:
        return False
    head, tail = document.split(START_MARKER, 1)
    tail = tail.split(END_MARKER, 1)[1]
    path.write_text(head + START_MARKER + section + END_MARKER + tail, encoding="utf-8")
    return True


def main(argv: Iterable[str] = ()) -> int:
    args = list(argv)
    if args == ["--write"]:
        changed = write_section()
        print(f"{DOC_PATH}: {'updated' if changed else 'already up to date'}")
        return 0
    if args:
        print("usage: python -m tests.protocol.worked_example [--write]", file=sys.stderr)
        return 2
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
