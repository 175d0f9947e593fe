"""tiled_forward on NumPy arrays (a model that needs no PyTorch): tiled == untiled to float rounding,
and the very same float32 numbers as the torch path for the same model, over a grid of 1-pixel
strips, odd sizes, images smaller than a tile and several tiles; scales 1-4; 1, 3 and 4 channels."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from upscale_cli import tiling
from upscale_cli.models.descriptor import FixedScale, SizeRequirements
from upscale_cli.tiling import TilePlan, axis_window, is_out_of_memory, pad_for_model, plan_tiling, tiled_forward

RF = 2  # receptive field of `stencil_model`: two 3x3 stencils
SIZES = [(1, 37), (37, 1), (5, 9), (23, 30), (45, 70)]  # strips, smaller than a tile, two to five tiles a side
PLANS = [(16, 8, 2, 1), (24, 12, RF, 4), (12, 4, RF, 1)]  # (tile, overlap, margin, size multiple)


def stencil_model(scale: int, channels: int):
    """A NumPy "model": two 3x3 stencils with zero padding (so tile edges really are wrong), channels
    mixed, then each pixel repeated scale x scale. Takes and returns float32 (B, C, h, w) arrays."""
    rng = np.random.default_rng(channels * 10 + scale)
    kernels = rng.normal(size=(2, 3, 3)).astype(np.float32) / 4
    mix = rng.normal(size=(channels, channels)).astype(np.float32) / channels

    def run(x: np.ndarray) -> np.ndarray:
        for kernel in kernels:
            padded = np.pad(x, [(0, 0), (0, 0), (1, 1), (1, 1)])
            h, w = x.shape[-2:]
            x = sum(kernel[i, j] * padded[..., i : i + h, j : j + w] for i in range(3) for j in range(3))
            x = np.tanh(np.einsum("dc,bchw->bdhw", mix, x) + x)
        return x.repeat(scale, -2).repeat(scale, -1).astype(np.float32)

    return run


def image(height: int, width: int, channels: int) -> np.ndarray:
    """Smooth waves plus fine noise in [0, 1].  (1, C, H, W) float32"""
    rng = np.random.default_rng(height * 100 + width + channels)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    waves = [0.5 + 0.3 * np.sin(0.21 * xx + 0.13 * (c + 1) * yy + c) for c in range(channels)]
    return np.clip(np.stack(waves)[None] + 0.15 * rng.random((1, channels, height, width)), 0, 1).astype(np.float32)


def plan(tile: int, overlap: int, margin: int, multiple: int) -> TilePlan:
    return TilePlan(tile, overlap, margin, SizeRequirements(multiple_of=multiple))


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_numpy_tiled_equals_untiled_and_equals_the_torch_path(scale, channels):
    model = stencil_model(scale, channels)

    def torch_model(t: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(model(t.numpy()))

    for (height, width), (tile, overlap, margin, multiple) in itertools.product(SIZES, PLANS):
        x = image(height, width, channels)
        untiled = tiled_forward(model, x, scale, plan(0, overlap, margin, multiple))
        assert isinstance(untiled, np.ndarray) and untiled.shape == (1, channels, height * scale, width * scale)
        calls = []
        tiled = tiled_forward(model, x, scale, plan(tile, overlap, margin, multiple),
                              on_tile=lambda done, total: calls.append((done, total)))
        case = (height, width, tile, overlap, multiple)
        assert tiled.dtype == np.float32 and tiled.shape == untiled.shape and tiled.flags.c_contiguous, case
        assert float(np.abs(tiled - untiled).max()) < 1e-5, case  # the zero band hides every padded output
        assert calls[-1] == (len(calls), len(calls)), case
        on_torch = tiled_forward(torch_model, torch.from_numpy(x), scale, plan(tile, overlap, margin, multiple))
        assert np.array_equal(on_torch.numpy(), tiled), case  # the same float32 operations, in the same order


def test_without_the_zero_band_numpy_tiles_show_seams():
    """The control for the test above: the grid really cuts, and a margin of 0 lets padding leak in."""
    model, x = stencil_model(2, 3), image(45, 70, 3)
    untiled = tiled_forward(model, x, 2, plan(0, 8, RF, 1))
    good = tiled_forward(model, x, 2, plan(16, 8, RF, 1))
    bad = tiled_forward(model, x, 2, plan(16, 8, 0, 1))
    assert float(np.abs(bad - untiled).max()) > 1e-3 > 100 * float(np.abs(good - untiled).max())


@pytest.mark.parametrize("height,width,tile,overlap,margin,multiple",
                         [(97, 61, 32, 8, 2, 1), (1, 93, 16, 8, 4, 8), (45, 1, 24, 8, 4, 4), (33, 77, 24, 12, 3, 2)])
def test_every_numpy_output_pixel_has_weight_one(height, width, tile, overlap, margin, multiple):
    x = image(height, width, 3)
    ones = tiled_forward(lambda t: np.ones_like(t).repeat(3, -2).repeat(3, -1), x, 3,
                         plan(tile, overlap, margin, multiple))
    assert ones.shape == (1, 3, 3 * height, 3 * width)
    assert np.allclose(ones, 1.0, atol=1e-6)


def test_float64_and_channel_changing_numpy_models_come_back_float32_and_the_input_is_untouched():
    x = image(50, 50, 3).astype(np.float64)
    before = x.copy()
    grey = tiled_forward(lambda t: t.mean(1, keepdims=True).repeat(2, -2).repeat(2, -1), x, 2, plan(24, 8, 2, 1))
    assert grey.shape == (1, 1, 100, 100) and grey.dtype == np.float32
    same = tiled_forward(lambda t: t, x, 1, plan(24, 8, 2, 1))
    assert np.array_equal(x, before) and np.allclose(same, x, atol=1e-6)


def test_a_numpy_run_is_blended_on_the_cpu_only():
    x = image(40, 40, 3)
    cpu = TilePlan(16, 8, 2, out_device="cpu")
    assert np.array_equal(tiled_forward(lambda t: t, x, 1, cpu), tiled_forward(lambda t: t, x, 1, plan(16, 8, 2, 1)))
    with pytest.raises(ValueError, match="CPU"):
        tiled_forward(lambda t: t, x, 1, TilePlan(16, 8, 2, out_device="cuda"))


def test_numpy_out_of_memory_propagates_and_is_recognised():
    def explode(t):
        raise MemoryError("Unable to allocate 2.00 GiB for an array with shape (1, 3, 16384, 16384)")

    with pytest.raises(MemoryError) as info:
        tiled_forward(explode, image(64, 64, 3), 2, plan(32, 8, 2, 1))
    assert is_out_of_memory(info.value)
    assert not is_out_of_memory(ValueError("operands could not be broadcast together"))


@pytest.mark.parametrize("height,width", [(1, 1), (1, 9), (9, 1), (3, 5), (7, 7), (13, 30)])
@pytest.mark.parametrize("multiple", [2, 4, 8])
def test_pad_for_model_pads_numpy_exactly_as_torch_does(height, width, multiple):
    """np.pad "reflect" / "edge" is F.pad's reflect / replicate, including the replicate fallback
    for a side too short to reflect."""
    x = image(height, width, 3)
    size = SizeRequirements(multiple_of=multiple, minimum=min(multiple, 4))
    padded = pad_for_model(x, size)
    assert padded.shape[-2:] == size.padded(height, width)
    assert np.array_equal(padded, pad_for_model(torch.from_numpy(x), size).numpy())


def _old_torch_window(size, scale, margin, before=0, after=0):
    """axis_window as it was computed in torch before it moved to NumPy: the reference its float32
    values must keep (the torch path's output depends on them bit for bit)."""
    def profile(n, overlap):
        centres = torch.arange(n, dtype=torch.float64) + 0.5
        zero_end, ramp = margin * scale, (overlap - 2 * margin) * scale
        if ramp == 0:
            return (centres >= zero_end).to(torch.float32)
        t = ((centres - zero_end) / ramp).clamp(0.0, 1.0)
        return torch.sin(t * (math.pi / 2)).square().to(torch.float32)

    window = torch.ones(size * scale)
    if before:
        window *= profile(size * scale, before)
    if after:
        window *= profile(size * scale, after).flip(0)
    return window.numpy()


def test_numpy_windows_are_torchs_windows_to_the_bit():
    cases = 0
    for scale, overlap in itertools.product([1, 2, 3, 4, 8], range(2, 130, 3)):
        for margin in sorted({0, 1, overlap // 4, overlap // 2}):
            size = overlap + 17
            for sides in ((overlap, 0), (0, overlap), (overlap, overlap)):
                new = axis_window(size, scale, margin, *sides)
                assert new.dtype == np.float32
                assert np.array_equal(new, _old_torch_window(size, scale, margin, *sides)), (scale, overlap, margin)
                cases += 1
    assert cases > 2000


def test_the_plan_for_a_numpy_run_on_the_cpu_needs_no_torch_device():
    info = FixedScale(scale=4, receptive_field=8, size=SizeRequirements(multiple_of=4))
    for height, width, tile in [(3000, 4000, 0), (3000, 4000, 200), (100, 100, 0)]:
        expected = plan_tiling(height, width, 3, 4, info, device=torch.device("cpu"), tile=tile)
        for device in ("cpu", None):
            assert plan_tiling(height, width, 3, 4, info, device=device, tile=tile) == expected
    assert tiling.auto_tile_size(3000, 4000, 3, 4, 1024, device=None, free_memory_bytes=64 << 30) == 512
    assert tiling.available_memory(None) > 0 and tiling.available_memory("cpu") > 0


def test_device_strings_compare_as_torch_devices_do():
    """auto_tile_size counts the accumulator against the model's memory only on the same device;
    "cuda" and "cuda:0" are different torch.devices, and stay different here."""
    for a, b in itertools.product(["cpu", "cuda", "cuda:0", "cuda:1", "mps"], repeat=2):
        assert (tiling._device_key(a) == tiling._device_key(b)) == (torch.device(a) == torch.device(b))
        assert tiling._device_key(torch.device(a)) == tiling._device_key(a)
    gib = 1 << 30
    same = tiling.auto_tile_size(3000, 4000, 3, 4, 1024, device="cpu", out_device="cpu", free_memory_bytes=4 * gib,
                                 cpu_max_tile=0)
    apart = tiling.auto_tile_size(3000, 4000, 3, 4, 1024, device="cpu", out_device="cuda",
                                  free_memory_bytes=4 * gib, cpu_max_tile=0)
    assert 0 < same < apart  # the accumulator elsewhere leaves room for a larger tile


def test_torch_input_still_runs_without_gradients():
    layer = torch.nn.Conv2d(3, 3, 3, padding=1)
    x = torch.from_numpy(image(40, 40, 3))
    out = tiled_forward(lambda t: F.interpolate(layer(t), scale_factor=2), x, 2, plan(16, 8, 2, 1))
    assert not out.requires_grad and out.shape == (1, 3, 80, 80)
