"""Alpha-plane helpers (pure array code): keep colour from bleeding in from transparent pixels.

Fully transparent pixels often hold arbitrary colour (black, white, leftovers of an editor).
An upscaler's kernels would smear that colour into the visible edge, so before upscaling the
colour of transparent pixels is replaced by the colour of the nearest visible pixels
(push-pull filling over an image pyramid).

A torch tensor is filled with torch (avg_pool2d, bilinear interpolate), as always. A NumPy array is
filled with the same steps in NumPy, without importing torch: the pyramid's sums are exactly
torch's; the bilinear pull-up takes torch's source coordinates and weights to the bit and blends in
plain float32, which torch's vectorised kernel does too, so a filled colour agrees with the tensor's
to a float32 rounding or two (2e-7 on a grid of sizes in tests/test_alpha_numpy.py). Visible pixels
are never changed, either way.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported lazily, only for a tensor
    import torch

TINY_WEIGHT = 1e-12  # divisor floor: a pyramid cell with no visible pixel divides 0 by this, not by 0


def fill_transparent(rgb: torch.Tensor | np.ndarray, alpha: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """(B, C, H, W) colour, (B, 1, H, W) alpha -> colour with transparent pixels filled from neighbours.
    Tensors in, a tensor out; NumPy arrays in, a NumPy array out."""
    if isinstance(rgb, np.ndarray):
        return _fill_numpy(rgb, np.asarray(alpha))
    import torch
    import torch.nn.functional as F

    known = (alpha > 0).to(rgb.dtype)
    if bool(known.all()) or not bool(known.any()):
        return rgb
    sums, weights = [rgb * known], [known]
    while min(sums[-1].shape[-2:]) > 1:  # push: sum colour and weight down the pyramid
        sums.append(F.avg_pool2d(sums[-1], 2, ceil_mode=True))
        weights.append(F.avg_pool2d(weights[-1], 2, ceil_mode=True))
    filled = sums[-1] / weights[-1].clamp_min(TINY_WEIGHT)
    for level_sum, level_weight in zip(reversed(sums[:-1]), reversed(weights[:-1])):  # pull back up
        coarse = F.interpolate(filled, size=level_sum.shape[-2:], mode="bilinear", align_corners=False)
        own = level_sum / level_weight.clamp_min(TINY_WEIGHT)
        filled = torch.where(level_weight > 0, own, coarse)
    return torch.where(known > 0, rgb, filled)


def _fill_numpy(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """fill_transparent's steps in NumPy."""
    known = (alpha > 0).astype(rgb.dtype)
    if known.all() or not known.any():
        return rgb
    sums, weights = [rgb * known], [known]
    while min(sums[-1].shape[-2:]) > 1:
        sums.append(_half_mean(sums[-1]))
        weights.append(_half_mean(weights[-1]))
    tiny = rgb.dtype.type(TINY_WEIGHT)
    filled = sums[-1] / np.maximum(weights[-1], tiny)
    for level_sum, level_weight in zip(reversed(sums[:-1]), reversed(weights[:-1])):
        coarse = _bilinear(filled, level_sum.shape[-2:])
        own = level_sum / np.maximum(level_weight, tiny)
        filled = np.where(level_weight > 0, own, coarse)
    return np.where(known > 0, rgb, filled)


def _half_mean(x: np.ndarray) -> np.ndarray:
    """F.avg_pool2d(x, 2, ceil_mode=True): the mean of each 2x2 block, of the pixels inside the
    image for the last row/column of an odd side; summed in torch's order (row by row).  (..., ceil(H/2), ceil(W/2))"""
    h, w = x.shape[-2:]
    if h % 2 or w % 2:  # zeros add nothing; the divisor below counts only the real pixels
        x = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, h % 2), (0, w % 2)])
    total = x[..., 0::2, 0::2] + x[..., 0::2, 1::2]
    total += x[..., 1::2, 0::2]
    total += x[..., 1::2, 1::2]
    rows = np.full(total.shape[-2], 2, dtype=x.dtype)
    cols = np.full(total.shape[-1], 2, dtype=x.dtype)
    rows[-1], cols[-1] = 2 - h % 2, 2 - w % 2
    return total / (rows[:, None] * cols[None, :])  # a power of two: exact, as torch's division


def _source(in_size: int, out_size: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Torch's bilinear taps along one axis (align_corners=False): first and second source index
    and their weights.  4 x (out_size,)"""
    one = dtype.type(1)
    scale = dtype.type(in_size) / dtype.type(out_size)
    centres = np.arange(out_size, dtype=dtype) + dtype.type(0.5)
    # scale * centre - 0.5 rounded once, as torch's kernel computes it (a fused multiply-add): the
    # product of two float32 numbers is exact in float64, and so is subtracting 0.5 from it.
    real = np.maximum((centres.astype(np.float64) * scale - 0.5).astype(dtype), 0)
    first = real.astype(np.int64)  # real >= 0: truncation is floor
    second = np.minimum(first + 1, in_size - 1)
    weight = np.minimum(real - first.astype(dtype), one)
    return first, second, one - weight, weight


def _bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """F.interpolate(x, size, mode="bilinear", align_corners=False) in NumPy.  (..., *size)"""
    dtype = x.dtype
    top, bottom, w_top, w_bottom = _source(x.shape[-2], size[0], dtype)
    left, right, w_left, w_right = _source(x.shape[-1], size[1], dtype)
    rows = [x[..., index, :] for index in (top, bottom)]
    across = [row[..., left] * w_left + row[..., right] * w_right for row in rows]
    return across[0] * w_top[:, None] + across[1] * w_bottom[:, None]
