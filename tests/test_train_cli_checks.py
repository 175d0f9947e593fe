"""`upscale train` checks what its settings name on disk once, in train() (it was checked by the
command and again by train()), with the command's words for a refused setting; and a run refused
there draws no progress bar."""
from __future__ import annotations

from pathlib import Path

import pytest
from image_factory import make_rgb_png
from typer.testing import CliRunner

from upscale_cli.cli import app
from upscale_cli.train import config as train_config
from upscale_cli.train import loop

TINY = ["--set", "width=8", "--set", "levels=1", "--set", "blocks=1", "--set", "decoder_blocks=1",
        "--set", "bottleneck_blocks=1", "--scale", "2", "--crop", "8", "--batch", "1", "--device", "cpu"]


@pytest.fixture()
def hr(tmp_path) -> Path:
    folder = tmp_path / "hr"
    folder.mkdir()
    make_rgb_png(folder, "a.png", size=(24, 24))
    return folder


def test_the_paths_are_checked_once(tmp_path, hr, monkeypatch):
    calls = []
    real = train_config.check_paths

    def counted(config, **kwargs):
        calls.append(config.out)
        return real(config, **kwargs)

    monkeypatch.setattr(train_config, "check_paths", counted)
    monkeypatch.setattr(loop, "check_paths", counted)
    monkeypatch.setattr(loop, "_train", lambda config, *rest: Path(config.out))  # no training: only the checks
    result = CliRunner().invoke(app, ["train", str(hr), "--out", str(tmp_path / "run"), *TINY])
    assert result.exit_code == 0, result.output
    assert calls == [str(tmp_path / "run")]


@pytest.mark.parametrize("args,code,words", [
    (["--out", "{tmp}/afile/run"], 2, "--out {tmp}/afile/run: must be a folder this run can create and write; "),
    (["--out", "{tmp}/run", "--init", "{tmp}/missing"], 1, "{tmp}/missing: no such run folder or weights file (init)"),
    (["--out", "{tmp}/run", "--val", "{tmp}/missing"], 1, "{tmp}/missing: no such folder or image (val)"),
])
def test_what_train_refuses_is_said_as_the_command_said_it(tmp_path, hr, args, code, words):
    (tmp_path / "afile").write_text("a file, not a folder")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(app, ["train", str(hr), *args, *TINY])
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("error: " + words.replace("{tmp}", str(tmp_path))), lines
    assert not (tmp_path / "run").exists()


def test_a_run_refused_before_its_first_event_draws_no_bar(capfd):
    from upscale_cli.cli.train import _printer

    show, close = _printer(plain=False)
    close()
    assert capfd.readouterr().err == ""
