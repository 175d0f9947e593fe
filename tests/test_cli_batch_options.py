"""The options `upscale` and `upscale restore` share are one group (cli/options.BatchOptions), read
by one sequence (cli/batch_run.BatchRun); pixel-recursive sampling reports its skipped and failed
files through the same BatchReporter as every batch command.

Each test compares the two commands (or sampling and upscale) over the same hostile values: one
declaration and one code path mean the same options, the same words and the same exit codes."""
from __future__ import annotations

import dataclasses
import re

import image_factory as f
import pytest
import torch
from typer.main import get_command
from typer.testing import CliRunner

from upscale_cli.batch import Source, in_shard
from upscale_cli.cli import app
from upscale_cli.cli.options import BatchOptions
from upscale_cli.loader import save_weights
from upscale_cli.models import build_model

runner = CliRunner()
COMMANDS = {"upscale": ["-m", "nearest", "-x", "2"], "restore": ["-m", "opencv-nlmeans"]}
TINY_PIXELREC = {"scale": 4, "width": 6, "blocks": 1, "prior_width": 9, "prior_layers": 2}


def _params(name: str) -> dict:
    command = get_command(app).commands[name]
    return {param.name: param for param in command.params}


def test_both_commands_take_every_option_of_the_group_as_it_declares_it():
    upscale, restore = _params("upscale"), _params("restore")
    for field in dataclasses.fields(BatchOptions):
        mine, theirs = upscale[field.name], restore[field.name]
        assert (mine.opts, mine.help, mine.default) == (theirs.opts, theirs.help, theirs.default), field.name
        assert mine.default == field.default, field.name


HOSTILE = [["--shard", "2/2"], ["--shard", "x"], ["--shard", "-1/2"], ["--quality", "0"], ["--quality", "101"],
           ["--format", "bmpx"], ["--device", "cuda:x"], ["--tile", "-1"], ["--tile-overlap", "-3"],
           ["--max-pixels", "-1"], ["--png-compression", "10"], ["--png-compression", "-1"], ["--ray"],
           ["--json", "-o", "-"]]


@pytest.mark.parametrize("args", HOSTILE, ids=" ".join)
def test_a_bad_shared_option_is_refused_alike_by_both_commands(tmp_path, args):
    image = f.make_rgb_png(tmp_path, "a.png", size=(8, 8))
    results = {name: runner.invoke(app, [*([name] if name != "upscale" else []), str(image), *extra, *args])
               for name, extra in COMMANDS.items()}
    upscale, restore = results["upscale"], results["restore"]
    assert upscale.exit_code == restore.exit_code == 2, (upscale.output, restore.output)
    said = [[re.sub(r" \(`[^`]*` lists the options\)$", "", line) for line in r.stderr.splitlines()
             if line.lower().startswith("error")] for r in (upscale, restore)]
    assert said[0] == said[1] and len(said[0]) == 1, (upscale.stderr, restore.stderr)  # but for the command's -h
    assert "Traceback" not in upscale.output and sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


@pytest.mark.parametrize("args,written", [(["--format", "webp"], "a_{tag}.webp"), (["--shard", "{other}/2"], None),
                                          (["--shard", "{own}/2", "--format", "JPG"], "a_{tag}.jpg")])
def test_the_groups_values_reach_the_run(tmp_path, args, written):
    image = f.make_rgb_png(tmp_path, "a.png", size=(8, 8))
    own = next(k for k in range(2) if in_shard(Source(image), (k, 2)))
    args = [a.format(own=own, other=1 - own) for a in args]
    for name, extra, tag in (("upscale", COMMANDS["upscale"], "x2"), ("restore", COMMANDS["restore"], "restored")):
        result = runner.invoke(app, [*([name] if name != "upscale" else []), str(image), *extra, *args])
        assert result.exit_code == 0, result.output
        made = sorted(p for p in tmp_path.iterdir() if p.name != "a.png")
        assert [p.name for p in made] == ([written.format(tag=tag)] if written else []), (name, made)
        for path in made:
            path.unlink()


@pytest.fixture()
def pixelrec(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "pixelrec.safetensors"
    save_weights(build_model("pixelrec", **TINY_PIXELREC), path, "pixelrec", TINY_PIXELREC)
    return path


def _lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if " done, " not in line]


def test_sampling_says_a_missing_input_as_every_batch_does(tmp_path, pixelrec):
    missing = tmp_path / "missing.png"
    sampled = runner.invoke(app, [str(missing), "-m", str(pixelrec), "--seed", "1"])
    upscaled = runner.invoke(app, [str(missing), "-m", "nearest", "-x", "4"])
    assert sampled.exit_code == upscaled.exit_code == 1
    assert _lines(sampled) == _lines(upscaled) and _lines(sampled)[0].startswith("error: "), sampled.stderr


@pytest.mark.parametrize("quiet", [[], ["-q"], ["--json"]])
def test_sampling_says_a_skipped_input_as_every_batch_does(tmp_path, pixelrec, quiet):
    image = f.make_rgb_png(tmp_path, "a.png", size=(2, 2))
    (tmp_path / "a_x4.png").write_bytes(b"keep")  # the output of both: one answer, and -x 4
    sampled = runner.invoke(app, [str(image), "-m", str(pixelrec), "--seed", "1", *quiet])
    upscaled = runner.invoke(app, [str(image), "-m", "nearest", "-x", "4", *quiet])
    assert sampled.exit_code == upscaled.exit_code == 0
    assert _lines(sampled) == _lines(upscaled), (sampled.stderr, upscaled.stderr)
    assert ("(skipped: output exists" in sampled.stderr) == (not quiet), sampled.stderr
    assert (tmp_path / "a_x4.png").read_bytes() == b"keep"
