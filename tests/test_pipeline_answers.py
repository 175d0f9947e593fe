"""The batch runner with a converter that gives several outputs per input (answers.Answers), as
sampling's does: each answer written to its planned name, a report row each (same index, in
order, an equal share of the time), and a file whose answers cannot all be written leaves none
of them behind while the other files still run. Real files, a converter defined here (no model)."""
from __future__ import annotations

import os
from pathlib import Path

import image_factory as f
import numpy as np
import pytest
from PIL import Image

from upscale_cli.answers import Answers
from upscale_cli.batch import WriteOptions, expand_inputs
from upscale_cli.cli.batch_run import BatchRun
from upscale_cli.cli.options import BatchOptions
from upscale_cli.pipeline import run_converted
from upscale_cli.report import RowDefaults
from upscale_cli.sampling import sample_paths

ANSWERS = 3


class Shades:
    """Each image doubled (nearest), as `count` answers k/8 brighter each; `fail_on` (a name) raises."""

    def __init__(self, count: int = ANSWERS, fail_on: str | None = None) -> None:
        self.count, self.fail_on, self.seen = count, fail_on, 0

    def upscale_image(self, image, on_tile=None):
        self.seen += 1
        if self.fail_on is not None and self.seen == 2:
            raise RuntimeError(f"{self.fail_on}: the converter broke")
        big = image.pixels.repeat(2, axis=2).repeat(2, axis=3)  # nearest x2 on the image's NumPy arrays
        return Answers(tuple(image.replace(pixels=np.clip(big + np.float32(k / 8), 0, 1)) for k in range(self.count)),
                       tuple((f"shade {k}",) for k in range(self.count)))


def _inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        f.make_rgb_png(folder, f"f{i}.png", size=(6, 4))
    return folder


def _plan(tmp_path: Path, folder: Path, overwrite: bool = False, answers: int = ANSWERS) -> list:
    run = BatchRun.start(BatchOptions(overwrite=overwrite), str(tmp_path / "out"), quiet=True, as_json=True)
    return run.plan(expand_inputs([str(folder)]), "x2", answers=lambda target: sample_paths(target, answers))


def _run(jobs, converter) -> list:
    return list(run_converted(jobs, converter, WriteOptions(), RowDefaults(model="shades"),
                              lambda: b"", lambda data: None))


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_every_answer_is_written_to_its_planned_name_with_a_row_each(tmp_path):
    folder = _inputs(tmp_path)
    rows = _run(_plan(tmp_path, folder), Shades())
    assert [index for index, _ in rows] == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # input order, a row per answer
    assert [Path(r.output).name for _, r in rows] == [f"f{i}_s{k}.png" for i in range(3) for k in (1, 2, 3)]
    assert [r.notes for _, r in rows[:3]] == [["shade 0"], ["shade 1"], ["shade 2"]]
    assert all(r.status == "ok" and r.size == [12, 8] and r.scale == 2.0 for _, r in rows)
    for i in range(3):  # the file's time, shared equally
        assert len({r.seconds for index, r in rows if index == i}) == 1
    source = np.asarray(Image.open(folder / "f1.png")).astype(int)
    for k in range(ANSWERS):
        answer = np.asarray(Image.open(tmp_path / "out" / f"f1_s{k + 1}.png")).astype(int)
        expected = np.minimum(source.repeat(2, 0).repeat(2, 1) + round(255 * k / 8), 255)
        assert np.abs(answer - expected).max() <= 1, k
    assert len(_names(tmp_path / "out")) == 9  # and no temp file


def test_an_answer_that_cannot_be_written_leaves_none_of_its_file(tmp_path):
    """f1's second answer's name is a folder (--overwrite lets it be planned): the first answer was
    already on its way; it is removed, f1 fails in one row, f0 and f2 are written whole."""
    folder = _inputs(tmp_path)
    (tmp_path / "out" / "f1_s2.png").mkdir(parents=True)
    rows = _run(_plan(tmp_path, folder, overwrite=True), Shades())
    failed = [r for _, r in rows if r.status == "failed"]
    assert len(failed) == 1 and "f1_s2.png" in failed[0].error and failed[0].output is None
    assert [index for index, _ in rows] == [0, 0, 0, 1, 2, 2, 2]
    assert _names(tmp_path / "out") == ["f0_s1.png", "f0_s2.png", "f0_s3.png", "f1_s2.png",
                                        "f2_s1.png", "f2_s2.png", "f2_s3.png"]  # the folder, untouched


def test_a_rename_that_fails_removes_the_answers_already_in_place(tmp_path, monkeypatch):
    """The durable group renames a file's answers in order; the third one's rename fails, after the
    first two reached their names: both are removed, no temp file stays."""
    folder = _inputs(tmp_path)
    replace = os.replace

    def refuse_one(src, dst, *args, **kwargs):
        if Path(dst).name == "f1_s3.png":
            raise PermissionError(13, "Permission denied")
        return replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", refuse_one)
    rows = _run(_plan(tmp_path, folder), Shades())
    failed = [r for _, r in rows if r.status == "failed"]
    assert len(failed) == 1 and "f1_s3.png" in failed[0].error and "ermission" in failed[0].error
    assert _names(tmp_path / "out") == [f"f{i}_s{k}.png" for i in (0, 2) for k in (1, 2, 3)]


@pytest.mark.parametrize("converter, said", [(Shades(fail_on="f1"), "the converter broke"),
                                             (Shades(count=2), "2 answers for 3 planned outputs")])
def test_a_converter_that_fails_or_miscounts_fails_its_file_alone(tmp_path, converter, said):
    folder = _inputs(tmp_path)
    rows = _run(_plan(tmp_path, folder), converter)
    failed = [(index, r) for index, r in rows if r.status == "failed"]
    assert failed and all(said in r.error and r.error.startswith(str(folder)) for _, r in failed), failed
    written = _names(tmp_path / "out") if (tmp_path / "out").exists() else []
    ok = sorted({index for index, r in rows if r.status == "ok"})
    assert written == [f"f{i}_s{k}.png" for i in ok for k in (1, 2, 3)]  # whole files only
    assert sorted(ok + [index for index, _ in failed]) == [0, 1, 2]
