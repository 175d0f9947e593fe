"""`upscale fit-single` as a command of the batch runner (#27): several inputs, folders and globs,
existing outputs skipped unless --overwrite, inputs never replaced, --json rows, --shard, exit 1
if any file failed (after the others), --save-model for one input, and --from-model through the
checked loader. Tiny images and a tiny network (--steps 5 --hidden 8) keep it fast."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from image_factory import camera_exif, gradient_rgb, make_rgb_png
from PIL import Image
from typer.testing import CliRunner

from upscale_cli.report import FIELDS

FAST = ["--steps", "5", "--hidden", "8", "--depth", "1"]


def _cli(*args):
    from upscale_cli.cli import app

    return CliRunner().invoke(app, ["fit-single", *map(str, args)])


def _rows(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture
def tiny(tmp_path) -> Path:
    return make_rgb_png(tmp_path, "tiny.png", size=(12, 8))


def test_an_existing_unrelated_output_is_skipped_byte_identical_and_overwrite_replaces_it(tmp_path, tiny):
    # the recipe: before, `fit-single tiny.png -o precious.png` replaced precious.png, exit 0
    precious = tmp_path / "precious.png"
    precious.write_bytes(b"precious data")
    result = _cli(tiny, "-o", precious, *FAST)
    assert result.exit_code == 0, result.stderr
    assert precious.read_bytes() == b"precious data"
    assert "skipped: output exists" in result.stderr and "--overwrite" in result.stderr
    result = _cli(tiny, "-o", precious, "--overwrite", *FAST)
    assert result.exit_code == 0, result.stderr
    assert Image.open(precious).size == (48, 32)


def test_a_folder_with_a_corrupt_image_runs_the_others_and_exits_1(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "c.png"):
        make_rgb_png(folder, name, size=(10, 6))
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"broken" * 10)
    result = _cli(folder, "-o", tmp_path / "out", *FAST)
    assert result.exit_code == 1, result.stderr
    assert "2 done, 0 skipped, 1 failed" in result.stderr and "b.png" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]
    assert Image.open(tmp_path / "out" / "a.png").size == (40, 24)


def test_json_rows_have_report_rows_keys_and_the_fit_in_notes(tmp_path):
    for name in ("a.png", "b.png"):
        make_rgb_png(tmp_path, name, size=(10, 6))
    result = _cli(tmp_path / "*.png", "--size", 20, "--json", *FAST)
    assert result.exit_code == 0, result.stderr
    rows = _rows(result)
    assert [list(row) for row in rows] == [list(FIELDS)] * 2
    for row, name in zip(rows, ("a", "b")):
        assert row["status"] == "ok" and row["model"] == "fit-single" and row["size"] == [20, 12]
        assert row["output"] == str(tmp_path / f"{name}_fit20x12.png") and Path(row["output"]).is_file()
        assert row["passes"] == [] and row["scale"] == 2.0
        assert any("fitted in 5 steps" in note and "at the input's pixels" in note for note in row["notes"])
    again = _rows(_cli(tmp_path, "--size", 20, "--json", *FAST))  # the folder again: nothing is fitted twice
    assert [r["status"] for r in again] == ["skipped"] * 4, again  # a.png, its earlier output, b.png, its
    assert all(list(r) == list(FIELDS) for r in again)


def test_rerun_over_a_folder_skips_earlier_outputs_and_existing_ones(tmp_path):
    make_rgb_png(tmp_path, "a.png", size=(10, 6))
    assert _cli(tmp_path, *FAST).exit_code == 0
    assert (tmp_path / "a_fit40x24.png").is_file()
    rows = _rows(_cli(tmp_path, "--json", *FAST))
    assert sorted((Path(r["input"]).name, r["status"]) for r in rows) == [("a.png", "skipped"),
                                                                          ("a_fit40x24.png", "skipped")]


def test_shards_cover_every_file_once(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    names = [f"img{k}.png" for k in range(5)]
    for name in names:
        make_rgb_png(folder, name, size=(6, 4))
    seen = []
    for part in ("0/2", "1/2"):
        result = _cli(folder, "-o", tmp_path / "out", "--shard", part, "--json", *FAST)
        assert result.exit_code == 0, result.stderr
        seen += [Path(r["input"]).name for r in _rows(result)]
    assert sorted(seen) == names
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == names


@pytest.mark.parametrize("link", ["same path", "symbolic link", "hard link"])
def test_the_input_is_never_replaced(tmp_path, tiny, link):
    original = tiny.read_bytes()
    target = {"same path": tiny, "symbolic link": tmp_path / "sym.png", "hard link": tmp_path / "hard.png"}[link]
    if link == "symbolic link":
        target.symlink_to(tiny)
    elif link == "hard link":
        os.link(tiny, target)
    for extra in ([], ["--overwrite"]):
        result = _cli(tiny, "-o", target, *extra, *FAST)
        assert result.exit_code == 1, result.stderr
        assert "would overwrite the input" in result.stderr and "Traceback" not in result.stderr
        assert tiny.read_bytes() == original


def test_an_exif_rotated_input_is_named_by_its_upright_size(tmp_path):
    path = tmp_path / "turned.jpg"
    Image.fromarray(gradient_rgb((12, 8))).save(path, exif=camera_exif(6))  # stored 12x8, upright 8x12
    result = _cli(path, *FAST)
    assert result.exit_code == 0, result.stderr
    out = tmp_path / "turned_fit32x48.png"
    assert Image.open(out).size == (32, 48)


def test_an_image_too_large_to_fit_fails_before_it_is_decoded_and_the_others_run(tmp_path, monkeypatch):
    from upscale_cli.fit_single import sizes

    monkeypatch.setattr(sizes, "MAX_FIT_PIXELS", 100)
    big, small = make_rgb_png(tmp_path, "big.png", size=(20, 10)), make_rgb_png(tmp_path, "small.png", size=(8, 6))
    result = _cli(big, small, *FAST)
    assert result.exit_code == 1
    assert "big.png: too large to fit (20 x 10)" in result.stderr and "1 done, 0 skipped, 1 failed" in result.stderr


def test_save_model_takes_one_input_and_an_existing_model_file_is_kept(tmp_path, tiny):
    other = make_rgb_png(tmp_path, "other.png", size=(6, 4))
    model = tmp_path / "m.safetensors"
    result = _cli(tiny, other, "--save-model", model, *FAST)
    assert result.exit_code == 2 and "--save-model saves one fitted network" in result.stderr
    assert not model.exists() and not list(tmp_path.glob("*_fit*"))
    result = _cli(tiny, "--save-model", model, *FAST)
    assert result.exit_code == 0 and model.is_file(), result.stderr
    saved = model.read_bytes()
    result = _cli(tiny, "--save-model", model, "-o", tmp_path / "new.png", *FAST)  # the model file exists
    assert "skipped: output exists" in result.stderr and model.read_bytes() == saved
    assert not (tmp_path / "new.png").exists()
    result = _cli("--from-model", model, "--size", 24, "--json")
    assert result.exit_code == 0, result.stderr
    (row,) = _rows(result)
    assert list(row) == list(FIELDS) and row["size"] == [24, 16] and row["output"] == str(tmp_path / "m_fit24x16.png")
    again = _cli("--from-model", model, "--size", 24)
    assert again.exit_code == 0 and "skipped: output exists" in again.stderr


def _crafted_model(path: Path, **mlp_changes) -> Path:
    from safetensors.torch import save_file

    mlp = {"channels": 3, "encoding": "siren", "hidden": 8, "depth": 1, "features": 8, "freq_scale": 0.1,
           "long_side": 12, "extent": [1.0, 1.0], "seed": 0, **mlp_changes}
    settings = {"encoding": "siren", "steps": 5, "mlp": mlp, "source": {"height": 12, "width": 12}}
    save_file({"mlp.head.weight": torch.zeros(3, 8)}, str(path),
              metadata={"arch": "coord-mlp", "settings": json.dumps(settings)})
    return path


CRAFTED = [  # settings a file claims, words of the refusal
    ({"hidden": 10**9}, "'mlp.hidden' of coord-mlp must be between 1 and 1024"),
    ({"depth": 10**6}, "'mlp.depth' of coord-mlp must be between 1 and 32"),
    ({"features": 10**9, "encoding": "fourier"}, "'mlp.features'"),
    ({"channels": 10**6}, "'mlp.channels'"),
    ({"hidden": 8}, "weights do not fit the coord-mlp architecture"),  # in bounds, but the tensors are not its
]


@pytest.mark.parametrize("changes,words", CRAFTED)
def test_a_crafted_model_file_ends_in_one_line_through_the_checked_loader(tmp_path, changes, words):
    # before: CoordMLP(**metadata) built the network first (hidden 10**9: an 8 GB allocation, "can't
    # allocate memory" under a 4 GB ulimit); now the settings are refused on the meta device
    result = _cli("--from-model", _crafted_model(tmp_path / "crafted.safetensors", **changes), "--size", 32)
    assert result.exit_code == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines
    assert not list(tmp_path.glob("*.png"))


def test_a_model_of_another_architecture_is_not_a_fit_single_model(tmp_path):
    from upscale_cli.loader import save_weights
    from upscale_cli.models import build_model

    path = tmp_path / "unfitted.safetensors"
    save_weights(build_model("coord-mlp", steps=5, hidden=8), path, "coord-mlp", {"steps": 5, "hidden": 8})
    result = _cli("--from-model", path, "--size", 16)
    assert result.exit_code == 1 and "not a fit-single model" in result.stderr


def test_stdin_needs_an_output_file_and_stdout_is_refused(tmp_path, tiny):
    assert "writes a file, not stdout" in _cli("-", *FAST).stderr
    result = CliRunner().invoke(
        __import__("upscale_cli.cli", fromlist=["app"]).app,
        ["fit-single", "-", "-o", str(tmp_path / "from_stdin.png"), *FAST], input=tiny.read_bytes())
    assert result.exit_code == 0, result.stderr
    assert Image.open(tmp_path / "from_stdin.png").size == (48, 32)
