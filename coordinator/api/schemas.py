"""Request bodies of the customer API, validated strictly enough to give precise 400s.

Unknown parameters are refused by name (a silent drop would change what the customer asked for).
Parameters the network cannot honour yet are refused with a message saying so.

Tools and structured output (chat only) are checked for OpenAI's shapes here, then travel to the
node as JSON text (``protocol.tools``): ``tools`` (function definitions), ``tool_choice``,
``parallel_tool_calls`` (forwarded only with ``tools``), ``response_format``, assistant messages
with ``tool_calls`` (``content`` may then be null) and ``tool`` messages with ``tool_call_id``.
``tool_choice`` ``"none"`` or ``"auto"`` without ``tools`` means what it says without them and is
not forwarded; ``"required"`` or a named function without ``tools`` is a 400.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from coordinator.api.errors import ApiError
from protocol import InvalidJsonText, dump_json_text

__all__ = [
    "MAX_OUTPUT_TOKENS",
    "MAX_TOOLS",
    "ChatCompletionRequest",
    "CompletionRequest",
    "parse_body",
]

MAX_OUTPUT_TOKENS = 131_072
MAX_TOOLS = 128  # as OpenAI's API

# Accepted by OpenAI but with no effect on the answer: accepted and ignored.
_IGNORED = frozenset({"user", "store", "service_tier"})
# Not carried by protocol v1 to the node: refused clearly rather than silently dropped.
_NOT_SUPPORTED = {
    "functions": "functions are deprecated by OpenAI and not supported: use tools",
    "function_call": "function_call is deprecated by OpenAI and not supported: use tool_choice",
    "logprobs": "logprobs are not supported by this network yet",
    "top_logprobs": "top_logprobs are not supported by this network yet",
    "logit_bias": "logit_bias is not supported by this network yet",
    "audio": "audio output is not supported",
    "modalities": "only text output is supported",
    "prediction": "predicted outputs are not supported",
    "best_of": "best_of is not supported",
    "echo": "echo is not supported",
    "suffix": "suffix is not supported",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


FunctionName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
ToolCallId = Annotated[str, Field(min_length=1, max_length=256)]


class ContentPart(_Strict):
    type: Literal["text"]
    text: str


class ToolCallFunction(_Strict):
    name: FunctionName
    arguments: str


class ToolCallIn(_Strict):
    """A tool call an earlier assistant message made, sent back as part of the conversation."""

    id: ToolCallId
    type: Literal["function"]
    function: ToolCallFunction


class ChatMessageIn(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: Annotated[str, Field(max_length=256)] | None = None
    tool_calls: Annotated[list[ToolCallIn], Field(min_length=1, max_length=MAX_TOOLS)] | None = None
    tool_call_id: ToolCallId | None = None
    refusal: str | None = None
    """Accepted and ignored: the SDKs send it back with the assistant messages they received."""

    @model_validator(mode="after")
    def _fields_match_role(self) -> ChatMessageIn:
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        if self.tool_call_id is not None and self.role != "tool":
            raise ValueError("only tool messages carry tool_call_id")
        if self.role == "tool" and self.tool_call_id is None:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required (null only for an assistant's tool calls)")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def tool_calls_json(self, position: int) -> str | None:
        """The Job's JSON text for ``tool_calls``; ``position`` names the message in a 400."""
        if self.tool_calls is None:
            return None
        value = [call.model_dump(mode="json") for call in self.tool_calls]
        return _json_text(value, f"messages.{position}.tool_calls")


class FunctionDefinition(_Strict):
    name: FunctionName
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(_Strict):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Strict):
    name: FunctionName


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(_Strict):
    name: FunctionName
    description: str | None = None
    schema_: Annotated[dict[str, Any] | None, Field(alias="schema")] = None
    strict: bool | None = None


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_matches_type(self) -> ResponseFormat:
        if (self.json_schema is not None) != (self.type == "json_schema"):
            raise ValueError('json_schema is required with type "json_schema", and only then')
        return self


class StreamOptions(_Strict):
    include_usage: bool = False


class _Sampling(_Strict):
    model: Annotated[str, Field(min_length=1, max_length=256)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1, le=MAX_OUTPUT_TOKENS)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    stop: (
        Annotated[str, Field(max_length=256)]
        | Annotated[list[Annotated[str, Field(min_length=1, max_length=256)]], Field(max_length=4)]
        | None
    ) = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    n: Literal[1] | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    # OpenAI's request metadata (at most 16 pairs); task routes match its "task" and "tags".
    metadata: (
        Annotated[
            dict[
                Annotated[str, Field(min_length=1, max_length=64)],
                Annotated[str, Field(max_length=512)],
            ],
            Field(max_length=16),
        ]
        | None
    ) = None
    # Routing preferences: validated by scheduler.parse_routing_preferences (400 naming the field).
    provider: Any = None
    models: Any = None
    session_id: Any = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, str) and not value:
            raise ValueError("stop must not be empty")
        return value

    def routing_body(self) -> dict[str, object]:
        """The body's routing fields, for :func:`scheduler.parse_routing_preferences`."""
        return {
            "model": self.model,
            "models": self.models,
            "provider": self.provider,
            "session_id": self.session_id,
        }

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def check(self) -> None:
        """Checks across fields, after parsing; raises ApiError (400) naming the field."""


_M = TypeVar("_M", bound=_Sampling)


class ChatCompletionRequest(_Sampling):
    messages: Annotated[list[ChatMessageIn], Field(min_length=1, max_length=4096)]
    max_completion_tokens: Annotated[int, Field(ge=1, le=MAX_OUTPUT_TOKENS)] | None = None
    tools: Annotated[list[ToolDefinition], Field(min_length=1, max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None

    @field_validator("tool_choice", mode="wrap")
    @classmethod
    def _tool_choice_shape(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            # One message instead of one per member of the union.
            raise ValueError(
                'must be "none", "auto", "required" or '
                '{"type": "function", "function": {"name": "..."}}'
            ) from None

    def output_limit(self, default: int) -> int:
        return self.max_completion_tokens or self.max_tokens or default

    def check(self) -> None:
        names = [tool.function.name for tool in self.tools or ()]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ApiError(
                400,
                f"invalid value for tools: function names must be unique, "
                f"{', '.join(duplicates)} appears more than once",
                code="invalid_value",
                param="tools",
            )
        if isinstance(self.tool_choice, NamedToolChoice):
            wanted = self.tool_choice.function.name
            if wanted not in names:
                raise ApiError(
                    400,
                    f"invalid value for tool_choice: no tool named {wanted!r} in tools",
                    code="invalid_value",
                    param="tool_choice",
                )
        elif self.tool_choice == "required" and not names:
            raise ApiError(
                400,
                'invalid value for tool_choice: "required" needs tools',
                code="invalid_value",
                param="tool_choice",
            )

    def tools_json(self) -> str | None:
        """The Job's JSON text for ``tools``; None without tools."""
        if self.tools is None:
            return None
        return _json_text(
            [tool.model_dump(mode="json", exclude_none=True) for tool in self.tools], "tools"
        )

    def tool_choice_json(self) -> str | None:
        if self.tools is None or self.tool_choice is None:
            return None  # "none" or "auto" without tools: nothing to choose from
        if isinstance(self.tool_choice, str):
            return _json_text(self.tool_choice, "tool_choice")
        return _json_text(self.tool_choice.model_dump(mode="json"), "tool_choice")

    def response_format_json(self) -> str | None:
        if self.response_format is None:
            return None
        value = self.response_format.model_dump(mode="json", by_alias=True, exclude_none=True)
        return _json_text(value, "response_format")


class CompletionRequest(_Sampling):
    prompt: str

    def output_limit(self, default: int) -> int:
        return self.max_tokens or default


def _json_text(value: Any, param: str) -> str:
    """``value`` as a Job's JSON text; a 400 naming ``param`` when it is over the limit."""
    try:
        return dump_json_text(value, field=param)
    except InvalidJsonText as error:
        raise ApiError(400, str(error), code="invalid_value", param=param) from None


def parse_body(raw: bytes, model: type[_M]) -> _M:
    """Parse a JSON body into ``model``; every problem is an ApiError 400 naming the field."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ApiError(
            400, f"request body is not valid JSON: {error}", code="invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object", code="invalid_json")
    for name in _NOT_SUPPORTED.keys() & data.keys():
        if data[name] is not None:
            raise ApiError(400, _NOT_SUPPORTED[name], code="unsupported_parameter", param=name)
    cleaned: dict[str, Any] = {k: v for k, v in data.items() if k not in _IGNORED}
    for name in _NOT_SUPPORTED.keys() & cleaned.keys():
        del cleaned[name]
    try:
        body = model.model_validate(cleaned)
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        if first["type"] == "extra_forbidden":
            message = f"unrecognized request argument: {param}"
            code = "unsupported_parameter"
        elif first["type"] == "missing":
            message = f"missing required parameter: {param}"
            code = "missing_required_parameter"
        else:
            message = f"invalid value for {param}: {first['msg']}"
            code = "invalid_value"
        raise ApiError(400, message, code=code, param=param) from None
    body.check()
    return body
