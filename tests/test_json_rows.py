"""One report row per input, one --json schema (issue #30, items 2 and 13): a mixed batch of good,
corrupt, non-image, already done, colliding, orphaned and missing inputs through upscale and
restore; every row has exactly the same keys and the value types the README states, nothing is
left out without a row, and each skipped or failed input has its own line for a human."""
from __future__ import annotations

import json
from pathlib import Path

import image_factory as f
import pytest
from typer.testing import CliRunner

from upscale_cli.cli import app

runner = CliRunner()

# The documented schema: each field, and the JSON types its value may have.
SCHEMA = {
    "input": (str,),
    "output": (str, type(None)),
    "model": (str,),
    "scale": (float, type(None)),
    "size": (list, type(None)),
    "passes": (list, type(None)),
    "seconds": (float,),
    "status": (str,),
    "error": (str, type(None)),
    "notes": (list,),
    "task": (str, type(None)),
    "strength": (float, type(None)),
    "found": (dict, type(None)),
    "ensemble": (bool,),
    "frames": (int, type(None)),
    "fps": (float, type(None)),
    "duration": (float, type(None)),
    "streams_copied": (list, type(None)),
}
OUTPUT_FIELDS = ("output", "scale", "size", "passes", "found", "frames", "fps", "duration", "streams_copied")  # null on a row that wrote nothing


def _mixed_folder(tmp_path: Path, tag: str) -> Path:
    """Every kind of input a folder can hold; `tag` is the command's output tag (x2, restored)."""
    folder = tmp_path / "in"
    folder.mkdir()
    f.make_rgb_png(folder, "a.png")
    f.make_rgb_jpeg(folder, "b.jpg")
    f.make_text_as_png(folder, "corrupt.png")
    (folder / "notes.txt").write_text("a sidecar")
    f.make_rgb_png(folder, "c.png")
    f.make_rgb_png(folder, f"c_{tag}.png")  # c.png's output from an earlier run
    f.make_gif(folder, "d.gif")  # an animation: d_{tag}.gif, every frame
    f.make_rgb_png(folder, f"e_{tag}.png")  # named like an output, but there is no e.*: an input
    return folder


EXPECTED = {  # name -> (status, what its error says)
    "a.png": ("ok", None),
    "b.jpg": ("ok", None),
    "corrupt.png": ("failed", "not an image"),
    "notes.txt": ("skipped", "not an image file name"),
    "c.png": ("skipped", "output exists"),
    "c_{tag}.png": ("skipped", "an earlier output of"),
    "d.gif": ("ok", None),
    "e_{tag}.png": ("ok", None),
    "gone.png": ("failed", "no such file or folder"),
}

COMMANDS = {
    "upscale": (lambda folder: [str(folder), str(folder / "gone.png"), "-x", "2", "-m", "nearest"], "x2"),
    "restore": (lambda folder: ["restore", str(folder), str(folder / "gone.png")], "restored"),
}


def _rows(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def _check_row(row: dict) -> None:
    assert list(row) == list(SCHEMA), row  # the same keys, in the same order, in every row
    for key, types in SCHEMA.items():
        assert type(row[key]) in types, (key, row)
    assert row["status"] in ("ok", "skipped", "failed")
    assert all(isinstance(note, str) for note in row["notes"])
    if row["status"] == "ok":
        assert row["error"] is None and Path(row["output"]).is_file()
        assert isinstance(row["scale"], float) and [type(v) for v in row["size"]] == [int, int]
    else:
        assert row["error"] and all(row[key] is None for key in OUTPUT_FIELDS), row
    if row["passes"] is not None:
        assert all(type(p) is int for p in row["passes"])


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_row_of_a_mixed_batch_has_one_schema(tmp_path, command):
    make_args, tag = COMMANDS[command]
    folder = _mixed_folder(tmp_path, tag)
    result = runner.invoke(app, [*make_args(folder), "--json"])
    assert result.exit_code == 1, result.output
    rows = _rows(result)
    for row in rows:
        _check_row(row)
    expected = {name.format(tag=tag): want for name, want in EXPECTED.items()}
    assert [Path(r["input"]).name for r in rows] == sorted(expected, key=lambda n: (n == "gone.png", n))
    for row in rows:
        status, says = expected[Path(row["input"]).name]
        assert row["status"] == status and (says is None or says in row["error"]), row
    by_name = {Path(r["input"]).name: r for r in rows}
    animation = by_name["d.gif"]  # every frame, into a GIF: the rows of animations say how many
    assert animation["frames"] == 2 and animation["output"].endswith(f"d_{tag}.gif") and animation["streams_copied"] == []
    assert by_name["a.png"]["frames"] is None and by_name["a.png"]["fps"] is None
    assert by_name["notes.txt"]["notes"] == [] and by_name["corrupt.png"]["notes"] == []
    if command == "upscale":
        assert by_name["a.png"]["scale"] == 2.0 and by_name["a.png"]["passes"] == []
        assert by_name["a.png"]["task"] is None and by_name["a.png"]["ensemble"] is False
    else:  # same size; --task auto says what it found in each file it read
        assert by_name["a.png"]["scale"] == 1.0 and by_name["a.png"]["passes"] is None
        assert by_name["a.png"]["task"] == "auto" and by_name["a.png"]["strength"] == 1.0
        assert "summary" in by_name["a.png"]["found"] and by_name["corrupt.png"]["found"] is None
        assert by_name["a.png"]["model"] == "none" and by_name["gone.png"]["model"] == "auto"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_input_left_out_has_its_own_line_for_a_human(tmp_path, command):
    """Without --json: a line for each skipped or failed file (a sidecar .txt is only counted)."""
    make_args, tag = COMMANDS[command]
    folder = _mixed_folder(tmp_path, tag)
    result = runner.invoke(app, make_args(folder))
    assert result.exit_code == 1 and result.stdout == ""
    lines = result.stderr.splitlines()
    for name, (status, says) in EXPECTED.items():
        name = name.format(tag=tag)
        if status == "ok" or name == "notes.txt":
            continue
        (line,) = [line for line in lines if line.startswith((f"{folder / name} ", f"error: {folder / name}:"))]
        assert says in line
        assert line.startswith("error: ") == (status == "failed")
    assert "4 done, 3 skipped, 2 failed" in lines[-1]


def test_an_image_named_like_an_output_without_its_source_is_upscaled(tmp_path):
    """Issue #30 item 2: `photo_x4.png` alone in a folder printed nothing, no row, exit 0."""
    folder = tmp_path / "d"
    folder.mkdir()
    f.make_rgb_png(folder, "photo_x4.png")
    result = runner.invoke(app, [str(folder), "-m", "bicubic", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = _rows(result)
    assert row["status"] == "ok" and row["output"] == str(folder / "photo_x4_x4.png")
    f.make_rgb_png(folder, "photo.jpg")  # now it has a source beside it: an earlier output, said so
    (folder / "photo_x4_x4.png").unlink()
    result = runner.invoke(app, [str(folder), "-m", "bicubic", "--json"])
    rows = {Path(r["input"]).name: r for r in _rows(result)}
    assert rows["photo_x4.png"]["status"] == "skipped" and rows["photo.jpg"]["output"] == str(folder / "photo_x4.jpg")
    assert f"an earlier output of {folder / 'photo.jpg'}" in rows["photo_x4.png"]["error"]
    assert not (folder / "photo_x4_x4.png").exists()


@pytest.mark.parametrize("scale,passes", [(4, [2, 2]), (2, [2]), (6, [3, 2]), (3, [3]), (5, [2, 2])])
def test_pixel_art_rows_name_the_passes_it_ran(tmp_path, scale, passes):
    """pixel-art x4 is Scale2x twice: its row said [] (issue #30 item 13); x5 is x4 then nearest."""
    src = f.make_rgb_png(tmp_path, "sprite.png")
    result = runner.invoke(app, [str(src), "-m", "pixel-art", "-x", str(scale), "--json"])
    assert result.exit_code == 0, result.output
    (row,) = _rows(result)
    _check_row(row)
    assert row["passes"] == passes and row["size"] == [f.SIZE[0] * scale, f.SIZE[1] * scale]


def test_the_row_dataclass_is_the_schema():
    """The dataclass that every command fills is the documented schema, field for field."""
    from upscale_cli.report import FIELDS, ReportRow, RowDefaults

    assert list(FIELDS) == list(SCHEMA)
    row = ReportRow.start("a.png", RowDefaults(model="unet"))
    row.scale, row.size, row.passes = 4.0, [8, 8], [4]
    skipped = row.end("skipped", 0.0, output="a_x4.png", error="output exists")
    assert skipped.as_json()["output"] is None and skipped.as_json()["passes"] is None
    with pytest.raises(ValueError):
        ReportRow("a.png").end("done", 0.0)


def test_sampled_answers_have_one_row_each_in_the_same_schema(tmp_path, tiny_pixelrec):
    """pixel-recursive --samples N: a row per answer file written (which answer, temperature and
    seed in its notes), one row for a skipped or failed input, lines on stderr only."""
    weights = tiny_pixelrec
    folder = tmp_path / "in"
    folder.mkdir()
    f.make_rgb_png(folder, "tiny.png", size=(3, 2))
    f.make_rgb_png(folder, "big.png", size=(40, 40))  # over the model's input limit: fails alone
    f.make_rgb_png(folder, "done.png", size=(3, 2))
    (folder / "done_x4_s2.png").write_bytes(b"an earlier answer")
    (folder / "notes.txt").write_text("x")
    result = runner.invoke(app, [str(folder), "-m", str(weights), "--samples", "2", "--seed", "5", "--json"])
    assert result.exit_code == 1, result.output
    rows = _rows(result)
    for row in rows:
        _check_row(row)
    got = [(Path(r["input"]).name, r["status"], r["output"] and Path(r["output"]).name) for r in rows]
    assert got == [("big.png", "failed", None), ("done.png", "skipped", None), ("done_x4_s2.png", "skipped", None),
                   ("notes.txt", "skipped", None), ("tiny.png", "ok", "tiny_x4_s1.png"),
                   ("tiny.png", "ok", "tiny_x4_s2.png")]
    answers = [r for r in rows if r["status"] == "ok"]
    assert [r["notes"] for r in answers] == [["answer 1 of 2: temperature 0.5, seed 5"],
                                             ["answer 2 of 2: temperature 0.5, seed 5"]]
    assert all(r["size"] == [12, 8] and r["scale"] == 4.0 and r["passes"] == [4] for r in answers)
    assert [line for line in result.stderr.splitlines() if line.startswith("error: ")] == [
        line for line in result.stderr.splitlines() if "big.png" in line]
