"""`upscale models`: list the catalogue, download, verify, locate and clear cached weights."""
from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer

from upscale_cli.cli import ErrorHandlingGroup, options, report_error, stdout

HELP = "List the models and manage the weights cache (`upscale models` lists them)."

models_app = typer.Typer(
    cls=ErrorHandlingGroup,
    help=HELP,
    invoke_without_command=True,
    **options.APP_SETTINGS,
)

COLUMNS = ("name", "arch", "task", "scales", "size", "license", "offline")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")


# ---------------------------------------------------------------- list


def _status(spec) -> str:
    """Whether a model works offline: packaged / cached / built in (no weights) / not cached."""
    from upscale_cli.weights_cache import is_cached

    files = list(spec.files.values())
    if not files:
        return "built in"
    if all(f.packaged for f in files):
        return "packaged"
    cached = [f for f in files if f.packaged or is_cached(f)]
    if len(cached) == len(files):
        return "cached"
    if cached:
        return "cached " + ", ".join(f"x{f.scale}" for f in cached)
    return "not cached"


def _record(spec) -> dict:
    from upscale_cli.weights_cache import cached_path, is_cached

    files = [
        {"scale": f.scale, "filename": f.filename, "size": f.size, "sha256": f.sha256, "url": f.url,
         "packaged": f.packaged, "cached": f.packaged or is_cached(f), "path": str(cached_path(f))}
        for f in spec.files.values()
    ]
    return {"name": spec.name, "arch": spec.arch, "task": spec.task, "scales": list(spec.scales),
            "size": sum(f.size for f in spec.files.values()), "license": spec.license,
            "offline": _status(spec), "description": spec.description, "files": files}


def _row(record: dict) -> tuple[str, ...]:
    from upscale_cli.download import format_size

    scales = ", ".join(f"x{s}" for s in record["scales"]) or "any"
    size = format_size(record["size"]) if record["size"] else "-"
    return (record["name"], record["arch"], record["task"], scales, size, record["license"], record["offline"])


def _print_table(rows: list[tuple[str, ...]], columns: tuple[str, ...] = COLUMNS) -> None:
    """A rich table on a terminal; aligned plain columns for pipes and logs."""
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table()
        for column in columns:
            table.add_column(column, no_wrap=column in ("name", "id", "arch", "scales"))
        for row in rows:
            table.add_row(*row)
        with stdout.checked():
            Console().print(table)
        return
    widths = [max(len(r[i]) for r in [columns, *rows]) for i in range(len(columns))]
    for row in [columns, *rows]:
        stdout.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def _list(as_json: bool) -> None:
    from upscale_cli.catalog import load_catalog

    records = [_record(spec) for spec in load_catalog().values()]
    if as_json:
        stdout.echo(json.dumps(records, indent=2))
    else:
        _print_table([_row(r) for r in records])


@models_app.callback()
def models_main(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the list as JSON."),
) -> None:
    """List every model: architecture, task, scales, size, licence and offline availability."""
    if ctx.invoked_subcommand is None:
        _list(as_json)


@models_app.command("list")
def list_command(as_json: bool = typer.Option(False, "--json", help="Print the list as JSON.")) -> None:
    """List every model (the same as plain `upscale models`)."""
    _list(as_json)


# ---------------------------------------------------------------- download / path


def _files_of(name: str, scale: Optional[int]) -> list:
    """The weights files of a model, optionally one scale; raises for unknown names and scales."""
    from upscale_cli.catalog import resolve
    from upscale_cli.errors import UnsupportedScaleError

    spec = resolve(name)
    if scale is None:
        return list(spec.files.values())
    if scale not in spec.files:
        scales = ", ".join(f"x{s}" for s in spec.scales) or "none"
        raise UnsupportedScaleError(f"model {spec.name} has no x{scale} weights (it has: {scales})")
    return [spec.files[scale]]


@models_app.command("download")
def download_command(
    names: Optional[List[str]] = typer.Argument(None, help="Model names (see `upscale models`)."),
    all_models: bool = typer.Option(False, "--all", help="Download every model that has weights."),
    scale: Optional[int] = typer.Option(None, "-x", "--scale", help="Only this scale's weights."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Download models' weights into the cache (verified by sha256), so they work offline. A file
    that fails does not stop the others; each failure is one line, and the exit is non-zero."""
    from upscale_cli.catalog import load_catalog
    from upscale_cli.download import ensure_weights
    from upscale_cli.errors import UpscaleError, UsageError

    if all_models:
        names = [name for name, spec in load_catalog().items() if spec.files]
    if not names:
        raise UsageError("name at least one model, or pass --all")
    tried, failures = 0, []
    for name in names:  # one bad name or file does not stop the others: each failure is one line
        try:
            files = _files_of(name, scale)
        except UpscaleError as err:
            tried += 1
            failures.append(err)
            report_error(err)
            continue
        for file in files:
            tried += 1
            try:
                path = ensure_weights(file, progress=not quiet)
            except UpscaleError as err:
                failures.append(err)
                report_error(err)
                continue
            stdout.echo(str(path))  # outside the try: a failed write to stdout ends the command, exit 1
    if failures:
        if tried > 1:
            typer.echo(f"{len(failures)} of {tried} downloads failed", err=True)
        raise typer.Exit(max(err.exit_code for err in failures))


@models_app.command("path")
def path_command(
    name: str = typer.Argument(..., help="A model name."),
    scale: Optional[int] = typer.Option(None, "-x", "--scale", help="Only this scale's file."),
) -> None:
    """Print the local path of a model's weights file(s); fails if they are not cached."""
    from upscale_cli.weights_cache import cached_path, is_cached
    from upscale_cli.errors import WeightsError

    files = _files_of(name, scale)
    if not files:
        raise WeightsError(f"model {name} has no weights file (it is built in)")
    missing = [f for f in files if not f.packaged and not is_cached(f)]
    if missing:
        which = ", ".join(f"x{f.scale}" for f in missing)
        raise WeightsError(f"model {name} {which} is not cached; run `upscale models download {name}`")
    for file in files:
        stdout.echo(str(cached_path(file)))


# ---------------------------------------------------------------- OpenModelDB


SEARCH_COLUMNS = ("id", "arch", "scale", "size", "license", "download")


@models_app.command("search")
def search_command(
    text: List[str] = typer.Argument(None, help="Words that must all appear in the id, name, author, architecture or tags."),
    scale: Optional[int] = typer.Option(None, "-x", "--scale", help="Only models of this scale."),
    arch: Optional[str] = typer.Option(None, "--arch", help="Only this architecture (esrgan, compact, swinir, span, ...)."),
    tag: Optional[str] = typer.Option(None, "--tag", help="Only models with this tag (anime, photo, jpeg, ...)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per model."),
) -> None:
    """Search the ~660 community models of OpenModelDB (a snapshot shipped with upscale-cli).
    Run one with `-m openmodeldb:ID`; "by hand" ones must be fetched by a person, then `upscale models add FILE`."""
    from upscale_cli import openmodeldb
    from upscale_cli.download import format_size

    found = openmodeldb.search(" ".join(text or []), scale=scale, arch=arch, tag=tag)
    if as_json:
        for model in found:
            file = model.downloadable or (model.files[0] if model.files else None)
            stdout.echo(json.dumps({"id": model.id, "name": model.name, "author": model.author,
                                    "architecture": model.architecture, "scale": model.scale, "license": model.license,
                                    "tags": list(model.tags), "size": model.size, "direct": model.downloadable is not None,
                                    "sha256": file.sha256 if file else None, "urls": list(file.urls) if file else []}))
        return
    if not found:
        typer.echo("no OpenModelDB model matches", err=True)
        raise typer.Exit(1)
    rows = [(m.id, m.architecture, f"x{m.scale}", format_size(m.size) if m.size else "-", m.license,
             "openmodeldb:" + m.id if m.downloadable else "by hand") for m in found]
    _print_table(rows, SEARCH_COLUMNS)
    typer.echo(f"{len(found)} model(s); run one with -m openmodeldb:ID", err=True)


@models_app.command("add")
def add_command(files: List[str] = typer.Argument(..., help="Weights files you downloaded by hand.")) -> None:
    """Verify a file you fetched by hand against the catalogue and OpenModelDB (by sha256) and
    cache it, so the model runs by name, offline too. The file itself is only read."""
    from upscale_cli.errors import UpscaleError

    exit_code = 0
    for name in files:  # one bad file does not stop the others
        try:
            line = _add_one(name)
        except UpscaleError as err:
            report_error(err)
            exit_code = max(exit_code, err.exit_code)
            continue
        stdout.echo(line)  # outside the try: a failed write to stdout ends the command, exit 1
    if exit_code:
        raise typer.Exit(exit_code)


def _add_one(name: str) -> str:
    from pathlib import Path

    from upscale_cli import openmodeldb
    from upscale_cli.catalog import load_catalog
    from upscale_cli.weights_cache import NotARegularFile, add_local_file, hash_file
    from upscale_cli.errors import InputNotFoundError, WeightsError

    path = Path(name).expanduser()
    if not path.exists():
        raise InputNotFoundError(f"{name}: no such file")
    try:  # a device, FIFO or folder is never read (a link to a file is fine)
        digest = hash_file(path)
    except NotARegularFile as err:
        raise WeightsError(f"not a regular file ({err})", path=name) from None
    except OSError as err:
        raise WeightsError(f"cannot read it: {err.strerror or err}", path=name) from None
    for spec in load_catalog().values():
        for file in spec.files.values():
            if file.sha256 == digest and not file.packaged:
                return f"{name}: {spec.name} x{file.scale} ({spec.license}), cached at {add_local_file(file, path)}; run it with -m {spec.name}"
    model = openmodeldb.find_by_sha256(digest)
    if model is not None:
        entry = openmodeldb.spec_for_file(model, digest)
        file = next(iter(entry.files.values()))
        return f"{name}: {entry.name} ({model.license}), cached at {add_local_file(file, path)}; run it with -m {entry.name}"
    raise WeightsError(f"sha256 {digest} matches no catalogue or OpenModelDB file; run it directly with -m {name}",
                       path=name)


# ---------------------------------------------------------------- verify / clear


@models_app.command("verify")
def verify_command() -> None:
    """Re-hash every cached file; remove corrupt ones and links (exit 1 if there were any). An entry
    that is not a regular file (a link, a device, a FIFO) is never read."""
    from upscale_cli.errors import printable_path
    from upscale_cli.weights_cache import verify_cache, weights_dir

    report = verify_cache(remove=True)
    for path in report.corrupt:
        typer.echo(f"corrupt (removed): {printable_path(path)}", err=True)
    for path, what, removed in report.not_files:
        typer.echo(f"not a regular file ({what}{', removed' if removed else ''}): {printable_path(path)}", err=True)
    partial = f", {len(report.partial)} partial download(s)" if report.partial else ""
    odd = f", {len(report.not_files)} not a regular file" if report.not_files else ""
    stdout.echo(f"{len(report.good)} good, {len(report.corrupt)} corrupt{odd}{partial} in {weights_dir()}")
    if not report.ok:
        raise typer.Exit(1)


@models_app.command("clear")
def clear_command() -> None:
    """Delete every cached weights file and compiled model (packaged weights stay)."""
    from upscale_cli.compiled import clear_compiled, compiled_dir
    from upscale_cli.download import format_size
    from upscale_cli.weights_cache import clear_cache, weights_dir

    count, freed = clear_cache()
    stdout.echo(f"removed {count} file(s), {format_size(freed)}, from {weights_dir()}")
    models, freed = clear_compiled()  # converted for --runtime: rebuilt by the next run that needs them
    if models:
        stdout.echo(f"removed {models} compiled model(s), {format_size(freed)}, from {compiled_dir()}")
