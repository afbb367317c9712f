"""Small line/scatter charts for the experiment report, laid out once and drawn two ways: inline
SVG for the HTML page, PNG with Pillow for a file beside it (no matplotlib at runtime).

A chart is a list of primitives in pixel coordinates (origin top left) from `layout`; `to_svg`
and `to_png` only draw them, so the two pictures cannot disagree.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

from PIL import Image, ImageDraw, ImageFont

PALETTE = ("#0969da", "#cf222e", "#1a7f37", "#8250df", "#9a6700", "#bf3989", "#57606a")
WIDTH, HEIGHT = 560, 340
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 58, 170, 30, 46
TICKS = 5


@dataclass(frozen=True)
class Series:
    """Points (x, y) in data units; `line` joins them in order; `labels` name single points."""

    label: str
    points: Sequence[tuple[float, float]]
    line: bool = True
    labels: Sequence[str] = ()


@dataclass(frozen=True)
class Chart:
    title: str
    x_label: str
    y_label: str
    series: Sequence[Series]
    x_range: tuple[float, float] | None = None
    y_range: tuple[float, float] | None = (0.0, 1.0)
    diagonal: bool = False
    """Draw y = x (a reliability diagram's perfect calibration)."""


@dataclass
class Drawing:
    """Primitives: lines (x1, y1, x2, y2, colour, width), dots (x, y, r, colour), texts
    (x, y, text, anchor `start`/`middle`/`end`, colour, size)."""

    lines: list[tuple[float, float, float, float, str, float]] = field(default_factory=list)
    dots: list[tuple[float, float, float, str]] = field(default_factory=list)
    texts: list[tuple[float, float, str, str, str, int]] = field(default_factory=list)


def _range(values: Sequence[float], given: tuple[float, float] | None) -> tuple[float, float]:
    if given is not None:
        return given
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    if high == low:
        return max(0.0, low - 1.0) if low >= 0 else low - 1.0, high + 1.0
    pad = (high - low) * 0.08
    return (max(0.0, low - pad) if low >= 0 else low - pad), high + pad


def _tick_text(value: float, span: float) -> str:
    """A tick label with as many decimals as the axis' span needs."""
    if span >= 50:
        return f"{value:,.0f}"
    text = f"{value:.2f}" if span >= 0.5 else f"{value:.3f}"
    return text.rstrip("0").rstrip(".") or "0"


def layout(chart: Chart) -> Drawing:
    """Axes, ticks, the series, a legend on the right, the title and axis labels."""
    drawing = Drawing()
    xs = [x for series in chart.series for x, _ in series.points]
    ys = [y for series in chart.series for _, y in series.points]
    x0, x1 = _range(xs, chart.x_range)
    y0, y1 = _range(ys, chart.y_range)
    left, right = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
    top, bottom = MARGIN_TOP, HEIGHT - MARGIN_BOTTOM

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (right - left)

    def py(y: float) -> float:
        return bottom - (y - y0) / (y1 - y0) * (bottom - top)

    grey = "#8c959f"
    drawing.lines += [(left, bottom, right, bottom, grey, 1), (left, top, left, bottom, grey, 1)]
    for index in range(TICKS + 1):
        x_value = x0 + (x1 - x0) * index / TICKS
        y_value = y0 + (y1 - y0) * index / TICKS
        drawing.lines.append((px(x_value), bottom, px(x_value), bottom + 4, grey, 1))
        drawing.texts.append(
            (px(x_value), bottom + 16, _tick_text(x_value, x1 - x0), "middle", grey, 10)
        )
        drawing.lines.append((left - 4, py(y_value), left, py(y_value), grey, 1))
        drawing.texts.append(
            (left - 6, py(y_value) + 3, _tick_text(y_value, y1 - y0), "end", grey, 10)
        )
    if chart.diagonal:
        drawing.lines.append((px(x0), py(y0), px(x1), py(y1), "#d0d7de", 1))
    stacked: dict[tuple[int, int], int] = {}  # labels already at a pixel: stack, don't overprint
    for number, series in enumerate(chart.series):
        colour = PALETTE[number % len(PALETTE)]
        points = [(px(x), py(y)) for x, y in series.points]
        if series.line:
            drawing.lines += [
                (a[0], a[1], b[0], b[1], colour, 2) for a, b in itertools.pairwise(points)
            ]
        drawing.dots += [(x, y, 3.5, colour) for x, y in points]
        for (x, y), text in zip(points, series.labels, strict=False):
            below = stacked.get((round(x), round(y)), 0)
            stacked[(round(x), round(y))] = below + 1
            drawing.texts.append((x + 5, y - 5 - 10 * below, text, "start", colour, 9))
        legend_y = top + 14 * number
        drawing.dots.append((right + 14, legend_y - 3, 3.5, colour))
        drawing.texts.append((right + 22, legend_y + 1, series.label[:24], "start", colour, 10))
    drawing.texts.append(((left + right) / 2, 16, chart.title, "middle", "#1f2328", 12))
    drawing.texts.append(((left + right) / 2, HEIGHT - 8, chart.x_label, "middle", "#1f2328", 11))
    drawing.texts.append((12, top - 8, chart.y_label, "start", "#1f2328", 11))
    return drawing


def to_svg(chart: Chart) -> str:
    """The chart as an inline `<svg>` element (its title in `<title>` for screen readers)."""
    drawing = layout(chart)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img"><title>{escape(chart.title)}</title>',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
    ]
    for x1, y1, x2, y2, colour, width in drawing.lines:
        parts.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
            f'stroke="{colour}" stroke-width="{width}"/>'
        )
    for x, y, radius, colour in drawing.dots:
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius}" fill="{colour}"/>')
    for x, y, text, anchor, colour, size in drawing.texts:
        parts.append(
            f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{colour}" '
            f'font-size="{size}" font-family="sans-serif">{escape(text)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def to_png(chart: Chart) -> bytes:
    """The same chart drawn with Pillow (its default bitmap font), as PNG bytes."""
    drawing = layout(chart)
    image = Image.new("RGB", (WIDTH, HEIGHT), "#ffffff")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for x1, y1, x2, y2, colour, width in drawing.lines:
        draw.line((x1, y1, x2, y2), fill=colour, width=int(width))
    for x, y, radius, colour in drawing.dots:
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)
    for x, y, text, anchor, colour, _ in drawing.texts:
        width = draw.textlength(text, font=font)
        shift = {"start": 0.0, "middle": width / 2, "end": width}[anchor]
        draw.text((x - shift, y - 9), text, fill=colour, font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
