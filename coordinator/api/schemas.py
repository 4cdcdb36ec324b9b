"""Request bodies of the customer API, validated strictly enough to give precise 400s.

Unknown parameters are refused by name (a silent drop would change what the customer asked for).
Parameters the network cannot honour yet are refused with a message saying so.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from coordinator.api.errors import ApiError

__all__ = [
    "MAX_OUTPUT_TOKENS",
    "ChatCompletionRequest",
    "CompletionRequest",
    "parse_body",
]

MAX_OUTPUT_TOKENS = 131_072

# Accepted by OpenAI but with no effect on the answer: accepted and ignored.
_IGNORED = frozenset({"user", "metadata", "store", "service_tier", "parallel_tool_calls"})
# Not yet carried by protocol v1 to the node: refused clearly rather than silently dropped.
_NOT_SUPPORTED = {
    "tools": "tools are not supported by this network yet",
    "tool_choice": "tool_choice is not supported by this network yet",
    "functions": "functions are not supported by this network yet",
    "function_call": "function_call is not supported by this network yet",
    "response_format": "response_format is not supported by this network yet",
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


class ContentPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessageIn(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]
    name: Annotated[str, Field(max_length=256)] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


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

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, str) and not value:
            raise ValueError("stop must not be empty")
        return value

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


_M = TypeVar("_M", bound=_Sampling)


class ChatCompletionRequest(_Sampling):
    messages: Annotated[list[ChatMessageIn], Field(min_length=1, max_length=4096)]
    max_completion_tokens: Annotated[int, Field(ge=1, le=MAX_OUTPUT_TOKENS)] | None = None

    def output_limit(self, default: int) -> int:
        return self.max_completion_tokens or self.max_tokens or default


class CompletionRequest(_Sampling):
    prompt: str

    def output_limit(self, default: int) -> int:
        return self.max_tokens or default


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
        return model.model_validate(cleaned)
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
