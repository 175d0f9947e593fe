"""`upscale restore PATH... [-o OUT] [--task auto|jpeg|denoise|inpaint] [--mask MASK.png] [--strength 0..1]`."""
from __future__ import annotations

from typing import List, Optional

import typer

from upscale_cli.cli import progress as progress_ui

HELP = """Repair JPEG artifacts, noise, holes and overlaid text at the same size.

Writes {stem}_restored{ext} next to each input (or into -o). --task auto (the default) reads
each file's JPEG quality and estimates its noise, then runs what fits (noise: unet-restore;
JPEG below quality 85: unet-jpeg; clean: left as is) and says so on the file's line.
--mask marks pixels to fill (white = fill; the same size as the image): they are filled from
their surroundings (holes, scratches, overlaid text). Text without a mask is neither found nor removed.
--strength blends the input (0) and the restored image (1); masked pixels are always filled.

Examples: upscale restore old.jpg ; upscale restore scan.png --mask scratches.png ;
upscale restore shots/ -r -o fixed/ --strength 0.7 ; upscale photo.jpg -x 4 --restore"""


def restore_command(
    paths: List[str] = typer.Argument(..., metavar="PATH...", help="Files, folders, quoted globs, or - for stdin."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Output file (one input) or folder; - for stdout."),
    task: str = typer.Option("auto", "--task", help="auto (by each file's JPEG quality and noise), jpeg, denoise or inpaint (masked pixels only)."),
    mask: Optional[str] = typer.Option(None, "--mask", help="Image of the pixels to fill (white = fill), same size as the input."),
    strength: float = typer.Option(1.0, "--strength", help="0 = the input, 1 = fully restored (outside the mask)."),
    model: Optional[str] = typer.Option(
        None, "-m", "--model",
        help="Restoration model (see `upscale models`) or a weights file, for every file; default: chosen per file "
             "(--task auto), unet-restore (denoise, inpaint and --mask), unet-jpeg (jpeg)."),
    recursive: bool = typer.Option(False, "-r", "--recursive", help="Include subfolders of folder inputs."),
    fmt: Optional[str] = typer.Option(None, "--format", help="png, jpg, webp, tiff or bmp. Default: -o's extension, else the input's format (GIF: png)."),
    quality: Optional[int] = typer.Option(None, "--quality", min=1, max=100, help="JPEG/WebP quality (default 95)."),
    png_compression: Optional[int] = typer.Option(None, "--png-compression", help="PNG zlib level: 0 fastest, 9 smallest files (default: level 1 with run-length matching, about 5x faster than 6 for files about 5% larger)."),
    shard: Optional[str] = typer.Option(None, "--shard", metavar="K/N", help="Take part K (0 to N-1) of N: a stable 1/N of the inputs by relative path, for N machines or array-job tasks."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs (inputs are never replaced)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps."),
    half: bool = typer.Option(False, "--half", help="float16 on a GPU where the model supports it."),
    tile: int = typer.Option(0, "--tile", help="Tile size in pixels; 0 = automatic."),
    tile_overlap: Optional[int] = typer.Option(None, "--tile-overlap", help="Tile overlap in pixels (default from the model)."),
    max_pixels: Optional[int] = typer.Option(None, "--max-pixels", help="Refuse inputs with more pixels than this (decompression-bomb guard; default 178956970, 0 = no limit)."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Print nothing but errors."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per file on stdout."),
) -> None:
    from upscale_cli.batch import (WriteOptions, check_output_options, expand_inputs, parse_shard, plan_jobs,
                                   select_shard)
    from upscale_cli.errors import UsageError
    from upscale_cli.restore import RestoreConfig, batch_restore, read_mask

    check_output_options(fmt, as_json, output)
    options = WriteOptions(format=fmt, quality=quality, max_pixels=max_pixels, png_compression=png_compression)
    part = parse_shard(shard) if shard is not None else None
    config = RestoreConfig(model=model, task=task, strength=strength, device=device, half=half, tile=tile,
                           tile_overlap=tile_overlap)
    mask_tensor = read_mask(mask) if mask is not None else None
    converter = batch_restore(config, mask_tensor, progress=not quiet)
    restorer = converter.restorer
    if mask is None and restorer is not None and restorer.needs_mask:
        raise UsageError(f"--task {task} with model {restorer.model_name!r} needs --mask (an image, white = fill)")
    jobs = select_shard(plan_jobs(expand_inputs(paths, recursive=recursive), output, "restored", fmt, overwrite), part)
    record = {"model": converter.name, "task": task, "strength": strength}
    reporter = progress_ui.BatchReporter(len(jobs), quiet=quiet, as_json=as_json, record=record,
                                         stdout_busy=output == "-")
    results = reporter.run(jobs, converter, options)
    for note in dict.fromkeys(note for r in converter.restorers for note in r.notes):
        reporter.note(note)
    if any(r.status == "failed" for r in results):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the `restore` command."""
    app.command("restore", help=HELP)(restore_command)
