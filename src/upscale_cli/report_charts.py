"""Pictures for benchmark reports, drawn with Pillow's ImageDraw (matplotlib is not a dependency).

Pure drawing: functions take data and return (H, W, 3) uint8 RGB arrays; benchmark/pictures.py writes
them through the images package. This and images/ are the only modules that use Pillow.

Text: Pillow's built-in font (Aileron since Pillow 10.1) at FONT_SIZE. Its space is 2-3 px
wide at every size, which ran words together ("vsspeed", "cropat"), so text is drawn word by
word with a gap of WORD_GAP_EM; every size of the layout comes from the font's line height.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
INK = (30, 30, 30)
GRID = (225, 225, 225)
LEADER = (150, 150, 150)
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194))
FONT_SIZE = 13  # pixels
WORD_GAP_EM = 0.33  # space between words, in font sizes
CHART_SIZE = (900, 580)  # pixels
POINT_RADIUS = 5  # pixels
GAP = 6  # pixels between strip tiles, and around text
TICK = 5  # pixels
LABEL_PAD = 3  # pixels between a point and its label
LEADER_MIN = 2 * POINT_RADIUS  # pixels: a label placed farther than this from its point gets a line to it


@dataclass(frozen=True)
class ChartPoint:
    label: str  # drawn beside the point (the model)
    group: str  # one colour per group (the dataset)
    speed: float  # output megapixels per second (log axis)
    quality: float  # PSNR dB


Box = tuple[float, float, float, float]  # left, top, right, bottom (pixels)


def _font() -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=FONT_SIZE)  # scalable: Pillow >= 10.1 with FreeType
    except (TypeError, OSError):  # older Pillow or no FreeType: the fixed bitmap font (wide spaces)
        return ImageFont.load_default()


def _word_gap(font) -> int:
    return max(round(WORD_GAP_EM * getattr(font, "size", FONT_SIZE)), round(font.getlength(" ")))


def line_height(font) -> int:
    """Pixels from one line of text to the next."""
    _, top, _, bottom = font.getbbox("Ag(|)")
    return int(bottom - min(0, top)) + 4


def text_width(text: str, font) -> int:
    words = text.split(" ")
    return int(sum(math.ceil(font.getlength(w)) for w in words) + _word_gap(font) * (len(words) - 1))


def draw_text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font, fill) -> None:
    """Text at xy (top-left), words separated by a readable gap."""
    x, y = xy
    for word in text.split(" "):
        if word:
            draw.text((round(x), round(y)), word, fill=fill, font=font)
        x += math.ceil(font.getlength(word)) + _word_gap(font)


# ---- comparison strips -------------------------------------------------------------------------

def draw_strip(tiles: list[tuple[str, np.ndarray]], title: str = "") -> np.ndarray:
    """Tiles side by side with a label under each (on two lines when one is too narrow),
    and an optional title line above."""
    font = _font()
    step = line_height(font)
    height = max(t.shape[0] for _, t in tiles)
    width = sum(t.shape[1] for _, t in tiles) + GAP * (len(tiles) + 1)
    labels = [_wrap(label, tile.shape[1], font) for label, tile in tiles]
    rows = max(len(lines) for lines in labels)
    top = step + GAP if title else GAP
    canvas = Image.new("RGB", (max(width, text_width(title, font) + 2 * GAP), top + height + rows * step + GAP), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw_text(draw, (GAP, GAP // 2 + 1), title, font, INK)
    x = GAP
    for (_, tile), lines in zip(tiles, labels):
        canvas.paste(Image.fromarray(np.ascontiguousarray(tile)), (x, top))
        for i, line in enumerate(lines):
            draw_text(draw, (x + (tile.shape[1] - text_width(line, font)) // 2, top + height + 3 + i * step), line, font, INK)
        x += tile.shape[1] + GAP
    return np.asarray(canvas)


def _wrap(text: str, width: int, font) -> list[str]:
    """One line if it fits, else two (split at the last space that lets the first fit); a part
    still too wide is shortened with '..'."""
    if text_width(text, font) <= width or " " not in text:
        return [_shorten(text, width, font)]
    words = text.split(" ")
    for cut in range(len(words) - 1, 0, -1):
        first = " ".join(words[:cut])
        if text_width(first, font) <= width:
            return [first, _shorten(" ".join(words[cut:]), width, font)]
    return [_shorten(words[0], width, font), _shorten(" ".join(words[1:]), width, font)]


def _shorten(text: str, width: int, font) -> str:
    while len(text) > 4 and text_width(text, font) > width:
        text = text.removesuffix("..")[:-1] + ".."
    return text


# ---- the quality-versus-speed chart ------------------------------------------------------------

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


def chart_layout(points: list[ChartPoint], font) -> dict:
    """Where everything of the chart goes: the plot box, the margins sized from the text they hold."""
    step = line_height(font)
    width, height = CHART_SIZE
    groups = list(dict.fromkeys(p.group for p in points))
    legend = max(text_width(g, font) for g in groups) + 3 * GAP + step
    y_ticks = nice_ticks(min(p.quality for p in points), max(p.quality for p in points))
    tick_text = max(text_width(f"{t:g}", font) for t in y_ticks)
    # rows above the plot: the title, the y-axis title, then half a line for the top tick label
    box = (GAP + tick_text + TICK + GAP, GAP + 2 * step + step // 2 + 4, width - legend - GAP, height - 2 * step - 2 * GAP)
    return {"box": box, "legend_x": box[2] + 2 * GAP, "y_ticks": y_ticks, "groups": groups,
            "x_ticks": log_ticks(min(p.speed for p in points), max(p.speed for p in points))}


def draw_speed_chart(points: list[ChartPoint], title: str = "") -> np.ndarray:
    """Quality (PSNR, linear y) against speed (MP/s, log x), one colour per group, labelled points."""
    font = _font()
    step = line_height(font)
    layout = chart_layout(points, font)
    box, x_ticks, y_ticks = layout["box"], layout["x_ticks"], layout["y_ticks"]
    canvas = Image.new("RGB", CHART_SIZE, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    lx0 = math.log10(x_ticks[0])
    lx1 = math.log10(x_ticks[-1]) if x_ticks[-1] > x_ticks[0] else lx0 + 1

    def to_px(speed: float, quality: float) -> tuple[float, float]:
        fx = (math.log10(speed) - lx0) / (lx1 - lx0)
        fy = (quality - y_ticks[0]) / ((y_ticks[-1] - y_ticks[0]) or 1.0)
        return box[0] + fx * (box[2] - box[0]), box[3] - fy * (box[3] - box[1])

    _draw_axes(draw, font, box, [(to_px(t, y_ticks[0])[0], _label(t)) for t in x_ticks],
               [(to_px(x_ticks[0], t)[1], f"{t:g}") for t in y_ticks])
    draw_text(draw, (box[0], GAP), title, font, INK)
    draw_text(draw, (GAP, GAP + step), "PSNR-Y (dB)", font, INK)
    x_title = "output megapixels per second (log scale)"
    draw_text(draw, ((box[0] + box[2] - text_width(x_title, font)) / 2, CHART_SIZE[1] - step - GAP), x_title, font, INK)
    centres = [to_px(p.speed, p.quality) for p in points]
    colours = [PALETTE[layout["groups"].index(p.group) % len(PALETTE)] for p in points]
    spots = place_labels(centres, [text_width(p.label, font) for p in points], step - 2, box)
    for centre, spot in zip(centres, spots):  # a label moved away from its point gets a line to it
        end = _nearest_on_box(spot, centre)
        if math.dist(centre, end) > LEADER_MIN:
            draw.line((*centre, *end), fill=LEADER)
    for (x, y), colour in zip(centres, colours):
        draw.ellipse((x - POINT_RADIUS, y - POINT_RADIUS, x + POINT_RADIUS, y + POINT_RADIUS), fill=colour, outline=INK)
    for (lx, ly, _, _), colour, p in zip(spots, colours, points):
        draw_text(draw, (lx, ly - 1), p.label, font, colour)
    _draw_legend(draw, font, layout)
    return np.asarray(canvas)


def _draw_legend(draw, font, layout) -> None:
    step = line_height(font)
    for i, group in enumerate(layout["groups"]):
        colour = PALETTE[i % len(PALETTE)]
        y = layout["box"][1] + GAP + i * step
        draw.rectangle((layout["legend_x"], y + 2, layout["legend_x"] + step - 6, y + step - 4), fill=colour)
        draw_text(draw, (layout["legend_x"] + step, y), group, font, INK)


def _nearest_on_box(box: Box, point: tuple[float, float]) -> tuple[float, float]:
    return min(max(point[0], box[0]), box[2]), min(max(point[1], box[1]), box[3])


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(centres: list[tuple[float, float]], widths: list[int], height: int, bounds: Box) -> list[Box]:
    """A box for each point's label: beside it if that spot is free, else the nearest free spot
    (searched outwards), never over another label or any point and inside `bounds`."""
    r = POINT_RADIUS
    dots = [(x - r - 1, y - r - 1, x + r + 1, y + r + 1) for x, y in centres]
    placed: list[Box] = []
    for (x, y), width in zip(centres, widths):
        beside = [(x + r + LABEL_PAD, y - height / 2), (x - r - LABEL_PAD - width, y - height / 2),
                  (x - width / 2, y - r - LABEL_PAD - height), (x - width / 2, y + r + LABEL_PAD)]
        farther = [(bx + dx, by + dy) for dist in range(1, 8) for bx, by in beside[:2]
                   for dx, dy in ((0, dist * height), (0, -dist * height), (dist * 8, 0), (-dist * 8, 0))]
        spot = next((b for b in (_box(c, width, height) for c in beside + farther)
                     if _inside(b, bounds) and not any(_overlaps(b, o) for o in placed + dots)),
                    _box(beside[0], width, height))  # nowhere free: beside it, as before
        placed.append(spot)
    return placed


def _box(corner: tuple[float, float], width: float, height: float) -> Box:
    return corner[0], corner[1], corner[0] + width, corner[1] + height


def _inside(box: Box, bounds: Box) -> bool:
    return bounds[0] <= box[0] and box[2] <= bounds[2] and bounds[1] <= box[1] and box[3] <= bounds[3]


def _draw_axes(draw, font, box, x_ticks: list[tuple[float, str]], y_ticks: list[tuple[float, str]]) -> None:
    left, top, right, bottom = box
    half = line_height(font) // 2
    for x, text in x_ticks:
        draw.line((x, top, x, bottom), fill=GRID)
        draw.line((x, bottom, x, bottom + TICK), fill=INK)
        draw_text(draw, (x - text_width(text, font) / 2, bottom + TICK + 2), text, font, INK)
    for y, text in y_ticks:
        draw.line((left, y, right, y), fill=GRID)
        draw.line((left - TICK, y, left, y), fill=INK)
        draw_text(draw, (left - TICK - 3 - text_width(text, font), y - half), text, font, INK)
    draw.rectangle(box, outline=INK)
