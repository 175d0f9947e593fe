"""`upscale restore PATH... [-o OUT] [--task auto|jpeg|denoise|inpaint] [--mask MASK.png] [--strength 0..1]`."""
from __future__ import annotations

import os
from typing import Optional

import typer

from upscale_cli.choices import Task
from upscale_cli.cli import options as common
from upscale_cli.cli import progress as progress_ui

HELP = """Repair JPEG artifacts, noise, holes and overlaid text at the same size.

Writes {stem}_restored{ext} next to each input (or into -o). --task auto (the default) reads
each file's JPEG quality and estimates its noise, then runs what fits (noise: unet-restore;
JPEG below quality 85: unet-jpeg; clean: left as is) and says so on the file's line.
--mask marks pixels to fill (white = fill; the same size as the image): unet-inpaint fills them
from their surroundings (holes, scratches, overlaid text). Text without a mask is neither found nor removed.
--strength blends the input (0) and the restored image (1); masked pixels are always filled.

Examples: upscale restore old.jpg ; upscale restore scan.png --mask scratches.png ;
upscale restore shots/ -r -o fixed/ --strength 0.7 ; upscale restore shots/ -o fixed/ --ray auto ;
upscale photo.jpg -x 4 --restore"""


def restore_command(
    paths: common.Paths,
    output: common.Output = None,
    task: Task = typer.Option("auto", "--task", help="auto (by each file's JPEG quality and noise), jpeg, denoise or inpaint (masked pixels only)."),
    mask: Optional[str] = typer.Option(None, "--mask", help="Image of the pixels to fill (white = fill), same size as the input."),
    strength: float = typer.Option(1.0, "--strength", help="0 = the input, 1 = fully restored (outside the mask)."),
    model: Optional[str] = typer.Option(
        None, "-m", "--model",
        help="Restoration model (see `upscale models`) or a weights file, for every file; default: chosen per file "
             "(--task auto), unet-restore (denoise), unet-jpeg (jpeg), unet-inpaint (inpaint and --mask)."),
    recursive: common.Recursive = False,
    fmt: common.Format = None,
    quality: common.Quality = None,
    png_compression: common.PngCompression = None,
    ray: common.Ray = None,
    shard: common.Shard = None,
    overwrite: common.Overwrite = False,
    device: common.Device = "auto",
    half: common.Half = False,
    tile: common.Tile = 0,
    tile_overlap: common.TileOverlap = None,
    max_pixels: common.MaxPixels = None,
    quiet: common.Quiet = False,
    as_json: common.Json = False,
) -> None:
    from upscale_cli.batch import (WriteOptions, check_output_options, expand_inputs, parse_shard, plan_jobs,
                                   select_shard)
    from upscale_cli.errors import UsageError
    from upscale_cli.ray_batch import RestoreRecipe
    from upscale_cli.report import RowDefaults
    from upscale_cli.restore import RestoreConfig, batch_restore, read_mask

    check_output_options(as_json, output)
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
    defaults = RowDefaults(model=converter.name, task=task, strength=strength)
    reporter = progress_ui.BatchReporter(len(jobs), quiet=quiet, as_json=as_json, defaults=defaults,
                                         stdout_busy=output == "-")
    # --ray: each worker builds this converter from the settings, reading the mask file itself
    recipe = RestoreRecipe(config, os.path.abspath(mask) if mask is not None else None) if ray is not None else None
    results = reporter.run(jobs, converter, options, ray=ray, recipe=recipe)
    reporter.finish(results, [note for r in converter.restorers for note in r.notes])


def register(app: typer.Typer) -> None:
    """Add the `restore` command."""
    app.command("restore", help=HELP)(restore_command)
