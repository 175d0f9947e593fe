"""Draw the bundled example image (examples/sample.png): shapes, lines and lettering with
hard and soft edges, so an upscaler's sharpness and ringing show. Deterministic; ours."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = (160, 120)  # width, height in pixels


def draw() -> Image.Image:
    w, h = SIZE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    sky = np.stack([90 + 80 * yy / h, 140 + 60 * yy / h, 230 - 40 * yy / h], axis=-1)
    image = Image.fromarray(sky.clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(image)
    d.ellipse((100, 12, 140, 52), fill=(250, 220, 90))
    d.polygon([(0, 95), (45, 45), (90, 95)], fill=(70, 110, 70))
    d.polygon([(50, 95), (105, 35), (160, 95)], fill=(50, 90, 60))
    d.rectangle((0, 95, 160, 120), fill=(120, 95, 60))
    for x in range(8, 160, 16):
        d.line((x, 100, x + 6, 118), fill=(60, 45, 30), width=2)
    d.text((8, 6), "upscale-cli", fill=(255, 255, 255))
    d.rectangle((10, 60, 34, 92), outline=(200, 40, 40), width=2)
    soft = image.filter(ImageFilter.GaussianBlur(1.2))
    mask = Image.fromarray(((xx > w / 2) * 255).astype(np.uint8))
    return Image.composite(soft, image, mask)  # right half soft, left half crisp


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "examples/sample.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    draw().save(out, optimize=True)
    print(out)
