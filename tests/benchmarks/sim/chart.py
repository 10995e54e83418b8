"""The benchmark's chart: cost per signed case per policy with its bootstrap 95 % interval, one panel per monthly
budget, drawn with Pillow as the daily report's chart is (`services.reports.chart`: its axis scale, colours and
font; no matplotlib)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from services.reports.chart import AXIS, BAR, BAR_TEXT, GRID, LINE, TEXT, nice_ceiling

WIDTH = 1500
NAMES = 430  # the policies' names, left of the plot
VALUES = 230  # the figures, right of the plot
ROW = 38
HEAD, FOOT = 70, 60
MUTED = (209, 213, 219)  # a policy that left money unspent: its figure is not comparable


@dataclass(frozen=True)
class Bar:
    name: str
    value: float  # cost per signed case, USD
    low: float  # its bootstrap 95 % interval
    high: float
    spend: float  # share of the budget spent
    highlight: bool = False  # the recommended policy


def _legend(draw: ImageDraw.ImageDraw, right: float, y: float, text: str, colour: tuple[int, int, int],
            font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> float:
    """A swatch and its text ending at ``right``; returns where it starts."""
    start = right - draw.textlength(text, font=font)
    draw.text((right, y), text, font=font, fill=TEXT, anchor="rm")
    draw.rectangle([(start - 30, y - 9), (start - 8, y + 9)], fill=colour)
    return start - 30


def render(panels: Sequence[tuple[str, Sequence[Bar]]]) -> bytes:
    """One panel per (title, bars), stacked; a common axis so that the budgets compare. Returns PNG bytes."""
    height = sum(HEAD + FOOT + ROW * len(bars) for _, bars in panels)
    image = Image.new("RGB", (WIDTH, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=22)
    small = ImageFont.load_default(size=18)
    # The axis fits the bars with room for most intervals; a longer interval is cut at the edge with an arrow.
    finite = max((b.value for _, bars in panels for b in bars if b.value != float("inf")), default=1.0)
    step = nice_ceiling(finite) / 4
    ticks = math.ceil(1.15 * finite / step)
    top = step * ticks
    left, plot_w = NAMES, WIDTH - NAMES - VALUES

    def x(value: float) -> float:
        return left + plot_w * min(value, top) / top

    y0 = 0
    for title, bars in panels:
        draw.text((20, y0 + 18), title, font=font, fill=TEXT)
        lx = WIDTH - 20
        for text, colour in (("spent < 95 % of the budget", MUTED), ("recommended", BAR_TEXT)):
            lx = _legend(draw, lx, y0 + 30, text, colour, small) - 30
        plot_top, plot_bottom = y0 + HEAD, y0 + HEAD + ROW * len(bars)
        for i in range(ticks + 1):
            gx = x(step * i)
            draw.line([(gx, plot_top - 6), (gx, plot_bottom)], fill=GRID, width=2)
            draw.text((gx, plot_bottom + 8), f"${step * i:,.0f}", font=small, fill=AXIS, anchor="ma")
        draw.text((left + plot_w / 2, plot_bottom + 32), "cost per signed case (USD), bootstrap 95 % interval",
                  font=small, fill=AXIS, anchor="ma")
        for k, bar in enumerate(bars):
            cy = plot_top + ROW * k + ROW / 2
            colour = BAR_TEXT if bar.highlight else BAR if bar.spend >= 0.95 else MUTED
            draw.text((left - 12, cy), bar.name, font=small, fill=TEXT, anchor="rm")
            if bar.value != float("inf"):
                draw.rectangle([(left, cy - ROW * 0.32), (x(bar.value), cy + ROW * 0.32)], fill=colour)
            if bar.low != float("inf"):
                draw.line([(x(bar.low), cy), (x(bar.high), cy)], fill=LINE, width=3)
                for end in (bar.low, bar.high):
                    if end < top:
                        draw.line([(x(end), cy - 8), (x(end), cy + 8)], fill=LINE, width=3)
                    else:  # the interval runs off the axis
                        draw.polygon([(x(top) + 4, cy), (x(top) - 10, cy - 8), (x(top) - 10, cy + 8)], fill=LINE)
            label = f"${bar.value:,.0f}" + ("" if bar.spend >= 0.95 else f" ({bar.spend:.0%} spent)")
            draw.text((left + plot_w + 12, cy), label, font=small, fill=TEXT, anchor="lm")
        draw.line([(left, plot_top - 6), (left, plot_bottom)], fill=AXIS, width=2)
        y0 = plot_bottom + FOOT
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()
