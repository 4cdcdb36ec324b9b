from __future__ import annotations

import pytest

from scheduler import (
    InvalidPreferences,
    MaxPrice,
    ProviderPreferences,
    parse_routing_preferences,
    split_model_suffix,
    usd_per_1m_to_micro_usd,
)


def test_defaults_when_only_a_model_is_given() -> None:
    prefs = parse_routing_preferences({"model": "llama"})
    assert prefs.model == "llama"
    assert prefs.provider == ProviderPreferences()
    assert prefs.models_in_order() == ("llama",)


def test_full_provider_object_parses() -> None:
    prefs = parse_routing_preferences(
        {
            "model": "llama",
            "models": ["mistral", "llama", "qwen:floor"],
            "session_id": "s1",
            "provider": {
                "order": ["alice", "bob"],
                "only": ["alice", "bob", "carol"],
                "ignore": ["mallory"],
                "allow_fallbacks": False,
                "sort": "latency",
                "max_price": {"prompt": 0.1, "completion": "0.35", "request": 0},
                "preferred_max_latency": 1.5,
                "preferred_min_throughput": 40,
                "require_parameters": True,
                "min_reputation": 0.7,
                "data_collection": "deny",
            },
        }
    )
    p = prefs.provider
    assert p.order == ("alice", "bob")
    assert p.only == frozenset({"alice", "bob", "carol"})
    assert p.ignore == frozenset({"mallory"})
    assert p.allow_fallbacks is False
    assert p.sort == "latency"
    assert p.max_price == MaxPrice(100_000, 350_000)
    assert p.preferred_max_latency_ms == 1500.0
    assert p.preferred_min_throughput_tps == 40.0
    assert p.require_parameters is True
    assert p.min_reputation == 0.7
    assert prefs.session_id == "s1"
    assert prefs.models_in_order() == ("llama", "mistral", "qwen")


@pytest.mark.parametrize(
    ("value", "micro_usd"),
    [(0.1, 100_000), ("0.3", 300_000), (3, 3_000_000), (0.0000019, 1), (1e-7, 0), (0.29, 290_000)],
)
def test_prices_convert_exactly_and_round_down(value: object, micro_usd: int) -> None:
    assert usd_per_1m_to_micro_usd(value, "f") == micro_usd


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("llama:floor", ("llama", "price")),
        ("llama:nitro", ("llama", "throughput")),
        ("org/llama:free", ("org/llama:free", None)),
        ("llama", ("llama", None)),
        (":nitro", (":nitro", None)),
    ],
)
def test_model_suffixes(model: str, expected: tuple[str, str | None]) -> None:
    assert split_model_suffix(model) == expected


def test_suffix_sets_sort_unless_explicit() -> None:
    assert parse_routing_preferences({"model": "m:nitro"}).provider.sort == "throughput"
    explicit = parse_routing_preferences({"model": "m:floor", "provider": {"sort": "latency"}})
    assert explicit.provider.sort == "latency"


def test_hedge_is_opt_in_per_request() -> None:
    assert parse_routing_preferences({"model": "m"}).provider.hedge is None  # operator default
    on = parse_routing_preferences({"model": "m", "provider": {"hedge": True}})
    off = parse_routing_preferences({"model": "m", "provider": {"hedge": False}})
    assert (on.provider.hedge, off.provider.hedge) == (True, False)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "model"),
        ({"model": ""}, "model"),
        ({"model": "m", "provider": []}, "provider"),
        ({"model": "m", "provider": {"sort": "cheap"}}, "provider.sort"),
        ({"model": "m", "provider": {"max_price": {"prompt": -1}}}, "provider.max_price.prompt"),
        ({"model": "m", "provider": {"max_price": {"prompt": "x"}}}, "provider.max_price.prompt"),
        (
            {"model": "m", "provider": {"max_price": {"completion": True}}},
            "provider.max_price.completion",
        ),
        (
            {"model": "m", "provider": {"max_price": {"prompt": float("nan")}}},
            "provider.max_price.prompt",
        ),
        ({"model": "m", "provider": {"max_price": {"tip": 1}}}, "provider.max_price.tip"),
        ({"model": "m", "provider": {"order": "alice"}}, "provider.order"),
        ({"model": "m", "provider": {"only": ["a", 3]}}, "provider.only[1]"),
        ({"model": "m", "provider": {"allow_fallbacks": "yes"}}, "provider.allow_fallbacks"),
        (
            {"model": "m", "provider": {"preferred_max_latency": 0}},
            "provider.preferred_max_latency",
        ),
        ({"model": "m", "provider": {"min_reputation": 2}}, "provider.min_reputation"),
        ({"model": "m", "provider": {"colour": "red"}}, "provider.colour"),
        ({"model": "m", "provider": {"hedge": 1}}, "provider.hedge"),
        ({"model": "m", "models": "x"}, "models"),
        ({"model": "m", "session_id": 5}, "session_id"),
    ],
)
def test_invalid_preferences_name_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidPreferences) as caught:
        parse_routing_preferences(body)
    assert caught.value.field == field
