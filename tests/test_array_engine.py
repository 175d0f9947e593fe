"""The engine's route without PyTorch (engine.Upscaler.array_model): interpolation's own NumPy call,
and the compiled runtime's cached model with its recorded descriptor.

Each is checked against the same engine forced through PyTorch (`TorchOnly`) over a grid of sizes
(1-pixel strips, odd sizes), channel layouts (grey, RGB, RGBA, grey+alpha) and scales, tiled and
untiled; and the whole command is run in a child process where `import torch` fails.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from upscale_cli.engine import UpscaleConfig, Upscaler
from upscale_cli.images import DecodedImage

ov = pytest.importorskip("openvino", reason="OpenVINO is not installed: no compiled model to run without torch")

STEP = 1 / 255
NO_TORCH = "import sys; sys.modules['torch'] = None\n"  # any `import torch` after this raises


class TorchOnly(Upscaler):
    """The same engine with its array route switched off: every pass runs in PyTorch."""

    def array_model(self, native_scale):
        return None


def picture(height: int, width: int, colour: int, alpha: bool, seed: int = 0) -> DecodedImage:
    rng = np.random.default_rng(seed)
    pixels = rng.random((1, colour, height, width), dtype=np.float32)
    planes = rng.random((1, 1, height, width), dtype=np.float32) if alpha else None
    if planes is not None:
        planes[..., : max(1, width // 3)] = 0.0  # a transparent band, whose colour the fill replaces
    return DecodedImage(pixels=pixels, alpha=planes)


def run(cls, image: DecodedImage, **config) -> tuple[DecodedImage, Upscaler]:
    upscaler = cls(UpscaleConfig(device="cpu", **config), progress=False)
    return upscaler.upscale_image(image), upscaler


def assert_close(a: DecodedImage, b: DecodedImage, bound: float) -> None:
    assert isinstance(a.pixels, np.ndarray) and a.pixels.dtype == np.float32
    assert a.pixels.shape == b.pixels.shape
    assert float(np.abs(a.pixels - np.asarray(b.pixels)).max()) <= bound
    assert (a.alpha is None) == (b.alpha is None)
    if a.alpha is not None:
        assert a.alpha.shape == b.alpha.shape and float(np.abs(a.alpha - np.asarray(b.alpha)).max()) <= bound


SIZES = [(1, 1), (1, 7), (9, 1), (13, 17)]
LAYOUTS = [(3, False), (1, False), (3, True), (1, True)]


@pytest.mark.parametrize("method", ["nearest", "bilinear", "bicubic", "lanczos"])
@pytest.mark.parametrize("scale", [2, 3, 1.5])
def test_interpolation_on_arrays_equals_torch(method, scale):
    """Every size, layout and scale: the NumPy route gives PyTorch's numbers (the same resize)."""
    for (height, width) in SIZES:
        for colour, alpha in LAYOUTS:
            image = picture(height, width, colour, alpha)
            out, upscaler = run(Upscaler, image, model=method, scale=scale)
            reference, _ = run(TorchOnly, image, model=method, scale=scale)
            assert upscaler.array_model(None) is not None and not upscaler._models  # no PyTorch model built
            assert_close(out, reference, 1e-6)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("UPSCALE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("size, tile", [((1, 150), 112), ((45, 150), 112), ((45, 67), 0), ((20, 20), 0)])
def test_cached_compiled_model_runs_on_arrays(tiny_unet, cache, size, tile):
    """A first run converts (PyTorch builds the model and records its descriptor); a second engine
    runs the cached shapes on arrays without building the model, within one 8-bit step of PyTorch,
    tiled or not, for grey, RGB and alpha images."""
    for colour, alpha in LAYOUTS:
        image = picture(*size, colour, alpha, seed=colour)
        first, _ = run(Upscaler, image, model=tiny_unet, runtime="openvino", tile=tile)
        out, upscaler = run(Upscaler, image, model=tiny_unet, runtime="openvino", tile=tile)
        reference, _ = run(TorchOnly, image, model=tiny_unet, runtime="torch", tile=tile)
        assert upscaler.array_model(2) is not None and not upscaler._models, "the second run built the model"
        assert_close(out, first, 1e-6)  # the cached shapes give the first run's numbers (to float rounding)
        assert_close(out, reference, STEP)
        assert not upscaler.notes, upscaler.notes  # 112 is this model's smallest tile: no note about it


def test_new_shape_on_the_array_route_builds_the_model_then(tiny_unet, cache):
    """A shape not in the cache (an image of another size) is converted then: PyTorch loads only
    for it, and the output is still right."""
    run(Upscaler, picture(16, 24, 3, False), model=tiny_unet, runtime="openvino")
    image = picture(21, 11, 3, False, seed=4)
    out, upscaler = run(Upscaler, image, model=tiny_unet, runtime="openvino")
    reference, _ = run(TorchOnly, image, model=tiny_unet, runtime="torch")
    assert upscaler.array_model(2) is not None and upscaler._models  # built for the new shape's conversion
    assert_close(out, reference, STEP)


def test_route_rules(tiny_unet, cache):
    """No array route where PyTorch must run: --runtime torch, --half, --ensemble, a GPU device,
    nothing recorded yet; a damaged descriptor reads as none (the model is built again)."""
    run(Upscaler, picture(8, 8, 3, False), model=tiny_unet, runtime="openvino")
    def route(**config):
        return Upscaler(UpscaleConfig(model=tiny_unet, **config), progress=False).array_model(2)

    assert route(device="cpu", runtime="openvino") is not None
    assert route(device="cpu", runtime="auto") is not None
    for config in (dict(runtime="torch"), dict(runtime="openvino", half=True), dict(runtime="openvino", ensemble=True)):
        assert route(device="cpu", **config) is None, config
    assert route(device="cuda", runtime="openvino") is None
    for record in (cache / "compiled").glob("*.descriptor.json"):
        record.write_text(json.dumps({"source": "someone else's", "kind": "FixedScale", "fields": {}}))
    assert route(device="cpu", runtime="openvino") is None


def _child(code: str, tmp: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "UPSCALE_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-c", NO_TORCH + code], capture_output=True, text=True, timeout=300,
                          env=env, cwd=tmp)


def _cli(args: list[str]) -> str:
    return f"from upscale_cli.cli import main\nsys.argv = {['upscale', *args]!r}\nmain()\n"


def _folder(tmp_path: Path) -> Path:
    from image_factory import make_grey_alpha_png, make_grey_png, make_rgb_png, make_rgba_png

    folder = tmp_path / "in"
    folder.mkdir()
    make_rgb_png(folder, "rgb.png", size=(13, 9))
    make_rgba_png(folder, "rgba.png")
    make_grey_png(folder, "grey.png", size=(7, 1))
    make_grey_alpha_png(folder, "ga.png", size=(1, 5))
    return folder


def _same_outputs(a: Path, b: Path, bound: int) -> None:
    from PIL import Image

    names = sorted(p.name for p in a.iterdir())
    assert names and names == sorted(p.name for p in b.iterdir())
    for name in names:
        x, y = (np.asarray(Image.open(folder / name)).astype(int) for folder in (a, b))
        assert x.shape == y.shape and int(np.abs(x - y).max()) <= bound, name


@pytest.mark.parametrize("method", ["nearest", "bicubic"])
def test_interpolation_command_needs_no_torch(tmp_path, cache, method):
    """The whole command in a child where torch cannot be imported writes what this process writes."""
    from typer.testing import CliRunner

    from upscale_cli.cli import app

    folder = _folder(tmp_path)
    done = _child(_cli([str(folder), "-x", "3", "-m", method, "-o", str(tmp_path / "child"), "-q"]), tmp_path, cache)
    assert done.returncode == 0, done.stderr[-2000:]
    result = CliRunner().invoke(app, [str(folder), "-x", "3", "-m", method, "-o", str(tmp_path / "here"), "-q"])
    assert result.exit_code == 0, result.output
    _same_outputs(tmp_path / "child", tmp_path / "here", 0)


def test_cached_compiled_command_needs_no_torch(tiny_unet, tmp_path, cache):
    """Once a run has converted the shapes, the next one (a fresh process) runs without torch and
    writes what the first wrote."""
    folder = _folder(tmp_path)

    def args(out: str) -> list[str]:
        return [str(folder), "-m", tiny_unet, "--runtime", "openvino", "-o", str(tmp_path / out), "-q"]

    first = subprocess.run([sys.executable, "-c", "import sys\n" + _cli(args("first"))], capture_output=True,
                           text=True, timeout=300, env={**os.environ, "UPSCALE_CACHE_DIR": str(cache)})
    assert first.returncode == 0, first.stderr[-2000:]
    second = _child(_cli(args("second")), tmp_path, cache)
    assert second.returncode == 0, second.stderr[-2000:]
    _same_outputs(tmp_path / "first", tmp_path / "second", 0)
