"""The e-mail's chart: daily spend (bars) and cost per lead (line) over the last 14 days, as a PNG.

Mail clients run no script and many block remote images, so the chart is drawn here with Pillow (one small
wheel, no system libraries: no browser, no SVG renderer, no matplotlib) and attached inline (CID). Drawn at twice
its display size (1200 x 480 shown at 600 x 240) so it stays sharp on high-density screens.
"""

from __future__ import annotations

import io
from datetime import date

from PIL import Image, ImageDraw, ImageFont

from shared.money import format_money

WIDTH, HEIGHT = 1200, 480
LEFT, RIGHT, TOP, BOTTOM = 130, 130, 60, 70
BAR = (147, 197, 253)  # light blue
BAR_TEXT = (37, 99, 235)
LINE = (185, 28, 28)  # dark red
AXIS = (107, 114, 128)
GRID = (229, 231, 235)
TEXT = (17, 24, 39)


def nice_ceiling(value: float) -> float:
    """The axis maximum: 1, 2, 2.5 or 5 times a power of ten, at or above `value`."""
    if value <= 0:
        return 1.0
    power = 10 ** len(str(int(value))) / 10
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def render(series: list[tuple[date, int, int]], currency: str) -> bytes:
    """`series`: (day, spend in minor units, Meta's leads) per day, oldest first. Returns PNG bytes."""
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=22)
    small = ImageFont.load_default(size=19)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    spend_max = nice_ceiling(max((s for _, s, _ in series), default=0))
    cpls = [s / n if n else None for _, s, n in series]
    cpl_max = nice_ceiling(max((c for c in cpls if c is not None), default=0))

    draw.text((LEFT, 16), "Spend per day", font=font, fill=BAR_TEXT)
    draw.text((WIDTH - RIGHT, 16), "Cost per lead", font=font, fill=LINE, anchor="ra")
    for i in range(5):  # horizontal grid and both axes' labels
        y = TOP + plot_h - plot_h * i / 4
        draw.line([(LEFT, y), (WIDTH - RIGHT, y)], fill=GRID, width=2)
        draw.text((LEFT - 10, y), format_money(spend_max * i / 4, currency, exact=False), font=small, fill=AXIS,
                  anchor="rm")
        draw.text((WIDTH - RIGHT + 10, y), format_money(cpl_max * i / 4, currency, exact=False), font=small,
                  fill=AXIS, anchor="lm")
    slot = plot_w / max(1, len(series))
    points = []
    for i, ((day, spend, _), cpl) in enumerate(zip(series, cpls, strict=True)):
        x0 = LEFT + slot * i + slot * 0.15
        x1 = LEFT + slot * (i + 1) - slot * 0.15
        height = plot_h * spend / spend_max
        if height > 0:
            draw.rectangle([(x0, TOP + plot_h - height), (x1, TOP + plot_h)], fill=BAR)
        if (len(series) - 1 - i) % 2 == 0 or len(series) <= 8:  # every other day, ending on the last
            draw.text(((x0 + x1) / 2, TOP + plot_h + 12), day.strftime("%d %b"), font=small, fill=AXIS,
                      anchor="ma")
        if cpl is not None:
            points.append(((x0 + x1) / 2, TOP + plot_h - plot_h * cpl / cpl_max))
    if len(points) > 1:
        draw.line(points, fill=LINE, width=5, joint="curve")
    for x, y in points:
        draw.ellipse([(x - 7, y - 7), (x + 7, y + 7)], fill=LINE)
    draw.line([(LEFT, TOP + plot_h), (WIDTH - RIGHT, TOP + plot_h)], fill=AXIS, width=2)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()
