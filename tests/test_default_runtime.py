"""The command's default runtime, as a user without settings gets it (the suite's conftest sets
UPSCALE_RUNTIME=torch for speed; these tests take it away)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from upscale_cli.cli import app
from upscale_cli.choices import DEFAULT_RUNTIME

pytest.importorskip("openvino", reason="OpenVINO is not installed: the default runs PyTorch")


def test_default_is_auto_and_a_folder_of_one_size_runs_compiled_within_a_step(tmp_path, monkeypatch):
    """Three same-size photos with no option: the second converts the shape, the third runs it
    compiled; every output within 1/255 of --runtime torch, and the next run loads the cache."""
    from upscale_cli import compiled

    monkeypatch.delenv("UPSCALE_RUNTIME", raising=False)
    monkeypatch.setenv("UPSCALE_CACHE_DIR", str(tmp_path / "cache"))
    assert DEFAULT_RUNTIME == "auto"
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(folder / f"p{k}.png")
    runner = CliRunner()
    before = compiled.CompiledRunner.conversions
    for out, extra in (("auto", []), ("torch", ["--runtime", "torch"]), ("again", [])):
        result = runner.invoke(app, [str(folder), "-x", "2", "-o", str(tmp_path / out), "-q", *extra])
        assert result.exit_code == 0, result.output
    assert compiled.CompiledRunner.conversions == before + 1  # one shape, converted once, then loaded
    for k in range(3):
        a, b, c = (np.asarray(Image.open(tmp_path / o / f"p{k}.png")).astype(int) for o in ("auto", "torch", "again"))
        assert np.abs(a - b).max() <= 1 and np.abs(c - b).max() <= 1


@pytest.mark.parametrize("value", ["Torch", "tensorrt", "open vino"])
def test_a_bad_upscale_runtime_is_one_usage_line(tmp_path, monkeypatch, value):
    monkeypatch.setenv("UPSCALE_RUNTIME", value)
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    result = CliRunner().invoke(app, [str(tmp_path / "a.png"), "-m", "nearest", "-o", str(tmp_path / "b.png")])
    assert result.exit_code == 2 and not (tmp_path / "b.png").exists()
    assert len(result.stderr.strip().splitlines()) == 1 and "--runtime" in result.stderr
