"""Server-side SVG line charts for the status pages: no script, no chart library, no CDN.

:func:`line_chart` draws one or more series of evenly spaced values (the status page's
per-minute traffic) on a shared y axis that starts at zero and ends at a round number
(:func:`nice_ceiling`). A missing value (``None``, e.g. no latency in a minute without requests)
breaks its line, so a gap shows as a gap rather than as zero. The SVG scales to its container
(``viewBox``), is labelled for screen readers (``role="img"``, ``<title>``), and escapes every
text it is given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

__all__ = ["Series", "line_chart", "nice_ceiling", "short_number"]

_COLOURS = ("#2458d6", "#c2410c", "#1b7f4b", "#7c3aed")
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 10, 26, 20
"""Margins in SVG units: y labels on the left, title and legend on top, x labels below."""


@dataclass(frozen=True, slots=True)
class Series:
    """One line: a label for the legend and the values, oldest first (``None``: no value)."""

    label: str
    values: Sequence[float | None]


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2 or 5 times a power of ten that is at least ``value`` (1 for zero or
    less): the top of a y axis people can read."""
    if not math.isfinite(value) or value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        top = step * power
        if top >= value * (1 - 1e-9):
            return float(top)
    return 10 * power  # pragma: no cover - 10 x power always qualifies


def short_number(value: float) -> str:
    """``1500`` as ``1.5k``, ``2000000`` as ``2M``, ``0.25`` as ``0.25``: axis labels."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def _runs(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """The unbroken stretches of values, each as (index, value) pairs."""
    runs: list[list[tuple[int, float]]] = []
    current: list[tuple[int, float]] = []
    for index, value in enumerate(values):
        if value is None or not math.isfinite(value):
            if current:
                runs.append(current)
                current = []
            continue
        current.append((index, float(value)))
    if current:
        runs.append(current)
    return runs


def line_chart(
    title: str,
    series: Sequence[Series],
    *,
    x_labels: Sequence[str] = (),
    unit: str = "",
    width: int = 420,
    height: int = 170,
) -> Markup:
    """An SVG line chart of ``series`` (all of one length), safe to put in a page as is.

    ``x_labels`` are spread evenly under the x axis (first at the left end, last at the right);
    ``unit`` follows the title. Raises ValueError for no series, series of different lengths or
    a size too small to draw in.
    """
    if not series:
        raise ValueError("a chart needs at least one series")
    count = len(series[0].values)
    if any(len(s.values) != count for s in series):
        raise ValueError("every series of a chart has the same number of values")
    plot_w, plot_h = width - _LEFT - _RIGHT, height - _TOP - _BOTTOM
    if plot_w < 20 or plot_h < 20:
        raise ValueError(f"a chart of {width}x{height} is too small to draw")
    values = [v for s in series for v in s.values if v is not None and math.isfinite(v)]
    top = nice_ceiling(max(values, default=0.0))

    def x(index: int) -> float:
        return _LEFT + (plot_w / 2 if count <= 1 else index * plot_w / (count - 1))

    def y(value: float) -> float:
        return _TOP + plot_h - max(0.0, min(value, top)) / top * plot_h

    heading = f"{title} ({unit})" if unit else title
    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}"'
        f' role="img" aria-label="{escape(heading)}">',
        f"<title>{escape(heading)}</title>",
        f'<text class="chart-title" x="{_LEFT}" y="14" style="font-weight: 600; fill: #1d2330">'
        f"{escape(heading)}</text>",
    ]
    for fraction in (0.0, 0.5, 1.0):
        level = _TOP + plot_h - fraction * plot_h
        parts.append(
            f'<line class="grid" x1="{_LEFT}" y1="{level:.1f}" x2="{_LEFT + plot_w}"'
            f' y2="{level:.1f}" stroke="#dfe3ea" stroke-width="1"/>'
        )
        parts.append(
            f'<text class="y-label" x="{_LEFT - 4}" y="{level + 4:.1f}" text-anchor="end">'
            f"{escape(short_number(top * fraction))}</text>"
        )
    labels = list(x_labels)
    for position, label in enumerate(labels):
        at = _LEFT + (plot_w / 2 if len(labels) == 1 else position * plot_w / (len(labels) - 1))
        anchor = "start" if position == 0 else "end" if position == len(labels) - 1 else "middle"
        parts.append(
            f'<text class="x-label" x="{at:.1f}" y="{height - 5}" text-anchor="{anchor}">'
            f"{escape(label)}</text>"
        )
    legend_x = width - _RIGHT
    for number, line in reversed(list(enumerate(series))):
        colour = _COLOURS[number % len(_COLOURS)]
        parts.append(
            f'<text class="legend" x="{legend_x}" y="14" text-anchor="end"'
            f' style="fill: {colour}">'
            f"{escape(line.label)}</text>"
        )
        legend_x -= 10 + 6 * len(line.label)
    for number, line in enumerate(series):
        colour = _COLOURS[number % len(_COLOURS)]
        for run in _runs(line.values):
            if len(run) == 1:
                index, value = run[0]
                parts.append(
                    f'<circle class="series-{number}" cx="{x(index):.1f}" cy="{y(value):.1f}"'
                    f' r="2" fill="{colour}"/>'
                )
                continue
            points = " ".join(f"{x(index):.1f},{y(value):.1f}" for index, value in run)
            parts.append(
                f'<polyline class="series-{number}" points="{points}" fill="none"'
                f' stroke="{colour}" stroke-width="1.6" stroke-linejoin="round"/>'
            )
    if not values:
        parts.append(
            f'<text class="empty" x="{_LEFT + plot_w / 2:.1f}" y="{_TOP + plot_h / 2:.1f}"'
            ' text-anchor="middle">no data yet</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text above went through escape()
