"""The README's promise, tried hard: tiled output equals untiled within 1/255 for every shipped model
and scale, at sizes that are odd, 1-pixel strips and not multiples of the model's size rule, at tile
sizes that are not multiples either, and for grey, RGB and RGBA (--alpha model) files."""
from __future__ import annotations

import math

import image_factory as f
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from upscale_cli import tiling
from upscale_cli.cli import app
from upscale_cli.engine import UpscaleConfig, Upscaler

SHIPPED = [("unet", 2), ("unet", 3), ("unet", 4), ("upsampler", 2), ("upsampler", 4), ("upsampler", 8),
           ("unet-restore", 1), ("unet-jpeg", 1)]
EIGHT_BIT = 1 / 255


def textured(height: int, width: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """Smooth waves plus fine noise, so that every pixel matters to the model.  (1, C, H, W)"""
    g = torch.Generator().manual_seed(seed)
    yy = torch.arange(height, dtype=torch.float32)[:, None]
    xx = torch.arange(width, dtype=torch.float32)[None, :]
    waves = [0.5 + 0.3 * torch.sin(0.21 * xx + 0.13 * (c + 1) * yy + c) for c in range(channels)]
    return (torch.stack(waves)[None] + 0.15 * torch.rand(1, channels, height, width, generator=g)).clamp(0, 1)


def _smallest_tile(upscaler: Upscaler, native: int) -> int:
    info = upscaler.model(native).info
    return 2 * tiling.exact_overlap(info.receptive_field, info.size.multiple_of)


def _run(model: str, scale: int, x: torch.Tensor, tile: int) -> torch.Tensor:
    # the tiler's property, in PyTorch: every shape compiled for OpenVINO would cost seconds here; the
    # compiled runtime's tiles are tests/test_runtime.py's and tests/test_array_engine.py's
    upscaler = Upscaler(UpscaleConfig(model=model, scale=scale, tile=tile, device="cpu", runtime="torch"),
                        progress=False)
    return upscaler.upscale_tensor(x)


@pytest.mark.parametrize("model,scale", SHIPPED)
def test_every_shipped_model_tiled_equals_untiled_at_awkward_sizes(model, scale):
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    probe = Upscaler(UpscaleConfig(model=model, scale=scale, device="cpu"), progress=False)
    native = max(probe.native_scales())
    info = probe.model(native).info
    smallest = _smallest_tile(probe, native)
    multiple = info.size.multiple_of
    odd_tile = smallest + multiple + 1  # not a multiple of the size rule: rounded down by the plan
    long_side = smallest + smallest // 2 + 3  # two or three tiles, and not a multiple either
    cases = [((1, long_side), (smallest, odd_tile)), ((long_side, 1), (smallest, odd_tile)),
             ((smallest // 2 + 1, long_side), (smallest,)), ((long_side - 2, smallest + 5), (odd_tile,))]
    for (height, width), tiles in cases:
        x = textured(height, width, seed=height * 7 + width)
        untiled = _run(model, scale, x, 100_000)
        assert untiled.shape[-2:] == (round(height * scale), round(width * scale))
        for tile in tiles:
            tiled = _run(model, scale, x, tile)
            diff = float((tiled - untiled).abs().max())
            assert diff <= EIGHT_BIT, (model, scale, (height, width), tile, diff)
            assert diff < 1e-4, (model, scale, (height, width), tile, diff)  # equal up to float rounding


def test_a_tile_below_the_models_minimum_is_raised_and_said(tmp_path):
    src = tmp_path / "a.png"
    Image.fromarray((textured(203, 301)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(src)
    for tile in ("130", "8"):
        out = tmp_path / f"a_{tile}.png"
        result = CliRunner().invoke(app, [str(src), "-x", "2", "--tile", tile, "-o", str(out)])
        assert result.exit_code == 0, result.output
        assert "smallest tile" in result.stderr and Image.open(out).size == (602, 406)


def test_tile_not_larger_than_explicit_overlap_is_a_usage_error_said_once(tmp_path):
    a, b = f.make_rgb_png(tmp_path, "a.png"), f.make_rgb_png(tmp_path, "b.png")
    result = CliRunner().invoke(app, [str(a), str(b), "-x", "2", "--tile", "8", "--tile-overlap", "16"])
    assert result.exit_code == 2
    assert result.stderr.count("--tile 8 must be larger than --tile-overlap 16") == 1
    assert not list(tmp_path.glob("*_x2*"))


def _image_file(folder, name: str, mode: str, size: tuple[int, int]):
    height, width = size
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = textured(height, width, channels, seed=len(name))[0].permute(1, 2, 0).numpy()
    if mode == "RGBA":  # a transparent hole and a soft edge, so alpha has structure too
        yy, xx = np.mgrid[0:height, 0:width]
        pixels[..., 3] = np.clip(np.hypot(yy - height / 2, xx - width / 3) / 40 - 0.5, 0, 1)
    array = (pixels * 255).round().astype(np.uint8)
    Image.fromarray(array[..., 0] if channels == 1 else array, mode).save(folder / name)
    return folder / name


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_cli_tiled_file_equals_untiled_file_for_every_channel_layout(tmp_path, mode):
    src = _image_file(tmp_path, f"in_{mode}.png", mode, (151, 233))
    outputs = {}
    for tile in ("100000", "192", "197"):
        out = tmp_path / f"out_{tile}.png"
        result = CliRunner().invoke(app, [str(src), "-x", "4", "-m", "unet", "--alpha", "model", "--tile", tile,
                                          "-o", str(out)])
        assert result.exit_code == 0, result.output
        outputs[tile] = np.asarray(Image.open(out)).astype(int)
    assert outputs["100000"].shape[:2] == (4 * 151, 4 * 233)
    for tile in ("192", "197"):
        assert outputs[tile].shape == outputs["100000"].shape
        assert int(np.abs(outputs[tile] - outputs["100000"]).max()) <= 1, (mode, tile)


def _blob_mask(height: int, width: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(1, 1, height, width, generator=g) < 0.2).float()


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("which", ["random-init file", "unet-inpaint"])
def test_a_mask_taking_model_tiled_equals_untiled(mask_unet_file, channels, which):
    """restore --mask with a model that takes the mask (the shipped one, and a random-init one whose
    mask head is far from zero): the mask is cut into the same tiles as the image (a hole across a
    seam sees the same context as untiled), at awkward sizes and tiles."""
    from upscale_cli import restore

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    model = mask_unet_file if which == "random-init file" else which

    def run(x, mask, tile):
        config = restore.RestoreConfig(model=model, task="inpaint", device="cpu", tile=tile)
        totals = []
        out = restore.Restorer(config, progress=False).restore_tensor(x, mask, lambda done, total: totals.append(total))
        assert totals and (tile < 100_000 or set(totals) == {1})
        return out, totals[-1]

    probe = Upscaler(UpscaleConfig(model=model, scale=1, device="cpu"), progress=False)
    smallest = _smallest_tile(probe, 1)
    multiple = probe.model(1).info.size.multiple_of
    odd_tile = smallest + multiple + 1
    long_side = 2 * smallest + 3
    for (height, width), tiles in (((1, long_side), (smallest, odd_tile)), ((long_side, 1), (smallest,)),
                                   ((smallest // 2 + 1, long_side), (smallest,)),
                                   ((long_side - 2, smallest + 5), (odd_tile, smallest))):
        x, mask = textured(height, width, channels, seed=height + width), _blob_mask(height, width, seed=width)
        untiled, _ = run(x, mask, 100_000)
        assert untiled.shape == x.shape
        assert torch.equal(untiled[(mask == 0).expand_as(x)], x[(mask == 0).expand_as(x)])
        for tile in tiles:
            tiled, count = run(x, mask, tile)
            assert count > 1, ((height, width), tile)  # really cut into tiles
            diff = float((tiled - untiled).abs().max())
            assert diff < 1e-4, ((height, width), tile, diff)
