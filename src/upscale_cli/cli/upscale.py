"""The default command: `upscale PATH... [-x SCALE] [-m MODEL] [-o OUTPUT]`."""
from __future__ import annotations

from typing import Optional

import typer

from upscale_cli.choices import Alpha
from upscale_cli.cli import options as common

HELP = """Upscale image files, folders, quoted globs or - (stdin).

Examples: upscale photo.jpg -x 4 ; upscale shots/ -r -o big/ --format webp ;
cat a.png | upscale - -x 2 -o - > a_x2.png"""


@common.with_groups
def upscale_command(
    paths: common.Paths,
    scale: Optional[float] = typer.Option(None, "-x", "--scale", help="Scale factor >= 1 (1.5, 3, 8 ...); default: the model's largest native scale."),
    model: str = typer.Option("unet", "-m", "--model", help="Model name (see `upscale models`) or a weights file."),
    output: common.Output = None,
    recursive: common.Recursive = False,
    width: Optional[int] = typer.Option(None, "--width", help="Output width in pixels (keeps aspect unless --height is given)."),
    height: Optional[int] = typer.Option(None, "--height", help="Output height in pixels."),
    batch: common.BatchOptions = common.BatchOptions(),
    max_output_pixels: common.MaxOutputPixels = None,
    ensemble: bool = typer.Option(False, "--ensemble", help="Average the model over the 8 flips/rotations of each image: a little more quality for 8x the time (networks only)."),
    alpha: Alpha = typer.Option("auto", "--alpha", help="Transparency: auto (nearest/pixel-art keep hard edges, else bicubic), bicubic or model."),
    quiet: common.Quiet = False,
    as_json: common.Json = False,
    restore: bool = typer.Option(False, "--restore", help="Repair JPEG artifacts and noise first (`upscale restore`), then upscale."),
    samples: Optional[int] = typer.Option(None, "--samples", help="Sampling models (-m pixel-recursive): write N different answers, NAME_x4_s1.png ... (default 1)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Sampling models: 0 = the most likely value at each step, 1 = the model's own spread (default 0.5)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Sampling models: the same seed gives the same answers (default: random, printed)."),
) -> None:
    from upscale_cli.cli import sample

    if sample.wants_sampling(model, samples, temperature, seed):  # several answers per input (pixel-recursive)
        others = {"--width": width, "--height": height,
                  "--half": batch.half, "--tile": batch.tile, "--tile-overlap": batch.tile_overlap,
                  "--ensemble": ensemble, "--restore": restore, "--alpha": alpha != "auto"}
        return sample.sample_command(paths, model, scale, output, recursive, batch, quiet, samples, temperature, seed,
                                     others, as_json, max_output_pixels)
    from upscale_cli.batch import scale_tag
    from upscale_cli.cli.batch_run import BatchRun
    from upscale_cli.engine import UpscaleConfig, Upscaler
    from upscale_cli.ray_batch import UpscaleRecipe
    from upscale_cli.report import RowDefaults

    run = BatchRun.start(batch, output, quiet, as_json)
    config = UpscaleConfig(model=model, scale=scale, width=width, height=height, alpha=alpha, ensemble=ensemble,
                           **batch.engine(),
                           **({} if max_output_pixels is None else {"max_output_pixels": max_output_pixels}))
    sources = run.sources(paths, recursive)
    upscaler = Upscaler(config, progress=not quiet)
    jobs = run.plan(sources, scale_tag(scale, width, height, upscaler.default_scale))
    upscaler.prepare()
    converter, restore_config = upscaler, None
    if restore:  # restore at the input size with the default restoration model, then upscale
        from upscale_cli.restore import RestoreConfig, RestoreThenUpscale, batch_restore

        restore_config = RestoreConfig(**batch.engine())
        converter = RestoreThenUpscale(batch_restore(restore_config, progress=not quiet), upscaler)
    defaults = RowDefaults(model=model, ensemble=ensemble, task=restore_config.task if restore else None,
                           strength=restore_config.strength if restore else None)
    # --ray: each worker builds the same converter from these settings
    run.run(jobs, converter, defaults, recipe=lambda: UpscaleRecipe(config, restore_config),
            notes=lambda: upscaler.notes)
