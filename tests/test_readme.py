"""The README and the docs it sends users to (docs/OPTIONS.md, docs/DETAILS.md) against the tool
they document: every default they state is the command's real default and what `--help` says,
every option they name exists (in the command it is documented for, where a table or an example
says which), every UPSCALE_* variable they name is read by the code, the limits the README states
are the code's, every local link resolves, the README's `--json` field table is the report's
schema, and its set-up commands are the ones CI runs.

How defaults are stated (the convention this test reads): docs/OPTIONS.md has every command's
options as a table whose header is  | option of `upscale CMD` | default | what it does |; the
README keeps a short table of the most used ones in the same format, each row as in OPTIONS.md,
and may state a default in prose as  `--option` default `VALUE`.  The first cell names
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
OPTIONS_DOC = "docs/OPTIONS.md"
# the user's documents: the README and the pages it moved its option tables and details to
DOCS = {name: (ROOT / name).read_text(encoding="utf-8") for name in ("README.md", OPTIONS_DOC, "docs/DETAILS.md")}
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


def _max_frames():
    from upscale_cli.frames import DEFAULT_MAX_FRAMES

    return DEFAULT_MAX_FRAMES


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
    **{(cmd, "max_frames"): _max_frames for cmd in ("upscale", "upscale restore")},
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
    source: str  # "docs/OPTIONS.md"
    path: str  # "upscale restore"
    options: tuple[str, ...]  # ("-m", "--model")
    stated: str | None  # the value in the default cell's leading code span; None: prose
    cell: str
    line: int


def option_rows(source: str) -> list[Row]:
    """Every row of every `option of ...` table of one document."""
    rows, lines = [], DOCS[source].splitlines()
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
            rows.append(Row(source, head.group(1), names, lead.group(1) if lead else None, cells[1], offset))
    return rows


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```[a-z]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def prose(text: str) -> str:
    """A document without its code blocks."""
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


ROWS = option_rows("README.md") + option_rows(OPTIONS_DOC)
COMMANDS = {"upscale", "upscale restore", "upscale fit-single", "upscale benchmark", "upscale train"}


def _row_id(row: Row) -> str:
    return f"{row.source}:{row.path}:{'/'.join(row.options)}"


def test_the_options_doc_has_a_table_for_every_command():
    rows = option_rows(OPTIONS_DOC)
    paths = {row.path for row in rows}
    assert COMMANDS <= paths, f"{OPTIONS_DOC}: no `option of ...` table for {sorted(COMMANDS - paths)}"
    assert len(rows) >= 60, f"{OPTIONS_DOC}: the option tables have lost rows"


def test_the_readme_keeps_short_tables_that_agree_with_the_options_doc():
    """The README's rows are a subset of OPTIONS.md's, cell for cell: the two cannot drift apart."""
    full = {(row.path, row.options): row.cell for row in option_rows(OPTIONS_DOC)}
    short = option_rows("README.md")
    assert {"upscale", "upscale restore", "upscale fit-single", "upscale benchmark"} <= {r.path for r in short}
    for row in short:
        assert (row.path, row.options) in full, (f"README line {row.line}: {'/'.join(row.options)} of "
                                                 f"`{row.path}` has no row in {OPTIONS_DOC}")
        assert full[(row.path, row.options)] == row.cell, (
            f"README line {row.line}: {'/'.join(row.options)} of `{row.path}`: the README's default is "
            f"{row.cell!r}, {OPTIONS_DOC}'s {full[(row.path, row.options)]!r}")


@pytest.mark.parametrize("row", ROWS, ids=_row_id)
def test_table_row_names_options_of_its_command(row):
    assert row.options, f"{row.source} line {row.line}: the first cell names no option"
    missing = [o for o in row.options if o not in known(row.path)]
    assert not missing, f"{row.source} line {row.line}: `{row.path}` has no option {', '.join(missing)}"


def _check_stated(where: str, path: str, options, stated: str | None, cell: str):
    """A default a document states for options of `path`: the command's, and what --help says."""
    cmd = command(path)
    for param in dict.fromkeys(options_of(cmd)[o] for o in options):
        value = effective_default(path, param)
        if stated is None:
            assert value is None, (f"{where}: {param.opts[0]} of `{path}` defaults to {value!r}, but the "
                                   f"document gives no value ({cell!r})")
        else:
            assert value is not None, (f"{where}: {param.opts[0]} of `{path}` has no fixed default, but "
                                       f"the document states `{stated}`")
            assert same(stated, value), (f"{where}: {param.opts[0]} of `{path}`: the document says "
                                         f"`{stated}`, the command uses {value!r}")


@pytest.mark.parametrize("row", ROWS, ids=_row_id)
def test_stated_default_is_the_commands_default(row):
    _check_stated(f"{row.source} line {row.line}", row.path, row.options, row.stated, row.cell)


@pytest.mark.parametrize("row", ROWS, ids=_row_id)
def test_stated_default_is_what_help_says(row):
    for param in dict.fromkeys(options_of(command(row.path))[o] for o in row.options):
        said = help_default(param.help)
        if said is not None:
            assert row.stated is not None and same(row.stated, said), (
                f"{row.source} line {row.line}: {param.opts[0]} of `{row.path}`: --help says the default "
                f"is {said!r}, the document {row.cell!r}")


PROSE_DEFAULT = re.compile(r"`(--[\w-]+)` default `([^`]+)`")


def prose_defaults() -> list[tuple[str, str, str, int]]:
    """(command path, option, stated value, line) of every `--option` default `VALUE` in the README's
    prose; the command is the one its section's heading names (`upscale train`), else `upscale`."""
    found, path, in_code = [], "upscale", False
    for number, line in enumerate(README.splitlines(), 1):
        in_code ^= line.startswith("```")
        if in_code:
            continue
        if line.startswith("## "):
            spans = [s for s in CODE_SPAN.findall(line) if s.startswith("upscale ")]
            path = _resolve(spans[0].split()[1:])[0] if spans else "upscale"
        found += [(path, option, value, number) for option, value in PROSE_DEFAULT.findall(line)]
    return found


def test_defaults_stated_in_the_readmes_prose_are_the_commands():
    stated = prose_defaults()
    assert len(stated) >= 5, "the README's prose defaults were not found (has its shape changed?)"
    for path, option, value, number in stated:
        assert option in known(path), f"README line {number}: `{path}` has no option {option}"
        _check_stated(f"README line {number}", path, [option], value, value)


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
    lines = [line.split(" #")[0] for text in DOCS.values() for block in code_blocks(text)
             for line in block.splitlines() if not line.lstrip().startswith("#")]  # comments are prose
    lines += [span for text in DOCS.values() for span in CODE_SPAN.findall(prose(text))
              if span.split()[0] == "upscale"]
    runs = [(line, path, flags) for line in lines for path, flags in invocations(line)]
    assert len(runs) >= 35, "the examples were not found (has the README's shape changed?)"
    bad = [f"{line.strip()!r}: `{path}` has no {flag}" for line, path, flags in runs for flag in flags
           if flag not in known(path)]
    assert not bad, "\n".join(bad)


def test_every_option_the_docs_name_exists():
    """A code span that starts with an option (`--tile N`, `--lpips/--no-lpips`) names one that
    some command has (the tables and examples say which command)."""
    every = set(HELP_OPTIONS).union(*(options_of(cmd) for _, cmd in all_commands()))
    named = {tok for text in DOCS.values() for span in CODE_SPAN.findall(prose(text))
             for tok in span.split()[0].split("/") if OPTION.match(tok)}
    assert len(named) >= 60, "the documents' options were not found (has their shape changed?)"
    assert not sorted(named - every), f"options no command has: {sorted(named - every)}"


def test_every_environment_variable_the_docs_name_is_read_by_the_code():
    sources = "\n".join(p.read_text(encoding="utf-8", errors="replace")
                        for folder in ("src", "scripts") for p in (ROOT / folder).rglob("*")
                        if p.is_file() and p.suffix in (".py", ".sh"))
    named = {v for text in DOCS.values() for v in re.findall(r"\bUPSCALE_[A-Z0-9_]+\b", text)}
    assert len(named) >= 10
    unread = sorted(v for v in named if v not in sources)
    assert not unread, f"the documents name variables nothing reads: {unread}"


def _limits():
    """(what the README says, the code's value) for each limit the README states in numbers."""
    from upscale_cli import download_settings as download
    from upscale_cli.images.read import MAX_STREAM_BYTES
    from upscale_cli.weights_guard import DEFAULT_MAX_WEIGHTS_BYTES

    return {
        r"`UPSCALE_DOWNLOAD_RETRIES` \(([\d,]+), at most ([\d,]+)\)": (download.RETRIES, download.MAX_RETRIES),
        r"`UPSCALE_DOWNLOAD_BACKOFF` \(([\d.]+) s, doubled up to a minute": (download.BACKOFF_S,),
        r"`UPSCALE_DOWNLOAD_TIMEOUT` \(read, ([\d.]+) s,\s+at most ([\d,]+)\)":
            (download.READ_TIMEOUT_S, download.MAX_TIMEOUT_S),
        r"`UPSCALE_DOWNLOAD_DEADLINE` \(([\d,]+) s per file": (download.DEADLINE_S,),
        r"`UPSCALE_DOWNLOAD_MIN_RATE` \(([\d,]+) bytes/s averaged over each\s+`UPSCALE_DOWNLOAD_RATE_WINDOW`, "
        r"([\d.]+) s": (download.MIN_RATE_BPS, download.RATE_WINDOW_S),
        r"not done within the ([\d,]+) s deadline": (download.DEADLINE_S,),
        r"slower than the minimum ([\d,]+) bytes/s": (download.MIN_RATE_BPS,),
        r"read up to ([\d,]+) MiB\s+\(`UPSCALE_MAX_STREAM_BYTES`": (MAX_STREAM_BYTES / 2**20,),
        r"more than ([\d,]+) MiB": (MAX_STREAM_BYTES / 2**20,),
        r"at most ([\d,]+) bytes of tensors \(`UPSCALE_MAX_WEIGHTS_BYTES`": (DEFAULT_MAX_WEIGHTS_BYTES,),
    }


def test_limits_the_readme_states_are_the_codes():
    for pattern, values in _limits().items():
        found = re.search(pattern, README)
        assert found, f"the README no longer states the limit /{pattern}/"
        stated = [_number(group) for group in found.groups()]
        assert stated == [float(v) for v in values], f"README: {found.group(0)!r}; the code: {values}"


def _anchors(text: str) -> set[str]:
    """GitHub's anchors of a Markdown page's headings: lower case, punctuation dropped, spaces -> -."""
    headings = re.findall(r"^#+ (.+)$", prose(text), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_local_links_resolve():
    broken, count = [], 0
    for name, text in DOCS.items():
        folder = (ROOT / name).parent
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            count += 1
            file, _, anchor = target.partition("#")
            path = folder / file if file else ROOT / name
            if not path.exists():
                broken.append(f"{name}: {target} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path.read_text(encoding="utf-8")):
                broken.append(f"{name}: {target} (no such heading)")
    assert count >= 20
    assert not broken, "links to nothing:\n" + "\n".join(broken)


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
