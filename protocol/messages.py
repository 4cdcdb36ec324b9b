"""Message bodies of protocol v1: one frozen pydantic model per message type.

Each class has a ``TYPE`` tag; :data:`MESSAGE_TYPES` maps tags to classes. Validation is strict:
no type coercion, no unknown fields, every field present on the wire (even those with a Python
default), numbers and lengths inside the documented ranges. Money is integer micro-USD
(1 USD = 1,000,000 micro-USD), prices are per one million tokens, durations are integer
milliseconds, and byte strings are msgpack ``bin``.

OpenAI-shaped values that nest without bound (tool definitions, tool choice, response format, tool
calls) travel as compact JSON text in ``*_json`` string fields, bounded in length; the schemas do
not parse that text, the applications do (:mod:`protocol.tools`).

An offer lists the request parameters its node honours (:data:`KNOWN_PARAMETERS`, the OpenAI
request parameters a job can carry), so the coordinator can route requests that use them.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from protocol.tools import MAX_JSON_CHARS

__all__ = [
    "KNOWN_PARAMETERS",
    "MAX_FRAME_BYTES",
    "MAX_SKEW_MS",
    "MESSAGE_TYPES",
    "MIN_FRAME_BYTES",
    "MIN_SKEW_MS",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "Cancel",
    "Challenge",
    "ChatMessage",
    "Chunk",
    "Done",
    "Drain",
    "Failed",
    "FailureCode",
    "GpuInfo",
    "GpuStats",
    "Hardware",
    "Heartbeat",
    "Hello",
    "Job",
    "JobAccepted",
    "JobRefused",
    "Message",
    "Offer",
    "Offers",
    "Reject",
    "RequestParameter",
    "SamplingParams",
    "SessionLimits",
    "Timings",
    "Usage",
    "Welcome",
    "WireModel",
]

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS: tuple[int, ...] = (PROTOCOL_VERSION,)

# Field types with their wire limits. Every string and list has an upper bound.
Bytes32 = Annotated[bytes, Field(min_length=32, max_length=32)]
Bytes64 = Annotated[bytes, Field(min_length=64, max_length=64)]
Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]
ModelName = Annotated[str, Field(min_length=1, max_length=256)]
ShortText = Annotated[str, Field(max_length=1024)]
Name = Annotated[str, Field(max_length=256)]
Count = Annotated[int, Field(ge=0, le=2**31 - 1)]
TokenCount = Annotated[int, Field(ge=0, le=100_000_000)]
DurationMs = Annotated[int, Field(ge=0, le=2**31 - 1)]
UnixMs = Annotated[int, Field(ge=0, le=2**53)]
MiB = Annotated[int, Field(ge=0, le=2**40)]
MicroUsdPer1MTokens = Annotated[int, Field(ge=0, le=10**12)]
MIN_FRAME_BYTES = 1024
MAX_FRAME_BYTES = 64 * 1024 * 1024
MIN_SKEW_MS = 1_000
MAX_SKEW_MS = 600_000
FrameBytes = Annotated[int, Field(ge=MIN_FRAME_BYTES, le=MAX_FRAME_BYTES)]
SkewMs = Annotated[int, Field(ge=MIN_SKEW_MS, le=MAX_SKEW_MS)]
Percent = Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)]
JsonText = Annotated[str, Field(min_length=1, max_length=MAX_JSON_CHARS)]
"""A JSON value as text (see :mod:`protocol.tools`): receivers parse it as JSON."""
ToolCallId = Annotated[str, Field(min_length=1, max_length=256)]

RequestParameter = Literal[
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
]
"""An OpenAI request parameter that a job carries: a :class:`SamplingParams` field or one of the
``Job``'s tool and response-format fields (named without ``_json``). Nothing else can reach a
node, so nothing else can be offered."""
KNOWN_PARAMETERS: frozenset[RequestParameter] = frozenset(get_args(RequestParameter))
"""Every :data:`RequestParameter`: the closed set an offer's ``supported_parameters`` draws from."""


def _each_parameter_once(names: list[RequestParameter]) -> list[RequestParameter]:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{name!r} is listed twice")
        seen.add(name)
    return names


SupportedParameters = Annotated[
    list[RequestParameter],
    Field(max_length=len(KNOWN_PARAMETERS)),
    AfterValidator(_each_parameter_once),
]


class WireModel(BaseModel):
    """Base of every wire model: frozen, strict, closed to unknown fields.

    When validated with ``context={"wire": True}`` (as the session does for received frames) every
    declared field must be present, so a peer cannot rely on our defaults.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _require_every_field_on_wire(cls, data: Any, info: ValidationInfo) -> Any:
        if info.context and isinstance(data, dict) and len(data) < len(cls.model_fields):
            missing = [name for name in cls.model_fields if name not in data]
            raise ValueError(f"missing field(s): {', '.join(missing)}")
        return data


class Message(WireModel):
    """A message body. Subclasses set ``TYPE``, the tag carried in the envelope."""

    TYPE: ClassVar[str]


# --- shared parts -----------------------------------------------------------------------------


class GpuInfo(WireModel):
    name: Name
    memory_mib: MiB


class Hardware(WireModel):
    cpu_model: Name
    cpu_cores: Annotated[int, Field(ge=1, le=65_536)]
    memory_mib: MiB
    os: Name
    gpus: Annotated[list[GpuInfo], Field(max_length=64)]


class Offer(WireModel):
    """A model the node serves, at its price, and the request parameters it honours.

    ``supported_parameters`` is required on the wire like every field; in Python it defaults to
    every known parameter (sorted), which is what an offer meant before it said.
    """

    model: ModelName
    weights_hash: Annotated[str, Field(max_length=128)] | None
    context_length: Annotated[int, Field(ge=1, le=100_000_000)]
    max_concurrency: Annotated[int, Field(ge=1, le=4096)]
    price_input_micro_usd_per_1m: MicroUsdPer1MTokens
    price_output_micro_usd_per_1m: MicroUsdPer1MTokens
    supported_parameters: SupportedParameters = Field(
        default_factory=lambda: sorted(KNOWN_PARAMETERS)
    )
    """The request parameters the node honours for this model, each at most once, any order."""


class SessionLimits(WireModel):
    """Limits the coordinator sets for the session; the node must stay inside them."""

    max_frame_bytes: FrameBytes
    max_clock_skew_ms: SkewMs
    max_jobs_in_flight: Annotated[int, Field(ge=1, le=65_536)]


class GpuStats(WireModel):
    utilization_pct: Percent | None
    memory_used_mib: MiB | None
    memory_total_mib: MiB | None
    temperature_c: Annotated[float, Field(ge=-50.0, le=200.0, allow_inf_nan=False)] | None


class ChatMessage(WireModel):
    """One message of a conversation.

    An assistant message may carry the tool calls it made (``tool_calls_json``: the OpenAI
    ``tool_calls`` array as JSON text), and its ``content`` may then be empty. A ``tool`` message
    answers one call and names it (``tool_call_id``); no other role carries either field.
    """

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str
    name: Name | None = None
    tool_calls_json: JsonText | None = None
    tool_call_id: ToolCallId | None = None

    @model_validator(mode="after")
    def _tool_fields_match_role(self) -> ChatMessage:
        if self.tool_calls_json is not None and self.role != "assistant":
            raise ValueError("only an assistant message carries tool_calls_json")
        if (self.tool_call_id is not None) != (self.role == "tool"):
            raise ValueError("a tool message, and only a tool message, carries tool_call_id")
        return self


class SamplingParams(WireModel):
    max_tokens: Annotated[int, Field(ge=1, le=10_000_000)]
    temperature: Annotated[float, Field(ge=0.0, le=2.0, allow_inf_nan=False)] = 1.0
    top_p: Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)] = 1.0
    stop: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=256)]], Field(max_length=16)
    ] = []
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0, allow_inf_nan=False)] = 0.0
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0, allow_inf_nan=False)] = 0.0


class Usage(WireModel):
    prompt_tokens: TokenCount
    completion_tokens: TokenCount


class Timings(WireModel):
    queue_ms: DurationMs
    time_to_first_token_ms: DurationMs | None
    total_ms: DurationMs


# --- handshake --------------------------------------------------------------------------------


class Challenge(Message):
    """Coordinator -> node, first frame: who the coordinator is and what to sign."""

    TYPE: ClassVar[str] = "challenge"
    nonce: Bytes32
    coordinator_key: Bytes32
    ephemeral_key: Bytes32
    versions: Annotated[
        list[Annotated[int, Field(ge=1, le=65_535)]], Field(min_length=1, max_length=16)
    ]
    handshake_timeout_ms: DurationMs


class Hello(Message):
    """Node -> coordinator: identity, its half of the key exchange, hardware and offers."""

    TYPE: ClassVar[str] = "hello"
    nonce: Bytes32
    audience: Bytes32
    node_key: Bytes32
    ephemeral_key: Bytes32
    version: Annotated[int, Field(ge=1, le=65_535)]
    agent_version: Annotated[str, Field(min_length=1, max_length=64)]
    max_frame_bytes: FrameBytes
    hardware: Hardware
    offers: Annotated[list[Offer], Field(max_length=256)]


class Welcome(Message):
    """Coordinator -> node: the node is admitted; the session is established."""

    TYPE: ClassVar[str] = "welcome"
    node_id: Identifier
    session_id: Identifier
    heartbeat_interval_ms: Annotated[int, Field(ge=100, le=600_000)]
    limits: SessionLimits


RejectCode = Literal[
    "unknown_node",
    "revoked",
    "suspended",
    "duplicate_session",
    "overloaded",
]


class Reject(Message):
    """Coordinator -> node: the node is not admitted; the coordinator then closes (code 4011)."""

    TYPE: ClassVar[str] = "reject"
    code: RejectCode
    message: ShortText
    retry_after_ms: DurationMs | None


# --- established session ----------------------------------------------------------------------


class Heartbeat(Message):
    """Node -> coordinator, every ``heartbeat_interval_ms``: load and free capacity."""

    TYPE: ClassVar[str] = "heartbeat"
    active_jobs: Count
    queued_jobs: Count
    free_slots: Count
    cpu_pct: Percent
    memory_used_mib: MiB
    gpus: Annotated[list[GpuStats], Field(max_length=64)]


class Offers(Message):
    """Node -> coordinator: replaces the full set of offers (models and prices)."""

    TYPE: ClassVar[str] = "offers"
    offers: Annotated[list[Offer], Field(max_length=256)]


class Job(Message):
    """Coordinator -> node: run one inference request and stream its output."""

    TYPE: ClassVar[str] = "job"
    job_id: Identifier
    model: ModelName
    kind: Literal["chat", "completion"]
    messages: Annotated[list[ChatMessage], Field(max_length=4096)] | None
    prompt: str | None
    sampling: SamplingParams
    deadline_ms: UnixMs
    tools_json: JsonText | None = None
    """The OpenAI ``tools`` array (function definitions) the model may call."""
    tool_choice_json: JsonText | None = None
    """The OpenAI ``tool_choice``: ``"none"``, ``"auto"``, ``"required"`` or a named function."""
    parallel_tool_calls: bool | None = None
    """Whether the model may call several tools in one turn; nil leaves it to the engine."""
    response_format_json: JsonText | None = None
    """The OpenAI ``response_format``: ``text``, ``json_object`` or ``json_schema``."""

    @model_validator(mode="after")
    def _input_matches_kind(self) -> Job:
        if self.kind == "chat" and (self.messages is None or self.prompt is not None):
            raise ValueError("a chat job carries messages and no prompt")
        if self.kind == "completion" and (self.prompt is None or self.messages is not None):
            raise ValueError("a completion job carries a prompt and no messages")
        if self.kind == "completion" and (
            self.tools_json is not None or self.response_format_json is not None
        ):
            raise ValueError("a completion job carries no tools and no response_format")
        if self.tools_json is None and (
            self.tool_choice_json is not None or self.parallel_tool_calls is not None
        ):
            raise ValueError("tool_choice_json and parallel_tool_calls need tools_json")
        return self


class JobAccepted(Message):
    TYPE: ClassVar[str] = "job_accepted"
    job_id: Identifier


class JobRefused(Message):
    TYPE: ClassVar[str] = "job_refused"
    job_id: Identifier
    reason: Literal[
        "overloaded", "model_unavailable", "draining", "invalid_request", "context_length_exceeded"
    ]
    message: ShortText


class Chunk(Message):
    """Node -> coordinator: the next piece of output (several tokens may be coalesced)."""

    TYPE: ClassVar[str] = "chunk"
    job_id: Identifier
    index: Count
    text: Annotated[str, Field(max_length=65_536)]
    tokens: Annotated[int, Field(ge=0, le=65_536)]
    token_ids: (
        Annotated[list[Annotated[int, Field(ge=0, le=2**31 - 1)]], Field(max_length=65_536)] | None
    ) = None
    tool_calls_json: JsonText | None = None
    """Tool-call fragments (OpenAI ``delta.tool_calls`` items) as a JSON array, if any."""


FinishReason = Literal["stop", "length", "tool_calls", "cancelled", "content_filter"]


class Done(Message):
    """Node -> coordinator: the job finished; carries the node's signed usage receipt."""

    TYPE: ClassVar[str] = "done"
    job_id: Identifier
    model: ModelName
    usage: Usage
    finish_reason: FinishReason
    timings: Timings
    receipt_signature: Bytes64


FailureCode = Literal[
    "backend_error",
    "model_unavailable",
    "overloaded",
    "timeout",
    "cancelled",
    "invalid_request",
    "context_length_exceeded",
    "internal_error",
]


class Failed(Message):
    """Node -> coordinator: the job ended without a result."""

    TYPE: ClassVar[str] = "failed"
    job_id: Identifier
    code: FailureCode
    message: ShortText
    retryable: bool


class Cancel(Message):
    """Coordinator -> node: stop the job (the customer left or the deadline passed)."""

    TYPE: ClassVar[str] = "cancel"
    job_id: Identifier
    reason: ShortText


class Drain(Message):
    """Either direction: finish in-flight jobs, take no new ones, then close within ``grace_ms``."""

    TYPE: ClassVar[str] = "drain"
    reason: ShortText
    grace_ms: DurationMs


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Challenge,
        Hello,
        Welcome,
        Reject,
        Heartbeat,
        Offers,
        Job,
        JobAccepted,
        JobRefused,
        Chunk,
        Done,
        Failed,
        Cancel,
        Drain,
    )
}
