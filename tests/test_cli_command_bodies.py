"""Every command is thin (ARCHITECTURE.md: parse -> config -> call -> report): the body of each
function Typer runs as a command, docstring aside, is at most MAX_BODY_LINES lines. The commands are
found through the app itself, so a new one is measured too."""
import ast
import inspect
import textwrap

from typer.main import get_command

from upscale_cli.cli import app

MAX_BODY_LINES = 40


def _commands(group, path=()):
    for name, command in getattr(group, "commands", {}).items():
        yield from _commands(command, (*path, name))
        if command.callback is not None:
            yield " ".join((*path, name)), inspect.unwrap(command.callback)


def _body_lines(function) -> int:
    node = ast.parse(textwrap.dedent(inspect.getsource(function))).body[0]
    body = node.body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
        body = body[1:]
    return body[-1].end_lineno - body[0].lineno + 1 if body else 0


def test_every_command_body_is_at_most_40_lines():
    measured = {name: _body_lines(function) for name, function in _commands(get_command(app))}
    assert {"upscale", "restore", "fit-single", "train run", "models download"} <= set(measured), sorted(measured)
    assert {name: lines for name, lines in measured.items() if lines > MAX_BODY_LINES} == {}, measured
