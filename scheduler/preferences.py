"""Customer routing preferences: the OpenRouter-style ``provider`` object plus ShareAI's own.

Parsing is strict and typed: any malformed value raises
:class:`~scheduler.InvalidPreferences` naming the dotted field (``provider.max_price.prompt``) so
the web layer can answer 400. Prices arrive in USD per 1M tokens (JSON numbers or decimal
strings) and are converted through :class:`decimal.Decimal` to integer micro-USD per 1M tokens,
rounded *down* so the ceiling is never exceeded. ``preferred_max_latency`` is in seconds (as in
OpenRouter) and stored in milliseconds.

Model suffixes: ``model:floor`` means ``sort="price"``, ``model:nitro`` means ``sort="throughput"``;
an explicit ``provider.sort`` wins over the suffix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Literal, cast

from scheduler.errors import InvalidPreferences

__all__ = [
    "MaxPrice",
    "ProviderPreferences",
    "RoutingPreferences",
    "Sort",
    "parse_provider",
    "parse_routing_preferences",
    "split_model_suffix",
    "usd_per_1m_to_micro_usd",
]

Sort = Literal["price", "latency", "throughput"]
_SORTS: tuple[Sort, ...] = ("price", "latency", "throughput")
_SUFFIXES: dict[str, Sort] = {"floor": "price", "nitro": "throughput"}
_MAX_LIST = 64
_MAX_MODELS = 8
_MAX_PRICE_USD = Decimal(1_000_000)
# OpenRouter fields that are accepted for compatibility but have no effect here.
_ACCEPTED_NOOP = frozenset({"data_collection", "zdr", "quantizations", "enforce_distillable_text"})


@dataclass(frozen=True, slots=True)
class MaxPrice:
    """Ceilings in integer micro-USD per 1M tokens; ``None`` means no ceiling."""

    prompt_micro_usd_per_1m: int | None = None
    completion_micro_usd_per_1m: int | None = None


@dataclass(frozen=True, slots=True)
class ProviderPreferences:
    order: tuple[str, ...] = ()
    only: frozenset[str] | None = None
    ignore: frozenset[str] = frozenset()
    allow_fallbacks: bool = True
    sort: Sort | None = None
    max_price: MaxPrice = MaxPrice()
    preferred_max_latency_ms: float | None = None
    preferred_min_throughput_tps: float | None = None
    require_parameters: bool = False
    min_reputation: float = 0.0
    hedge: bool | None = None
    """ShareAI: race a second node when the first is late (``None``: the operator's default)."""


@dataclass(frozen=True, slots=True)
class RoutingPreferences:
    """Everything about *where* a request may run. ``model`` has its suffix stripped."""

    model: str
    models: tuple[str, ...] = ()
    """Fallback models, tried in order after ``model``."""
    provider: ProviderPreferences = ProviderPreferences()
    session_id: str | None = None

    def models_in_order(self) -> tuple[str, ...]:
        seen: dict[str, None] = {self.model: None}
        for model in self.models:
            seen.setdefault(model, None)
        return tuple(seen)


def split_model_suffix(model: str) -> tuple[str, Sort | None]:
    """``"llama:nitro"`` -> ``("llama", "throughput")``; unknown suffixes stay part of the name."""
    base, sep, suffix = model.rpartition(":")
    if sep and base and suffix in _SUFFIXES:
        return base, _SUFFIXES[suffix]
    return model, None


def usd_per_1m_to_micro_usd(value: object, field: str) -> int:
    """Exact USD -> integer micro-USD (rounded down); rejects bools, negatives, NaN, huge values."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidPreferences(field, "must be a number (USD per 1M tokens)")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidPreferences(field, "must be finite")
    try:
        amount = Decimal(str(value)) if not isinstance(value, int) else Decimal(value)
    except InvalidOperation:
        raise InvalidPreferences(field, "must be a decimal number") from None
    if not amount.is_finite() or amount < 0 or amount > _MAX_PRICE_USD:
        raise InvalidPreferences(field, "must be between 0 and 1000000")
    return int((amount * 1_000_000).to_integral_value(rounding=ROUND_FLOOR))


def _str_list(value: object, field: str) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > _MAX_LIST:
        raise InvalidPreferences(field, f"must be a list of at most {_MAX_LIST} strings")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item or len(item) > 256:
            raise InvalidPreferences(f"{field}[{i}]", "must be a non-empty string")
    return tuple(cast("list[str]", value))


def _bool(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidPreferences(field, "must be a boolean")
    return value


def _positive(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidPreferences(field, "must be a number")
    if not math.isfinite(value) or value <= 0:
        raise InvalidPreferences(field, "must be a positive finite number")
    return float(value)


def _max_price(value: object, field: str) -> MaxPrice:
    if not isinstance(value, Mapping):
        raise InvalidPreferences(field, "must be an object")
    prompt = completion = None
    for key, item in value.items():
        if key == "prompt":
            prompt = usd_per_1m_to_micro_usd(item, f"{field}.prompt")
        elif key == "completion":
            completion = usd_per_1m_to_micro_usd(item, f"{field}.completion")
        elif key in {"request", "image"}:
            continue  # OpenRouter per-request and image prices do not apply to this network
        else:
            raise InvalidPreferences(f"{field}.{key}", "unknown field")
    return MaxPrice(prompt, completion)


def parse_provider(  # noqa: PLR0912 - one branch per field reads as the spec
    value: object, field: str = "provider"
) -> ProviderPreferences:
    """Parse the ``provider`` object; raises :class:`InvalidPreferences`."""
    if not isinstance(value, Mapping):
        raise InvalidPreferences(field, "must be an object")
    kwargs: dict[str, object] = {}
    for key, item in value.items():
        path = f"{field}.{key}"
        if item is None or key in _ACCEPTED_NOOP:
            continue
        if key == "order":
            kwargs["order"] = _str_list(item, path)
        elif key in {"only", "ignore"}:
            kwargs[key] = frozenset(_str_list(item, path))
        elif key in {"allow_fallbacks", "require_parameters", "hedge"}:
            kwargs[key] = _bool(item, path)
        elif key == "sort":
            if item not in _SORTS:
                raise InvalidPreferences(path, "must be one of price, latency, throughput")
            kwargs["sort"] = item
        elif key == "max_price":
            kwargs["max_price"] = _max_price(item, path)
        elif key == "preferred_max_latency":
            kwargs["preferred_max_latency_ms"] = _positive(item, path) * 1000.0
        elif key == "preferred_min_throughput":
            kwargs["preferred_min_throughput_tps"] = _positive(item, path)
        elif key == "min_reputation":
            if isinstance(item, bool) or not isinstance(item, int | float) or not 0 <= item <= 1:
                raise InvalidPreferences(path, "must be a number between 0 and 1")
            kwargs["min_reputation"] = float(item)
        else:
            raise InvalidPreferences(path, "unknown field")
    return ProviderPreferences(**kwargs)  # type: ignore[arg-type]


def _model_name(value: object, field: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 256:
        raise InvalidPreferences(field, "must be a non-empty model name")
    return value


def parse_routing_preferences(body: Mapping[str, object]) -> RoutingPreferences:
    """Read ``model``, ``models``, ``provider`` and ``session_id`` from a request body.

    Other keys of the body are ignored (they belong to the completion request itself).
    """
    model, suffix_sort = split_model_suffix(_model_name(body.get("model"), "model"))
    models: tuple[str, ...] = ()
    if body.get("models") is not None:
        raw = _str_list(body["models"], "models")
        if len(raw) > _MAX_MODELS:
            raise InvalidPreferences("models", f"at most {_MAX_MODELS} fallback models")
        models = tuple(split_model_suffix(m)[0] for m in raw)
    provider = (
        parse_provider(body["provider"]) if body.get("provider") is not None else None
    ) or ProviderPreferences()
    if provider.sort is None and suffix_sort is not None:
        provider = replace(provider, sort=suffix_sort)
    session_id = body.get("session_id")
    if session_id is not None and (
        not isinstance(session_id, str) or not session_id or len(session_id) > 256
    ):
        raise InvalidPreferences("session_id", "must be a non-empty string of at most 256")
    return RoutingPreferences(model, models, provider, session_id)
