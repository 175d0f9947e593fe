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


# ---------------------------------------------------------------- damaged community state dicts (issue 30.9)


def _with(change):
    """A maker: the Compact model's state dict changed by `change(state)`, saved as Real-ESRGAN does."""
    def make(folder: Path) -> Path:
        _, model = cf.compact(folder, "base.pth")
        state = {k: v.clone() for k, v in model.state_dict().items()}
        change(state)
        torch.save({"params": state}, folder / "damaged.pth")
        return folder / "damaged.pth"
    return make


def _retyped(dtype):
    return _with(lambda s: s.__setitem__("body.0.weight", (s["body.0.weight"] * 10).to(dtype)))


def _raw_pickle(folder: Path) -> Path:
    import pickle

    with open(folder / "damaged.pth", "wb") as file:  # pickle.dump, not torch.save: no checkpoint around it
        pickle.dump({"params": {"body.0.weight": [1.0, 2.0]}}, file, protocol=4)
    return folder / "damaged.pth"


def _fp8_safetensors(folder: Path) -> Path:
    from safetensors.torch import save_file

    _, model = cf.compact(folder, "base.pth")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["body.0.weight"] = state["body.0.weight"].to(torch.float8_e4m3fn)
    save_file(state, str(folder / "damaged.safetensors"))
    return folder / "damaged.safetensors"


def _no_output_channels(state):
    state["body.14.weight"], state["body.14.bias"] = torch.zeros(0, 8, 3, 3), torch.zeros(0)


DAMAGED = {  # case: (maker, fragments the one error line must hold)
    "fp8": (_retyped(torch.float8_e4m3fn), ["tensor 'body.0.weight' is float8_e4m3fn", "float16, bfloat16, float32 or float64"]),
    "fp8-safetensors": (_fp8_safetensors, ["tensor 'body.0.weight' is float8_e4m3fn"]),
    "int64": (_retyped(torch.int64), ["tensor 'body.0.weight' is int64", "float16, bfloat16, float32 or float64"]),
    "bool": (_retyped(torch.bool), ["tensor 'body.0.weight' is bool"]),
    "complex": (_retyped(torch.complex64), ["tensor 'body.0.weight' is complex64"]),
    "no-input-channels": (_with(lambda s: s.__setitem__("body.0.weight", torch.zeros(8, 0, 3, 3))),
                          ["'body.0.weight' has shape (8, 0, 3, 3), which holds nothing"]),
    "no-output-channels": (_with(_no_output_channels), ["'body.14.weight' has shape (0, 8, 3, 3), which holds nothing"]),
    "key-not-text": (_with(lambda s: s.__setitem__(5, torch.zeros(3))), ["a tensor is keyed by 5, not by a name"]),
    "raw-protocol-4-pickle": (_raw_pickle, ["not a PyTorch checkpoint"]),
}


@pytest.mark.parametrize("case", DAMAGED)
def test_a_damaged_community_file_is_one_line_and_no_output(tmp_path, case):
    """fp8, integer, bool, complex weights, a conv with no channels, a key that is not a name and a
    bare pickle: each was a traceback, a warning before the line, or (int64, bool, complex) a model
    run with weights that were not the file's, exit 0."""
    import warnings

    make, fragments = DAMAGED[case]
    path = make(tmp_path)
    out = tmp_path / "out.png"
    with warnings.catch_warnings(record=True) as caught:  # pytest would otherwise swallow what a user sees
        warnings.simplefilter("always")
        result = runner.invoke(app, [str(_photo(tmp_path)), "-m", str(path), "-o", str(out)])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert result.stdout == "" and not out.exists()
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_every_accepted_float_dtype_still_runs(tmp_path, dtype):
    _, model = cf.compact(tmp_path, "base.pth")
    torch.save({"params": {k: v.to(dtype) for k, v in model.state_dict().items()}}, tmp_path / "typed.pth")
    result = runner.invoke(app, [str(_photo(tmp_path)), "-m", str(tmp_path / "typed.pth"), "-o", str(tmp_path / "o.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o.png").is_file()


def test_integer_buffers_of_the_architecture_still_load(tmp_path):
    """SwinIR's relative_position_index is int64 in every published file: a buffer the model has, not a weight."""
    path, model = cf.swinir(tmp_path)
    assert any(not v.is_floating_point() for v in model.state_dict().values())
    from upscale_cli.loader import model_from_weights

    assert model_from_weights(path).info.scale == 2
