"""Tiled inference: the tile grid, the blend window, and tiled == untiled on a real conv model."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from upscale_cli.errors import UsageError
from upscale_cli.models.descriptor import FixedScale, SizeRequirements
from upscale_cli.tiling import (
    CPU_MAX_TILE,
    TilePlan,
    auto_tile_size,
    axis_window,
    exact_overlap,
    is_out_of_memory,
    overlap_for,
    plan_tiling,
    tiled_forward,
)

RECEPTIVE_FIELD = 3  # three 3x3 convs: each output pixel sees 3 input pixels on each side


def tiny_sr(scale: int, features: int = 4, seed: int = 0) -> nn.Module:
    """Three 3x3 convs (zero padding, so tile edges really are wrong) then PixelShuffle."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, features, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(features, features, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(features, 3 * scale * scale, 3, padding=1),
        nn.PixelShuffle(scale),
    )
    return model.eval()


def smooth_image(height: int, width: int) -> torch.Tensor:
    """Low-frequency colour waves in [0, 1].  (1, 3, H, W)"""
    yy = torch.linspace(0, 1, height)[:, None]
    xx = torch.linspace(0, 1, width)[None, :]
    channels = [
        0.5 + 0.4 * torch.sin(2 * math.pi * (1.3 * xx + 0.7 * yy)),
        0.5 + 0.4 * torch.cos(2 * math.pi * (2.1 * yy - 0.4 * xx)),
        0.5 + 0.3 * torch.sin(2 * math.pi * 3.0 * xx * yy),
    ]
    return torch.stack(channels)[None].float()


def plan_tiles(height: int, width: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    plan = TilePlan(tile, overlap, 0)
    return [(y0, y1, x0, x1) for y0, y1 in plan.spans(height) for x0, x1 in plan.spans(width)]


def run(fn, x, scale, tile, overlap, margin=None, size_multiple=1, out_device=None, on_tile=None):
    """tiled_forward with a hand-made plan (margin defaults to a quarter of the overlap)."""
    margin = overlap // 4 if margin is None else margin
    plan = TilePlan(tile, overlap, margin, SizeRequirements(multiple_of=size_multiple), out_device)
    return tiled_forward(fn, x, scale, plan, on_tile=on_tile)


def coverage(height: int, width: int, tile: int, overlap: int) -> torch.Tensor:
    """How many boxes of the plan cover each input pixel.  (H, W)"""
    count = torch.zeros(height, width, dtype=torch.int32)
    for y0, y1, x0, x1 in plan_tiles(height, width, tile, overlap):
        count[y0:y1, x0:x1] += 1
    return count


# ----------------------------------------------------------------------------- grid


@pytest.mark.parametrize(
    "height,width,tile,overlap", [(97, 61, 32, 8), (768, 1024, 128, 12), (10, 10, 4, 1), (5, 300, 64, 16)]
)
def test_plan_tiles_covers_the_image_with_equal_tiles(height, width, tile, overlap):
    boxes = plan_tiles(height, width, tile, overlap)
    assert bool((coverage(height, width, tile, overlap) > 0).all())
    for y0, y1, x0, x1 in boxes:
        assert 0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width
        assert y1 - y0 == min(tile, height) and x1 - x0 == min(tile, width)  # shifted back, not shrunk


def test_plan_tiles_one_tile_when_tile_is_zero_or_large():
    assert plan_tiles(97, 61, 0, 8) == [(0, 97, 0, 61)]
    assert plan_tiles(97, 61, 97, 8) == [(0, 97, 0, 61)]
    assert plan_tiles(97, 61, 64, 8) == [(0, 64, 0, 61), (33, 97, 0, 61)]


def test_a_plan_whose_overlap_is_not_smaller_than_its_tile_cannot_exist():
    with pytest.raises(ValueError):
        TilePlan(16, 16, 0)
    with pytest.raises(ValueError):
        TilePlan(30, 8, 0, SizeRequirements(multiple_of=4))  # tile not a multiple
    with pytest.raises(ValueError):
        TilePlan(32, 8, 5)  # margin wider than half the overlap


def test_overlap_for_scales_with_receptive_field_and_is_capped():
    assert overlap_for(3) == 12 and overlap_for(16) == 64
    assert overlap_for(0) >= 8 and overlap_for(10_000) <= 128


# ----------------------------------------------------------------------------- window


def test_window_is_one_at_image_borders_and_zero_at_inner_edges():
    scale, margin = 2, 3
    # top/right on the border, bottom/left shared with neighbours
    window = axis_window(32, scale, margin, 0, 12)[:, None] * axis_window(40, scale, margin, 12, 0)[None, :]
    assert window.shape == (64, 80)
    assert bool((window[0, 12 * scale :] == 1).all())  # top border row, past the left overlap
    assert bool((window[: -12 * scale, -1] == 1).all())  # right border column, above the bottom overlap
    assert bool((window[-margin * scale :, :] == 0).all())  # bottom inner edge: zero band
    assert bool((window[:, : margin * scale] == 0).all())  # left inner edge: zero band
    assert bool((window[-12 * scale - 1, -1] == 1))  # ramp starts at the overlap
    assert bool((window[(margin * scale) : -(12 * scale), -12 * scale :] == 1).all())  # interior


def test_windows_of_neighbours_sum_to_one_over_the_overlap():
    overlap, margin, scale = 12, 3, 4
    a = axis_window(32, scale, margin, after=overlap)
    b = axis_window(32, scale, margin, before=overlap)
    shared = a[-overlap * scale :] + b[: overlap * scale]
    assert np.allclose(shared, 1.0, atol=1e-6)
    ramp = a[-overlap * scale :][margin * scale : -margin * scale]
    assert bool(((ramp > 0) & (ramp < 1)).all()) and bool((ramp[1:] <= ramp[:-1]).all())  # smooth fall


def test_margin_wider_than_half_the_overlap_is_refused():
    with pytest.raises(UsageError):
        axis_window(32, 2, margin=5, before=8)


@pytest.mark.parametrize("height,width,tile,overlap,margin,multiple",
                         [(97, 61, 32, 8, 2, 1), (97, 61, 32, 8, 4, 1), (50, 70, 16, 6, 0, 1), (1, 93, 16, 8, 4, 8),
                          (45, 1, 24, 8, 4, 4), (33, 77, 24, 12, 3, 2)])
def test_every_output_pixel_has_weight_one_after_normalising(height, width, tile, overlap, margin, multiple):
    x = smooth_image(height, width)
    ones = run(lambda t: torch.ones_like(t).repeat_interleave(2, -1).repeat_interleave(2, -2), x, 2, tile, overlap,
               margin, multiple)
    assert ones.shape == (1, 3, 2 * height, 2 * width)
    assert torch.allclose(ones, torch.ones_like(ones), atol=1e-6)


# ----------------------------------------------------------------------------- tiled forward


def test_tiled_equals_untiled_on_a_large_smooth_image():
    model, x = tiny_sr(2), smooth_image(768, 1024)
    with torch.no_grad():
        untiled = model(x)
    calls = []
    overlap = overlap_for(RECEPTIVE_FIELD)
    tiled = run(model, x, 2, 128, overlap, on_tile=lambda d, t: calls.append((d, t)))
    diff = float((tiled - untiled).abs().max())
    print(f"\n1024x768 x2, tile 128, overlap 12: max |tiled - untiled| = {diff:.3g} (bar 1/255 = {1 / 255:.3g})")
    assert tiled.shape == (1, 3, 1536, 2048) and tiled.dtype == torch.float32
    assert diff <= 1 / 255
    assert diff < 1e-4  # the zero band hides every padded output: equal up to float rounding
    assert calls[-1] == (len(calls), len(calls)) and [d for d, _ in calls] == list(range(1, len(calls) + 1))


def test_zero_margin_would_show_seams():
    """The control for the test above: without the zero band the padded outputs leak in."""
    model, x = tiny_sr(2), smooth_image(96, 96)
    with torch.no_grad():
        untiled = model(x)
    good = run(model, x, 2, 32, 12, margin=3)
    bad = run(model, x, 2, 32, 12, margin=0)
    assert float((bad - untiled).abs().max()) > 10 * float((good - untiled).abs().max())


def test_tile_larger_than_image_is_exactly_untiled():
    model, x = tiny_sr(4), smooth_image(40, 30)
    with torch.no_grad():
        untiled = model(x)
    calls = []
    for tile in (0, 40, 64):
        assert torch.equal(run(model, x, 4, tile, 8, on_tile=lambda d, t: calls.append((d, t))), untiled)
    assert calls == [(1, 1)] * 3


def test_odd_sizes_cover_every_pixel():
    x = smooth_image(97, 61)
    tiled = run(lambda t: torch.ones_like(t).repeat_interleave(3, -1).repeat_interleave(3, -2), x, 3, 32, 8)
    assert tiled.shape == (1, 3, 291, 183)
    assert torch.allclose(tiled, torch.ones_like(tiled), atol=1e-6)  # weights normalised everywhere
    model = tiny_sr(2)
    with torch.no_grad():
        assert float((run(model, x, 2, 32, 8, margin=3) - model(x)).abs().max()) < 1e-5


def test_size_multiple_pads_the_image_once_and_aligns_every_tile():
    """Tiles of a padded image, each starting on the model's stride grid: tiled == untiled even
    for a model whose result depends on the stride-2 phase (a U-Net), at sizes that are not multiples."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                          nn.ReLU(), nn.Conv2d(8, 3 * 16, 3, padding=1), nn.PixelShuffle(4)).eval()  # x2 overall
    rf, seen = 8, []

    def needs_multiple_of_8(t):
        assert t.shape[-2] % 8 == 0 and t.shape[-1] % 8 == 0, t.shape
        seen.append(tuple(t.shape[-2:]))
        return model(t)

    for height, width in [(45, 70), (1, 37), (37, 1), (64, 64), (63, 129)]:
        x = smooth_image(height, width)
        untiled = run(needs_multiple_of_8, x, 2, 0, 16, margin=rf, size_multiple=8)
        assert untiled.shape == (1, 3, 2 * height, 2 * width)
        for tile in (24, 32, 40):
            seen.clear()
            tiled = run(needs_multiple_of_8, x, 2, tile, 16, margin=rf, size_multiple=8)
            assert float((tiled - untiled).abs().max()) < 1e-5, (height, width, tile)


def test_channels_may_change_and_output_goes_to_out_device():
    x = smooth_image(50, 50)
    def to_grey_x2(t):
        return t.mean(1, keepdim=True).repeat_interleave(2, -1).repeat_interleave(2, -2)

    grey = run(to_grey_x2, x, 2, 24, 8, out_device="cpu")
    assert grey.shape == (1, 1, 100, 100) and grey.device.type == "cpu"


def test_input_is_left_untouched_by_a_model_that_returns_its_input():
    x = smooth_image(50, 50)
    before = x.clone()
    out = run(lambda t: t, x, 1, 24, 8)
    assert torch.equal(x, before) and torch.allclose(out, x, atol=1e-6)


def test_half_precision_tiles_come_back_float32():
    model = tiny_sr(2).to(torch.bfloat16)
    x = smooth_image(40, 40).to(torch.bfloat16)
    assert run(model, x, 2, 16, 6, margin=1).dtype == torch.float32


def test_out_of_memory_propagates_and_is_recognised():
    def explode(t):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(torch.OutOfMemoryError) as info:
        run(explode, smooth_image(64, 64), 2, 32, 8)
    assert is_out_of_memory(info.value)
    assert is_out_of_memory(RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory"))
    assert not is_out_of_memory(RuntimeError("size mismatch"))


def test_auto_tile_size_follows_free_memory():
    gib = 1 << 30
    small = auto_tile_size(3000, 4000, 3, 4, 1024, device="cpu", free_memory_bytes=4 * gib, cpu_max_tile=10_000)
    large = auto_tile_size(3000, 4000, 3, 4, 1024, device="cpu", free_memory_bytes=16 * gib, cpu_max_tile=10_000)
    assert 32 <= small < large
    assert auto_tile_size(3000, 4000, 3, 4, 1024, device="cpu", free_memory_bytes=64 * gib) == 512  # CPU cap
    assert auto_tile_size(300, 400, 3, 4, 1024, device="cpu", free_memory_bytes=16 * gib) == 0  # fits whole
    assert auto_tile_size(3000, 4000, 3, 4, 1024, device="cpu", free_memory_bytes=1, size_multiple=8) % 8 == 0
    assert auto_tile_size(64, 64, 3, 4, 1024) in range(0, 513)  # real free memory query works


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tiled_equals_untiled_on_cuda():
    model, x = tiny_sr(2).cuda(), smooth_image(768, 1024).cuda()
    with torch.no_grad():
        untiled = model(x)
    tiled = run(model, x, 2, 128, overlap_for(RECEPTIVE_FIELD))
    assert tiled.device.type == "cuda"  # accumulated on the GPU
    diff = float((tiled - untiled).abs().max())
    print(f"\ncuda: max |tiled - untiled| = {diff:.3g}")
    assert diff <= 1 / 255
    on_cpu = run(model, x, 2, 128, overlap_for(RECEPTIVE_FIELD), out_device="cpu")
    assert on_cpu.device.type == "cpu" and float((on_cpu - untiled.cpu()).abs().max()) <= 1 / 255


# ----------------------------------------------------------------------------- the plan


def _plan(tile=0, overlap=None, rf=48, multiple=4, height=3000, width=4000, tiling="supported", per_pixel=4096,
          free=16 << 30, **kw):
    info = FixedScale(scale=4, receptive_field=rf, size=SizeRequirements(multiple_of=multiple), tiling=tiling,
                      bytes_per_input_pixel=per_pixel)
    return plan_tiling(height, width, 3, 4, info, tile=tile, overlap=overlap, free_memory_bytes=free, **kw)


@pytest.mark.parametrize("rf,multiple", [(48, 4), (76, 8), (13, 2), (3, 1), (0, 1), (200, 16)])
@pytest.mark.parametrize("tile", [0, 1, 7, 8, 33, 64, 96, 128, 129, 130, 131, 132, 200, 257, 511, 512, 513, 5000])
def test_every_requested_tile_gives_a_valid_exact_plan(rf, multiple, tile):
    """Issue 11.3: round first, validate once; --tile 129..131 used to fail every file."""
    plan = _plan(tile, rf=rf, multiple=multiple)  # TilePlan validates itself: multiples, overlap < tile
    assert plan.margin == rf and plan.overlap >= exact_overlap(rf, multiple)
    if plan.tile:
        assert plan.tile - plan.overlap >= min(plan.tile // 2, plan.overlap)  # stride never collapses
    if tile and plan.tile and plan.tile != tile - tile % multiple:
        assert plan.note and str(plan.tile) in plan.note


def test_halving_the_tile_always_ends():
    """The out-of-memory retry asks for half the tile until the plan stops getting smaller."""
    for rf, multiple in [(48, 4), (76, 8), (13, 2)]:
        plan, seen = _plan(512, rf=rf, multiple=multiple), []
        while True:
            seen.append(plan.tile)
            smaller = _plan(plan.tile // 2, rf=rf, multiple=multiple)
            if smaller.tile >= plan.tile:
                break
            plan = smaller
        assert len(seen) < 10 and seen[-1] == 2 * exact_overlap(rf, multiple)


def test_an_explicit_overlap_is_kept_and_the_tile_made_room_for_it():
    plan = _plan(64, overlap=60, rf=48, multiple=4)
    assert plan.overlap == 60 and plan.margin == 30 and plan.tile == 64
    plan = _plan(131, overlap=128, rf=48, multiple=4)
    assert plan.overlap == 128 and plan.tile == 132 and "132" in plan.note


def test_a_model_that_cannot_be_tiled_or_a_small_image_gets_one_tile():
    assert _plan(64, tiling="internal").tile == 0
    assert _plan(256, height=255, width=250).tile == 0
    assert _plan(0, height=100, width=100).tile == 0


# ----------------------------------------------------------------------------- the descriptor's tiling mode and memory


@pytest.mark.parametrize("side", [600, 1000, 1300])
def test_a_discouraged_model_runs_untiled_whenever_memory_allows(side):
    """Tiling mode "discouraged" (global attention) is honoured: no CPU cap; one tile when its working
    set fits, else the largest tile that fits, never smaller than a supported model's tile."""
    free = 16 << 30
    supported = _plan(0, height=side, width=side, rf=16, multiple=8, free=free)
    discouraged = _plan(0, height=side, width=side, rf=16, multiple=8, free=free, tiling="discouraged")
    assert supported.tile == CPU_MAX_TILE  # capped on the CPU
    assert discouraged.tile == 0  # half of 16 GiB holds a 1300x1300 input at 4.4 KiB a pixel
    tight = _plan(0, height=side, width=side, rf=16, multiple=8, free=1 << 30, tiling="discouraged")
    assert 0 < tight.tile < side and tight.tile % 8 == 0  # does not fit: the largest tile that does
    assert tight.tile >= _plan(0, height=side, width=side, rf=16, multiple=8, free=1 << 30).tile


@pytest.mark.parametrize("per_pixel", [512, 4096, 65536])
def test_the_automatic_tile_follows_the_model_memory_per_pixel(per_pixel):
    """The descriptor's bytes_per_input_pixel sizes the tile: a model 8x as hungry gets a tile about
    sqrt(8)x smaller, from the same free memory."""
    plan = dict(rf=8, multiple=1, height=3000, width=3000, free=8 << 30, tiling="discouraged")
    hungry, light = _plan(0, per_pixel=per_pixel * 8, **plan), _plan(0, per_pixel=per_pixel, **plan)
    assert 0 < hungry.tile < light.tile < 3000
    assert 2.0 < light.tile / hungry.tile < 3.5  # not sqrt(8) exactly: each pixel also costs its output
