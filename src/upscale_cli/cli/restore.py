"""`upscale restore PATH... [-o OUT] [--task auto|jpeg|denoise|inpaint] [--mask MASK.png] [--strength 0..1]`."""
from __future__ import annotations

import os
from typing import Optional

import typer

from upscale_cli.choices import Task
from upscale_cli.cli import options as common

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


@common.with_groups
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
    batch: common.BatchOptions = common.BatchOptions(),
    quiet: common.Quiet = False,
    as_json: common.Json = False,
) -> None:
    from upscale_cli.cli.batch_run import BatchRun
    from upscale_cli.errors import UsageError
    from upscale_cli.ray_batch import RestoreRecipe
    from upscale_cli.report import RowDefaults
    from upscale_cli.restore import RestoreConfig, batch_restore, read_mask

    run = BatchRun.start(batch, output, quiet, as_json)
    config = RestoreConfig(model=model, task=task, strength=strength, **batch.engine())
    mask_tensor = read_mask(mask) if mask is not None else None
    converter = batch_restore(config, mask_tensor, progress=not quiet)
    restorer = converter.restorer
    if mask is None and restorer is not None and restorer.needs_mask:
        raise UsageError(f"--task {task} with model {restorer.model_name!r} needs --mask (an image, white = fill)")
    jobs = run.plan(run.sources(paths, recursive), "restored")
    defaults = RowDefaults(model=converter.name, task=task, strength=strength)
    # --ray: each worker builds this converter from the settings, reading the mask file itself
    mask_path = os.path.abspath(mask) if mask is not None else None
    run.run(jobs, converter, defaults, recipe=lambda: RestoreRecipe(config, mask_path),
            notes=lambda: [note for r in converter.restorers for note in r.notes])


def register(app: typer.Typer) -> None:
    """Add the `restore` command."""
    app.command("restore", help=HELP)(restore_command)
