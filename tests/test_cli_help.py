"""`-h` and `--help`: the main job's options and the commands, for the app and every command."""
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from upscale_cli.cli import app

runner = CliRunner()
MAIN_OPTIONS = ["-x, --scale", "-m, --model", "-o, --output", "--tile", "--json", "--max-output-pixels"]
COMMANDS = ["fit-single", "benchmark", "restore", "train", "models"]


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_top_level_help_shows_the_main_options_and_the_commands(flag):
    result = runner.invoke(app, [flag], prog_name="upscale")
    assert result.exit_code == 0, result.output
    for text in [*MAIN_OPTIONS, *COMMANDS, "upscale PATH..."]:
        assert text in result.stdout, text


@pytest.mark.parametrize("flag", ["-h", "--help"])
@pytest.mark.parametrize("command", COMMANDS + ["upscale"])
def test_every_command_answers_both_help_flags(flag, command):
    result = runner.invoke(app, [command, flag], prog_name="upscale")
    assert result.exit_code == 0, result.output
    assert f"upscale {command}" in result.stdout and "-h, --help" in result.stdout


def test_help_after_a_file_argument_is_the_main_commands_help():
    result = runner.invoke(app, ["photo.png", "-h"])
    assert result.exit_code == 0 and "-x, --scale" in result.stdout


def test_help_is_fast_and_works_as_a_real_process():
    proc = subprocess.run([sys.executable, "-m", "upscale_cli", "-h"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "-m, --model" in proc.stdout
    assert "torch" not in proc.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_each_commands_usage_line_is_its_own(command):
    """The usage line names the command and its own arguments, never the main job's (`upscale train
    -h` once said `Usage: train PATH... [-x SCALE] [-m MODEL]`)."""
    result = runner.invoke(app, [command, "-h"], prog_name="upscale")
    assert result.exit_code == 0, result.output
    usage = result.stdout.split("\n\n")[0]
    assert usage.startswith(f"Usage: upscale {command}"), usage
    assert "-x SCALE" not in usage and "[-m MODEL]" not in usage, usage
