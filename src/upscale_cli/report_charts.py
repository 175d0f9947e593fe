"""Pictures for benchmark reports, drawn with Pillow's ImageDraw (matplotlib is not a dependency).

Pure drawing: functions take data and return (H, W, 3) uint8 RGB arrays; benchmark.py writes
them through images.py. This and images.py are the only modules that use Pillow.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
INK = (30, 30, 30)
GRID = (225, 225, 225)
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194))
CHART_SIZE = (860, 560)  # pixels
MARGIN = {"left": 70, "right": 170, "top": 44, "bottom": 56}  # pixels
POINT_RADIUS = 5  # pixels
LABEL_HEIGHT = 18  # pixels under each strip tile
GAP = 6  # pixels between strip tiles
LABEL_STEP = 12  # pixels: height of one chart label line


@dataclass(frozen=True)
class ChartPoint:
    label: str  # drawn beside the point (the model)
    group: str  # one colour per group (the dataset)
    speed: float  # output megapixels per second (log axis)
    quality: float  # PSNR dB


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def _text_width(draw: ImageDraw.ImageDraw, text: str, font) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return right - left


def draw_strip(tiles: list[tuple[str, np.ndarray]], title: str = "") -> np.ndarray:
    """Tiles side by side with a label under each (and an optional title line above)."""
    font = _font()
    height = max(t.shape[0] for _, t in tiles)
    width = sum(t.shape[1] for _, t in tiles) + GAP * (len(tiles) + 1)
    top = LABEL_HEIGHT if title else 0
    canvas = Image.new("RGB", (width, top + height + LABEL_HEIGHT + GAP), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((GAP, 3), title, fill=INK, font=font)
    x = GAP
    for label, tile in tiles:
        canvas.paste(Image.fromarray(np.ascontiguousarray(tile)), (x, top))
        text = _fit(draw, label, tile.shape[1], font)
        draw.text((x + (tile.shape[1] - _text_width(draw, text, font)) // 2, top + height + 3), text, fill=INK, font=font)
        x += tile.shape[1] + GAP
    return np.asarray(canvas)


def _fit(draw, text: str, width: int, font) -> str:
    while len(text) > 4 and _text_width(draw, text, font) > width:
        text = text.removesuffix("..")[:-1] + ".."
    return text


def nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round-numbered ticks covering [low, high] (1, 2, 5 x 10^k steps)."""
    if high <= low:
        high = low + 1.0
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    start = math.floor(low / step) * step
    return [start + i * step for i in range(int(math.ceil((high - start) / step)) + 1)]


def log_ticks(low: float, high: float) -> list[float]:
    """1, 2, 5 x 10^k ticks from below `low` to above `high` (for a log axis)."""
    ticks = []
    for exponent in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1):
        ticks += [m * 10.0**exponent for m in (1, 2, 5)]
    below = [t for t in ticks if t <= low] or [ticks[0]]
    above = [t for t in ticks if t >= high] or [ticks[-1]]
    return [t for t in ticks if below[-1] <= t <= above[0]]


def _label(value: float) -> str:
    return f"{value:g}" if value >= 0.01 else f"{value:.0e}"


def draw_speed_chart(points: list[ChartPoint], title: str = "") -> np.ndarray:
    """Quality (PSNR, linear y) against speed (MP/s, log x), one colour per group, labelled points."""
    width, height = CHART_SIZE
    canvas = Image.new("RGB", CHART_SIZE, BACKGROUND)
    draw, font = ImageDraw.Draw(canvas), _font()
    x_ticks = log_ticks(min(p.speed for p in points), max(p.speed for p in points))
    y_ticks = nice_ticks(min(p.quality for p in points), max(p.quality for p in points))
    box = (MARGIN["left"], MARGIN["top"], width - MARGIN["right"], height - MARGIN["bottom"])
    lx0, lx1 = math.log10(x_ticks[0]), math.log10(x_ticks[-1]) if x_ticks[-1] > x_ticks[0] else math.log10(x_ticks[0]) + 1

    def to_px(speed: float, quality: float) -> tuple[float, float]:
        fx = (math.log10(speed) - lx0) / (lx1 - lx0)
        fy = (quality - y_ticks[0]) / ((y_ticks[-1] - y_ticks[0]) or 1.0)
        return box[0] + fx * (box[2] - box[0]), box[3] - fy * (box[3] - box[1])

    _draw_axes(draw, font, box, [(to_px(t, y_ticks[0])[0], _label(t)) for t in x_ticks],
               [(to_px(x_ticks[0], t)[1], f"{t:g}") for t in y_ticks])
    draw.text((box[0], 12), title, fill=INK, font=font)
    draw.text(((box[0] + box[2]) // 2 - 90, height - 22), "output megapixels per second (log)", fill=INK, font=font)
    draw.text((8, box[1] - 18), "PSNR-Y (dB)", fill=INK, font=font)
    groups = list(dict.fromkeys(p.group for p in points))
    placed: list[tuple[float, float, float, float]] = []
    for p in points:
        colour = PALETTE[groups.index(p.group) % len(PALETTE)]
        x, y = to_px(p.speed, p.quality)
        draw.ellipse((x - POINT_RADIUS, y - POINT_RADIUS, x + POINT_RADIUS, y + POINT_RADIUS), fill=colour, outline=INK)
        draw.text(_free_spot(placed, x + POINT_RADIUS + 3, y - 6, _text_width(draw, p.label, font)), p.label, fill=colour, font=font)
    for i, group in enumerate(groups):  # legend
        colour = PALETTE[i % len(PALETTE)]
        y = box[1] + 6 + i * 18
        draw.rectangle((box[2] + 16, y, box[2] + 28, y + 12), fill=colour)
        draw.text((box[2] + 34, y), group, fill=INK, font=font)
    return np.asarray(canvas)


def _free_spot(placed: list, x: float, y: float, width: float) -> tuple[float, float]:
    """Move a label down (then up) in steps until it overlaps no label placed before it."""
    for step in (0, 1, -1, 2, -2, 3, -3):
        box = (x, y + step * LABEL_STEP, x + width, y + step * LABEL_STEP + LABEL_STEP)
        if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
            placed.append(box)
            return box[0], box[1]
    return x, y


def _draw_axes(draw, font, box, x_ticks: list[tuple[float, str]], y_ticks: list[tuple[float, str]]) -> None:
    left, top, right, bottom = box
    for x, text in x_ticks:
        draw.line((x, top, x, bottom), fill=GRID)
        draw.line((x, bottom, x, bottom + 5), fill=INK)
        draw.text((x - _text_width(draw, text, font) / 2, bottom + 8), text, fill=INK, font=font)
    for y, text in y_ticks:
        draw.line((left, y, right, y), fill=GRID)
        draw.line((left - 5, y, left, y), fill=INK)
        draw.text((left - 8 - _text_width(draw, text, font), y - 6), text, fill=INK, font=font)
    draw.rectangle(box, outline=INK)
