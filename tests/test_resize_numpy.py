"""resize on NumPy arrays (no torch): the taps computed in NumPy are torch's taps to the last float32
bit, so a NumPy array resizes to exactly the values of the same tensor, for every method, up and
down, odd sizes and size 1."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from test_resize import _plain_per_tap_resize
from upscale_cli.resize import METHODS, _axis_taps, _nearest_source, resize

SIDES = [1, 2, 3, 7, 16, 31, 64, 97, 128, 255]


@pytest.mark.parametrize("method", ["bilinear", "bicubic", "lanczos"])
def test_numpy_taps_are_torchs_taps_in_float32(method):
    for in_size, out_size in itertools.product(SIDES, SIDES):
        idx, weights = _axis_taps(in_size, out_size, method)
        torch_idx, torch_weights = _axis_taps(in_size, out_size, method, torch)
        assert isinstance(weights, np.ndarray) and weights.dtype == np.float64
        assert np.array_equal(idx, torch_idx.numpy()), (in_size, out_size)
        assert np.array_equal(weights.astype(np.float32), torch_weights.float().numpy()), (in_size, out_size)


def test_nearest_sources_are_the_torch_formulas():
    for in_size, out_size in itertools.product(SIDES, SIDES):
        expected = torch.floor((torch.arange(out_size, dtype=torch.float64) + 0.5) * (in_size / out_size))
        assert np.array_equal(_nearest_source(in_size, out_size), expected.clamp(max=in_size - 1).long().numpy())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape,size", [((1, 3, 37, 53), (148, 212)), ((1, 1, 1, 57), (4, 228)),
                                         ((2, 4, 64, 1), (256, 3)), ((1, 3, 300, 200), (75, 50)),
                                         ((1, 3, 5, 5), (1, 1)), ((3, 9, 7), (20, 3)), ((1, 3, 31, 17), (31, 40))])
@pytest.mark.parametrize("clamp", [True, False])
def test_a_numpy_array_resizes_to_the_tensors_values(method, shape, size, clamp):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(3)) * 1.4 - 0.2
    expected = resize(x, size, method, clamp)
    out = resize(x.numpy(), size, method, clamp)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == tuple(expected.shape)
    assert np.array_equal(out, expected.numpy())
    if method != "nearest" and clamp:  # and the tensor's values are still the plain per-tap sum's
        assert torch.equal(expected, _plain_per_tap_resize(x, size, method))


def test_float64_arrays_stay_float64_and_other_dtypes_are_refused():
    x = np.random.default_rng(0).random((1, 3, 9, 11))
    out = resize(x, (18, 22), "bicubic")
    assert out.dtype == np.float64 and out.shape == (1, 3, 18, 22)
    assert np.allclose(out, resize(torch.from_numpy(x), (18, 22), "bicubic").numpy(), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="float32 or float64"):
        resize((x * 255).astype(np.uint8), (18, 22))
    with pytest.raises(ValueError):
        resize(x.astype(np.float32), (0, 4))


def test_the_callers_array_is_never_changed():
    x = np.random.default_rng(1).random((1, 3, 20, 30), dtype=np.float32) * 2 - 0.5
    before = x.copy()
    for method, size in itertools.product(METHODS, [(20, 30), (20, 60), (40, 30), (7, 9)]):
        resize(x, size, method)
        assert np.array_equal(x, before), (method, size)
