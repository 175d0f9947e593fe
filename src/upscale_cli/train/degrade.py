"""Degradations that turn HR training crops into LR inputs: small pure tensor functions.

Each function takes a (B, C, H, W) float tensor in [0, 1] (and, when random, an explicit
torch.Generator) and returns a new tensor; nothing here reads files or keeps state, so a
seeded generator gives the same degradation every time (BasicSR's degradations.py, without
its string-keyed option dicts).

`bicubic_degrade` is the default and matches the SR evaluation protocol (Pillow-exact
antialiased bicubic, then 8-bit quantisation, metrics.quantize8). `random_degrade` is the
`--degrade` mix for SR: bicubic/bilinear/area downscaling, Gaussian blur, Gaussian noise and JPEG. JPEG needs an
encoder: it goes through OpenCV's cv2.imencode/imdecode on uint8 arrays (the one place here
that leaves torch; it is still a pure function of its inputs). For restoration (scale 1,
`--degrade`) `restoration_degrade` damages each crop on its own: JPEG quality 10-90, noise
sigma 0-50, blur, blob holes pre-filled exactly as `upscale restore --mask` pre-fills them,
unmarked grey holes (`random_holes`) and overlaid text (`overlay_text`, cv2.putText). The
"inpaint" mix trains a model that takes the mask as a 4th channel: blob holes or text of a fixed
pixel size with its mask (`overlay_text_with_mask`), pre-filled, mask appended.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from upscale_cli.choices import DAMAGE_MIXES, DamageMix
from upscale_cli.metrics import quantize8 as quantize  # the protocol's 8-bit rounding, written once in metrics
from upscale_cli.models.unet import matrix_resize
from upscale_cli.restore import prefill

DOWNSCALE_METHODS = ("bicubic", "bilinear", "area")
BLUR_SIGMA_RANGE = (0.2, 2.0)  # pixels (HR), before downscaling
NOISE_SIGMA_RANGE = (1.0 / 255, 15.0 / 255)  # in [0, 1] units
JPEG_QUALITY_RANGE = (30, 95)
HOLE_FRACTION = 0.15  # largest hole side as a fraction of the image side
TEXT_SCALE_RANGE = (0.4, 1.2)  # OpenCV font scale


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _chance(generator: torch.Generator, p: float) -> bool:
    return float(torch.rand((), generator=generator)) < p


def downscale(x: torch.Tensor, scale: int, method: str = "bicubic") -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H//scale, W//scale). bicubic/bilinear are Pillow-exact antialiased
    filters; area is box averaging (OpenCV INTER_AREA for integer factors)."""
    h, w = x.shape[-2] // scale, x.shape[-1] // scale
    if scale == 1:
        return x
    if method == "area":
        return F.adaptive_avg_pool2d(x, (h, w))
    return matrix_resize(x, (h, w), method)  # == upscale_cli.resize, as matrix products


def bicubic_degrade(x: torch.Tensor, scale: int) -> torch.Tensor:
    """The protocol's LR: antialiased bicubic downscale, quantised to 8 bits."""
    return quantize(downscale(x, scale, "bicubic"))


def gaussian_kernel(sigma: float, radius: int | None = None) -> torch.Tensor:
    """A normalised 1-D Gaussian kernel, (2r+1,), r = ceil(3 sigma) by default."""
    radius = max(1, math.ceil(3.0 * sigma)) if radius is None else radius
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / max(sigma, 1e-6)) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflected borders; same shape out."""
    k = gaussian_kernel(sigma).to(x)
    r = k.numel() // 2
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="reflect") if min(x.shape[-2:]) > r else F.pad(x, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def gaussian_noise(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Add white Gaussian noise of standard deviation sigma (in [0, 1] units), clipped."""
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype) * sigma
    return (x + noise.to(x.device)).clamp(0.0, 1.0)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Round-trip each image through a JPEG encoder at `quality` (OpenCV, 4:2:0 as usual)."""
    import cv2

    out = []
    for image in x.detach().cpu():
        array = image.mul(255.0).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
        if array.shape[2] == 3:
            array = array[:, :, ::-1]  # OpenCV is BGR
        ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(array), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:  # pragma: no cover - OpenCV always encodes uint8 images
            raise RuntimeError("OpenCV failed to encode a JPEG")
        decoded = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED if array.shape[2] == 1 else cv2.IMREAD_COLOR)
        decoded = decoded.reshape(array.shape)
        if array.shape[2] == 3:
            decoded = decoded[:, :, ::-1]
        out.append(torch.from_numpy(np.ascontiguousarray(decoded)).permute(2, 0, 1))
    return torch.stack(out).to(device=x.device, dtype=x.dtype) / 255.0


def random_holes(x: torch.Tensor, generator: torch.Generator, max_holes: int = 3,
                 fill: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Punch 1..max_holes rectangles into each image; returns (damaged, mask (B, 1, H, W) 1=hole).
    Holes are filled with `fill`, or a random grey per hole when None."""
    b, _, h, w = x.shape
    out, mask = x.clone(), torch.zeros(b, 1, h, w, dtype=x.dtype, device=x.device)
    for i in range(b):
        for _ in range(int(torch.randint(1, max_holes + 1, (), generator=generator))):
            hh = max(1, int(_uniform(generator, 0.02, HOLE_FRACTION) * h))
            ww = max(1, int(_uniform(generator, 0.02, HOLE_FRACTION) * w))
            top = int(torch.randint(0, h - hh + 1, (), generator=generator))
            left = int(torch.randint(0, w - ww + 1, (), generator=generator))
            value = _uniform(generator, 0.0, 1.0) if fill is None else fill
            out[i, :, top:top + hh, left:left + ww] = value
            mask[i, :, top:top + hh, left:left + ww] = 1.0
    return out, mask


def overlay_text(x: torch.Tensor, generator: torch.Generator, text: str | None = None) -> torch.Tensor:
    """Draw a line of text (random letters, colour, size and place) over each image (cv2.putText)."""
    import cv2

    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    out = []
    for image in x.detach().cpu():  # (C, H, W)
        h, w = image.shape[-2:]
        words = text or "".join(letters[int(torch.randint(0, len(letters), (), generator=generator))] for _ in range(8))
        colour = torch.rand(image.shape[0], 1, 1, generator=generator)
        font_scale = _uniform(generator, *TEXT_SCALE_RANGE) * max(h, w) / 256.0
        origin = (int(_uniform(generator, 0.0, 0.5) * w), int(_uniform(generator, 0.2, 1.0) * h))
        thickness = max(1, int(font_scale * 2))
        # OpenCV draws on uint8 only: draw an antialiased coverage mask and blend the colour through it,
        # so the image itself is not quantised
        mask = np.zeros((h, w), dtype=np.uint8)
        cv2.putText(mask, words, origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 255, thickness, cv2.LINE_AA)
        alpha = torch.from_numpy(mask).to(image.dtype).div(255.0)[None]  # (1, H, W)
        out.append(image * (1 - alpha) + colour.to(image.dtype) * alpha)
    return torch.stack(out).to(device=x.device, dtype=x.dtype).clamp(0.0, 1.0)


INPAINT_TEXT_SCALE = (0.6, 2.0)  # OpenCV font scale for text drawn at a fixed pixel size (not crop-relative)
TEXT_MASK_GROW = 1  # pixels: a text mask also covers the text's antialiased fringe and one pixel more


def text_mask(height: int, width: int, generator: torch.Generator, font_scale: float | None = None,
              words: str | None = None) -> torch.Tensor:
    """(1, 1, H, W) antialiased coverage in [0, 1] of one line of random text (cv2.putText): a random
    place, font scale (INPAINT_TEXT_SCALE unless given) and stroke thickness."""
    import cv2

    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 "
    words = words or "".join(letters[int(torch.randint(0, len(letters), (), generator=generator))]
                             for _ in range(int(torch.randint(4, 14, (), generator=generator))))
    scale = _uniform(generator, *INPAINT_TEXT_SCALE) if font_scale is None else font_scale
    thickness = max(1, int(round(scale * _uniform(generator, 1.0, 2.5))))
    origin = (int(_uniform(generator, -0.3, 0.6) * width), int(_uniform(generator, 0.2, 1.0) * height))
    coverage = np.zeros((height, width), dtype=np.uint8)
    cv2.putText(coverage, words, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness, cv2.LINE_AA)
    return torch.from_numpy(coverage).float().div(255.0)[None, None]


def overlay_text_with_mask(x: torch.Tensor, generator: torch.Generator, font_scale: float | None = None,
                           lines: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, C, H, W) -> (text drawn over it in one random colour, its mask (1, 1, H, W) 0/1): the
    pixels the text touched, grown by TEXT_MASK_GROW (what a user's text mask covers)."""
    h, w = x.shape[-2:]
    coverage = torch.zeros(1, 1, h, w)
    for _ in range(lines):
        coverage = torch.maximum(coverage, text_mask(h, w, generator, font_scale))
    colour = torch.rand(1, x.shape[1], 1, 1, generator=generator).to(x)
    alpha = coverage.to(x)
    out = (x * (1 - alpha) + colour * alpha).clamp(0.0, 1.0)
    grow = 2 * TEXT_MASK_GROW + 1
    mask = F.max_pool2d((coverage > 0).float(), grow, stride=1, padding=TEXT_MASK_GROW)
    return out, mask.to(x)


def random_degrade(x: torch.Tensor, scale: int, generator: torch.Generator) -> torch.Tensor:
    """The `--degrade` mix: maybe blur (HR), downscale by a random method, maybe noise,
    maybe JPEG, then 8-bit quantisation. The whole batch shares one draw (the images within it
    differ anyway). Restoration (scale 1) uses `restoration_degrade` instead."""
    if _chance(generator, 0.5):
        x = gaussian_blur(x, _uniform(generator, *BLUR_SIGMA_RANGE))
    method = DOWNSCALE_METHODS[int(torch.randint(0, len(DOWNSCALE_METHODS), (), generator=generator))]
    x = downscale(x, scale, method)
    if _chance(generator, 0.5):
        x = gaussian_noise(x, _uniform(generator, *NOISE_SIGMA_RANGE), generator)
    if _chance(generator, 0.5):
        x = jpeg(x, int(_uniform(generator, *JPEG_QUALITY_RANGE)))
    return quantize(x)


# ---------------------------------------------------------------- restoration (scale 1)
RESTORE_JPEG_QUALITY = (10, 90)
RESTORE_NOISE_SIGMA = (0.0, 50.0 / 255)  # [0, 1] units
RESTORE_BLUR_SIGMA = (0.3, 1.5)  # pixels
RESTORE_HOLE_COVERAGE = (0.02, 0.2)  # fraction of the crop
RESTORE_BLOB_SIGMA = (2.0, 8.0)  # pixels
P_BLUR, P_NOISE, P_JPEG = 0.15, 0.55, 0.55  # the "independent" mix: each damage drawn on its own
P_MASKED_HOLES, P_GREY_HOLES, P_TEXT = 0.2, 0.08, 0.12
SPECIALIST_JPEG_QUALITY = (10, 60)  # the "jpeg" mix: a JPEG-artifact specialist


def random_blob_mask(height: int, width: int, coverage: float, generator: torch.Generator,
                     blob_sigma: float = 6.0) -> torch.Tensor:
    """(1, 1, H, W) 0/1 mask of random blobs covering about `coverage` of the pixels: Gaussian-
    smoothed white noise (blob size ~ blob_sigma pixels) thresholded at its (1 - coverage) quantile."""
    noise = torch.randn(1, 1, height, width, generator=generator)
    smooth = gaussian_blur(noise, blob_sigma)
    values = smooth.flatten()
    if values.numel() > 1_000_000:  # torch.quantile refuses very large inputs; a sample is as good
        values = values[torch.randperm(values.numel(), generator=generator)[:1_000_000]]
    threshold = torch.quantile(values, 1.0 - coverage)
    return (smooth > threshold).to(torch.float32)


def _low_skewed_quality(generator: torch.Generator, qualities: tuple[int, int]) -> int:
    """A JPEG quality in the range, low qualities more often (uniform draw to the power 1.5)."""
    low, high = qualities
    return int(round(low + (high - low) * float(torch.rand((), generator=generator)) ** 1.5))


def _holes_and_text(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Maybe blob holes (pre-filled as `upscale restore --mask` does), else maybe grey holes; maybe text."""
    if _chance(generator, P_MASKED_HOLES):
        mask = random_blob_mask(x.shape[-2], x.shape[-1], _uniform(generator, *RESTORE_HOLE_COVERAGE), generator,
                                _uniform(generator, *RESTORE_BLOB_SIGMA))
        x = prefill(x, mask)
    elif _chance(generator, P_GREY_HOLES):
        x = random_holes(x, generator)[0]
    if _chance(generator, P_TEXT):
        x = overlay_text(x, generator)
    return quantize(x)


def _damage_independent(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Blur, noise and JPEG each drawn on its own (noise then sits under most JPEG crops)."""
    if _chance(generator, P_BLUR):
        x = gaussian_blur(x, _uniform(generator, *RESTORE_BLUR_SIGMA))
    if _chance(generator, P_NOISE):
        x = gaussian_noise(x, _uniform(generator, *RESTORE_NOISE_SIGMA), generator)
    if _chance(generator, P_JPEG):
        x = jpeg(x, int(round(_uniform(generator, *RESTORE_JPEG_QUALITY))))
    return _holes_and_text(quantize(x), generator)


def _damage_exclusive(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mostly one damage per crop, JPEG-heavy with low qualities more often: 40% JPEG only,
    30% noise only, 15% noise then JPEG, 15% blur or nothing. (With the independent mix the
    JPEG-only case was rare and ambiguous, and JPEG was learnt worse than noise.)"""
    r = float(torch.rand((), generator=generator))
    quality = _low_skewed_quality(generator, RESTORE_JPEG_QUALITY)
    if r < 0.40:
        x = jpeg(x, quality)
    elif r < 0.70:
        x = gaussian_noise(x, _uniform(generator, *RESTORE_NOISE_SIGMA), generator)
    elif r < 0.85:
        x = jpeg(quantize(gaussian_noise(x, _uniform(generator, *RESTORE_NOISE_SIGMA), generator)), quality)
    elif _chance(generator, 0.5):
        x = gaussian_blur(x, _uniform(generator, *RESTORE_BLUR_SIGMA))
    return _holes_and_text(quantize(x), generator)


def _damage_jpeg(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """JPEG only, quality drawn from SPECIALIST_JPEG_QUALITY with low qualities more often."""
    return quantize(jpeg(x, _low_skewed_quality(generator, SPECIALIST_JPEG_QUALITY)))


P_INPAINT_HOLES, P_INPAINT_TEXT = 0.5, 0.4  # the "inpaint" mix; the rest (10%): no mask, identity target


def _damage_inpaint(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(1, 3, H, W) -> (1, 4, H, W): the crop with blob holes or overlaid text (or, 10%, nothing),
    the marked pixels pre-filled exactly as `upscale restore --mask` pre-fills them, plus the mask
    as a 4th channel (a model with `mask_channel`)."""
    r = float(torch.rand((), generator=generator))
    if r < P_INPAINT_HOLES:
        mask = random_blob_mask(x.shape[-2], x.shape[-1], _uniform(generator, *RESTORE_HOLE_COVERAGE), generator,
                                _uniform(generator, *RESTORE_BLOB_SIGMA))
    elif r < P_INPAINT_HOLES + P_INPAINT_TEXT:
        x, mask = overlay_text_with_mask(x, generator, lines=1 + int(_chance(generator, 0.3)))
    else:
        mask = torch.zeros_like(x[:, :1])
    return torch.cat([prefill(quantize(x), mask), mask], dim=1)


_DAMAGE_BY_MIX: dict[DamageMix, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "exclusive": _damage_exclusive, "independent": _damage_independent, "jpeg": _damage_jpeg,
    "inpaint": _damage_inpaint}


def restoration_degrade(x: torch.Tensor, generator: torch.Generator, mix: str = "exclusive") -> torch.Tensor:
    """(B, C, H, W) clean crops -> damaged crops of the same size, each crop drawn on its own
    (mix "inpaint": (B, C + 1, H, W), the mask as the last channel)."""
    if mix not in DAMAGE_MIXES:
        raise ValueError(f"unknown damage mix {mix!r}; choose from {', '.join(DAMAGE_MIXES)}")
    damage = _DAMAGE_BY_MIX[mix]
    return torch.cat([damage(crop, generator) for crop in x.split(1)])
