"""The default command: `upscale PATH... [-x SCALE] [-m MODEL] [-o OUTPUT]`."""
from __future__ import annotations

from typing import Optional

import typer

from upscale_cli.choices import Alpha
from upscale_cli.cli import options as common
from upscale_cli.cli import progress as progress_ui

HELP = """Upscale image files, folders, quoted globs or - (stdin).

Examples: upscale photo.jpg -x 4 ; upscale shots/ -r -o big/ --format webp ;
cat a.png | upscale - -x 2 -o - > a_x2.png"""


def upscale_command(
    paths: common.Paths,
    scale: Optional[float] = typer.Option(None, "-x", "--scale", help="Scale factor >= 1 (1.5, 3, 8 ...); default: the model's largest native scale."),
    model: str = typer.Option("unet", "-m", "--model", help="Model name (see `upscale models`) or a weights file."),
    output: common.Output = None,
    recursive: common.Recursive = False,
    width: Optional[int] = typer.Option(None, "--width", help="Output width in pixels (keeps aspect unless --height is given)."),
    height: Optional[int] = typer.Option(None, "--height", help="Output height in pixels."),
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
        others = {"--width": width, "--height": height, "--ray": ray, "--shard": shard, "--half": half, "--tile": tile,
                  "--tile-overlap": tile_overlap, "--ensemble": ensemble, "--restore": restore,
                  "--alpha": alpha != "auto"}
        return sample.sample_command(paths, model, scale, output, recursive, fmt, overwrite, device, max_pixels, quiet,
                                     samples, temperature, seed, quality, png_compression, others, as_json)
    from upscale_cli.batch import (WriteOptions, check_output_options, expand_inputs, parse_shard, plan_jobs,
                                   scale_tag, select_shard)
    from upscale_cli.engine import UpscaleConfig, Upscaler
    from upscale_cli.report import RowDefaults

    check_output_options(as_json, output)
    options = WriteOptions(format=fmt, quality=quality, max_pixels=max_pixels, png_compression=png_compression)
    part = parse_shard(shard) if shard is not None else None
    config = UpscaleConfig(model=model, scale=scale, width=width, height=height, device=device, half=half,
                           tile=tile, tile_overlap=tile_overlap, alpha=alpha, ensemble=ensemble,
                           **({} if max_output_pixels is None else {"max_output_pixels": max_output_pixels}))
    sources = expand_inputs(paths, recursive=recursive)
    upscaler = Upscaler(config, progress=not quiet)
    tag = scale_tag(scale, width, height, upscaler.default_scale)
    jobs = select_shard(plan_jobs(sources, output, tag, fmt, overwrite), part)
    upscaler.prepare()
    converter = upscaler
    restore_config = None
    if restore:  # restore at the input size with the default restoration model, then upscale
        from upscale_cli.restore import RestoreConfig, RestoreThenUpscale, batch_restore

        restore_config = RestoreConfig(device=device, half=half, tile=tile, tile_overlap=tile_overlap)
        converter = RestoreThenUpscale(batch_restore(restore_config, progress=not quiet), upscaler)
    defaults = RowDefaults(model=model, ensemble=ensemble, task=restore_config.task if restore else None,
                           strength=restore_config.strength if restore else None)
    reporter = progress_ui.BatchReporter(len(jobs), quiet=quiet, as_json=as_json, defaults=defaults,
                                         stdout_busy=output == "-")
    recipe = None
    if ray is not None:  # each Ray worker builds the same converter from these settings
        from upscale_cli.ray_batch import UpscaleRecipe

        recipe = UpscaleRecipe(config, restore_config)
    results = reporter.run(jobs, converter, options, ray=ray, recipe=recipe)
    reporter.finish(results, upscaler.notes)
