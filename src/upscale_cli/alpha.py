"""Alpha-plane helpers (pure tensor code): keep colour from bleeding in from transparent pixels.

Fully transparent pixels often hold arbitrary colour (black, white, leftovers of an editor).
An upscaler's kernels would smear that colour into the visible edge, so before upscaling the
colour of transparent pixels is replaced by the colour of the nearest visible pixels
(push-pull filling over an image pyramid).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def fill_transparent(rgb: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) colour, (B, 1, H, W) alpha -> colour with transparent pixels filled from neighbours."""
    known = (alpha > 0).to(rgb.dtype)
    if bool(known.all()) or not bool(known.any()):
        return rgb
    sums, weights = [rgb * known], [known]
    while min(sums[-1].shape[-2:]) > 1:  # push: sum colour and weight down the pyramid
        sums.append(F.avg_pool2d(sums[-1], 2, ceil_mode=True))
        weights.append(F.avg_pool2d(weights[-1], 2, ceil_mode=True))
    filled = sums[-1] / weights[-1].clamp_min(1e-12)
    for level_sum, level_weight in zip(reversed(sums[:-1]), reversed(weights[:-1])):  # pull back up
        coarse = F.interpolate(filled, size=level_sum.shape[-2:], mode="bilinear", align_corners=False)
        own = level_sum / level_weight.clamp_min(1e-12)
        filled = torch.where(level_weight > 0, own, coarse)
    return torch.where(known > 0, rgb, filled)
