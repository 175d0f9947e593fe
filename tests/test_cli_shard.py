"""`upscale --shard K/N` and `--png-compression` through the real CLI: N runs over the same folder
write every output exactly once, each with its own --json rows; a rerun skips what exists."""
from __future__ import annotations

import json
from pathlib import Path

import image_factory as f
from typer.testing import CliRunner

from upscale_cli.cli import app

runner = CliRunner()


def _folder(tmp_path: Path, count: int = 12) -> Path:
    folder = tmp_path / "in"
    for i in range(count):
        sub = folder / f"d{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        f.make_rgb_png(sub, f"img{i:02d}.png")
    return folder


def _rows(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_shards_write_every_output_once(tmp_path):
    folder, out = _folder(tmp_path), tmp_path / "out"
    seen = []
    for k in range(3):
        result = runner.invoke(app, [str(folder), "-r", "-x", "2", "-m", "nearest", "-o", str(out), "--json",
                                     "--shard", f"{k}/3"])
        assert result.exit_code == 0, result.output
        rows = _rows(result)
        assert all(r["status"] == "ok" for r in rows)
        seen += [Path(r["input"]).relative_to(folder).as_posix() for r in rows]
    everything = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    assert sorted(seen) == everything and len(seen) == len(set(seen))
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == everything
    again = runner.invoke(app, [str(folder), "-r", "-x", "2", "-m", "nearest", "-o", str(out), "--json",
                                "--shard", "1/3"])
    assert again.exit_code == 0 and {r["status"] for r in _rows(again)} == {"skipped"}  # reruns are safe


def test_bad_shard_and_png_compression_are_usage_errors(tmp_path):
    folder = _folder(tmp_path, 1)
    for option in (["--shard", "3/3"], ["--shard", "half"], ["--png-compression", "10"]):
        result = runner.invoke(app, [str(folder), "-r", "-m", "nearest", *option])
        assert result.exit_code == 2, (option, result.output)
        assert option[0] in result.output


def test_png_compression_changes_size_only(tmp_path):
    folder = _folder(tmp_path, 1)
    sizes = {}
    for level in ("0", "9"):
        out = tmp_path / f"out{level}.png"
        result = runner.invoke(app, [str(folder / "d0" / "img00.png"), "-x", "4", "-m", "bicubic",
                                     "--png-compression", level, "-o", str(out)])
        assert result.exit_code == 0, result.output
        sizes[level] = out.stat().st_size
    assert sizes["9"] < sizes["0"]


def test_restore_takes_the_same_shards(tmp_path):
    folder, out = _folder(tmp_path, 6), tmp_path / "out"
    seen = []
    for k in range(2):
        result = runner.invoke(app, ["restore", str(folder), "-r", "-m", "opencv-nlmeans", "-o", str(out), "--json",
                                     "--shard", f"{k}/2", "--png-compression", "9"])
        assert result.exit_code == 0, result.output
        seen += [Path(r["input"]).relative_to(folder).as_posix() for r in _rows(result)]
    everything = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    assert sorted(seen) == everything and len(seen) == len(set(seen))
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == everything
