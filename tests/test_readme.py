"""The README against the tool it documents: every default it states is the command's real default
and what `--help` says, every option it names exists (in the command it is documented for, where
a table or an example says which), every UPSCALE_* variable it names is read by the code, every
local link resolves, its `--json` field table is the report's schema, and its set-up commands are
the ones CI runs.

How the README states defaults (the convention this test reads): each command's options are a
table whose header is  | option of `upscale CMD` | default | what it does |.  The first cell names
the option (`-x`, `--scale`; `--lpips/--no-lpips`). A default cell that starts with a code span
states a value (`auto`, `0`, `on`/`off` for flags, `178,956,970`, `2, 3, 4`): it must equal the
parameter's Typer default or, where Typer's default is None because the command fills it in, the
library default it resolves to (RESOLVED below, the training and fit-single config dataclasses).
A cell that starts with anything else is prose ("none", "from the model's receptive field"): the
parameter must then have no fixed default.
"""
from __future__ import annotations

import dataclasses
import functools
import re
import shlex
from pathlib import Path
from typing import Callable, NamedTuple

import pytest
import typer.main

from upscale_cli.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CI_SCRIPT = ROOT / ".ci" / "run"
INSTALL_COMMAND = ("python3 -m venv .venv && . .venv/bin/activate && bash scripts/install_torch.sh && "
                   "pip install -e . && upscale examples/sample.png -x 4 -o sample_x4.png")
TEST_COMMAND = 'pip install -e ".[test]" && python -m pytest -q'
HELP_OPTIONS = {"-h", "--help"}  # every command answers them; they are no parameter
TABLE_HEAD = re.compile(r"^\|\s*option of `(upscale[^`]*)`\s*\|\s*default\s*\|")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
OPTION = re.compile(r"^--?[A-Za-z][\w-]*$")
SHELL_BREAKS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "(", ")", "$(", "2>"}


def _train_default(name: str):
    from upscale_cli.train import TrainConfig

    return _field_default(TrainConfig, name)


def _fit_default(name: str):
    from upscale_cli.fit_single.fitting import FitConfig

    config = FitConfig.for_encoding()  # the defaults of the default encoding (siren)
    return getattr(config, name) if name in {f.name for f in dataclasses.fields(FitConfig)} else None


def _field_default(cls, name: str):
    for f in dataclasses.fields(cls):
        if f.name == name:
            return None if f.default is dataclasses.MISSING else f.default
    return None


def _quality():
    from upscale_cli.images.write import DEFAULT_QUALITY

    return DEFAULT_QUALITY


def _png_compression():
    from upscale_cli.images.write import DEFAULT_PNG_COMPRESSION

    return DEFAULT_PNG_COMPRESSION


def _max_pixels():
    from upscale_cli.images.formats import DEFAULT_MAX_PIXELS

    return DEFAULT_MAX_PIXELS


def _max_output_pixels():
    from upscale_cli.engine import DEFAULT_MAX_OUTPUT_PIXELS

    return DEFAULT_MAX_OUTPUT_PIXELS


def _samples():
    from upscale_cli.sampling import SampleConfig

    return _field_default(SampleConfig, "samples")


def _temperature():
    from upscale_cli.sampling import DEFAULT_TEMPERATURE

    return DEFAULT_TEMPERATURE


def _fit_scale():
    from upscale_cli.fit_single.sizes import DEFAULT_SCALE

    return DEFAULT_SCALE


def _benchmark_scales():
    from upscale_cli.cli.benchmark import DEFAULT_SCALES

    return DEFAULT_SCALES


# (command path, parameter name) -> the default a command fills in where its Typer default is None
RESOLVED: dict[tuple[str, str], Callable[[], object]] = {
    **{(cmd, "quality"): _quality for cmd in ("upscale", "upscale restore")},
    **{(cmd, "png_compression"): _png_compression for cmd in ("upscale", "upscale restore")},
    **{(cmd, "max_pixels"): _max_pixels for cmd in ("upscale", "upscale restore")},
    **{(cmd, "max_output_pixels"): _max_output_pixels for cmd in ("upscale", "upscale fit-single")},
    ("upscale", "samples"): _samples,
    ("upscale", "temperature"): _temperature,
    ("upscale fit-single", "scale"): _fit_scale,
    ("upscale benchmark", "scales"): _benchmark_scales,
}
# commands whose options are filled in from a settings dataclass of the same field names
FIELD_DEFAULTS: dict[str, Callable[[str], object]] = {"upscale train": _train_default,
                                                      "upscale fit-single": _fit_default}


# ---------------------------------------------------------------- the commands


@functools.lru_cache(maxsize=None)
def root():
    """The click command Typer builds for the app (built once: it is the same on every call)."""
    return typer.main.get_command(app)


def command(path: str):
    """`upscale train` -> the click command that runs (a group's default subcommand)."""
    words = path.split()
    assert words[0] == "upscale", path
    cmd = root()
    for word in words[1:]:
        assert word in getattr(cmd, "commands", {}), f"{path}: {word!r} is no command"
        cmd = cmd.commands[word]
    while getattr(cmd, "default_command", None):  # `upscale FILE` and `upscale train FOLDER`
        cmd = cmd.commands[cmd.default_command]
    return cmd


def options_of(cmd) -> dict:
    """Every option string of a command -> its parameter."""
    return {opt: p for p in cmd.params if p.param_type_name == "option" for opt in (*p.opts, *p.secondary_opts)}


def all_commands() -> list[tuple[str, object]]:
    """(path, command) of every command and group (a group has options of its own, e.g. `upscale
    models --json`); a default subcommand under its group's path (`upscale`, `upscale train`)."""
    found = []

    def walk(cmd, path):
        found.append((path, cmd))
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, path if name == getattr(cmd, "default_command", None) else f"{path} {name}")
    walk(root(), "upscale")
    return found


def effective_default(path: str, param):
    """What the command uses when the option is not given; None when nothing fixed."""
    if param.default is not None and param.default != [] and param.default != ():
        return param.default
    if (path, param.name) in RESOLVED:
        return RESOLVED[(path, param.name)]()
    if path in FIELD_DEFAULTS:
        value = FIELD_DEFAULTS[path](param.name)
        return None if value in ((), []) else value  # an empty list of folders is no default value
    return None


def help_default(text: str | None):
    """The default a parameter's help text states: `siren (default)`, `default 95`, `(default on)`,
    `default 500 MP`, `default: 2, 3 and 4`; None when it states none (or only in words)."""
    text = text or ""
    word = re.search(r"([\w.-]+) \(default\)", text)
    if word:
        return word.group(1)
    found = re.search(r"\bdefault:?\s+([^;)]*)", text, re.IGNORECASE)
    if not found:
        return None
    phrase = re.split(r"\.\s", found.group(1))[0].strip().rstrip(".")
    if phrase in ("on", "off"):
        return phrase
    listed = re.fullmatch(r"(\d+(?:,\s*\d+)*)\s+and\s+(\d+)", phrase)
    if listed:
        return [float(n) for n in re.findall(r"\d+", phrase)]
    number = re.match(r"([0-9][0-9.e+-]*)(\s*MP\b)?", phrase)
    if number:
        return float(number.group(1)) * (1e6 if number.group(2) else 1)
    return None


def same(stated, value) -> bool:
    """A default as the README or help text writes it against a value."""
    if isinstance(value, bool):
        return stated == ("on" if value else "off")
    try:
        if isinstance(value, (list, tuple)):
            items = stated if isinstance(stated, list) else [s for s in re.split(r"[,\s]+", stated) if s]
            return [_number(s) for s in items] == [float(v) for v in value]
        if isinstance(value, (int, float)):
            return _number(stated) == float(value)
    except ValueError:
        return False
    return stated == str(value)


def _number(text) -> float:
    return float(text) if isinstance(text, (int, float)) else float(text.replace(",", "").replace("_", ""))


# ---------------------------------------------------------------- the README


class Row(NamedTuple):
    path: str  # "upscale restore"
    options: tuple[str, ...]  # ("-m", "--model")
    stated: str | None  # the value in the default cell's leading code span; None: prose
    cell: str
    line: int


def option_rows(text: str) -> list[Row]:
    """Every row of every `option of ...` table."""
    rows, lines = [], text.splitlines()
    for number, line in enumerate(lines, 1):
        head = TABLE_HEAD.match(line)
        if not head:
            continue
        for offset, row in enumerate(lines[number + 1:], number + 2):  # past the |---| line
            if not row.startswith("|"):
                break
            cells = [c.strip() for c in row.strip().strip("|").split("|")]
            names = tuple(tok for span in CODE_SPAN.findall(cells[0]) for tok in re.split(r"[,/\s]+", span)
                          if tok.startswith("-"))
            lead = CODE_SPAN.match(cells[1])
            rows.append(Row(head.group(1), names, lead.group(1) if lead else None, cells[1], offset))
    return rows


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```[a-z]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def prose(text: str) -> str:
    """The README without its code blocks."""
    return re.sub(r"^```[a-z]*\n.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def invocations(line: str) -> list[tuple[str, list[str]]]:
    """(command path, option tokens) of every `upscale ...` run in a shell line: after pipes, inside
    quoted --wrap strings, and `python -m upscale_cli ...`."""
    try:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError:  # an unbalanced quote in a fragment of prose
        tokens = line.split()
    found, segment = [], []
    for token in [*tokens, ";"]:
        if token in SHELL_BREAKS:
            found += _segment_invocations(segment)
            segment = []
        elif token.startswith("upscale "):  # a whole command inside quotes (sbatch --wrap '...')
            found += invocations(token)
        else:
            segment.append(token)
    return found


def _segment_invocations(tokens: list[str]) -> list[tuple[str, list[str]]]:
    for i, token in enumerate(tokens):
        if token == "upscale" or (token == "upscale_cli" and i and tokens[i - 1] == "-m"):
            return [_resolve(tokens[i + 1:])]
    return []


def _resolve(args: list[str]) -> tuple[str, list[str]]:
    """Walk the subcommand words, as the CLI does; the rest's options."""
    cmd, path = root(), "upscale"
    while args and args[0] in getattr(cmd, "commands", {}):
        cmd, path, args = cmd.commands[args[0]], f"{path} {args[0]}", args[1:]
    flags = []
    for arg in args:
        arg = arg.strip("[]")
        if arg.startswith("-") and arg != "-":
            flags.append(arg.split("=", 1)[0])
    return path, flags


def known(path: str) -> set[str]:
    return set(options_of(command(path))) | HELP_OPTIONS


# ---------------------------------------------------------------- the tests


def test_the_readme_has_option_tables_for_every_command():
    paths = {row.path for row in option_rows(README)}
    wanted = {"upscale", "upscale restore", "upscale fit-single", "upscale benchmark", "upscale train"}
    assert wanted <= paths, f"no `option of ...` table for {sorted(wanted - paths)}"
    assert len(option_rows(README)) >= 60, "the option tables have lost rows"


@pytest.mark.parametrize("row", option_rows(README), ids=lambda r: f"{r.path}:{'/'.join(r.options)}")
def test_table_row_names_options_of_its_command(row):
    assert row.options, f"README line {row.line}: the first cell names no option"
    missing = [o for o in row.options if o not in known(row.path)]
    assert not missing, f"README line {row.line}: `{row.path}` has no option {', '.join(missing)}"


@pytest.mark.parametrize("row", option_rows(README), ids=lambda r: f"{r.path}:{'/'.join(r.options)}")
def test_stated_default_is_the_commands_default(row):
    cmd = command(row.path)
    params = dict.fromkeys(options_of(cmd)[o] for o in row.options)
    for param in params:
        value = effective_default(row.path, param)
        if row.stated is None:
            assert value is None, (f"README line {row.line}: {param.opts[0]} of `{row.path}` defaults to "
                                   f"{value!r}, but the README gives no value ({row.cell!r})")
        else:
            assert value is not None, (f"README line {row.line}: {param.opts[0]} of `{row.path}` has no fixed "
                                       f"default, but the README states `{row.stated}`")
            assert same(row.stated, value), (f"README line {row.line}: {param.opts[0]} of `{row.path}`: the "
                                             f"README says `{row.stated}`, the command uses {value!r}")


@pytest.mark.parametrize("row", option_rows(README), ids=lambda r: f"{r.path}:{'/'.join(r.options)}")
def test_stated_default_is_what_help_says(row):
    for param in dict.fromkeys(options_of(command(row.path))[o] for o in row.options):
        said = help_default(param.help)
        if said is not None:
            assert row.stated is not None and same(row.stated, said), (
                f"README line {row.line}: {param.opts[0]} of `{row.path}`: --help says the default is "
                f"{said!r}, the README {row.cell!r}")


def test_help_defaults_are_the_commands_defaults():
    """Whatever the README says: a default stated in --help is the one the command uses."""
    wrong = []
    for path, cmd in all_commands():
        for param in cmd.params:
            said = help_default(getattr(param, "help", None))
            value = effective_default(path, param)
            if said is not None and not same(said, value):
                wrong.append(f"{path} {param.opts[0]}: --help says {said!r}, the command uses {value!r}")
    assert not wrong, "\n".join(wrong)


def test_example_commands_use_options_of_their_command():
    """Every `upscale ...` in a code block or a code span: its options are its command's."""
    lines = [line.split(" #")[0] for block in code_blocks(README) for line in block.splitlines()
             if not line.lstrip().startswith("#")]  # comments are prose
    lines += [span for span in CODE_SPAN.findall(prose(README)) if span.split()[0] == "upscale"]
    runs = [(line, path, flags) for line in lines for path, flags in invocations(line)]
    assert len(runs) >= 40, "the examples were not found (has the README's shape changed?)"
    bad = [f"{line.strip()!r}: `{path}` has no {flag}" for line, path, flags in runs for flag in flags
           if flag not in known(path)]
    assert not bad, "\n".join(bad)


def test_every_option_the_readme_names_exists():
    """A code span that starts with an option (`--tile N`, `--lpips/--no-lpips`) names one that
    some command has (the tables and examples say which command)."""
    every = set(HELP_OPTIONS).union(*(options_of(cmd) for _, cmd in all_commands()))
    named = {tok for span in CODE_SPAN.findall(prose(README)) for tok in span.split()[0].split("/")
             if OPTION.match(tok)}
    assert len(named) >= 40, "the README's options were not found (has its shape changed?)"
    assert not sorted(named - every), f"options no command has: {sorted(named - every)}"


def test_every_environment_variable_the_readme_names_is_read_by_the_code():
    sources = "\n".join(p.read_text(encoding="utf-8", errors="replace")
                        for folder in ("src", "scripts") for p in (ROOT / folder).rglob("*")
                        if p.is_file() and p.suffix in (".py", ".sh"))
    named = set(re.findall(r"\bUPSCALE_[A-Z0-9_]+\b", README))
    assert named
    unread = sorted(v for v in named if v not in sources)
    assert not unread, f"the README names variables nothing reads: {unread}"


def test_local_links_resolve():
    targets = re.findall(r"\]\(([^)\s]+)\)", README)
    local = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]
    assert local
    broken = [t for t in local if t and not (ROOT / t).exists()]
    assert not broken, f"links to nothing: {broken}"


def test_json_field_table_is_the_report_schema():
    from upscale_cli.report import FIELDS

    table = re.search(r"^\| field \| meaning \|\n\|[-| ]+\|\n((?:\|.*\n)+)", README, re.MULTILINE)
    assert table, "the README has no `| field | meaning |` table of the --json rows"
    listed = [name for row in table.group(1).splitlines() for name in CODE_SPAN.findall(row.split("|")[1])]
    assert sorted(listed) == sorted(FIELDS), f"README: {listed}; report rows: {list(FIELDS)}"


def _steps(command_line: str) -> list[list[str]]:
    """A shell line's commands, normalised: `python -m pip` is pip, quiet flags dropped."""
    steps = []
    for part in command_line.split("&&"):
        words = [w for w in shlex.split(part) if w != "-q"]
        if words[:3] == ["python", "-m", "pip"]:
            words = ["pip", *words[3:]]
        if words:
            steps.append(words)
    return steps


def test_setup_commands_are_at_the_top_and_are_what_ci_runs():
    setup = README.split("## Set up", 1)[1].split("\n## ", 1)[0]
    blocks = [b.strip() for b in code_blocks(setup)]
    assert blocks[:2] == [INSTALL_COMMAND, TEST_COMMAND]
    ci = [step for line in CI_SCRIPT.read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#") for step in _steps(line)]
    install, test = _steps(INSTALL_COMMAND), _steps(TEST_COMMAND)
    assert ["bash", "scripts/install_torch.sh"] in install and ["bash", "scripts/install_torch.sh"] in ci
    assert ["pip", "install", "-e", "."] in install
    assert any(s[:3] == ["pip", "install", "-e"] and s[3].startswith(".") for s in ci)  # the project, editable
    for step in test:  # the README's test command is CI's, step for step
        assert step in ci, f"CI does not run {' '.join(step)}"
    assert (ROOT / install[-1][1]).is_file()  # the example the first command upscales
