"""Train the x1 restoration U-Net: `upscale train` with the restoration damage the issue asks for.

    python scripts/train_restore.py --config configs/unet_restore.toml [any `upscale train` option]

This is `upscale train` itself (the same loop, checkpoints, EMA, export) with one thing
swapped: the degradation. train/degrade.py's `--degrade` mix at scale 1 draws one damage for
a whole batch, keeps noise at sigma <= 15/255 and JPEG quality >= 30, and punches holes the
model is never told about. Restoration needs (per crop): JPEG quality 10-90, Gaussian noise
sigma 0-50, mild blur, blob holes pre-filled exactly as `upscale restore --mask` pre-fills
them (restore.prefill), unmarked grey holes and overlaid text. `restoration_damage` below
builds that from the pure functions of train/degrade.py and restore.py, and replaces
`loop.make_lr` for this process only (training and validation alike).
"""
from __future__ import annotations

import sys

import torch

from upscale_cli import restore
from upscale_cli.train import degrade, loop

JPEG_QUALITY = (10, 90)
NOISE_SIGMA = (0.0, 50.0 / 255)  # [0, 1] units
BLUR_SIGMA = (0.3, 1.5)  # pixels
HOLE_COVERAGE = (0.02, 0.2)  # fraction of the crop
BLOB_SIGMA = (2.0, 8.0)  # pixels
P_BLUR, P_NOISE, P_JPEG, P_MASKED_HOLES, P_GREY_HOLES, P_TEXT = 0.15, 0.55, 0.55, 0.2, 0.08, 0.12


def _u(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen))


def _p(gen: torch.Generator, p: float) -> bool:
    return float(torch.rand((), generator=gen)) < p


def _holes_and_text(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    if _p(gen, P_MASKED_HOLES):
        mask = restore.random_blob_mask(x.shape[-2], x.shape[-1], _u(gen, *HOLE_COVERAGE), gen, _u(gen, *BLOB_SIGMA))
        x = restore.prefill(x, mask)
    elif _p(gen, P_GREY_HOLES):
        x = degrade.random_holes(x, gen)[0]
    if _p(gen, P_TEXT):
        x = degrade.overlay_text(x, gen)
    return degrade.quantize(x)


def damage_mixed(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mix "independent" (stage 1): blur, noise and JPEG each drawn on its own. (1, 3, H, W) -> damaged."""
    if _p(gen, P_BLUR):
        x = degrade.gaussian_blur(x, _u(gen, *BLUR_SIGMA))
    if _p(gen, P_NOISE):
        x = degrade.gaussian_noise(x, _u(gen, *NOISE_SIGMA), gen)
    if _p(gen, P_JPEG):
        x = degrade.jpeg(x, int(round(_u(gen, *JPEG_QUALITY))))
    return _holes_and_text(degrade.quantize(x), gen)


def damage_exclusive(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mix "exclusive" (stage 2): mostly one damage per crop, JPEG-heavy, low qualities more often.

    Stage 1 learnt noise well but not JPEG: with noise under most JPEG crops, the JPEG-only
    case was rare and ambiguous. Here: 40% JPEG only, 30% noise only, 15% noise then JPEG,
    15% blur or nothing."""
    r = float(torch.rand((), generator=gen))
    quality = int(round(JPEG_QUALITY[0] + (JPEG_QUALITY[1] - JPEG_QUALITY[0]) * float(torch.rand((), generator=gen)) ** 1.5))
    if r < 0.40:
        x = degrade.jpeg(x, quality)
    elif r < 0.70:
        x = degrade.gaussian_noise(x, _u(gen, *NOISE_SIGMA), gen)
    elif r < 0.85:
        x = degrade.jpeg(degrade.quantize(degrade.gaussian_noise(x, _u(gen, *NOISE_SIGMA), gen)), quality)
    elif _p(gen, 0.5):
        x = degrade.gaussian_blur(x, _u(gen, *BLUR_SIGMA))
    return _holes_and_text(degrade.quantize(x), gen)


MIXES = {"independent": damage_mixed, "exclusive": damage_exclusive}
damage_one = damage_exclusive


def restoration_damage(hr: torch.Tensor, scale: int, random: bool, generator: torch.Generator) -> torch.Tensor:
    """Drop-in for loop.make_lr at scale 1: every crop draws its own damage."""
    if scale != 1:
        raise SystemExit("scripts/train_restore.py trains x1 restoration models only (--scale 1)")
    return torch.cat([damage_one(x, generator) for x in hr.split(1)])


def main() -> None:
    """`--mix independent|exclusive` (default exclusive) picks the damage mix; the rest goes to `upscale train`."""
    global damage_one
    args = sys.argv[1:]
    if "--mix" in args:
        at = args.index("--mix")
        damage_one = MIXES[args[at + 1]]
        del args[at : at + 2]
    loop.make_lr = restoration_damage
    from upscale_cli.cli import main as cli_main

    sys.argv = ["upscale", "train", *args]
    cli_main()


if __name__ == "__main__":
    main()
