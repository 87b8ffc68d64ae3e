"""Charts drawn on the server as inline SVG: readable without JavaScript.

Each chart is `role="img"` labelled by its `<title>` and a `<desc>` that states
every figure in words (what a screen reader reads); each mark carries its own
`<title>` (a browser's tooltip). Colours are the Okabe-Ito palette, told apart
by people with colour-blind vision; labels never rely on colour alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000", "#F0E442")
WIDTH = 680
_LABEL_W = 170  # row labels, left of the plot
_VALUE_W = 190  # figures, right of the plot
_ROW_H = 24
_AXIS_H = 28


DASH = "\u2013"  # an en dash: ranges and missing figures


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def percent(value: float | None) -> str:
    return DASH if value is None else f"{value:.1%}"


def _ticks(top: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least `top` (1, 2 or 5 times a power of ten apart)."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return [step * i for i in range(math.ceil(top / step - 1e-9) + 1)]


def _open(chart_id: str, title: str, description: str, height: float) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'viewBox="0 0 {WIDTH} {height:.0f}" width="{WIDTH}" height="{height:.0f}" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc">'
        f'<title id="{chart_id}-title">{escape(title)}</title>'
        f'<desc id="{chart_id}-desc">{escape(description)}</desc>'
    )


def _x_axis(
    ticks: Sequence[float], scale: Callable[[float], float], top: float, bottom: float, fmt: str
) -> str:
    parts = ['<g class="axis" aria-hidden="true">']
    for tick in ticks:
        x = scale(tick)
        label = f"{tick:.0%}" if fmt == "percent" else f"{tick:g}"
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top:.1f}" y2="{bottom:.1f}" '
            f'stroke="#d0d7de" stroke-width="1"/>'
            f'<text x="{x:.1f}" y="{top - 8:.1f}" text-anchor="middle" font-size="11" '
            f'fill="#57606a">{escape(label)}</text>'
        )
    parts.append("</g>")
    return "".join(parts)


@dataclass(frozen=True)
class Interval:
    label: str
    value: float | None
    low: float | None
    high: float | None
    note: str = ""  # "control", "winner": said in words, not only drawn
    colour: str = PALETTE[0]  # the slot's, as in the trend


def interval_chart(chart_id: str, title: str, rows: Sequence[Interval]) -> Markup:
    """One row per slot: the rate as a dot, its 95% interval as a line (rates in [0, 1])."""
    highs = [r.high if r.high is not None else r.value for r in rows]
    top = max([h for h in highs if h is not None] or [0.0]) * 1.05 or 0.1
    ticks = _ticks(top)
    plot_w = WIDTH - _LABEL_W - _VALUE_W

    def scale(value: float) -> float:
        return _LABEL_W + plot_w * value / ticks[-1]

    height = _AXIS_H + _ROW_H * max(len(rows), 1) + 8
    words = [f"{r.label}{f' ({r.note})' if r.note else ''}: {_interval_text(r)}" for r in rows] or [
        "no slots"
    ]
    parts = [_open(chart_id, title, "; ".join(words), height)]
    parts.append(_x_axis(ticks, scale, _AXIS_H, height - 4, "percent"))
    for index, row in enumerate(rows):
        y = _AXIS_H + _ROW_H * index + _ROW_H / 2
        colour = row.colour
        label = row.label if not row.note else f"{row.label} ({row.note})"
        parts.append(f'<g class="row"><title>{escape(f"{label}: {_interval_text(row)}")}</title>')
        parts.append(
            f'<text x="{_LABEL_W - 8}" y="{y + 4:.1f}" text-anchor="end" font-size="12" '
            f'fill="#1f2328">{escape(_clip(label, 24))}</text>'
        )
        if row.low is not None and row.high is not None:
            x1, x2 = scale(row.low), scale(row.high)
            parts.append(
                f'<line x1="{x1:.1f}" x2="{x2:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                f'stroke="{colour}" stroke-width="2"/>'
                f'<line x1="{x1:.1f}" x2="{x1:.1f}" y1="{y - 5:.1f}" y2="{y + 5:.1f}" '
                f'stroke="{colour}" stroke-width="2"/>'
                f'<line x1="{x2:.1f}" x2="{x2:.1f}" y1="{y - 5:.1f}" y2="{y + 5:.1f}" '
                f'stroke="{colour}" stroke-width="2"/>'
            )
        if row.value is not None:
            shape = "rect" if row.note == "control" else "circle"
            x = scale(row.value)
            parts.append(
                f'<rect x="{x - 4.5:.1f}" y="{y - 4.5:.1f}" width="9" height="9" fill="{colour}"/>'
                if shape == "rect"
                else f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{colour}"/>'
            )
        parts.append(
            f'<text x="{WIDTH - _VALUE_W + 10}" y="{y + 4:.1f}" font-size="12" '
            f'fill="#1f2328">{escape(_interval_text(row))}</text></g>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _interval_text(row: Interval) -> str:
    if row.value is None:
        return "no impressions yet"
    if row.low is None or row.high is None:
        return percent(row.value)
    return f"{percent(row.value)} (95% CI {percent(row.low)}{DASH}{percent(row.high)})"


def _clip(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


@dataclass(frozen=True)
class Series:
    label: str
    points: Sequence[float | None]  # one per x label; None: nothing that day
    colour: str = PALETTE[0]


def line_chart(
    chart_id: str, title: str, x_labels: Sequence[str], series: Sequence[Series]
) -> Markup:
    """Rates over days, one line per series; a day without data breaks the line."""
    left, right, top, bottom = 56, 16, 16, 36
    legend_rows = math.ceil(len(series) / 3)
    plot_h = 200
    height = top + plot_h + bottom + 20 * legend_rows
    values = [p for s in series for p in s.points if p is not None]
    ticks = _ticks(max(values or [0.0]) * 1.05 or 0.1, 4)
    plot_w = WIDTH - left - right
    step = plot_w / max(len(x_labels) - 1, 1)

    def x_of(index: int) -> float:
        return left + (step * index if len(x_labels) > 1 else plot_w / 2)

    def y_of(value: float) -> float:
        return top + plot_h - plot_h * value / ticks[-1]

    described = []
    for s in series:
        measured = [(x_labels[i], p) for i, p in enumerate(s.points) if p is not None]
        if measured:
            described.append(
                f"{s.label}: " + ", ".join(f"{day} {percent(p)}" for day, p in measured)
            )
        else:
            described.append(f"{s.label}: no impressions in these days")
    parts = [_open(chart_id, title, "; ".join(described) or "no slots", height)]
    parts.append('<g class="axis" aria-hidden="true">')
    for tick in ticks:
        y = y_of(tick)
        parts.append(
            f'<line x1="{left}" x2="{WIDTH - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d0d7de"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="#57606a">{tick:.0%}</text>'
        )
    every = max(1, math.ceil(len(x_labels) / 8))
    for index, label in enumerate(x_labels):
        if (len(x_labels) - 1 - index) % every == 0:  # evenly spaced, ending at the last day
            parts.append(
                f'<text x="{x_of(index):.1f}" y="{top + plot_h + 16}" text-anchor="middle" '
                f'font-size="11" fill="#57606a">{escape(label[5:])}</text>'
            )
    parts.append("</g>")
    for s in series:
        colour = s.colour
        parts.append(f'<g class="series"><title>{escape(s.label)}</title>')
        path, pen_down = [], False
        for index, point in enumerate(s.points):
            if point is None:
                pen_down = False
                continue
            path.append(f"{'L' if pen_down else 'M'}{x_of(index):.1f},{y_of(point):.1f}")
            pen_down = True
        if path:
            parts.append(f'<path d="{" ".join(path)}" fill="none" stroke="{colour}" '
                         f'stroke-width="2"/>')  # fmt: skip
        for index, point in enumerate(s.points):
            if point is not None:
                tip = f"{s.label}, {x_labels[index]}: {percent(point)}"
                parts.append(
                    f'<circle cx="{x_of(index):.1f}" cy="{y_of(point):.1f}" r="3" '
                    f'fill="{colour}"><title>{escape(tip)}</title></circle>'
                )
        parts.append("</g>")
    for number, s in enumerate(series):
        x = left + (number % 3) * (plot_w / 3)
        y = top + plot_h + bottom + 20 * (number // 3)
        colour = s.colour
        parts.append(
            f'<rect x="{x:.1f}" y="{y - 10:.1f}" width="12" height="12" fill="{colour}"/>'
            f'<text x="{x + 18:.1f}" y="{y:.1f}" font-size="12" fill="#1f2328">'
            f"{escape(_clip(s.label, 28))}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_chart(chart_id: str, title: str, bars: Sequence[tuple[str, float]], unit: str) -> Markup:
    """Horizontal bars with their values written beside them."""
    top = max([value for _, value in bars] or [0.0]) or 1.0
    ticks = _ticks(top, 4)
    plot_w = WIDTH - _LABEL_W - _VALUE_W

    def scale(value: float) -> float:
        return _LABEL_W + plot_w * value / ticks[-1]

    height = _AXIS_H + _ROW_H * max(len(bars), 1) + 8
    words = "; ".join(f"{label}: {value:g} {unit}" for label, value in bars) or "no figures"
    parts = [_open(chart_id, title, words, height), _x_axis(ticks, scale, _AXIS_H, height - 4, "")]
    for index, (label, value) in enumerate(bars):
        y = _AXIS_H + _ROW_H * index + 4
        parts.append(
            f'<g class="bar"><title>{escape(f"{label}: {value:g} {unit}")}</title>'
            f'<text x="{_LABEL_W - 8}" y="{y + 12:.1f}" text-anchor="end" font-size="12" '
            f'fill="#1f2328">{escape(_clip(label, 24))}</text>'
            f'<rect x="{_LABEL_W}" y="{y:.1f}" width="{scale(value) - _LABEL_W:.1f}" height="16" '
            f'fill="{PALETTE[index % 2 * 5]}"/>'
            f'<text x="{WIDTH - _VALUE_W + 10}" y="{y + 12:.1f}" font-size="12" '
            f'fill="#1f2328">{escape(f"{value:g} {unit}")}</text></g>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
