"""pipeline.run_jobs: decoding ahead and writing behind the model, in input order, each file alone,
bounded memory, and Ctrl-C leaving whole files only. Real files on disk, no model (a resize)."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from upscale_cli import pipeline
from upscale_cli.batch import WriteOptions, expand_inputs, plan_jobs
from upscale_cli.pipeline import run_jobs
from upscale_cli.errors import UsageError


def _folder(tmp_path: Path, count: int, size=(12, 8)) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"f{i:02d}.png")
    return folder


def _double(_, image):
    """Each pixel repeated (nearest x2) on the image's NumPy arrays: the test's own 'model'."""
    return image.replace(pixels=image.pixels.repeat(2, axis=2).repeat(2, axis=3))


def _jobs(tmp_path: Path, folder: Path):
    return plan_jobs(expand_inputs([str(folder)]), str(tmp_path / "out"), "x2")


def _run(jobs, convert=_double, options=WriteOptions()):
    return list(run_jobs(jobs, convert, options, lambda: b"", lambda data: None))


def test_results_in_input_order_while_later_writes_finish_first(tmp_path, monkeypatch):
    folder = _folder(tmp_path, 6)
    jobs = _jobs(tmp_path, folder)
    write = pipeline._write_result

    def slow_first(image, job, *args):
        if job.source.path.name == "f00.png":
            time.sleep(0.3)  # the first file's write ends after the others'
        return write(image, job, *args)  # its rename into place, when a group makes it durable

    monkeypatch.setattr(pipeline, "_write_result", slow_first)
    results = _run(jobs)
    assert [index for index, _ in results] == list(range(6))
    assert [Path(r.input).name for _, r in results] == [f"f{i:02d}.png" for i in range(6)]
    assert all(r.status == "ok" for _, r in results)
    for _, r in results:
        with Image.open(r.output) as im:
            assert im.size == (24, 16)


@pytest.mark.parametrize("held_pixels,most", [(pipeline.HELD_PIXELS, pipeline.BATCH_MAX + 1),
                                              (1, pipeline.READ_AHEAD + 1)])
def test_decoding_overlaps_the_model_and_stays_bounded(tmp_path, monkeypatch, held_pixels, most):
    """The next files are decoded while the model runs on one; small images wait up to BATCH_MAX,
    others (here: over a HELD_PIXELS of 1) never more than READ_AHEAD."""
    monkeypatch.setattr(pipeline, "HELD_PIXELS", held_pixels)
    folder = _folder(tmp_path, 12)
    jobs = _jobs(tmp_path, folder)
    read = pipeline._read_source
    lock, state = threading.Lock(), {"decoded": 0, "most": 0, "ahead_during_convert": 0}

    def counting_read(*args):
        image = read(*args)
        with lock:
            state["decoded"] += 1
            state["most"] = max(state["most"], state["decoded"])
        return image

    def convert(index, image):
        time.sleep(0.05)  # a model; the reader works meanwhile
        with lock:
            state["ahead_during_convert"] = max(state["ahead_during_convert"], state["decoded"] - 1)
            state["decoded"] -= 1
        return _double(index, image)

    monkeypatch.setattr(pipeline, "_read_source", counting_read)
    results = _run(jobs, convert)
    assert all(r.status == "ok" for _, r in results)
    assert state["ahead_during_convert"] >= 1  # decoding ran ahead of the model
    assert state["most"] <= most  # the one converting and those allowed to wait


def test_errors_stay_per_file(tmp_path):
    folder = _folder(tmp_path, 4)
    (folder / "f01.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    out = tmp_path / "out"
    out.mkdir()
    (out / "f02.png").mkdir()  # a folder where the output should go: that write fails
    jobs = plan_jobs(expand_inputs([str(folder)]), str(out), "x2", overwrite=True)

    def convert(index, image):
        if index == 3:
            raise RuntimeError("model broke")
        return _double(index, image)

    results = [r for _, r in _run(jobs, convert)]
    assert [r.status for r in results] == ["ok", "failed", "failed", "failed"]
    assert "corrupt" in results[1].error and "f01.png" in results[1].error
    assert "f02.png" in results[2].error
    assert "model broke" in results[3].error and "f03.png" in results[3].error


def test_ctrl_c_leaves_whole_files_only(tmp_path, monkeypatch):
    folder = _folder(tmp_path, 8)
    jobs = _jobs(tmp_path, folder)
    write = pipeline._write_result

    def slow_write(*args):
        time.sleep(0.1)  # writes are still in flight when the interruption comes
        return write(*args)

    def convert(index, image):
        if index == 4:
            raise KeyboardInterrupt
        return _double(index, image)

    monkeypatch.setattr(pipeline, "_write_result", slow_write)
    with pytest.raises(KeyboardInterrupt):
        _run(jobs, convert)
    out = tmp_path / "out"
    names = sorted(p.name for p in out.iterdir())
    assert all(not name.startswith(".") for name in names), names  # no temp file left
    assert set(names) <= {f"f{i:02d}.png" for i in range(4)}  # nothing after the interruption
    for name in names:
        with Image.open(out / name) as im:
            im.load()  # whole


def test_skipped_and_planned_failures_keep_their_place(tmp_path):
    folder = _folder(tmp_path, 3)
    (folder / "notes.txt").write_text("x")
    out = tmp_path / "out"
    out.mkdir()
    Image.new("RGB", (2, 2)).save(out / "f01.png")
    jobs = plan_jobs(expand_inputs([str(folder)]), str(out), "x2")
    results = [r for _, r in _run(jobs)]
    assert [(Path(r.input).name, r.status) for r in results] == [
        ("f00.png", "ok"), ("f01.png", "skipped"), ("f02.png", "ok"), ("notes.txt", "skipped")]


def test_png_compression_option(tmp_path):
    folder = _folder(tmp_path, 1, size=(64, 64))
    sizes = {}
    for level in (0, 9):
        jobs = plan_jobs(expand_inputs([str(folder)]), str(tmp_path / f"out{level}"), "x2")
        _run(jobs, options=WriteOptions(png_compression=level))
        sizes[level] = (tmp_path / f"out{level}" / "f00.png").stat().st_size
    assert sizes[9] < sizes[0]
    with pytest.raises(UsageError, match="png-compression"):
        WriteOptions(png_compression=10)


def test_small_images_of_one_size_go_through_the_model_together(tmp_path):
    """Runs of same-size small images are batched (up to BATCH_MAX), a different size or a skipped
    file ends a run, and a batch that fails is converted again one by one: errors stay per file."""
    folder = _folder(tmp_path, 11)
    Image.new("RGB", (20, 8)).save(folder / "f05.png")  # another size in the middle
    jobs = _jobs(tmp_path, folder)
    batches = []

    def convert_many(indices, images):
        batches.append(list(indices))
        if 9 in indices:
            raise RuntimeError("batch broke")  # f09 alone breaks the model
        return [_double(i, image) for i, image in zip(indices, images)]

    def convert(index, image):
        if index == 9:
            raise RuntimeError("f09 broke the model")
        return _double(index, image)

    results = list(run_jobs(jobs, convert, WriteOptions(), lambda: b"", lambda data: None, convert_many))
    assert batches == [[0, 1, 2, 3, 4], [6, 7, 8, 9, 10]]
    assert [i for i, _ in results] == list(range(11))
    assert [r.status for _, r in results] == ["ok"] * 9 + ["failed", "ok"]
    assert "f09 broke the model" in results[9][1].error
    with Image.open(results[5][1].output) as im:
        assert im.size == (40, 16)


def test_batched_outputs_equal_one_at_a_time(tmp_path):
    """Through the CLI: a folder of same-size images (batched) gives the files that one image at a
    time gives: exactly for interpolation, within one level for a network (float rounding)."""
    from typer.testing import CliRunner

    from upscale_cli.cli import app

    folder = _folder(tmp_path, 5, size=(24, 16))
    runner = CliRunner()
    for model, tolerance in (("bicubic", 0), ("unet", 1)):
        together = runner.invoke(app, [str(folder), "-x", "2", "-m", model, "-o", str(tmp_path / f"{model}-all"),
                                       "--json"])
        assert together.exit_code == 0, together.output
        rows = [json.loads(line) for line in together.stdout.splitlines()]
        assert [r["size"] for r in rows] == [[48, 32]] * 5 and all(r["status"] == "ok" for r in rows)
        for i in range(5):
            alone = tmp_path / f"{model}-{i}.png"
            result = runner.invoke(app, [str(folder / f"f{i:02d}.png"), "-x", "2", "-m", model, "-o", str(alone)])
            assert result.exit_code == 0, result.output
            a = np.asarray(Image.open(alone)).astype(int)
            b = np.asarray(Image.open(tmp_path / f"{model}-all" / f"f{i:02d}.png")).astype(int)
            assert np.abs(a - b).max() <= tolerance
