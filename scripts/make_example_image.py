"""Draw the bundled example image (examples/sample.png): a landscape with shapes, lines and
lettering, crisp on the left and out of focus on the right, so an upscaler's sharpness shows.

The scene is drawn at 4x its size and reduced with Pillow's antialiased bicubic, as a camera's
optics and sensor band-limit a photo: every edge is a smooth ramp, never a staircase of single
pixels. (An image drawn straight at its final size has aliased edges no photo has, and a model
trained on photos rings along them.) Deterministic; ours.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SIZE = (160, 120)  # width, height of the example in pixels
SUPERSAMPLE = 4  # the scene is drawn at this multiple, then reduced (antialiased)
SOFT_BLUR = 1.2  # radius of the out-of-focus right half, in example pixels


def _scene(s: int) -> Image.Image:
    """The scene at `s` times the example's size; coordinates are in example pixels."""
    w, h = SIZE[0] * s, SIZE[1] * s
    yy = np.mgrid[0:h, 0:w][0].astype(np.float32)
    sky = np.stack([90 + 80 * yy / h, 140 + 60 * yy / h, 230 - 40 * yy / h], axis=-1)
    image = Image.fromarray(sky.clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(image)

    def box(*xy: float) -> list[float]:
        return [v * s for v in xy]

    d.ellipse(box(100, 12, 140, 52), fill=(250, 220, 90))
    d.polygon([(x * s, y * s) for x, y in [(0, 95), (45, 45), (90, 95)]], fill=(70, 110, 70))
    d.polygon([(x * s, y * s) for x, y in [(50, 95), (105, 35), (160, 95)]], fill=(50, 90, 60))
    d.rectangle(box(0, 95, 160, 120), fill=(120, 95, 60))
    for x in range(8, 160, 16):
        d.line(box(x, 100, x + 6, 118), fill=(60, 45, 30), width=2 * s)
    d.text((8 * s, 4 * s), "upscale-cli", fill=(255, 255, 255), font=ImageFont.load_default(size=11 * s))
    d.rectangle(box(10, 60, 34, 92), outline=(200, 40, 40), width=2 * s)
    return image


def draw_sharp() -> Image.Image:
    """The scene at SUPERSAMPLE times the example's size, right half out of focus: the ground
    truth an x4 upscale of the example can be measured against."""
    image = _scene(SUPERSAMPLE)
    soft = image.filter(ImageFilter.GaussianBlur(SOFT_BLUR * SUPERSAMPLE))
    xx = np.mgrid[0:image.height, 0:image.width][1]
    mask = Image.fromarray(((xx > image.width / 2) * 255).astype(np.uint8))
    return Image.composite(soft, image, mask)  # right half soft, left half crisp


def draw() -> Image.Image:
    return draw_sharp().resize(SIZE, Image.Resampling.BICUBIC)  # antialiased reduction


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "examples/sample.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    draw().save(out, optimize=True)
    print(out)
    if len(sys.argv) > 2:  # the ground truth too, for measuring an x4 upscale
        draw_sharp().save(sys.argv[2], optimize=True)
        print(sys.argv[2])
