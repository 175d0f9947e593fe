"""Every option that takes one of a fixed set of words, over a grid: `--help` lists each word (from
the one tuple that defines it), each word is accepted, any other value is a usage error (exit 2,
one line naming the words, no traceback), and the library checks that need no command line read
the same tuple."""
from __future__ import annotations

import subprocess
import sys

import image_factory as f
import pytest
import typer.main
from PIL import Image
from typer.testing import CliRunner

from upscale_cli import choices
from upscale_cli.cli import app
from upscale_cli.errors import DeviceError, UsageError
from upscale_cli.images.formats import FORMAT_NAMES, OUTPUT_FORMATS

runner = CliRunner()
DEVICE_WORDS = (*choices.DEVICES, "cuda:N")
# (command words, option, the words it takes as --help lists them, what the command needs besides)
CHOICE_OPTIONS = [
    (("upscale",), "--alpha", choices.ALPHA_MODES, ["in.png"]),
    (("upscale",), "--format", FORMAT_NAMES, ["in.png"]),
    (("upscale",), "--device", DEVICE_WORDS, ["in.png"]),
    (("restore",), "--task", choices.TASKS, ["in.png"]),
    (("restore",), "--format", FORMAT_NAMES, ["in.png"]),
    (("restore",), "--device", DEVICE_WORDS, ["in.png"]),
    (("benchmark",), "--device", DEVICE_WORDS, []),
    (("fit-single",), "--encoding", choices.ENCODINGS, ["in.png"]),
    (("train", "run"), "--arch", choices.TRAINABLE_ARCHS, []),
    (("train", "run"), "--loss", choices.LOSSES, []),
    (("train", "run"), "--loss-region", choices.LOSS_REGIONS, []),
    (("train", "run"), "--damage-mix", choices.DAMAGE_MIXES, []),
    (("train", "run"), "--device", DEVICE_WORDS, []),
]
IDS = [f"{' '.join(c)} {o}" for c, o, _, _ in CHOICE_OPTIONS]
# values no option takes: near misses, padding, another option's word, shell and control characters
BAD_VALUES = ["bogus", "", " auto", "png ", "cuda:", "cuda:x", "cpu:0", "xpu", "l2", "siren;rm -rf /", "caf\u00e9",
              "a\tb"]
CASE_INSENSITIVE = {"--format"}  # as before: --format PNG is png


def _command(words: tuple[str, ...]):
    command = typer.main.get_command(app)
    for word in words:
        command = command.commands[word]
    return command


def _parsed(words: tuple[str, ...], args: list[str]) -> dict:
    """The command's parameters as Click converts them, without running the command."""
    command = _command(words)
    with command.make_context(" ".join(words), list(args)) as ctx:
        return ctx.params


def _good_values(option: str, words: tuple[str, ...]) -> list[str]:
    return [w.replace("cuda:N", "cuda:1") for w in words]


@pytest.mark.parametrize("command, option, words, extra", CHOICE_OPTIONS, ids=IDS)
def test_help_lists_every_word(command, option, words, extra):
    result = runner.invoke(app, [*command, "--help"], prog_name="upscale")
    assert result.exit_code == 0, result.output
    assert f"{option} <{'|'.join(words)}>" in result.stdout, result.stdout


@pytest.mark.parametrize("command, option, words, extra", CHOICE_OPTIONS, ids=IDS)
def test_every_word_is_accepted(command, option, words, extra):
    name = option.lstrip("-").replace("-", "_")
    name = {"format": "fmt"}.get(name, name)
    for value in _good_values(option, words):
        assert _parsed(command, [*extra, option, value])[name] == value
        if option in CASE_INSENSITIVE:  # and in any case, as the word itself
            assert _parsed(command, [*extra, option, value.upper()])[name] == value


@pytest.mark.parametrize("bad", BAD_VALUES)
@pytest.mark.parametrize("command, option, words, extra", CHOICE_OPTIONS, ids=IDS)
def test_any_other_value_is_one_usage_line(command, option, words, extra, bad):
    if bad in _good_values(option, words):
        pytest.skip("a word this option takes")
    result = runner.invoke(app, [*command, *extra, option, bad], prog_name="upscale")
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    errors = result.stderr.splitlines()  # the whole of stderr: one line, as every error of ours
    assert len(errors) == 1 and errors[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert option in errors[0] and all(w in errors[0] for w in words), errors[0]
    assert errors[0].endswith("-h` lists the options)"), errors[0]


@pytest.mark.parametrize("option, bad, words", [("--alpha", "MODEL", choices.ALPHA_MODES), ("--task", "JPEG", choices.TASKS)])
def test_words_that_were_case_sensitive_stay_so(option, bad, words):
    command = "restore" if option == "--task" else "upscale"
    result = runner.invoke(app, [command, "in.png", option, bad], prog_name="upscale")
    assert result.exit_code == 2 and "Traceback" not in result.stderr, result.output


def test_a_bad_word_in_a_real_process_is_one_line_and_exit_2(tmp_path):
    """The installed entry point (the `upscale` group's error handling), not only the test runner."""
    proc = subprocess.run([sys.executable, "-m", "upscale_cli", "in.png", "--alpha", "sharp"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines() == ["error: Invalid value for '--alpha': 'sharp' is not one of 'auto', 'bicubic', "
                                        "'model'. (`python -m upscale_cli -h` lists the options)"], proc.stderr


def test_format_in_capitals_still_writes_that_format(tmp_path):
    source = f.make_rgb_png(tmp_path)
    (tmp_path / "out").mkdir()  # a folder: the name comes from the input, the format from --format
    result = runner.invoke(app, [str(source), "-m", "bicubic", "-x", "2", "--format", "WEBP", "--device", "cpu",
                                 "--alpha", "bicubic", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    written = list((tmp_path / "out").iterdir())
    assert [p.suffix for p in written] == [".webp"], written
    with Image.open(written[0]) as image:
        assert image.format == "WEBP" and image.size == (f.SIZE[0] * 2, f.SIZE[1] * 2)


def test_each_set_is_written_once():
    """The tables keyed by a set's words cover exactly its words, in its order."""
    from upscale_cli.train import degrade

    assert tuple(OUTPUT_FORMATS) == FORMAT_NAMES
    assert tuple(degrade._DAMAGE_BY_MIX) == choices.DAMAGE_MIXES == degrade.DAMAGE_MIXES


# library calls (no command line): refused with a message naming the same words
def _upscale_config(value):
    from upscale_cli.engine import UpscaleConfig

    return UpscaleConfig(alpha=value)


def _restore_config(value):
    from upscale_cli.restore import RestoreConfig

    return RestoreConfig(task=value)


def _fit_config(value):
    from upscale_cli.fit_single.fitting import FitConfig

    return FitConfig(encoding=value)


def _train_config(setting):
    def build(value):
        from upscale_cli.train import TrainConfig

        return TrainConfig(data=("data",), out="run", **{setting: value})
    return build


def _select_device(value):
    from upscale_cli.device import select_device

    return select_device(value)


LIBRARY_CHECKS = [
    (_upscale_config, choices.ALPHA_MODES, UsageError),
    (_restore_config, choices.TASKS, UsageError),
    (_fit_config, choices.ENCODINGS, UsageError),
    (_train_config("arch"), choices.TRAINABLE_ARCHS, UsageError),
    (_train_config("loss"), choices.LOSSES, UsageError),
    (_train_config("loss_region"), choices.LOSS_REGIONS, UsageError),
    (_train_config("damage_mix"), choices.DAMAGE_MIXES, UsageError),
    (_train_config("device"), ("auto", "cpu", "cuda", "cuda:N", "mps"), UsageError),
    (_select_device, ("auto", "cpu", "cuda", "cuda:N", "mps"), DeviceError),
]


@pytest.mark.parametrize("bad", ["bogus", "", "xpu", "cpu:0"])
@pytest.mark.parametrize("build, words, error", LIBRARY_CHECKS, ids=lambda v: getattr(v, "__name__", None))
def test_library_calls_are_checked_against_the_same_words(build, words, error, bad):
    with pytest.raises(error) as caught:
        build(bad)
    message = str(caught.value)
    assert "\n" not in message and all(w in message for w in words), message
