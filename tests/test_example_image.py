"""The bundled example (examples/sample.png) is what scripts/make_example_image.py draws, and the
README's first command turns it into a picture that beats bicubic against the scene's ground truth
with no bright halo along its edges.

The example is drawn at 4x and reduced with an antialiased bicubic, as a photo is band-limited;
its ground truth is that 4x drawing, so an x4 upscale of it can be measured.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from upscale_cli.cli import app
from upscale_cli.metrics import psnr

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "sample.png"
HALO_LEVELS = 32  # 8-bit levels beyond the ground truth's local range that count as a halo pixel
HALO_WINDOW = 9  # the local range is taken over this square of ground-truth pixels
MAX_HALO_FRACTION = 0.0025  # of output pixels; measured: unet 0.12%, lanczos 0.003%, bicubic 0
MIN_GAIN_DB = 1.5  # the default model's PSNR gain over bicubic against the ground truth


def _drawing():
    spec = importlib.util.spec_from_file_location("make_example_image", ROOT / "scripts" / "make_example_image.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _local_range(image: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel max and min over a window x window square (edges padded by replication)."""
    pad = window // 2
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    h, w = image.shape[:2]
    views = [padded[dy:dy + h, dx:dx + w] for dy in range(window) for dx in range(window)]
    return np.max(views, axis=0), np.min(views, axis=0)


def _halo_fraction(output: np.ndarray, truth: np.ndarray) -> float:
    high, low = _local_range(truth, HALO_WINDOW)
    beyond = np.maximum(output - high, 0) + np.maximum(low - output, 0)
    return float(np.mean(beyond.max(axis=-1) > HALO_LEVELS))


def test_committed_example_is_the_script_drawing():
    drawn = np.asarray(_drawing().draw(), np.int16)
    committed = np.asarray(Image.open(SAMPLE).convert("RGB"), np.int16)
    assert committed.shape == drawn.shape == (120, 160, 3)
    # font rasterising may differ by a level between FreeType builds; the scene may not
    assert np.abs(committed - drawn).mean() < 0.5


@pytest.mark.parametrize("model", ["unet", "bicubic"])
def test_readme_first_command_on_the_example(tmp_path, model):
    truth = np.asarray(_drawing().draw_sharp().convert("RGB"), np.float64)
    outputs = {}
    for name in {model, "bicubic"}:
        out = tmp_path / f"{name}.png"
        result = CliRunner().invoke(app, [str(SAMPLE), "-x", "4", "-m", name, "-o", str(out)])
        assert result.exit_code == 0, result.output
        outputs[name] = np.asarray(Image.open(out).convert("RGB"), np.float64)
        assert outputs[name].shape == truth.shape == (480, 640, 3)
    assert _halo_fraction(outputs[model], truth) < MAX_HALO_FRACTION
    if model != "bicubic":
        assert psnr(outputs[model], truth) > psnr(outputs["bicubic"], truth) + MIN_GAIN_DB


def test_halo_measure_sees_a_halo():
    """The measure is not blind: a bright 1-pixel line along an edge counts."""
    truth = np.zeros((40, 40, 3))
    truth[:, 20:] = 200.0
    haloed = truth.copy()
    haloed[:, 19] = 255.0  # bright line on the dark side of the edge, where the window sees no 255
    haloed[:, 10] = 60.0  # and a ring far from the edge
    assert _halo_fraction(haloed, truth) == pytest.approx(2 / 40)
    assert _halo_fraction(truth, truth) == 0.0
