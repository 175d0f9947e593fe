"""Community models through the CLI as a user runs them: `upscale photo.png -m FILE` equals a direct
forward of the same file by spandrel, for every family we claim, saved the way the published files
are (tests/community_factory.py); tiled equals untiled for conv models; a pickle payload never runs."""
from __future__ import annotations

import json
import os
from pathlib import Path

import community_factory as cf
import numpy as np
import pytest
import spandrel
import torch
from PIL import Image
from typer.testing import CliRunner

from upscale_cli.cli import app

runner = CliRunner()
SHARED_ESRGAN = Path(__file__).resolve().parents[2] / "shared" / "weights" / "community" / "realesr-general-x4v3.pth"


def _photo(folder: Path, size=(37, 29), mode: str = "RGB", name: str = "photo.png") -> Path:
    """A small image with structure in every channel (odd size on purpose)."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    planes = [0.5 + 0.35 * np.sin(0.37 * xx + 0.21 * yy + c) + 0.1 * np.cos(1.3 * xx * (c + 1) / 7) for c in range(4)]
    array = (np.clip(np.stack(planes, -1), 0, 1) * 255).round().astype(np.uint8)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    picture = array[..., 0] if channels == 1 else array[..., :channels]
    Image.fromarray(picture, mode).save(folder / name)
    return folder / name


def _direct(path: Path, image: Path) -> np.ndarray:
    """What spandrel itself gives for this file and this image, as 8-bit (H, W, C)."""
    descriptor = spandrel.ModelLoader().load_from_file(path).eval()
    pixels = np.asarray(Image.open(image)).astype(np.float32) / 255
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    with torch.no_grad():
        out = descriptor(torch.from_numpy(pixels).permute(2, 0, 1)[None].contiguous())
    return (out[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(int)


def _ours(path: Path, image: Path, out: Path, *extra: str) -> np.ndarray:
    result = runner.invoke(app, [str(image), "-m", str(path), "-o", str(out), "--overwrite", *extra])
    assert result.exit_code == 0, result.output
    array = np.asarray(Image.open(out)).astype(int)
    return array[..., None] if array.ndim == 2 else array


FAMILIES = {
    "esrgan-realesrgan-layout": (cf.realesrgan_x4plus, "RGB", "ESRGAN"),
    "esrgan-original-layout": (cf.esrgan_old_x2, "RGB", "ESRGAN"),
    "compact": (cf.compact, "RGB", "Compact"),
    "compact-grey": (lambda d: cf.compact(d, "grey.pth", channels=1), "L", "Compact"),
    "compact-rgba": (lambda d: cf.compact(d, "rgba.pth", channels=4), "RGBA", "Compact"),
    "swinir": (cf.swinir, "RGB", "SwinIR"),
    "hat": (cf.hat, "RGB", "HAT"),
    "span-safetensors": (cf.span, "RGB", "SPAN"),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_cli_equals_spandrels_own_forward(tmp_path, family):
    make, mode, arch = FAMILIES[family]
    path, _ = make(tmp_path)
    image = _photo(tmp_path, mode=mode)
    ours = _ours(path, image, tmp_path / "out.png", "--tile", "100000")
    direct = _direct(path, image)
    assert ours.shape == direct.shape, (ours.shape, direct.shape)
    assert int(np.abs(ours - direct).max()) <= 1, family
    listed = runner.invoke(app, [str(image), "-m", str(path), "-o", str(tmp_path / "j.png"), "--json", "--overwrite"])
    (row,) = map(json.loads, listed.stdout.splitlines())
    assert row["status"] == "ok" and row["scale"] == spandrel.ModelLoader().load_from_file(path).scale
    assert spandrel.ModelLoader().load_from_file(path).architecture.id == arch


@pytest.mark.parametrize("family,tile", [("compact", "40"), ("compact", "57"), ("span-safetensors", "88")])
def test_conv_community_models_tiled_equal_untiled(tmp_path, family, tile):
    make, mode, _ = FAMILIES[family]
    path, _ = make(tmp_path)
    image = _photo(tmp_path, size=(131, 97), mode=mode)
    untiled = _ours(path, image, tmp_path / "whole.png", "--tile", "100000")
    tiled = _ours(path, image, tmp_path / "tiled.png", "--tile", tile)
    assert int(np.abs(tiled - untiled).max()) <= 1


def test_mask_taking_inpainter_fills_only_the_mask(tmp_path):
    path, _ = cf.lama(tmp_path)
    image = _photo(tmp_path, size=(40, 32))
    mask = np.zeros((32, 40), np.uint8)
    mask[10:20, 12:25] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    result = runner.invoke(app, ["restore", str(image), "--mask", str(tmp_path / "mask.png"), "-m", str(path),
                                 "-o", str(tmp_path / "filled.png")])
    assert result.exit_code == 0, result.output
    before, after = np.asarray(Image.open(image)).astype(int), np.asarray(Image.open(tmp_path / "filled.png")).astype(int)
    outside = mask == 0
    assert np.array_equal(before[outside], after[outside])  # only the masked pixels may change
    descriptor = spandrel.ModelLoader().load_from_file(path).eval()
    x = torch.from_numpy(before.astype(np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        direct = descriptor(x, torch.from_numpy(mask > 0).float()[None, None])
    direct = (direct[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(int)
    assert int(np.abs(direct[~outside] - after[~outside]).max()) <= 1


@pytest.mark.skipif(not SHARED_ESRGAN.is_file(), reason="needs ../shared/weights/community (the published file)")
def test_the_published_realesrgan_compact_file_at_default_settings(tmp_path):
    """The real release file, a 500x480 photo, default settings (tiled or not as the defaults decide)."""
    image = _photo(tmp_path, size=(500, 480))
    ours = _ours(SHARED_ESRGAN, image, tmp_path / "out.png")
    direct = _direct(SHARED_ESRGAN, image)
    assert ours.shape == (1920, 2000, 3) and int(np.abs(ours - direct).max()) <= 1


def test_a_file_no_architecture_matches_is_one_line_naming_what_is_supported(tmp_path):
    torch.save({"params": {"weird.weight": torch.zeros(3, 3)}}, tmp_path / "odd.pth")
    image = _photo(tmp_path)
    result = runner.invoke(app, [str(image), "-m", str(tmp_path / "odd.pth")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "odd.pth" in line and "no known architecture" in line and "ESRGAN" in line and "SwinIR" in line


class _Payload:
    """Unpickling this runs code: it would create the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_a_pickle_payload_in_a_community_pth_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"
    path, model = cf.compact(tmp_path)
    torch.save({"params": model.state_dict(), "extra": _Payload(str(marker))}, tmp_path / "evil.pth")
    result = runner.invoke(app, [str(_photo(tmp_path)), "-m", str(tmp_path / "evil.pth")])
    assert result.exit_code == 1 and not marker.exists()
    assert "not plain tensors" in result.stderr and "weights_only" not in result.stderr


def test_an_x1_community_restorer_runs_under_restore_and_benchmark(tmp_path):
    path, _ = cf.compact(tmp_path, "1x_dejpeg.pth", scale=1)
    image = _photo(tmp_path, size=(45, 33))
    result = runner.invoke(app, ["restore", str(image), "-m", str(path), "-o", str(tmp_path / "r.png"), "--strength", "1"])
    assert result.exit_code == 0, result.output
    assert int(np.abs(np.asarray(Image.open(tmp_path / "r.png")).astype(int) - _direct(path, image)).max()) <= 1
    sets = tmp_path / "sets" / "Mine"
    sets.mkdir(parents=True)
    _photo(sets, size=(48, 40), name="a.png")
    bench = runner.invoke(app, ["benchmark", "--data-dir", str(tmp_path / "sets"), "--set", "Mine", "-x", "1",
                                "-m", str(path), "--degrade", "noise:10"])
    assert bench.exit_code == 0, bench.output
    assert "1x_dejpeg.pth" in bench.stdout
