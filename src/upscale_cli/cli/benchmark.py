"""`upscale benchmark DATASET... -x 2 -x 4 -m MODEL ...`: models x datasets x scales -> a table and a report."""
from __future__ import annotations

import sys
from contextlib import nullcontext
from typing import List, Optional

import typer

from upscale_cli import choices
from upscale_cli.cli import options

HELP = """Measure PSNR/SSIM (Y channel), speed and memory of models on datasets of HR images.

DATASET is a folder of HR images (LR made by bicubic downscaling), an HR_DIR:LR_DIR pair,
or Set5 / Set14 / BSD68 (also --set). The standard sets are not shipped: --set NAME is the
folder NAME inside --data-dir DIR, else $UPSCALE_BENCHMARK_DIR, else shared/datasets/benchmark
above the current folder. Models whose weights cannot be had offline, and models that do not
apply to a dataset's inputs (pixel-recursive takes at most 16x16), are skipped, each with one
line; the exit status is non-zero when something failed or nothing could be measured.
Examples: upscale benchmark --data-dir ~/sr-sets --set Set5 -x 2 -x 4 ;
upscale benchmark photos/ -x 4 -m bicubic -m opencv-espcn --degrade jpeg:30 --out report/"""
DEFAULT_SCALES = [2, 3, 4]
# PyTorch, not `upscale`'s auto: every image of Set5/Set14 has a size of its own, so auto (OpenVINO
# from a shape's second use) would run nearly all of them in PyTorch anyway, and one runtime keeps
# the speed figures comparable. The same as BenchmarkConfig's (benchmark.protocol.BENCHMARK_RUNTIME),
# which is not imported here: `upscale --help` must not load the benchmark package.
DEFAULT_RUNTIME: choices.Runtime = "torch"
RUNTIME_HELP = ("What runs the network models on the CPU: torch (default), openvino (each image's tile shapes are "
                "converted once in an untimed call, then the compiled model is timed) or auto (as for upscale; "
                "timed after the same untimed calls). Not auto by default as for upscale: every Set5/Set14 image "
                "has a size of its own, so auto would run nearly all of them in PyTorch anyway, and torch keeps "
                "speed figures comparable. OpenCV's models and interpolation are not affected.")


def benchmark_command(
    datasets: Optional[List[str]] = typer.Argument(None, metavar="DATASET...", help="HR folders, HR_DIR:LR_DIR pairs, or Set5/Set14/BSD68."),
    sets: Optional[List[str]] = typer.Option(None, "--set", metavar="NAME", help="A standard set (Set5, Set14, BSD68): the folder NAME inside the data folder (see --data-dir)."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", metavar="DIR", help="The folder holding the set folders for --set (DIR/Set5/*.png ...); default $UPSCALE_BENCHMARK_DIR, else shared/datasets/benchmark above the current folder. A folder of your own images is a DATASET instead."),
    scales: Optional[List[int]] = typer.Option(None, "-x", "--scale", min=1, metavar="N", help="Scale (repeatable); default: 2, 3 and 4. 1 = restoration."),
    models: Optional[List[str]] = typer.Option(None, "-m", "--model", metavar="MODEL", help="Model name or weights file (repeatable); default: bicubic, OpenCV and shipped models."),
    all_models: bool = typer.Option(False, "--all", help="Every catalogue model with the scale (downloads what is missing)."),
    degrade: Optional[List[str]] = typer.Option(None, "--degrade", metavar="KIND:AMOUNT", help="Degrade the LR input, in order: blur:SIGMA, noise:SIGMA, jpeg:QUALITY (repeatable)."),
    device: str = typer.Option("auto", "--device", **options.DEVICE_PARSING, help="auto: CUDA, else Apple MPS, else the CPU (OpenCV models always run on the CPU)."),
    runtime: choices.Runtime = typer.Option(DEFAULT_RUNTIME, "--runtime", help=RUNTIME_HELP),
    out: Optional[str] = typer.Option(None, "-o", "--out", metavar="DIR", help="Folder for results.json/.csv, report.md, comparison strips and charts."),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Seed of the noise degradation."),
    ensemble: bool = typer.Option(False, "--ensemble", help="Also run each network model with --ensemble (the mean over 8 flips/rotations), as a row MODEL+ensemble."),
    lpips: bool = typer.Option(True, "--lpips/--no-lpips", help="Also measure LPIPS when the lpips package and its weights are installed."),
) -> None:
    from upscale_cli.benchmark import (BenchmarkConfig, check_data_dir, named_set, parse_dataset, parse_degradation,
                                       run_benchmark, write_report)

    if data_dir is not None:
        check_data_dir(data_dir)
    specs = [parse_dataset(d, data_dir) for d in datasets or []] + [named_set(s, data_dir) for s in sets or []]
    config = BenchmarkConfig(
        datasets=tuple(dict.fromkeys(specs)),
        scales=tuple(dict.fromkeys(scales or DEFAULT_SCALES)),
        models=tuple(models or ()),
        all_models=all_models,
        degradations=tuple(parse_degradation(d) for d in degrade or []),
        device=device,
        seed=seed,
        lpips=lpips,
        comparisons=out is not None,
        progress_downloads=False,  # a download bar cannot nest inside the benchmark's bar
        ensemble=ensemble,
        runtime=runtime,
    )
    reporter = _Reporter()
    with reporter.bar():
        result = run_benchmark(config, on_progress=reporter.progress, on_error=reporter.error)
    written = write_report(result, out, config) if out is not None else None  # before stdout, which can fail
    print_table(result)
    for skip in result.skipped:
        typer.echo(f"skipped {skip}", err=True)
    for note in result.notes:
        typer.echo(note, err=True)
    if written is not None:
        typer.echo(f"wrote {len(written)} files to {out} (report.md, results.json, results.csv)", err=True)
    skipped = f", {len(result.skipped)} skipped" if result.skipped else ""
    typer.echo(f"{len(result.records)} results in {result.seconds:.1f} s (--runtime {runtime}); "
               f"{len(result.failures)} failed{skipped}", err=True)
    if result.failures or not result.records:
        raise typer.Exit(1)


class _Reporter:
    """A rich bar on a terminal; otherwise one plain line per dataset and scale."""

    def __init__(self) -> None:
        self.use_bar = sys.stderr.isatty()
        self._progress = None
        self._task = None
        self._group = None

    def bar(self):
        if not self.use_bar:
            return nullcontext()
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                  TimeRemainingColumn(), transient=True, console=Console(stderr=True))
        return self._progress

    def progress(self, done: int, total: int, text: str) -> None:
        if self._progress is not None:
            if self._task is None:
                self._task = self._progress.add_task("benchmark", total=total)
            self._progress.update(self._task, completed=done, total=total, description=text[:60])
            return
        group = " ".join(text.split()[:2])  # "Set5 x2"
        if group != self._group:
            self._group = group
            typer.echo(f"[{done}/{total}] {group}", err=True)

    def error(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.print(f"error: {message}", markup=False, highlight=False)
        else:
            typer.echo(f"error: {message}", err=True)


def print_table(result) -> None:
    """The results table on stdout: rich on a terminal (best values bold green), plain text otherwise (best
    marked *); a failed write is StdoutWriteError (one line, exit 1)."""
    from upscale_cli.benchmark import table_rows
    from upscale_cli.cli import stdout

    header, rows = table_rows(result)
    if not rows:
        typer.echo("no results", err=True)
        return
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(title="upscale benchmark (best of each dataset and scale in bold green)")
        for i, name in enumerate(header):
            table.add_column(name, justify="left" if i < 3 or name == "degradation" else "right")
        for row in rows:
            table.add_row(*(Text(t, style="bold green" if best else "") for t, best in row))
        with stdout.checked():
            Console().print(table)
        return
    cells = [header] + [[f"{t}*" if best else t for t, best in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    text_columns = 4 if "degradation" in header else 3
    for row in cells:
        line = "  ".join(c.ljust(w) if i < text_columns else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        stdout.echo(line.rstrip())
    stdout.echo("* = best of its dataset and scale")


def register(app: typer.Typer) -> None:
    app.command("benchmark", help=HELP)(benchmark_command)
