"""fill_transparent on NumPy arrays (no torch): the same push-pull fill as for tensors, visible pixels
untouched, over 1-pixel strips, odd sizes, 1/3/4 channels, batches and masks from none to all."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from upscale_cli.alpha import _bilinear, _half_mean, fill_transparent

SHAPES = [(1, 1), (1, 9), (9, 1), (2, 3), (5, 2), (13, 30), (31, 45), (64, 64)]
# Torch's own bilinear kernel rounds differently by build (fused multiply-adds or not, vectorised or
# not): 2e-7 apart here, a few 1e-6 at most elsewhere; colours are written with 1/255 or 1/65535 steps.
FLOAT_ROUNDING = 1e-5


def _masks(height: int, width: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Alpha planes (2, 1, H, W): random holes, a single visible pixel, a visible border only."""
    random = (rng.random((2, 1, height, width)) > 0.6) * rng.random((2, 1, height, width))
    single = np.zeros((2, 1, height, width))
    single[..., height // 2, width // 3] = 0.5
    border = np.ones((2, 1, height, width))
    border[..., 1:-1, 1:-1] = 0
    return [m.astype(np.float32) for m in (random, single, border)]


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_numpy_fill_is_the_tensor_fill(channels):
    rng = np.random.default_rng(channels)
    compared = 0
    for height, width in SHAPES:
        rgb = rng.random((2, channels, height, width), dtype=np.float32)
        for alpha in _masks(height, width, rng):
            expected = fill_transparent(torch.from_numpy(rgb), torch.from_numpy(alpha)).numpy()
            filled = fill_transparent(rgb, alpha)
            case = (height, width, channels)
            assert isinstance(filled, np.ndarray) and filled.dtype == np.float32 and filled.shape == rgb.shape, case
            visible = np.broadcast_to(alpha > 0, rgb.shape)
            assert np.array_equal(filled[visible], rgb[visible]), case  # never changed
            assert float(np.abs(filled - expected).max()) <= FLOAT_ROUNDING, case
            compared += 1
    assert compared == 3 * len(SHAPES)


def test_hidden_colour_does_not_survive_the_fill():
    """A visible red square in transparent white: the hidden white is replaced by red, not kept."""
    rgb = np.ones((1, 3, 16, 16), dtype=np.float32)
    rgb[:, 1:, 4:12, 4:12] = 0.0  # red where visible
    alpha = np.zeros((1, 1, 16, 16), dtype=np.float32)
    alpha[..., 4:12, 4:12] = 1.0
    filled = fill_transparent(rgb, alpha)
    assert np.allclose(filled[:, 0], 1.0) and float(filled[:, 1:].max()) < 1e-6


def test_all_visible_or_all_hidden_returns_the_input_unchanged():
    rgb = np.random.default_rng(0).random((1, 3, 7, 5), dtype=np.float32)
    for alpha in (np.ones((1, 1, 7, 5), np.float32), np.zeros((1, 1, 7, 5), np.float32)):
        assert fill_transparent(rgb, alpha) is rgb


@pytest.mark.parametrize("height,width", list(itertools.product([1, 2, 3, 8, 31], [1, 4, 7, 33])))
def test_the_pyramid_means_are_avg_pool2d_to_the_bit(height, width):
    x = np.random.default_rng(height * 50 + width).random((2, 3, height, width), dtype=np.float32)
    expected = F.avg_pool2d(torch.from_numpy(x), 2, ceil_mode=True).numpy()
    assert np.array_equal(_half_mean(x), expected)


@pytest.mark.parametrize("in_size,out_size", [((1, 1), (2, 9)), ((2, 3), (3, 5)), ((17, 25), (33, 49)),
                                              ((49, 1), (97, 2)), ((8, 8), (16, 16))])
def test_the_pull_up_is_torchs_bilinear_interpolation(in_size, out_size):
    x = np.random.default_rng(sum(in_size)).random((1, 3, *in_size), dtype=np.float32)
    expected = F.interpolate(torch.from_numpy(x), size=out_size, mode="bilinear", align_corners=False).numpy()
    assert float(np.abs(_bilinear(x, out_size) - expected).max()) <= FLOAT_ROUNDING
