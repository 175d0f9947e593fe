"""The Typer app: routes `upscale FILE ...` to the default command and turns errors into exit codes.

This is the one place where an `UpscaleError` becomes a line on stderr and an exit code.
Command modules import torch only inside their functions, so `upscale --help` stays fast.
"""
from __future__ import annotations

import sys

try:
    import click
except ModuleNotFoundError:  # recent typer releases vendor click as typer._click
    from typer import _click as click
import typer
from typer.core import TyperGroup

from upscale_cli.errors import UpscaleError
from upscale_cli.cli import options

DEFAULT_COMMAND = "upscale"
_GROUP_OPTIONS = {"--help", "-h", "--version", "--install-completion", "--show-completion"}
HELP_OPTIONS = ["-h", "--help"]  # every command answers both


def report_error(err: UpscaleError) -> None:
    """One line on stderr: the whole user-facing message."""
    typer.echo(f"error: {err}", err=True)


def usage_line(err: "click.exceptions.UsageError") -> str:
    """Click's usage error (usage, a hint and `Error: ...` on four lines) as one line that names where
    the options are listed: `upscale -h`, `upscale train -h`, `upscale models path -h`."""
    words, ctx = [], err.ctx
    while ctx is not None:  # a group's default command is not typed: `upscale`, not `upscale upscale`
        default = getattr(ctx.parent.command, "default_command", None) if ctx.parent is not None else None
        if ctx.info_name != default:
            words.insert(0, ctx.info_name)
        ctx = ctx.parent
    message = err.format_message().strip().replace(": Value error, ", ": ")  # pydantic's prefix, typer's coercion
    return f"{message} (`{' '.join(words) or 'upscale'} -h` lists the options)"


class ErrorHandlingGroup(TyperGroup):
    """A group whose commands' UpscaleErrors end as one line and their exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.exceptions.UsageError as err:  # a bad option or value: one line, as our own usage errors, exit 2
            typer.echo(f"error: {usage_line(err)}", err=True)
            raise typer.Exit(err.exit_code) from None
        except UpscaleError as err:
            report_error(err)
            raise typer.Exit(err.exit_code) from None
        except MemoryError:
            typer.echo("error: out of memory; try a smaller --tile or a smaller image", err=True)
            raise typer.Exit(1) from None


class DefaultCommandGroup(ErrorHandlingGroup):
    """`upscale photo.jpg ...` means `upscale upscale photo.jpg ...`: the first argument is a
    subcommand only when it names one (so a file called `train` needs `./train`)."""

    default_command = DEFAULT_COMMAND
    usage = "PATH... [-x SCALE] [-m MODEL] [-o OUTPUT] [OPTIONS]"  # None: the default command's own

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in _GROUP_OPTIONS:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)

    def format_help(self, ctx: click.Context, formatter) -> None:
        """`upscale -h`: the main job's usage and options first (that is what most people came
        for), then the other commands."""
        command = self.commands[self.default_command]
        sub = click.Context(command, info_name=ctx.info_name, parent=ctx)
        prog = ctx.command_path or "upscale"
        formatter.write_usage(prog, self.usage or " ".join(command.collect_usage_pieces(sub)))
        formatter.write_usage(prog, "COMMAND [ARGS]...", prefix="       ")
        formatter.write_paragraph()
        formatter.write_text(command.help or "")
        command.format_options(sub, formatter)
        self.format_commands(ctx, formatter)
        with formatter.section("Other"):
            formatter.write_dl([("--version", "Print the version and exit."),
                                ("upscale COMMAND -h", "The options of one command.")])


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        from upscale_cli.cli import stdout

        try:
            stdout.echo(f"upscale-cli {version('upscale-cli')}")
        except UpscaleError as err:  # an eager option runs before ErrorHandlingGroup.invoke can catch it
            report_error(err)
            raise typer.Exit(err.exit_code) from None
        raise typer.Exit()


app = typer.Typer(
    cls=DefaultCommandGroup,
    help="Upscale and restore images: `upscale photo.jpg -x 4`, or one of the commands below.",
    no_args_is_help=True,
    **options.APP_SETTINGS,
    context_settings={"help_option_names": HELP_OPTIONS},
)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Upscale and restore images."""


def _register() -> None:
    # Each command lives in its own module; they import typer only at module level.
    from upscale_cli.cli import upscale as upscale_cmd

    app.command(DEFAULT_COMMAND, help=upscale_cmd.HELP)(upscale_cmd.upscale_command)
    for module_name in ("fit_single", "train", "benchmark", "restore", "models"):
        try:
            module = __import__(f"upscale_cli.cli.{module_name}", fromlist=["register"])
        except ModuleNotFoundError as err:
            if err.name != f"upscale_cli.cli.{module_name}":
                raise
            continue  # that command has not been built yet
        module.register(app)


_register()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
