"""Sampling (`upscale FOLDER -m pixel-recursive --samples N`) driven by the one batch runner: --shard
splits the inputs as for every upscale, a file whose answers cannot all be written leaves none of
them while the others run, and the batch's count is of files, not answers. A random-initialised
pixelrec weights file (test_pixelrec_cli's fixture), tiny inputs."""
from __future__ import annotations

import json
from pathlib import Path

from test_pixelrec_cli import run, weights, write_png  # noqa: F401  (weights: the fixture)

from upscale_cli import sampling


def _inputs(tmp_path: Path, count: int) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(count):
        write_png(folder / f"i{k}.png", 3, 2 + k % 2, seed=k)
    return folder


def _rows(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_shards_sample_every_input_once_as_an_unsharded_run(tmp_path, weights):  # noqa: F811
    folder = _inputs(tmp_path, 5)
    args = [folder, "-m", weights, "--samples", "2", "--seed", "7", "--json"]
    whole = run(*args, "-o", tmp_path / "whole")
    assert whole.exit_code == 0, whole.output
    seen = []
    for k in range(2):
        part = run(*args, "-o", tmp_path / "parts", "--shard", f"{k}/2")
        assert part.exit_code == 0, part.output
        rows = _rows(part)
        assert all(r["status"] == "ok" for r in rows) and len(rows) % 2 == 0
        seen += [Path(r["input"]).name for r in rows[::2]]  # two answers, two rows, per input
    assert sorted(seen) == [f"i{k}.png" for k in range(5)]  # every input once
    names = sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert len(names) == 10 and sorted(p.name for p in (tmp_path / "parts").iterdir()) == names
    for name in names:  # the same seed for every file: a shard draws what the whole run draws
        assert (tmp_path / "parts" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


def test_an_answer_that_cannot_be_written_leaves_none_of_its_file(tmp_path, weights):  # noqa: F811
    """a.png's second answer's name is a folder: its first answer is not left behind, b.png still
    runs, and the count is of files."""
    a, b = write_png(tmp_path / "a.png", 2, 2, seed=1), write_png(tmp_path / "b.png", 2, 3, seed=2)
    (tmp_path / "a_x4_s2.png").mkdir()
    result = run(a, b, "-m", weights, "--samples", "2", "--seed", "1", "--overwrite")
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "a_x4_s2.png" in errors[0], result.output
    assert not (tmp_path / "a_x4_s1.png").exists() and (tmp_path / "a_x4_s2.png").is_dir()
    assert (tmp_path / "b_x4_s1.png").is_file() and (tmp_path / "b_x4_s2.png").is_file()
    assert result.output.strip().splitlines()[-1] == "1 done, 0 skipped, 1 failed"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".upscale-part")]


def test_sampling_that_fails_midway_fails_its_file_alone(tmp_path, weights, monkeypatch):  # noqa: F811
    """The second file's sampling breaks after some rows: no answer of it, the others written whole."""
    folder = _inputs(tmp_path, 3)
    draw, calls = sampling.draw_samples, []

    def breaks_second(model, pixels, config, on_row=None):
        calls.append(1)
        if len(calls) == 2:
            if on_row is not None:
                on_row(1, 8)
            raise sampling.UpscaleError("the model broke midway")
        return draw(model, pixels, config, on_row)

    monkeypatch.setattr(sampling, "draw_samples", breaks_second)
    result = run(folder, "-m", weights, "--samples", "2", "--seed", "1", "-o", tmp_path / "out", "--json")
    assert result.exit_code == 1
    rows = _rows(result)
    assert [(Path(r["input"]).name, r["status"]) for r in rows] == [
        ("i0.png", "ok"), ("i0.png", "ok"), ("i1.png", "failed"), ("i2.png", "ok"), ("i2.png", "ok")]
    assert "the model broke midway" in rows[2]["error"] and "i1.png" in rows[2]["error"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["i0_s1.png", "i0_s2.png", "i2_s1.png", "i2_s2.png"]


def test_plain_lines_say_each_answer_and_the_count_is_of_files(tmp_path, weights):  # noqa: F811
    folder = _inputs(tmp_path, 2)
    result = run(folder, "-m", weights, "--samples", "3", "--temperature", "0.7", "--seed", "9")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 7 and lines[-1] == "2 done, 0 skipped, 0 failed", lines
    for k, line in enumerate(lines[:3], 1):
        assert f"i0.png -> {folder / f'i0_x4_s{k}.png'} (" in line
        assert line.endswith(f"; note: answer {k} of 3: temperature 0.7, seed 9)"), line


def test_a_rerun_that_skips_answers_removes_their_dead_leftovers(tmp_path, weights):  # noqa: F811
    """A killed --overwrite run left a temp file beside an answer; the rerun skips the file (its
    answers exist) and still tidies what the killed run left beside each answer."""
    from test_images_leftovers import dead_pid, hidden, temp_name

    tiny = write_png(tmp_path / "tiny.png", 2, 2)
    for name in ("tiny_x4_s1.png", "tiny_x4_s2.png"):  # the answers the killed run was replacing
        (tmp_path / name).write_bytes(b"an earlier answer")
        (tmp_path / temp_name(name, dead_pid())).write_bytes(b"partial")
    result = run(tiny, "-m", weights, "--samples", "2", "--seed", "1")
    assert result.exit_code == 0 and "output exists" in result.output, result.output
    assert hidden(tmp_path) == []
