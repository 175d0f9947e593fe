"""`upscale fit-single PATH... --size N`: fit a coordinate MLP to each image and render it at any size.

A converter the batch runner drives (fit_single/converter.py), as `upscale restore` is: several
inputs, folders and globs, -o as a file (one input) or a folder, existing outputs skipped unless
--overwrite, inputs never replaced, --json rows, --shard, --ray (each worker fits its files), exit 1
if any file failed (after the others). Output name, when -o is not given: next to each input (or the
--from-model file) as `{stem}_fit{W}x{H}.png`, e.g. sprite_fit256x256.png.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional

import typer

from upscale_cli.cli import options as common
from upscale_cli.cli import progress as progress_ui

PLAIN_PROGRESS_LINES = 10  # lines of progress per file when stderr is not a terminal
STDOUT_REFUSED = "fit-single writes a file, not stdout; for stdout use `upscale IMAGE -m fit-single -o -`"

HELP = """Fit a small network f(x, y) -> colour to each image (no dataset) and render it at any size.

Examples: upscale fit-single sprite.png --size 1024 ; upscale fit-single icons/ -x 4 -o big/ --json ;
upscale fit-single logo.png -x 4 --save-model logo.safetensors ; upscale fit-single icons/ -o big/ --ray auto ;
upscale fit-single --from-model logo.safetensors --size 4096 -o big.png"""


def fit_single_command(
    paths: Optional[List[str]] = typer.Argument(None, metavar="PATH...", help="Images, folders or quoted globs to fit (not with --from-model)."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Output file (one input) or folder (default: {stem}_fit{W}x{H}.png beside each input)."),
    size: Optional[int] = typer.Option(None, "--size", help="Output longer side in pixels (keeps the aspect ratio)."),
    width: Optional[int] = typer.Option(None, "--width", help="Output width in pixels (keeps aspect unless --height is given)."),
    height: Optional[int] = typer.Option(None, "--height", help="Output height in pixels."),
    scale: Optional[float] = typer.Option(None, "-x", "--scale", help="Output scale factor (default 4 when no size is given)."),
    encoding: common.Encoding = "siren",
    freq_scale: Optional[float] = typer.Option(None, "--freq-scale", help="Fourier frequency std, cycles per input pixel."),
    hidden: Optional[int] = typer.Option(None, "--hidden", help="MLP width: units per hidden layer."),
    depth: Optional[int] = typer.Option(None, "--depth", help="MLP depth: hidden layers."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimisation steps (default 300)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate, cosine-decayed (default 2e-3 for siren, 1e-2 fourier, 5e-3 none)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same result on the CPU)."),
    consistency: bool = typer.Option(True, "--consistency/--no-consistency", help="Make the output's bicubic downscale equal the input."),
    target_psnr: Optional[float] = typer.Option(None, "--target-psnr", help="Stop early once the fit reproduces the input this well (dB)."),
    palette_colours: Optional[int] = typer.Option(None, "--palette-colours", metavar="N", help="Images of at most N distinct colours (default 32; 0 = never) are fitted as a choice among their own colours: flat areas stay flat, edges crisp (sprites, icons, pixel art)."),
    save_model: Optional[Path] = typer.Option(None, "--save-model", help="Also save the fitted network (.safetensors); one input only."),
    from_model: Optional[Path] = typer.Option(None, "--from-model", help="Render a network saved with --save-model instead of fitting."),
    max_output_pixels: common.MaxOutputPixels = None,
    recursive: common.Recursive = False,
    ray: common.Ray = None,
    shard: common.Shard = None,
    overwrite: common.Overwrite = False,
    quiet: common.Quiet = False,
    as_json: common.Json = False,
) -> None:
    from upscale_cli.batch import WriteOptions, parse_shard
    from upscale_cli.errors import UsageError
    from upscale_cli.fit_single import fitting
    from upscale_cli.fit_single.converter import FitConverter, SizeRequest
    from upscale_cli.ray_batch import FitRecipe
    from upscale_cli.report import RowDefaults

    if bool(paths) == (from_model is not None):
        raise UsageError("give images to fit, or --from-model FILE to render (not both)")
    if output == "-":
        raise UsageError(STDOUT_REFUSED)
    if ray is not None and from_model is not None:  # one render of a saved network: nothing to spread
        raise UsageError("--ray fits images on a cluster; --from-model renders here: drop --ray")
    request = SizeRequest(size, width, height, scale, max_output_pixels)
    request.check()
    part = parse_shard(shard) if shard is not None else None
    if from_model is not None:
        return _render_saved(from_model, output, request, overwrite, part, quiet, as_json)
    overrides = dict(encoding=encoding, freq_scale=freq_scale, hidden=hidden, depth=depth, steps=steps, lr=lr,
                     seed=seed, consistency=consistency, target_psnr=target_psnr, palette_colours=palette_colours)
    config = fitting.FitConfig.for_encoding(**{k: v for k, v in overrides.items() if v is not None})
    jobs = _plan(paths, output, recursive, request, overwrite, save_model, part)
    reporter = progress_ui.BatchReporter(len(jobs), quiet=quiet, as_json=as_json,
                                         defaults=RowDefaults(model=FitConverter.name))
    steps_shown = None if quiet or as_json or reporter.use_bar else _PlainSteps()
    converter = FitConverter(config, request, save_model, on_step=steps_shown)
    recipe = FitRecipe(config, request, save_model) if ray is not None else None  # what each Ray worker builds
    reporter.finish(reporter.run(jobs, converter, WriteOptions(), ray=ray, recipe=recipe), [])


def _plan(paths: list[str], output: Optional[str], recursive: bool, request, overwrite: bool,
          save_model: Optional[Path], part) -> list:
    """The runner's planning, with fit-single's names: `{stem}_fit{W}x{H}.png` from each image's
    header, PNG into a folder, -o's own format for a file; --save-model checked as an output (an
    existing file is skipped unless --overwrite; an input is never replaced). An image too large to
    fit fails before it is decoded."""
    from upscale_cli.batch import STDIO, Planned, _output_is_folder, expand_inputs, plan_jobs, select_shard
    from upscale_cli.errors import UsageError
    from upscale_cli.fit_single import converter

    sources = expand_inputs(paths, recursive=recursive)
    runnable = [s for s in sources if not (s.missing or s.ignored)]
    if save_model is not None and len(runnable) > 1:
        raise UsageError(f"--save-model saves one fitted network: give one image, not {len(runnable)} "
                         "(or run fit-single once per image)")
    if output is None and any(s.path is None for s in runnable):
        raise UsageError(f"{STDOUT_REFUSED}: give -o FILE with - (stdin)")
    size_of = {id(s): converter.header_size(s.path) for s in runnable}
    fmt = None if output is not None and not _output_is_folder(sources, output) else "png"
    written = (lambda target: [target, save_model]) if save_model is not None else None
    jobs = plan_jobs(sources, output, lambda s: converter.output_tag(request, size_of.get(id(s))), fmt,
                     overwrite, written, tag_pattern=converter.TAG_PATTERN)
    for k, job in enumerate(jobs):
        why = None if job.planned or output == STDIO else converter.too_large_to_fit(size_of.get(id(job.source)))
        if why:
            jobs[k] = dataclasses.replace(job, planned=Planned("failed", f"{job.source.label}: {why}"))
    return select_shard(jobs, part)


def _render_saved(model_path: Path, output: Optional[str], request, overwrite: bool, part,
                  quiet: bool, as_json: bool) -> None:
    """--from-model: one saved network (through the checked loader) rendered at the request's size,
    its output planned as any batch output (named, skipped if it exists, never an input)."""
    import time

    from upscale_cli.batch import Source, plan_jobs, select_shard
    from upscale_cli.fit_single import network, saved
    from upscale_cli.images import DecodedImage
    from upscale_cli.images.arrays import tensor_to_array
    from upscale_cli.images.write import write_image
    from upscale_cli.pipeline import planned_row
    from upscale_cli.report import ReportRow, RowDefaults

    start = time.perf_counter()
    mlp, source = saved.load_fitted(model_path)
    height, width = source.get("height"), source.get("width")
    if not height or not width:  # an older file: the rectangle's aspect is all we know
        width, height = [max(1, round(e * 1000)) for e in mlp.extent]
    target = request.target(height, width)  # over --max-output-pixels: refused here, before rendering
    defaults = RowDefaults(model=str(model_path))
    jobs = select_shard(plan_jobs([Source(model_path)], output, f"fit{target[1]}x{target[0]}",
                                  None if output is not None else "png", overwrite), part)
    rows = []
    for job in jobs:
        if job.planned:
            rows.append(planned_row(job, defaults))
            continue
        pixels, alpha = network.render_image(mlp, *target, colour_channels=1 if mlp.channels in (1, 2) else 3)
        pixels, alpha = tensor_to_array(pixels), None if alpha is None else tensor_to_array(alpha)
        write_image(DecodedImage(pixels=pixels, alpha=alpha, bit_depth=int(source.get("bit_depth", 8)),
                                 source_format="PNG"), job.output, format=job.format)
        row = ReportRow.start(job.source.label, defaults)
        row.scale, row.size, row.passes = None, [target[1], target[0]], []
        rows.append(row.end("ok", time.perf_counter() - start, str(job.output)))
    reporter = progress_ui.BatchReporter(len(jobs), quiet=quiet, as_json=as_json, defaults=defaults)
    reporter.finish(reporter.show(jobs, list(enumerate(rows))), [])


class _PlainSteps:
    """The fit's progress as a few plain lines per file on stderr (not a terminal, not quiet, not --json)."""

    def __init__(self) -> None:
        self.next_line = 0
        self.last = 0

    def __call__(self, step: int, steps: int, psnr: float) -> None:
        from upscale_cli.fit_single.fitting import describe_psnr

        if step <= self.last:  # the next file's fit began
            self.next_line = 0
        self.last = step
        if step >= self.next_line or step == steps:
            typer.echo(f"step {step}/{steps}: {describe_psnr(psnr)}", err=True)
            self.next_line = step + max(1, steps // PLAIN_PROGRESS_LINES)


def register(app: typer.Typer) -> None:
    app.command("fit-single", help=HELP)(fit_single_command)
