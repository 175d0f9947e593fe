"""Adding an architecture is one new module plus one registry line (issue #27).

The module below is written to a temporary folder, outside the package; the only change to the
program is one entry in models.ARCHITECTURES (monkeypatched: the registry line a contributor adds).
A weights file of it then runs through everything that reads models: `upscale` (untiled, tiled,
--json), `benchmark` and `restore` (a x1 model of the same architecture), and its settings are
checked like any architecture's. Nothing else learns its name: the engine reads its descriptor.
"""
from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import image_factory as f
from upscale_cli import models
from upscale_cli.cli import app
from upscale_cli.loader import load_model, save_weights

MODULE = '''
"""A tiny architecture: two 3x3 convs and a pixel shuffle, plus the bicubic-free nearest skip."""
import torch
from torch import nn

from upscale_cli.models.base import Between, OneOf
from upscale_cli.models.descriptor import FixedScale, SizeRequirements

SETTING_LIMITS = {"scale": OneOf((1, 2, 3)), "width": Between(1, 64)}


class Tiny(nn.Module):
    def __init__(self, scale: int, width: int) -> None:
        super().__init__()
        self.scale = scale
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))
        self.info = FixedScale(scale=scale, receptive_field=2, size=SizeRequirements(multiple_of=2),
                               bytes_per_input_pixel=64 * width)

    def forward(self, x):  # (B, 3, H, W) -> (B, 3, H*s, W*s)
        skip = nn.functional.interpolate(x, scale_factor=self.scale, mode="nearest")
        return skip + 0.1 * self.body(x)


def build_tiny(scale: int = 2, width: int = 8) -> Tiny:
    return Tiny(scale, width)
'''
ARCH = "tiny-test-arch"


@pytest.fixture()
def tiny(tmp_path, monkeypatch):
    """The new module on the import path and its one registry line; weights files at x1 and x2."""
    import torch

    (tmp_path / "tiny_arch.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(models.ARCHITECTURES, ARCH, "tiny_arch:build_tiny")
    files = {}
    for scale in (1, 2):
        torch.manual_seed(scale)
        model = models.build_model(ARCH, scale=scale, width=8)
        files[scale] = tmp_path / f"tiny_x{scale}.safetensors"
        save_weights(model, files[scale], ARCH, {"scale": scale, "width": 8})
    yield files
    sys.modules.pop("tiny_arch", None)


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _pixels(path):
    return np.asarray(Image.open(path), dtype=np.int16)


@pytest.mark.parametrize("size", [(37, 23), (1, 9), (64, 64)])
def test_upscale_runs_it_untiled_tiled_and_with_json(tiny, tmp_path, size):
    image = f.make_rgb_png(tmp_path, "in.png", size=size)
    whole = _run(image, "-m", tiny[2], "-x", "2", "-o", tmp_path / "whole.png", "--json")
    assert whole.exit_code == 0, whole.output
    row = json.loads(whole.stdout.strip().splitlines()[-1])
    assert row["status"] == "ok" and row["model"]
    assert Image.open(tmp_path / "whole.png").size == (2 * size[0], 2 * size[1])  # (width, height)
    tiled = _run(image, "-m", tiny[2], "-x", "2", "-o", tmp_path / "tiled.png", "--tile", "16", "--quiet")
    assert tiled.exit_code == 0, tiled.output
    assert np.abs(_pixels(tmp_path / "whole.png") - _pixels(tmp_path / "tiled.png")).max() <= 1  # tiled == untiled


def test_its_descriptor_is_what_the_engine_reads(tiny):
    model = load_model(str(tiny[2]))
    assert model.info.scale == 2 and model.info.size.multiple_of == 2 and model.info.bytes_per_input_pixel == 512
    from upscale_cli.tiling import plan_tiling

    plan = plan_tiling(3000, 3000, 3, 2, model.info, free_memory_bytes=1 << 30)
    assert plan.tile and plan.tile % 2 == 0 and plan.margin == 2  # its size multiple and context


@pytest.mark.parametrize("settings,words", [({"scale": 5, "width": 8}, "scale"), ({"scale": 2, "width": 10**6}, "width"),
                                            ({"scale": 2, "depth": 3}, "unknown setting")])
def test_its_settings_are_checked_like_any_architecture(tiny, tmp_path, settings, words):
    import torch

    bad = tmp_path / "bad.safetensors"
    save_weights(torch.nn.Conv2d(3, 3, 1), bad, ARCH, settings)
    result = _run(f.make_rgb_png(tmp_path), "-m", bad, "-o", tmp_path / "out.png")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert words in result.output and len(result.stderr.strip().splitlines()) == 1


def test_benchmark_measures_it(tiny, tmp_path):
    hr = tmp_path / "hr"
    hr.mkdir()
    for k, size in enumerate([(48, 64), (40, 40)]):
        f.make_rgb_png(hr, f"{k}.png", size=size)
    result = _run("benchmark", hr, "-x", "2", "-m", "bicubic", "-m", tiny[2], "--no-lpips")
    assert result.exit_code == 0, result.output
    assert "tiny_x2.safetensors" in result.stdout and "failed" not in result.stdout


def test_restore_runs_its_x1_model(tiny, tmp_path):
    image = f.make_rgb_png(tmp_path, "in.png", size=(30, 41))
    result = _run("restore", image, "-m", tiny[1], "-o", tmp_path / "restored.png", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["status"] == "ok"
    assert Image.open(tmp_path / "restored.png").size == (30, 41)
    wrong = _run("restore", image, "-m", tiny[2], "-o", tmp_path / "x2.png")
    assert wrong.exit_code == 2 and "is a x2 model, not x1" in wrong.output
