"""The market history: served minutes and availability, bounded; and the models query."""

from __future__ import annotations

import pytest

from coordinator.market import MarketHistory
from coordinator.market.views import (
    InvalidQuery,
    ModelQuery,
    ModelRow,
    parse_model_query,
    select_rows,
)


class Clock:
    def __init__(self, now_s: float = 1_800_000_000.0) -> None:
        self.now_s = now_s - now_s % 60

    def __call__(self) -> float:
        return self.now_s


def _served(history: MarketHistory, model: str, ttft_ms: float, price: int = 100) -> None:
    history.record_served(
        model,
        ttft_ms=ttft_ms,
        tokens_per_s=50.0,
        price_input_micro_usd_per_1m=price,
        price_output_micro_usd_per_1m=price * 2,
    )


def test_a_minute_aggregates_its_requests_and_quiet_minutes_are_gaps() -> None:
    clock = Clock()
    history = MarketHistory(clock=clock)
    _served(history, "m", 100, price=100)
    _served(history, "m", 300, price=300)
    clock.now_s += 120  # two minutes later, one more
    _served(history, "m", 50, price=200)
    points = history.series("m", 3_600)
    assert len(points) == 60
    assert [p.requests for p in points[-3:]] == [2, 0, 1]
    first, quiet, last = points[-3:]
    assert (first.ttft_ms_mean, first.price_input_mean, first.price_input_lowest) == (200, 200, 100)
    assert first.price_output_lowest == 200
    assert quiet.ttft_ms_mean is None
    assert quiet.price_input_mean is None
    assert last.ttft_ms_mean == 50
    assert history.series("other", 3_600)[-1].requests == 0


def test_wider_steps_merge_minutes() -> None:
    clock = Clock()
    history = MarketHistory(clock=clock)
    for _ in range(3):
        _served(history, "m", 100)
        clock.now_s += 60
    points = history.series("m", 86_400, 900)
    assert len(points) == 96
    assert sum(p.requests for p in points) == 3
    with pytest.raises(ValueError, match="whole number of minutes"):
        history.series("m", 3_600, 90)


def test_history_older_than_the_kept_window_is_forgotten() -> None:
    clock = Clock()
    history = MarketHistory(clock=clock, keep_s=3_600)
    _served(history, "m", 100)
    clock.now_s += 2 * 3_600
    _served(history, "m", 100)
    assert sum(p.requests for p in history.series("m", 86_400)) == 1


def test_at_most_max_models_are_kept_least_recently_served_first_forgotten() -> None:
    history = MarketHistory(clock=Clock(), max_models=2)
    for model in ("a", "b", "a", "c"):
        _served(history, model, 100)
    assert sum(p.requests for p in history.series("b", 3_600)) == 0
    assert sum(p.requests for p in history.series("a", 3_600)) == 2
    assert sum(p.requests for p in history.series("c", 3_600)) == 1


def test_availability_is_the_share_of_time_some_node_offered_the_model() -> None:
    clock = Clock()
    history = MarketHistory(clock=clock)
    assert history.availability("m", 3_600) is None  # never seen
    history.node_offers("n1", ["m"])
    history.node_offers("n2", ["m", "x"])
    clock.now_s += 1_800
    assert history.availability("m", 3_600) == 1.0  # counted from when first seen
    history.node_offers("n1", [])
    assert history.availability("m", 3_600) == 1.0  # n2 still offers it
    history.node_offers("n2", ["x"])  # nobody offers m from now
    clock.now_s += 1_800
    assert history.availability("m", 3_600) == pytest.approx(0.5)
    assert history.availability("x", 3_600) == 1.0
    history.node_offers("n3", ["m"])
    clock.now_s += 3_600
    assert history.availability("m", 3_600) == pytest.approx(1.0)
    assert history.availability("m", 86_400) == pytest.approx(0.75)


def test_the_history_refuses_bounds_it_cannot_keep() -> None:
    with pytest.raises(ValueError, match="at least one minute"):
        MarketHistory(keep_s=10)
    with pytest.raises(ValueError, match="at least one model"):
        MarketHistory(max_models=0)


# --- the models query -------------------------------------------------------------------------


def _row(model: str, price: int, speed: float | None, availability: float | None) -> ModelRow:
    return ModelRow(
        model=model, name=model, catalogued=False, nodes=1, capacity=4, context_length=4096,
        price_lowest_input=price, price_lowest_output=price, price_median_input=price,
        price_median_output=price, ttft_p50_ms=None if speed is None else 1000 / speed,
        tokens_per_s_p50=speed, availability_hour=availability, availability_day=availability,
        high_reputation_share=0.0,
    )  # fmt: skip


ROWS = [
    _row("org/llama-8b", 300_000, 40.0, 1.0),
    _row("org/llama-70b", 900_000, None, 0.5),
    _row("org/qwen-7b", 100_000, 80.0, 0.99),
]


def _ids(query: ModelQuery) -> list[str]:
    return [row.model for row in select_rows(ROWS, query)]


def test_models_sort_and_filter() -> None:
    assert _ids(parse_model_query({})) == ["org/llama-70b", "org/llama-8b", "org/qwen-7b"]
    assert _ids(parse_model_query({"sort": "price"}))[0] == "org/qwen-7b"
    assert _ids(parse_model_query({"sort": "speed"})) == [
        "org/qwen-7b",
        "org/llama-8b",
        "org/llama-70b",  # unmeasured last
    ]
    assert _ids(parse_model_query({"q": "LLAMA"})) == ["org/llama-70b", "org/llama-8b"]
    assert _ids(parse_model_query({"max_price": "0.30"})) == ["org/llama-8b", "org/qwen-7b"]
    assert _ids(parse_model_query({"min_speed": "50"})) == ["org/qwen-7b"]
    assert _ids(parse_model_query({"min_availability": "99"})) == ["org/llama-8b", "org/qwen-7b"]
    query = parse_model_query({"q": "llama", "sort": "price", "max_price": "0.5"})
    assert parse_model_query(query.params()) == query


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"sort": "cheapest"}, "sort"),
        ({"max_price": "free"}, "max_price"),
        ({"max_price": "-1"}, "max_price"),
        ({"min_speed": "nan"}, "min_speed"),
        ({"min_availability": "101"}, "min_availability"),
        ({"q": "x" * 201}, "q"),
    ],
)
def test_a_bad_models_query_says_which_parameter(params: dict[str, str], param: str) -> None:
    with pytest.raises(InvalidQuery) as error:
        parse_model_query(params)
    assert error.value.param == param
    assert param in str(error.value)
