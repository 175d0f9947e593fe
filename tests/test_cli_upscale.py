"""The main command end to end: a folder of every kind of image, good and bad, through the real CLI."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import image_factory as f
import pytest
from PIL import Image
from typer.testing import CliRunner

from upscale_cli.cli import app

runner = CliRunner()
W, H = f.SIZE

GOOD = {
    # name: (factory, expected Pillow mode family of the output, expected size multiplier (w, h) swap?)
    "rgb.png": (f.make_rgb_png, "RGB", False),
    "rgb.jpg": (f.make_rgb_jpeg, "RGB", False),
    "rgb.webp": (f.make_webp, "RGB", False),
    "rgb.tiff": (f.make_tiff, "RGB", False),
    "rgba.png": (f.make_rgba_png, "RGBA", False),
    "palette.png": (f.make_palette_png_with_transparency, "RGBA", False),
    "grey16.png": (f.make_16bit_png, "I;16", False),
    "grey.png": (f.make_grey_png, "L", False),
    "cmyk.jpg": (f.make_cmyk_jpeg, "RGB", False),
    "rotated.jpg": (f.make_exif_rotated_jpeg, "RGB", True),
}
BAD = {
    "empty.png": f.make_zero_byte,
    "truncated.png": f.make_truncated_png,
    "notes.png": f.make_text_as_png,
}


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture()
def mixed_folder(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name, (make, _, _) in GOOD.items():
        make(folder, name)
    for name, make in BAD.items():
        make(folder, name)
    f.make_large_png(folder, 300, 200, name="huge.png")
    return folder


def test_mixed_folder_good_files_converted_bad_files_reported(mixed_folder, tmp_path):
    before = _digest(mixed_folder)
    out = tmp_path / "out"
    result = runner.invoke(app, [str(mixed_folder), "-x", "2", "-m", "bicubic", "-o", str(out),
                                 "--max-pixels", "10000"])
    assert result.exit_code == 1, result.output
    assert _digest(mixed_folder) == before  # inputs untouched
    for name, (_, mode, rotated) in GOOD.items():
        with Image.open(out / name) as im:
            expected = (2 * H, 2 * W) if rotated else (2 * W, 2 * H)
            assert im.size == expected, name
            assert im.mode == mode or (mode == "I;16" and im.mode.startswith("I")), (name, im.mode)
            if rotated:
                assert im.getexif().get(0x0112, 1) == 1
    for name in [*BAD, "huge.png"]:
        assert not (out / name).exists()
        error_lines = [line for line in result.stderr.splitlines() if name in line]
        assert len(error_lines) == 1 and error_lines[0].startswith("error: "), (name, result.stderr)
    assert "Traceback" not in result.output
    assert "10 done, 0 skipped, 4 failed" in result.stderr
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporary files left


def test_single_file_default_name_then_skip_then_overwrite(tmp_path):
    src = f.make_rgb_png(tmp_path, "photo.png")
    first = runner.invoke(app, [str(src), "-x", "3", "-m", "bicubic"])
    assert first.exit_code == 0, first.output
    out = tmp_path / "photo_x3.png"
    assert Image.open(out).size == (3 * W, 3 * H)
    again = runner.invoke(app, [str(src), "-x", "3", "-m", "bicubic"])
    assert again.exit_code == 0 and "skipped" in again.stderr
    forced = runner.invoke(app, [str(src), "-x", "3", "-m", "bicubic", "--overwrite", "--format", "jpg", "-o",
                                 str(tmp_path / "photo.png")])
    assert forced.exit_code == 1 and "overwrite the input" in forced.stderr


def test_width_height_and_fractional_scale(tmp_path):
    src = f.make_rgb_png(tmp_path, "a.png")
    assert runner.invoke(app, [str(src), "-m", "bicubic", "--width", "60", "-o", str(tmp_path / "w.png")]).exit_code == 0
    assert Image.open(tmp_path / "w.png").size == (60, 40)
    assert runner.invoke(app, [str(src), "-m", "lanczos", "-x", "1.5", "-o", str(tmp_path / "s.png")]).exit_code == 0
    assert Image.open(tmp_path / "s.png").size == (36, 24)


def test_json_lines_and_quiet(tmp_path):
    a, b = f.make_rgb_png(tmp_path, "a.png"), f.make_zero_byte(tmp_path, "b.png")
    result = runner.invoke(app, [str(a), str(b), "-m", "bicubic", "-x", "2", "-o", str(tmp_path / "o"), "--json"])
    assert result.exit_code == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["status"] for r in records] == ["ok", "failed"]
    assert records[0]["model"] == "bicubic" and records[0]["scale"] == 2 and records[0]["output"].endswith("a.png")
    assert "empty" in records[1]["error"]
    quiet = runner.invoke(app, [str(a), "-m", "bicubic", "-x", "2", "-o", str(tmp_path / "q.png"), "-q"])
    assert quiet.exit_code == 0 and quiet.output == ""


def test_usage_errors_exit_2_with_one_line(tmp_path):
    src = f.make_rgb_png(tmp_path, "a.png")
    for args, words in [(["-m", "nosuchmodel"], "unknown model"), (["-x", "0.5"], "--scale"),
                        (["--format", "xcf"], "--format"), (["--device", "cuda"] if not _has_cuda() else ["--alpha", "z"], "")]:
        result = runner.invoke(app, [str(src), *args])
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output and words in result.stderr
    missing = runner.invoke(app, [str(tmp_path / "missing.png"), "-m", "bicubic"])
    assert missing.exit_code == 1 and "no such file" in missing.stderr


def _has_cuda():
    import torch

    return torch.cuda.is_available()


def test_stdin_to_stdout_through_a_real_process(tmp_path):
    src = f.make_rgb_png(tmp_path, "a.png")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    proc = subprocess.run([sys.executable, "-m", "upscale_cli", "-", "-x", "2", "-m", "bicubic", "-o", "-"],
                          input=src.read_bytes(), capture_output=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    (tmp_path / "piped.png").write_bytes(proc.stdout)
    assert Image.open(tmp_path / "piped.png").size == (2 * W, 2 * H)


def test_subcommand_names_route_and_help_is_fast():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "upscale" in result.output
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    code = "import sys, upscale_cli.cli; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.stdout.strip() == "False"  # the CLI imports torch lazily


@pytest.mark.parametrize("alpha_mode", ["bicubic", "model"])
def test_alpha_is_upscaled_without_colour_bleeding(tmp_path, alpha_mode):
    import numpy as np

    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[:, :8] = (255, 0, 0, 255)  # opaque red on the left
    rgba[:, 8:] = (0, 255, 0, 0)  # invisible green garbage on the right
    src = tmp_path / "sprite.png"
    Image.fromarray(rgba, "RGBA").save(src)
    out = tmp_path / "big.png"
    result = runner.invoke(app, [str(src), "-m", "lanczos", "-x", "4", "--alpha", alpha_mode, "-o", str(out)])
    assert result.exit_code == 0, result.output
    big = np.asarray(Image.open(out))
    assert big.shape == (64, 64, 4)
    visible = big[..., 3] > 0
    assert big[visible][:, 1].max() <= 2  # no green crept into any visible pixel
    assert big[:, :18, 3].min() == 255 and big[:, 46:, 3].max() == 0  # away from lanczos ringing


def test_opencv_model_on_greyscale_and_16_bit(tmp_path, monkeypatch):
    shared = Path(__file__).resolve().parents[2] / "shared" / "weights" / "opencv"
    if not (shared / "ESPCN_x2.pb").is_file():
        from http_server import NEEDS_OPENCV_WEIGHTS

        pytest.skip(NEEDS_OPENCV_WEIGHTS)
    monkeypatch.setenv("UPSCALE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("UPSCALE_WEIGHTS_MIRROR", str(shared))
    grey = f.make_grey_png(tmp_path, "g.png")
    deep = f.make_16bit_rgb_png(tmp_path, "d.png")
    result = runner.invoke(app, [str(grey), str(deep), "-m", "opencv-espcn", "-x", "2", "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "o" / "g.png").mode == "L"
    from upscale_cli.images.read import read_image

    out = read_image(tmp_path / "o" / "d.png")
    assert out.bit_depth == 16 and out.pixels.shape == (1, 3, 2 * H, 2 * W)


def _bytes(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("command", [["-x", "2", "-m", "nearest"], ["restore", "-m", "opencv-nlmeans"]])
def test_no_input_is_replaced_by_another_inputs_output(tmp_path, command):
    """Issue 11.1, as a user ran it: s/good.jpg -> s/good.png must not replace the input s/good.png."""
    s = tmp_path / "s"
    s.mkdir()
    f.make_rgb_png(s, "good.png")
    Image.open(s / "good.png").save(s / "good.jpg")
    before = _bytes(s)
    args = command[:1] + [str(s)] + command[1:] if command[0] == "restore" else [str(s), *command]
    result = runner.invoke(app, [*args, "-o", str(s), "--format", "png", "--overwrite"])
    assert result.exit_code == 1, result.output
    assert _bytes(s) == before  # nothing written into the folder, no input replaced
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 2
    jpg_line = next(line for line in lines if "good.jpg:" in line)
    assert str(s / "good.png") in jpg_line and "overwrite the input" in jpg_line


def test_default_name_equal_to_another_input_is_refused_and_the_rest_runs(tmp_path):
    f.make_rgb_png(tmp_path, "good.png")
    Image.open(tmp_path / "good.png").save(tmp_path / "good.jpg")
    (tmp_path / "good_x4.png").write_bytes((tmp_path / "good.png").read_bytes())
    before = (tmp_path / "good_x4.png").read_bytes()
    result = runner.invoke(app, [str(tmp_path / "good.jpg"), str(tmp_path / "good_x4.png"), "--format", "png",
                                 "--overwrite", "-m", "nearest"])
    assert result.exit_code == 1, result.output
    assert (tmp_path / "good_x4.png").read_bytes() == before
    assert Image.open(tmp_path / "good_x4_x4.png").size == (4 * W, 4 * H)  # the other input still ran
    assert "1 done, 0 skipped, 1 failed" in result.stderr


@pytest.mark.parametrize("option", [["-x", "1e5"], ["--width", "100000"], ["-x", "4", "--max-output-pixels", "1000"]])
def test_an_output_over_the_limit_fails_that_file_in_one_line(tmp_path, option):
    big, small = f.make_rgb_png(tmp_path, "a.png"), f.make_rgb_png(tmp_path, "b.png", size=(4, 4))
    result = runner.invoke(app, [str(big), *option, "-m", "nearest", "-o", str(tmp_path / "out")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert str(big) in line and "--max-output-pixels" in line
    assert not (tmp_path / "out").exists()
    if option[-1] == "1000":  # the limit is per file: a small one still runs
        assert f"= {16 * W * H:,} pixels, over the limit of 1,000 pixels (" in line  # not "0 MP" over "0 MP"
        result = runner.invoke(app, [str(small), str(big), *option, "-m", "nearest", "-o", str(tmp_path / "out")])
        assert (tmp_path / "out" / "b.png").exists() and "1 done, 0 skipped, 1 failed" in result.stderr


@pytest.mark.parametrize("command", [[], ["restore", "-m", "opencv-nlmeans"]])
def test_max_pixels_is_validated_and_zero_turns_the_guard_off(tmp_path, command):
    src = f.make_rgb_png(tmp_path, "a.png")
    def run(*extra):
        args = [*command[:1], str(src), *command[1:]] if command else [str(src), "-x", "2", "-m", "nearest"]
        return runner.invoke(app, [*args, *extra, "--overwrite", "-o", str(tmp_path / "o.png")])

    bad = run("--max-pixels", "-1")
    assert bad.exit_code == 2 and bad.stderr.count("--max-pixels must be") == 1
    assert run("--max-pixels", "10").exit_code == 1  # the guard works...
    assert run("--max-pixels", "0").exit_code == 0  # ...and 0 is no limit, as --help says


def test_json_gives_every_input_one_row_and_errors_still_go_to_stderr(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    f.make_rgb_png(folder, "a.png")
    f.make_zero_byte(folder, "broken.png")
    (folder / "readme.txt").write_text("not an image")
    (folder / "sidecar.xmp").write_text("<x/>")
    (folder / ".hidden.png").write_bytes(b"")
    result = runner.invoke(app, [str(folder), "-x", "2", "-m", "nearest", "-o", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 1
    rows = {Path(r["input"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert set(rows) == {"a.png", "broken.png", "readme.txt", "sidecar.xmp"}
    assert rows["a.png"]["status"] == "ok" and rows["broken.png"]["status"] == "failed"
    assert rows["readme.txt"]["status"] == "skipped" and "not an image" in rows["readme.txt"]["error"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.png" in errors[0]
    assert "1 done, 2 skipped, 1 failed" in result.stderr
    plain = runner.invoke(app, [str(folder), "-x", "2", "-m", "nearest", "-o", str(tmp_path / "out2")])
    assert "readme.txt" not in plain.stderr  # humans are not shown every sidecar file, only the count
    assert "1 done, 2 skipped, 1 failed" in plain.stderr


def test_json_scale_is_the_real_factor_and_size_options_do_not_conflict(tmp_path):
    src = f.make_rgb_png(tmp_path, "a.png")
    result = runner.invoke(app, [str(src), "--width", "60", "-m", "nearest", "-o", str(tmp_path / "w.png"), "--json"])
    (row,) = map(json.loads, result.stdout.splitlines())
    assert row["scale"] == round(60 / W, 4) and row["size"] == [60, round(H * 60 / W)] and row["passes"] == []
    result = runner.invoke(app, [str(src), "-x", "8", "-m", "upsampler", "-o", str(tmp_path / "x8.png"), "--json"])
    (row,) = map(json.loads, result.stdout.splitlines())
    assert row["scale"] == 8.0 and row["passes"] == [8]
    conflict = runner.invoke(app, [str(src), "-x", "4", "--width", "1000", "-m", "nearest"])
    assert conflict.exit_code == 2 and "give one of them" in conflict.stderr
    assert not list(tmp_path.glob("a_*"))


@pytest.mark.parametrize("make,name,args,expected_format,note", [
    (f.make_bmp, "rgb.bmp", [], "BMP", None),  # BMP is written, so it stays BMP
    (f.make_gif, "anim.gif", [], "GIF", None),  # GIF is written (every frame of an animation)
    (f.make_rgb_png, "a.png", ["--format", "bmp"], "BMP", None),
    (f.make_rgb_png, "a.png", ["-o", "{tmp}/newname"], "PNG", "newname has no extension: wrote PNG"),
    (f.make_rgb_jpeg, "a.jpg", ["-o", "{tmp}/newname"], "JPEG", "no extension"),
    (f.make_rgb_png, "a.png", ["-o", "{tmp}/b.bmp"], "BMP", None),
])
def test_one_rule_for_output_formats(tmp_path, make, name, args, expected_format, note):
    src = make(tmp_path, name)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = runner.invoke(app, [str(src), "-x", "2", "-m", "nearest", *args, "--json"])
    assert result.exit_code == 0, result.output
    (row,) = map(json.loads, result.stdout.splitlines())
    with Image.open(row["output"]) as im:
        assert im.format == expected_format
    assert (note is None and not row["notes"]) or any(note in n for n in row["notes"])


def test_an_output_suffix_we_cannot_write_fails_that_file_clearly(tmp_path):
    src = f.make_rgb_png(tmp_path, "a.png")
    result = runner.invoke(app, [str(src), "-x", "2", "-m", "nearest", "-o", str(tmp_path / "out.xyz")])
    assert result.exit_code == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "cannot write '.xyz' files" in line and "bmp" in line


def test_an_output_the_tool_could_not_read_back_is_said_before_the_work(tmp_path):
    src = f.make_rgb_png(tmp_path, "a.png")
    limit_count = 3 * W * 3 * H - 1  # the x3 output is one pixel over the input guard
    limit = str(limit_count)
    result = runner.invoke(app, [str(src), "-x", "3", "-m", "nearest", "--max-pixels", limit,
                                 "-o", str(tmp_path / "big.png")])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    first = next(i for i, line in enumerate(lines) if "over --max-pixels" in line)
    done = next(i for i, line in enumerate(lines) if "-> " in line)
    assert first < done and "--max-pixels 0" in lines[first]
    assert f"= {3 * W * 3 * H:,} pixels) is over --max-pixels ({limit_count:,})" in lines[first]  # not "0 MP"
    again = runner.invoke(app, [str(tmp_path / "big.png"), "-x", "1", "-m", "nearest", "--max-pixels", limit])
    assert again.exit_code == 1 and "--max-pixels" in again.stderr  # what the note warned about
    quiet = runner.invoke(app, [str(src), "-x", "3", "-m", "nearest", "--max-pixels", limit, "--json", "--overwrite",
                                "-o", str(tmp_path / "big.png")])
    (row,) = map(json.loads, quiet.stdout.splitlines())
    assert any("over --max-pixels" in n for n in row["notes"])


@pytest.mark.parametrize("command", [["-x", "2", "-m", "nearest"], ["restore", "-m", "opencv-nlmeans"]])
def test_a_folder_upscaled_in_place_twice_skips_its_earlier_outputs(tmp_path, command):
    """Rerunning `upscale folder/` (outputs next to their inputs) once failed every file: the earlier
    outputs were counted as inputs to protect. They are neither inputs nor protected: a rerun skips
    them (exit 0, bytes kept), --overwrite replaces them, and the real inputs stay untouched."""
    folder = tmp_path / "shots"
    folder.mkdir()
    f.make_rgb_png(folder, "a.png")
    f.make_rgb_png(folder, "b.png")
    args = command[:1] + [str(folder)] + command[1:] if command[0] == "restore" else [str(folder), *command]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    after_first = _bytes(folder)
    assert len(after_first) == 4
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "0 done, 4 skipped, 0 failed" in again.stderr and _bytes(folder) == after_first
    assert again.stderr.count("(skipped: an earlier output of") == 2  # each left out with its own line
    forced = runner.invoke(app, [*args, "--overwrite"])
    assert forced.exit_code == 0, forced.output
    assert "2 done, 2 skipped, 0 failed" in forced.stderr and sorted(_bytes(folder)) == sorted(after_first)
    assert all(_bytes(folder)[name] == after_first[name] for name in ("a.png", "b.png"))


# Names the file system cannot hold (issue #30 item 3): each case is (files in the folder, the
# command's arguments after the folder, the files that must fail). Linux takes 255 bytes a name.
LONG_NAMES = {
    "long stem in a folder": (["a" * 250 + ".png", "ok.png"], ["-x", "2"], {"a" * 250 + ".png"}),
    "output exactly 255 bytes": (["e" * 248 + ".png"], ["-x", "2"], set()),  # its temp file's name is longer
    "multibyte at the limit": (["é" * 124 + ".png", "é" * 125 + ".png"], ["-x", "2"], {"é" * 125 + ".png"}),
    "long name with --format": (["f" * 251 + ".png", "g" * 250 + ".png", "ok.png"],
                                ["-x", "2", "-o", "{tmp}/out", "--format", "webp"], {"f" * 251 + ".png"}),
    "long folder in -o": (["ok.png", "b.png"], ["-x", "2", "-o", "{tmp}/" + "z" * 300 + "/"], {"ok.png", "b.png"}),
    "-o path over PATH_MAX": (["ok.png"], ["-x", "2", "-o", "{tmp}/" + "/".join(["y" * 200] * 25) + "/"], {"ok.png"}),
}


@pytest.mark.parametrize("case", sorted(LONG_NAMES))
def test_a_name_too_long_fails_that_file_alone(tmp_path, case):
    """Once a traceback in planning (OSError: File name too long) that ended the whole batch."""
    names, args, failing = LONG_NAMES[case]
    folder = tmp_path / "in"
    folder.mkdir()
    for name in names:
        f.make_rgb_png(folder, name)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = runner.invoke(app, [str(folder), "-m", "nearest", *args, "--json"])
    assert result.exit_code == (1 if failing else 0), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    rows = {Path(r["input"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert set(rows) == set(names)
    assert {name for name, r in rows.items() if r["status"] == "failed"} == failing
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(failing)  # one line each, and nothing else but the summary
    assert all(" done, " in line for line in result.stderr.splitlines() if not line.startswith("error: "))
    assert all("255-byte limit" in line or "too long for the file system" in line for line in errors), errors
    for name, row in rows.items():
        if row["status"] == "ok":
            assert Path(row["output"]).is_file() and len(os.fsencode(Path(row["output"]).name)) <= 255
    leftovers = [p for p in tmp_path.rglob(".*") if p.name.endswith(".upscale-part")]
    assert not leftovers


def test_a_long_output_or_input_name_in_a_real_process_is_one_line(tmp_path):
    """The issue's recipes as a user runs them: a 300-byte -o, a 300-byte input argument."""
    src = f.make_rgb_png(tmp_path, "ok.png")
    long_o = [str(src), "-m", "nearest", "-x", "2", "-o", str(tmp_path / ("b" * 300 + ".png"))]
    long_in = [str(src), str(tmp_path / ("c" * 300 + ".png")), "-m", "nearest", "-x", "2"]
    for args, done in ((long_o, 0), (long_in, 1)):
        proc = subprocess.run([sys.executable, "-m", "upscale_cli", *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and ("255-byte limit" in errors[0] or "300 bytes" in errors[0]), proc.stderr
        assert f"{done} done, 0 skipped, 1 failed" in proc.stderr
