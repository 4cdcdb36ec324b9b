"""Reading request bodies: JSON with clear, OpenAI-style errors."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from litestar import Request

from coordinator.api.errors import ApiError

__all__ = ["read_json", "read_json_object"]


async def read_json(request: Request[Any, Any, Any], *, exact_decimals: bool = True) -> Any:
    """The body as JSON; 400 ``invalid_json`` when it is not.

    Decimals stay exact (Decimal) unless ``exact_decimals`` is False (floats, for documents
    that are stored or passed on as JSON again).
    """
    raw = await request.body()
    try:
        return json.loads(raw, parse_float=Decimal if exact_decimals else float)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ApiError(
            400, f"request body is not valid JSON: {error}", code="invalid_json"
        ) from None


async def read_json_object(
    request: Request[Any, Any, Any],
    allowed: frozenset[str] | None = None,
    *,
    exact_decimals: bool = True,
) -> dict[str, Any]:
    """The body as a JSON object, with only ``allowed`` keys when given."""
    data = await read_json(request, exact_decimals=exact_decimals)
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object", code="invalid_json")
    unknown = sorted(data.keys() - allowed) if allowed is not None else []
    if unknown:
        raise ApiError(
            400,
            f"unrecognized request argument: {unknown[0]}",
            code="unsupported_parameter",
            param=unknown[0],
        )
    return data
