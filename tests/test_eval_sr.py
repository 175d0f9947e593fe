"""scripts/eval_sr.py ends as the CLI does: one `error: ...` line and exit 1 (data) or 2 (an unknown
model, a bad option), never a traceback; one weights file that fails does not stop the others.
Run as a subprocess on tmp set folders made here, and packaged weights (no download)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import image_factory as f

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "scripts" / "eval_sr.py"
MODEL = "upsampler"  # packaged weights, x8 by default: a 48 x 40 image is 6 x 5 pixels of LR


def _eval(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "UPSCALE_CACHE_DIR": str(tmp_path / "cache"),
           "UPSCALE_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120)


def _errors(proc: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def _set(root: Path, kind: str) -> None:
    """root/Set5 as `kind` leaves it: missing, empty, with a text file, with an image too small."""
    folder = root / "Set5"
    if kind == "missing":
        return
    folder.mkdir(parents=True)
    if kind == "text file":
        f.make_rgb_png(folder, "a.png", size=(48, 40))
        (folder / "notes.txt").write_text("not an image")
    if kind == "image too small":
        f.make_rgb_png(folder, "tiny.png", size=(16, 16))


@pytest.mark.parametrize("kind,words", [
    ("missing", "Set5: no such set folder (--root "),
    ("empty", "Set5: no images in the set folder"),
    ("text file", "notes.txt: not a readable image"),
    ("image too small", "tiny.png: too small for x8"),
])
def test_a_bad_set_folder_is_one_line_and_exit_1(tmp_path, kind, words):
    _set(tmp_path / "sets", kind)
    proc = _eval(tmp_path, MODEL, "--root", str(tmp_path / "sets"), "--sets", "Set5", "--json")
    assert proc.returncode == 1 and proc.stdout == ""
    (line,) = _errors(proc)
    assert words in line, line


def test_unknown_and_unscaled_models_are_one_line_each_and_the_others_run(tmp_path):
    folder = tmp_path / "sets" / "Set5"
    folder.mkdir(parents=True)
    f.make_rgb_png(folder, "a.png", size=(48, 40))
    proc = _eval(tmp_path, "no-such-model", "bicubic", MODEL, "--root", str(tmp_path / "sets"), "--sets", "Set5",
                 "--json")
    assert proc.returncode == 2
    unknown, unscaled = _errors(proc)
    assert unknown.startswith("error: unknown model 'no-such-model'") and "bicubic has no fixed scale" in unscaled
    (row,) = map(json.loads, proc.stdout.splitlines())
    assert row["weights"] == MODEL and row["set"] == "Set5" and row["images"] == 1 and row["psnr"] > 10


@pytest.mark.parametrize("args,words", [(["--threads", "0"], "--threads must be at least 1"),
                                        (["--sets", ","], "--sets names no set")])
def test_bad_options_exit_2(tmp_path, args, words):
    proc = _eval(tmp_path, MODEL, "--root", str(tmp_path), *args)
    assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
