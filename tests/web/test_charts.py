"""The status pages' server-side SVG charts: well-formed, scaled to a round axis, gaps kept."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.web.charts import Series, line_chart, nice_ceiling, short_number
from coordinator.web.status import hardware, traffic_charts

SVG = "{http://www.w3.org/2000/svg}"
WIDTH, HEIGHT = 420, 170


def parse(markup: str) -> ET.Element:
    return ET.fromstring(markup)


def points(polyline: ET.Element) -> list[tuple[float, float]]:
    return [
        (float(x), float(y))
        for x, y in (pair.split(",") for pair in polyline.attrib["points"].split())
    ]


@pytest.mark.parametrize(
    ("value", "top"),
    [(0, 1), (-3, 1), (0.3, 0.5), (1, 1), (1.01, 2), (7, 10), (10, 10), (12, 20), (4999, 5000)],
)
def test_the_axis_ends_at_a_round_number(value: float, top: float) -> None:
    assert nice_ceiling(value) == pytest.approx(top)


@given(st.floats(min_value=1e-6, max_value=1e12))
def test_the_round_top_is_at_least_the_value_and_under_ten_times_it(value: float) -> None:
    top = nice_ceiling(value)
    assert value <= top * (1 + 1e-9)
    assert top < value * 10 * (1 + 1e-9)


def test_axis_labels_are_short() -> None:
    assert [short_number(v) for v in (0, 0.5, 12, 1500, 2_000_000, 3e9)] == [
        "0",
        "0.5",
        "12",
        "1.5k",
        "2M",
        "3G",
    ]


def test_a_series_is_one_polyline_from_left_to_right_inside_the_plot() -> None:
    svg = parse(line_chart("Requests", [Series("requests", [0, 5, 10, 3])], x_labels=["a", "z"]))
    assert svg.tag == SVG + "svg"
    assert svg.attrib["viewBox"] == f"0 0 {WIDTH} {HEIGHT}"
    assert svg.attrib["role"] == "img"
    assert svg.find(SVG + "title") is not None
    (line,) = svg.iter(SVG + "polyline")
    xy = points(line)
    assert len(xy) == 4
    xs = [x for x, _ in xy]
    assert xs == sorted(xs)
    assert all(0 < x < WIDTH and 0 < y < HEIGHT for x, y in xy)
    ys = [y for _, y in xy]
    assert ys[2] == min(ys)  # the largest value is drawn highest
    assert ys[0] == max(ys)  # zero sits on the axis
    labels = [t.text for t in svg.iter(SVG + "text")]
    assert {"a", "z", "10", "0"} <= set(labels)  # x labels; the axis runs 0..10


def test_missing_values_break_the_line_instead_of_drawing_zero() -> None:
    svg = parse(line_chart("Latency", [Series("p50", [100, 120, None, None, 90, None, 80])]))
    lines = list(svg.iter(SVG + "polyline"))
    dots = list(svg.iter(SVG + "circle"))
    assert [len(points(line)) for line in lines] == [2]
    assert len(dots) == 2  # 90 and 80 stand alone


def test_several_series_share_one_axis_and_get_a_legend_each() -> None:
    svg = parse(
        line_chart(
            "Latency",
            [Series("ttft", [100.0, 200.0]), Series("total", [1500.0, 900.0])],
            unit="ms",
        )
    )
    texts = [t.text for t in svg.iter(SVG + "text")]
    assert "Latency (ms)" in texts
    assert {"ttft", "total", "2k"} <= set(texts)
    first, second = (points(line) for line in svg.iter(SVG + "polyline"))
    assert second[0][1] < first[0][1]  # 1500 is drawn above 100


def test_an_empty_chart_says_so() -> None:
    svg = parse(line_chart("Latency", [Series("p50", [None] * 60)]))
    assert list(svg.iter(SVG + "polyline")) == []
    assert "no data yet" in [t.text for t in svg.iter(SVG + "text")]


def test_every_text_is_escaped() -> None:
    markup = line_chart('<script>alert("x")</script>', [Series("<b>", [1, 2])], x_labels=["&"])
    assert "<script>" not in markup
    assert "<b>" not in markup
    parse(markup)  # still well-formed XML


def test_bad_charts_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one series"):
        line_chart("x", [])
    with pytest.raises(ValueError, match="same number"):
        line_chart("x", [Series("a", [1, 2]), Series("b", [1])])
    with pytest.raises(ValueError, match="too small"):
        line_chart("x", [Series("a", [1])], width=40, height=40)


def test_the_status_page_draws_requests_tokens_and_latency_for_the_hour() -> None:
    minutes = [
        {
            "minute_start_s": 1_767_225_600 + 60 * i,
            "requests": i % 3,
            "tokens": 10 * (i % 3),
            "ttft_ms_p50": 40.0 if i % 3 else None,
            "latency_ms_mean": 90.0 if i % 3 else None,
        }
        for i in range(60)
    ]
    requests, tokens, latency = (parse(chart) for chart in traffic_charts(minutes))
    assert len(points(next(requests.iter(SVG + "polyline")))) == 60
    assert "Tokens per minute" in [t.text for t in tokens.iter(SVG + "text")]
    assert len(list(latency.iter(SVG + "polyline"))) == 2 * 20  # one run of two per gap
    texts = [t.text for t in requests.iter(SVG + "text")]
    assert "00:00" in texts
    assert "00:59 UTC" in texts


def test_hardware_is_shown_for_people() -> None:
    a100 = {"name": "NVIDIA A100", "memory_mib": 81920}
    assert hardware([a100, a100]) == "2 x NVIDIA A100 (80 GiB)"
    assert hardware([{"name": "Tiny", "memory_mib": 512}]) == "Tiny (512 MiB)"
    assert hardware([]) == "no GPU reported"
