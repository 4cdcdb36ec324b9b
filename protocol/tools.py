"""The JSON-text fields of protocol v1: tools, tool choice, response format and tool calls.

``Job.tools_json``, ``Job.tool_choice_json``, ``Job.response_format_json``,
``ChatMessage.tool_calls_json`` and ``Chunk.tool_calls_json`` carry OpenAI-shaped JSON values as
compact JSON text of at most :data:`MAX_JSON_CHARS` characters, so that an arbitrarily nested JSON
schema never meets msgpack's depth limit. The message schemas check only that length; the
applications parse the text with this module when they use it (``docs/protocol.md`` §9.5):

- :func:`dump_json_text` / :func:`load_json_text`: any JSON value, compact, length-checked;
- :class:`ToolCallDelta` with :func:`encode_tool_call_deltas` / :func:`decode_tool_call_deltas`:
  the fragments of tool calls a model streams, as ``Chunk.tool_calls_json`` carries them.

Pure code, like the rest of the package: no I/O.

Errors::

    InvalidJsonText    (a ValueError) not JSON, too long, too deep, or not the documented shape
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "MAX_JSON_CHARS",
    "MAX_TOOL_CALL_DELTAS",
    "InvalidJsonText",
    "ToolCallDelta",
    "decode_tool_call_deltas",
    "dump_json_text",
    "encode_tool_call_deltas",
    "load_json_text",
]

MAX_JSON_CHARS: Final = 262_144
"""The most characters any JSON-text field holds (256 Ki)."""
MAX_TOOL_CALL_DELTAS: Final = 4_096
"""The most tool-call fragments one ``Chunk.tool_calls_json`` array holds."""
_MAX_ID_CHARS: Final = 256
_MAX_NAME_CHARS: Final = 256
_MAX_INDEX: Final = 2**31 - 1


class InvalidJsonText(ValueError):
    """A JSON-text field is not valid JSON, is too long, or does not have its documented shape."""


def dump_json_text(value: Any, *, field: str) -> str:
    """``value`` as compact JSON text (UTF-8 kept as is); raises InvalidJsonText when too long."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as error:
        raise InvalidJsonText(f"{field} is not JSON: {error}") from None
    if len(text) > MAX_JSON_CHARS:
        raise InvalidJsonText(
            f"{field} is {len(text)} characters of JSON; at most {MAX_JSON_CHARS} are allowed"
        )
    return text


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_json_text(text: str, *, field: str) -> Any:
    """The JSON value in ``text``; raises InvalidJsonText (NaN and infinities are not JSON)."""
    if len(text) > MAX_JSON_CHARS:
        raise InvalidJsonText(f"{field} is longer than {MAX_JSON_CHARS} characters")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as error:
        raise InvalidJsonText(f"{field} is not valid JSON: {error}") from None


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """One fragment of a tool call, as OpenAI-compatible servers stream them.

    The first fragment of a call normally carries its ``id`` and function ``name`` with empty
    ``arguments``; later fragments carry only ``index`` and a piece of ``arguments``. A client
    joins the fragments of one ``index`` by concatenating their ``arguments``.
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""

    def to_openai(self) -> dict[str, Any]:
        """The fragment as an OpenAI ``delta.tool_calls`` item."""
        item: dict[str, Any] = {"index": self.index}
        if self.id is not None:
            item["id"] = self.id
        if self.id is not None or self.name is not None:
            item["type"] = "function"
        function: dict[str, str] = {}
        if self.name is not None:
            function["name"] = self.name
        function["arguments"] = self.arguments
        item["function"] = function
        return item


def encode_tool_call_deltas(deltas: Iterable[ToolCallDelta]) -> str:
    """``Chunk.tool_calls_json`` for ``deltas`` (raises InvalidJsonText when too long)."""
    return dump_json_text([delta.to_openai() for delta in deltas], field="tool_calls_json")


def _optional_text(item: dict[str, Any], key: str, limit: int, where: str) -> str | None:
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= limit:
        raise InvalidJsonText(f"{where}.{key} must be a string of 1 to {limit} characters")
    return value


def _decode_one(item: object, where: str) -> ToolCallDelta:
    if not isinstance(item, dict):
        raise InvalidJsonText(f"{where} must be an object")
    unknown = item.keys() - {"index", "id", "type", "function"}
    if unknown:
        raise InvalidJsonText(f"{where} has unknown key(s): {', '.join(sorted(unknown))}")
    index = item.get("index")
    if type(index) is not int or not 0 <= index <= _MAX_INDEX:
        raise InvalidJsonText(f"{where}.index must be an integer from 0 to {_MAX_INDEX}")
    if item.get("type") not in (None, "function"):
        raise InvalidJsonText(f'{where}.type must be "function"')
    function = item.get("function")
    if function is None:
        function = {}
    if not isinstance(function, dict):
        raise InvalidJsonText(f"{where}.function must be an object")
    unknown = function.keys() - {"name", "arguments"}
    if unknown:
        raise InvalidJsonText(f"{where}.function has unknown key(s): {', '.join(sorted(unknown))}")
    arguments = function.get("arguments")
    if arguments is None:
        arguments = ""
    if not isinstance(arguments, str):
        raise InvalidJsonText(f"{where}.function.arguments must be a string")
    return ToolCallDelta(
        index=index,
        id=_optional_text(item, "id", _MAX_ID_CHARS, where),
        name=_optional_text(function, "name", _MAX_NAME_CHARS, f"{where}.function"),
        arguments=arguments,
    )


def decode_tool_call_deltas(text: str) -> tuple[ToolCallDelta, ...]:
    """The fragments in a ``Chunk.tool_calls_json``; raises InvalidJsonText.

    The text must be a JSON array of 1 to :data:`MAX_TOOL_CALL_DELTAS` objects with the keys
    ``index`` (required, 0 to 2^31 - 1), ``id`` (1 to 256 characters), ``type`` (``"function"``)
    and ``function`` (an object with ``name``, 1 to 256 characters, and ``arguments``, a string);
    any of the optional keys may be ``null``, and nothing else is allowed.
    """
    value = load_json_text(text, field="tool_calls_json")
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_TOOL_CALL_DELTAS:
        raise InvalidJsonText(
            f"tool_calls_json must be an array of 1 to {MAX_TOOL_CALL_DELTAS} tool-call deltas"
        )
    return tuple(
        _decode_one(item, f"tool_calls_json[{position}]") for position, item in enumerate(value)
    )
