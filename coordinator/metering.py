"""Metering: how many prompt and completion tokens a job is billed for.

A node's ``Done.usage`` is a signed *claim*. This module checks it against what the coordinator
saw (the job it sent and the output it received) and decides what the customer pays. Pure code:
no I/O except loading a tokenizer file once per process (:mod:`coordinator.tokens`). Counting a
long prompt is CPU work: call :func:`meter` off the event loop (``asyncio.to_thread``).

**Which models have a tokenizer.** The operator maps model names to Hugging Face
``tokenizer.json`` files with a setting such as
``meta-llama/Llama-3.1-8B-Instruct=/srv/llama3/tokenizer.json,other=/p2``, parsed by
:func:`parse_tokenizer_map` (syntax only) into a :class:`TokenizerMap`, whose
:meth:`TokenizerMap.validate` loads every file once at start-up.

**Inputs.** ``delivered_text`` is the text of the job's chunks as the coordinator received them,
in order; ``delivered_tool_calls_text`` is :func:`tool_calls_text` of their tool-call fragments
(one line per call, ``{"name": NAME, "arguments": ARGUMENTS}``, close to what models emit);
``node_usage`` is ``Done.usage`` (None when the stream was cut before a ``Done``);
``streamed_tokens`` is the sum of the chunks' ``tokens``; ``finished`` says the model ended its
answer (a ``Done`` with a finish reason other than ``cancelled``).

**With a tokenizer** (``source == "tokenizer"``) the coordinator counts with the model's own
tokenizer, special tokens in the text counting as one token each:

- prompt, ``completion`` jobs: the prompt's tokens + :data:`COMPLETION_PROMPT_FRAMING_TOKENS`
  (a BOS token);
- prompt, ``chat`` jobs: the exact template is unknown, so the count is an approximation: for
  each message, the tokens of its role, content, name, ``tool_calls_json`` and ``tool_call_id``
  + :data:`MESSAGE_FRAMING_TOKENS`; + :data:`CHAT_FRAMING_TOKENS` once (BOS, the assistant
  header that primes the answer, a template's default system lines such as Llama 3.1's dates);
  with tools, + the tokens of the tools rendered as templates do (JSON indented by 4) +
  :data:`TOOLS_FRAMING_TOKENS` (the instructions templates wrap them in). ``response_format``
  adds nothing: engines enforce it while decoding, not with prompt text;
- completion: the tokens of the delivered text + those of the delivered tool-call text +
  :data:`END_OF_TURN_TOKENS` when ``finished`` + :data:`TOOL_CALL_MARKER_TOKENS` when any tool
  call was delivered (tags such as ``<|python_tag|>`` or ``<tool_call>``, which engines strip).

Each field is billed at the **lower** of the node's claim and the coordinator's count (the
completion also at most ``max_tokens``). A claim over the count + tolerance is a **mismatch**:
tolerance is ``max(4, 5 %)`` of the count for the completion, plus the longest stop sequence when
``finished`` (engines count the stop string's tokens and cut its text), and ``max(32, 5 %)`` for
the prompt (a template's framing beyond the allowances); a completion claim over ``max_tokens``
is always a mismatch. A claim *under* the count is never a mismatch and is billed as claimed:
the customer pays less, the provider is paid less (a node that cannot count, such as one whose
upstream reports no usage, claims 0 prompt tokens and is paid for 0).

**Without a tokenizer** (``source == "node_report_bounded"``) the claim is bounded by what is
plausible, because every token but a special one is at least one byte of text:

- prompt ceiling: the UTF-8 bytes of the same pieces the tokenizer would count + the same
  framing allowances (which are in tokens);
- completion ceiling: the UTF-8 bytes of the delivered text and tool-call text +
  :data:`COMPLETION_SLACK_TOKENS` (an end-of-turn token, tool-call tags, a character cut in
  half, a stripped leading space) + the bytes of the longest stop sequence when ``finished``;
  at most ``max_tokens``.

Each field is billed at ``min(claim, ceiling)``; a claim over its ceiling is a mismatch.

**No claim.** A stream cut before its ``Done`` (node failure, customer disconnect) has no
prompt claim, and its completion claim is ``streamed_tokens``. A field with no claim is billed
at the coordinator's count, or, without a tokenizer, at an estimate: its bytes (without
allowances) / :data:`ESTIMATE_BYTES_PER_TOKEN`, at most its ceiling. The customer got a partial
answer and the provider did the prompt's work, so both are billed.

**Nothing delivered, nothing billed.** When neither text nor tool calls were delivered (an empty
completion, a failure before the first token), ``chargeable`` is False and both billed counts
are 0; the claim is still checked for a mismatch.

Errors::

    ValueError
     └── InvalidTokenizerMap   a bad tokenizer-map setting or a file that does not load
    coordinator.tokens.TokenizerError   raised by meter() when its tokenizer does not load
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from math import ceil
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal, Protocol

from coordinator.tokens import TokenizerError, load_tokenizer
from protocol import Job, ToolCallDelta, Usage

__all__ = [
    "InvalidTokenizerMap",
    "Metered",
    "MeteringSource",
    "TokenCounts",
    "TokenizerMap",
    "TokenizerSource",
    "meter",
    "parse_tokenizer_map",
    "prompt_token_ceiling",
    "tool_calls_text",
]

COMPLETION_PROMPT_FRAMING_TOKENS: Final = 2
"""Added to a ``completion`` job's prompt: a BOS token an engine adds, and one to spare."""
MESSAGE_FRAMING_TOKENS: Final = 5
"""Added per chat message: start and end markers and the role/content separator (4 in Llama 3
and ChatML templates), and one to spare."""
CHAT_FRAMING_TOKENS: Final = 32
"""Added once per chat prompt: BOS, the assistant header, a default system preamble (Llama 3.1
adds 25 tokens without a system message, Qwen 2.5 about 24)."""
TOOLS_FRAMING_TOKENS: Final = 128
"""Added to a chat prompt with tools: the instructions around them (Llama 3.1: 56, Qwen 2.5: 87)."""
END_OF_TURN_TOKENS: Final = 1
"""Added to a finished completion: the end-of-turn token engines count but do not deliver."""
TOOL_CALL_MARKER_TOKENS: Final = 4
"""Added to a completion with tool calls: tags around them that engines parse out."""
COMPLETION_SLACK_TOKENS: Final = 8
"""Added to the completion ceiling without a tokenizer: tokens that deliver no byte."""
MIN_COMPLETION_TOLERANCE_TOKENS: Final = 4
MIN_PROMPT_TOLERANCE_TOKENS: Final = 32
TOLERANCE_PERCENT: Final = 5
ESTIMATE_BYTES_PER_TOKEN: Final = 4
"""Bytes per token of the estimate billed when there is neither a tokenizer nor a claim: about
right for English with its chat template; it undercounts code and most other scripts."""
MAX_MODEL_NAME_CHARS: Final = 256

MeteringSource = Literal["tokenizer", "node_report_bounded"]


class InvalidTokenizerMap(ValueError):
    """A tokenizer-map setting that cannot be used; the one-line message names the bad entry."""


# --- the operator's map: model name -> tokenizer.json -------------------------------------------


def parse_tokenizer_map(text: str) -> dict[str, Path]:
    """The map in a ``MODEL=PATH,MODEL=PATH`` setting (whitespace around parts is ignored).

    Empty text is an empty map. Checks the syntax only: :meth:`TokenizerMap.validate` loads the
    files. A model name may contain ``=`` nowhere and a path no ``,``. Raises
    :class:`InvalidTokenizerMap` naming the first bad entry.
    """
    if not text.strip():
        return {}
    paths: dict[str, Path] = {}
    for position, entry in enumerate(text.split(","), start=1):
        model, path = _parse_entry(entry.strip(), position)
        if model in paths:
            raise InvalidTokenizerMap(
                f"tokenizer map entry {position} ({entry.strip()!r}): model {model!r} is listed"
                " twice"
            )
        paths[model] = path
    return paths


def _parse_entry(entry: str, position: int) -> tuple[str, Path]:
    where = f"tokenizer map entry {position} ({entry!r})"
    if not entry:
        raise InvalidTokenizerMap(f"tokenizer map entry {position} is empty (a stray comma?)")
    if "=" not in entry:
        raise InvalidTokenizerMap(f"{where}: expected MODEL=PATH")
    model, _, path = (part.strip() for part in entry.partition("="))
    if not model:
        raise InvalidTokenizerMap(f"{where}: no model name before '='")
    if len(model) > MAX_MODEL_NAME_CHARS:
        raise InvalidTokenizerMap(f"{where}: a model name has at most {MAX_MODEL_NAME_CHARS} chars")
    if not path:
        raise InvalidTokenizerMap(f"{where}: no tokenizer.json path after '='")
    return model, Path(path).expanduser()


class TokenizerSource(Protocol):
    """Where billing finds a model's tokenizer (a :class:`TokenizerMap`, or the catalogue's)."""

    def tokenizer_for(self, model: str) -> Path | None: ...


@dataclass(frozen=True, slots=True, eq=False)
class TokenizerMap:
    """Which ``tokenizer.json`` counts each model's tokens; models not in it have none."""

    paths: Mapping[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "paths", MappingProxyType(dict(self.paths)))

    @classmethod
    def parse(cls, text: str) -> TokenizerMap:
        """The map in a setting; raises :class:`InvalidTokenizerMap` (see parse_tokenizer_map)."""
        return cls(parse_tokenizer_map(text))

    def to_setting(self) -> str:
        """The setting that parses back to this map; raises InvalidTokenizerMap if none does."""
        setting = ",".join(f"{model}={path}" for model, path in self.paths.items())
        try:
            parses_back = TokenizerMap.parse(setting) == self
        except InvalidTokenizerMap:
            parses_back = False
        if not parses_back:
            raise InvalidTokenizerMap(
                "this tokenizer map cannot be written as a setting: a model name with '=', ','"
                " or surrounding spaces, or a path with ','"
            )
        return setting

    def tokenizer_for(self, model: str) -> Path | None:
        """The tokenizer file for ``model``, or None: meter it by bounding the node's report."""
        return self.paths.get(model)

    def validate(self) -> None:
        """Load every tokenizer once (they stay cached); raises :class:`InvalidTokenizerMap`."""
        for model, path in self.paths.items():
            try:
                load_tokenizer(path)
            except TokenizerError as error:
                detail = " ".join(str(error).split())
                raise InvalidTokenizerMap(f"tokenizer for model {model!r}: {detail}") from error

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TokenizerMap) and dict(self.paths) == dict(other.paths)

    def __hash__(self) -> int:
        return hash(frozenset(self.paths.items()))


# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenCounts:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class Metered:
    """What a job is billed for, and the evidence.

    ``prompt_tokens`` and ``completion_tokens`` are billed (both 0 unless ``chargeable``).
    ``node_usage`` and ``streamed_tokens`` are the node's claims; ``coordinator_count`` is the
    coordinator's own count with its allowances (None without a tokenizer); ``claim_limit`` is
    the most each field may claim without a mismatch.
    """

    prompt_tokens: int
    completion_tokens: int
    chargeable: bool
    source: MeteringSource
    node_usage: Usage | None
    streamed_tokens: int | None
    coordinator_count: TokenCounts | None
    claim_limit: TokenCounts
    mismatch: bool
    mismatch_detail: str
    """Empty, or a clause per field claimed over its limit (joined by "; "), for the reputation
    record."""

    @property
    def billed(self) -> TokenCounts:
        return TokenCounts(self.prompt_tokens, self.completion_tokens)


# --- what is counted -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Measure:
    """Texts to count (by tokens, or by bytes) and an allowance added on top, in tokens."""

    texts: tuple[str, ...]
    allowance_tokens: int

    def in_tokens(self, tokenizer: Path) -> int:
        loaded = load_tokenizer(tokenizer)
        counted = sum(len(loaded.encode(text, add_special_tokens=False).ids) for text in self.texts)
        return counted + self.allowance_tokens

    def in_bytes(self) -> int:
        return self.content_bytes() + self.allowance_tokens

    def content_bytes(self) -> int:
        return sum(len(text.encode("utf-8", "surrogatepass")) for text in self.texts)


def _prompt_measure(job: Job) -> _Measure:
    if job.kind == "completion" or job.messages is None:
        return _Measure((job.prompt or "",), COMPLETION_PROMPT_FRAMING_TOKENS)
    texts = list(_message_texts(job))
    allowance = CHAT_FRAMING_TOKENS + MESSAGE_FRAMING_TOKENS * len(job.messages)
    if job.tools_json is not None:
        texts.append(_tools_as_templates_render_them(job.tools_json))
        allowance += TOOLS_FRAMING_TOKENS
    return _Measure(tuple(texts), allowance)


def prompt_token_ceiling(job: Job, *, tokenizer: Path | None = None) -> int:
    """The most prompt tokens :func:`meter` can ever bill for ``job``: its own count with a
    tokenizer, else the prompt's UTF-8 bytes (a token is at least one byte) plus the framing
    allowances. What a hold must cover before the job runs."""
    measure = _prompt_measure(job)
    return measure.in_tokens(tokenizer) if tokenizer is not None else measure.in_bytes()


def _message_texts(job: Job) -> Iterator[str]:
    for message in job.messages or ():
        yield message.role
        yield message.content
        for optional in (message.name, message.tool_calls_json, message.tool_call_id):
            if optional is not None:
                yield optional


def _tools_as_templates_render_them(tools_json: str) -> str:
    try:
        tools = json.loads(tools_json)
    except ValueError:
        return tools_json
    return json.dumps(tools, indent=4, ensure_ascii=False)


def _completion_measure(text: str, tool_calls: str, *, finished: bool) -> _Measure:
    allowance = (END_OF_TURN_TOKENS if finished else 0) + (
        TOOL_CALL_MARKER_TOKENS if tool_calls else 0
    )
    return _Measure((text, tool_calls), allowance)


def tool_calls_text(deltas: Iterable[ToolCallDelta]) -> str:
    """The tool calls in streamed fragments as metered text: one line per call, in index order,
    ``{"name": NAME, "arguments": ARGUMENTS}`` with the arguments as delivered (maybe cut).
    A call with neither a name nor arguments delivered is left out."""
    names: dict[int, str] = {}
    arguments: dict[int, list[str]] = {}
    for delta in deltas:
        if delta.name is not None:
            names.setdefault(delta.index, delta.name)
        arguments.setdefault(delta.index, []).append(delta.arguments)
    lines = []
    for index in sorted(arguments):
        name, joined = names.get(index, ""), "".join(arguments[index])
        if name or joined:
            lines.append(
                f'{{"name": {json.dumps(name, ensure_ascii=False)}, "arguments": {joined}}}'
            )
    return "\n".join(lines)


# --- metering ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Claims:
    """The node's claim per field; None where it made none."""

    prompt: int | None
    completion: int | None


@dataclass(frozen=True, slots=True)
class _Field:
    """One field's claim, its limit (with why), and what is billed without a claim."""

    name: str
    claim: int | None
    limit: int
    why: str
    bill_cap: int
    unclaimed: int

    def billed(self) -> int:
        return self.unclaimed if self.claim is None else min(self.claim, self.bill_cap)

    def over_limit(self) -> str | None:
        if self.claim is None or self.claim <= self.limit:
            return None
        return f"{self.name}: the node claimed {self.claim} tokens, over {self.limit} ({self.why})"


def _tolerance(count: int, minimum: int) -> int:
    return max(minimum, ceil(count * TOLERANCE_PERCENT / 100))


def _longest_stop(job: Job, *, finished: bool, tokenizer: Path | None) -> int:
    """The longest stop sequence, in tokens (bytes without a tokenizer); 0 unless finished."""
    if not finished or not job.sampling.stop:
        return 0
    return max(
        _Measure((stop,), 0).in_tokens(tokenizer) if tokenizer else _Measure((stop,), 0).in_bytes()
        for stop in job.sampling.stop
    )


def meter(
    job: Job,
    delivered_text: str,
    delivered_tool_calls_text: str,
    node_usage: Usage | None,
    *,
    tokenizer: Path | None,
    finished: bool,
    streamed_tokens: int | None = None,
) -> Metered:
    """What ``job`` is billed for; the rules are in this module's docstring.

    ``tokenizer`` is the model's ``tokenizer.json`` (:meth:`TokenizerMap.tokenizer_for`) or
    None. Raises :class:`~coordinator.tokens.TokenizerError` when it does not load.
    """
    prompt = _prompt_measure(job)
    completion = _completion_measure(delivered_text, delivered_tool_calls_text, finished=finished)
    stop = _longest_stop(job, finished=finished, tokenizer=tokenizer)
    claims = _Claims(
        prompt=node_usage.prompt_tokens if node_usage else None,
        completion=node_usage.completion_tokens if node_usage else streamed_tokens,
    )
    coordinator: TokenCounts | None = None
    if tokenizer is not None:
        coordinator = TokenCounts(prompt.in_tokens(tokenizer), completion.in_tokens(tokenizer))
        fields = _counted_fields(job, coordinator, stop=stop, claims=claims)
    else:
        fields = _bounded_fields(job, prompt, completion, stop_bytes=stop, claims=claims)
    chargeable = bool(delivered_text or delivered_tool_calls_text)
    problems = [problem for problem in (f.over_limit() for f in fields) if problem]
    return Metered(
        prompt_tokens=fields[0].billed() if chargeable else 0,
        completion_tokens=fields[1].billed() if chargeable else 0,
        chargeable=chargeable,
        source="tokenizer" if tokenizer is not None else "node_report_bounded",
        node_usage=node_usage,
        streamed_tokens=streamed_tokens,
        coordinator_count=coordinator,
        claim_limit=TokenCounts(fields[0].limit, fields[1].limit),
        mismatch=bool(problems),
        mismatch_detail="; ".join(problems),
    )


def _counted_fields(
    job: Job, count: TokenCounts, *, stop: int, claims: _Claims
) -> tuple[_Field, _Field]:
    max_tokens = job.sampling.max_tokens
    prompt_tolerance = _tolerance(count.prompt_tokens, MIN_PROMPT_TOLERANCE_TOKENS)
    completion_tolerance = _tolerance(count.completion_tokens, MIN_COMPLETION_TOLERANCE_TOKENS)
    completion_limit = min(count.completion_tokens + completion_tolerance + stop, max_tokens)
    completion_cap = min(count.completion_tokens, max_tokens)
    return (
        _Field(
            "prompt",
            claims.prompt,
            limit=count.prompt_tokens + prompt_tolerance,
            why=f"the coordinator counted {count.prompt_tokens}, tolerance {prompt_tolerance}",
            bill_cap=count.prompt_tokens,
            unclaimed=count.prompt_tokens,
        ),
        _Field(
            "completion",
            claims.completion,
            limit=completion_limit,
            why=f"the coordinator counted {count.completion_tokens}, tolerance"
            f" {completion_tolerance + stop}, max_tokens {max_tokens}",
            bill_cap=completion_cap,
            unclaimed=completion_cap,
        ),
    )


def _bounded_fields(
    job: Job,
    prompt: _Measure,
    completion: _Measure,
    *,
    stop_bytes: int,
    claims: _Claims,
) -> tuple[_Field, _Field]:
    max_tokens = job.sampling.max_tokens
    prompt_ceiling = prompt.in_bytes()
    completion_bytes = completion.content_bytes()
    completion_ceiling = min(completion_bytes + COMPLETION_SLACK_TOKENS + stop_bytes, max_tokens)
    return (
        _Field(
            "prompt",
            claims.prompt,
            limit=prompt_ceiling,
            why=f"{prompt.content_bytes()} bytes of prompt + {prompt.allowance_tokens} framing",
            bill_cap=prompt_ceiling,
            unclaimed=min(_estimate(prompt), prompt_ceiling),
        ),
        _Field(
            "completion",
            claims.completion,
            limit=completion_ceiling,
            why=f"{completion_bytes} bytes delivered + {COMPLETION_SLACK_TOKENS + stop_bytes}"
            f" slack, max_tokens {max_tokens}",
            bill_cap=completion_ceiling,
            unclaimed=min(_estimate(completion), completion_ceiling),
        ),
    )


def _estimate(measure: _Measure) -> int:
    return measure.content_bytes() // ESTIMATE_BYTES_PER_TOKEN
