"""The default command: `upscale PATH... [-x SCALE] [-m MODEL] [-o OUTPUT]`."""
from __future__ import annotations

from typing import List, Optional

import typer

from upscale_cli.cli import progress as progress_ui

HELP = """Upscale image files, folders, quoted globs or - (stdin).

Examples: upscale photo.jpg -x 4 ; upscale shots/ -r -o big/ --format webp ;
cat a.png | upscale - -x 2 -o - > a_x2.png"""


def upscale_command(
    paths: List[str] = typer.Argument(..., metavar="PATH...", help="Files, folders, quoted globs, or - for stdin."),
    scale: Optional[float] = typer.Option(None, "-x", "--scale", help="Scale factor >= 1 (1.5, 3, 8 ...); default: the model's largest native scale."),
    model: str = typer.Option("unet", "-m", "--model", help="Model name (see `upscale models`) or a weights file."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Output file (one input) or folder; - for stdout."),
    recursive: bool = typer.Option(False, "-r", "--recursive", help="Include subfolders of folder inputs."),
    width: Optional[int] = typer.Option(None, "--width", help="Output width in pixels (keeps aspect unless --height is given)."),
    height: Optional[int] = typer.Option(None, "--height", help="Output height in pixels."),
    fmt: Optional[str] = typer.Option(None, "--format", help="png, jpg, webp, tiff or bmp. Default: -o's extension, else the input's format (GIF: png)."),
    quality: Optional[int] = typer.Option(None, "--quality", min=1, max=100, help="JPEG/WebP quality (default 95)."),
    png_compression: Optional[int] = typer.Option(None, "--png-compression", help="PNG zlib level: 0 fastest, 9 smallest files (default: level 1 with run-length matching, about 5x faster than 6 for files about 5% larger)."),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="auto|ADDRESS", help="Run on a Ray cluster (pip install 'upscale-cli[ray]'): auto joins this machine's cluster or starts a local one. One model per worker; files are read and written by the workers (same paths on every node)."),
    shard: Optional[str] = typer.Option(None, "--shard", metavar="K/N", help="Take part K (0 to N-1) of N: a stable 1/N of the inputs by relative path, for N machines or array-job tasks."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs (inputs are never replaced)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps."),
    half: bool = typer.Option(False, "--half", help="float16 on a GPU where the model supports it."),
    tile: int = typer.Option(0, "--tile", help="Tile size in input pixels; 0 = automatic."),
    tile_overlap: Optional[int] = typer.Option(None, "--tile-overlap", help="Tile overlap in input pixels (default from the model)."),
    max_pixels: Optional[int] = typer.Option(None, "--max-pixels", help="Refuse inputs with more pixels than this (decompression-bomb guard; default 178956970, 0 = no limit)."),
    max_output_pixels: Optional[int] = typer.Option(None, "--max-output-pixels", help="Refuse outputs with more pixels than this, before any work (default 500 MP, about 11 GB of RAM; 0 = no limit)."),
    alpha: str = typer.Option("auto", "--alpha", help="Transparency: auto (nearest/pixel-art keep hard edges, else bicubic), bicubic or model."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Print nothing but errors."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per file on stdout."),
    restore: bool = typer.Option(False, "--restore", help="Repair JPEG artifacts and noise first (`upscale restore`), then upscale."),
) -> None:
    from upscale_cli.batch import (WriteOptions, check_output_options, expand_inputs, parse_shard, plan_jobs,
                                   scale_tag, select_shard)
    from upscale_cli.engine import UpscaleConfig, Upscaler

    check_output_options(fmt, as_json, output)
    options = WriteOptions(format=fmt, quality=quality, max_pixels=max_pixels, png_compression=png_compression)
    part = parse_shard(shard) if shard is not None else None
    config = UpscaleConfig(model=model, scale=scale, width=width, height=height, device=device, half=half,
                           tile=tile, tile_overlap=tile_overlap, alpha=alpha,
                           **({} if max_output_pixels is None else {"max_output_pixels": max_output_pixels}))
    sources = expand_inputs(paths, recursive=recursive)
    upscaler = Upscaler(config, progress=not quiet)
    tag = scale_tag(scale, width, height, upscaler.default_scale)
    jobs = select_shard(plan_jobs(sources, output, tag, fmt, overwrite), part)
    upscaler.prepare()
    size_given = width is not None or height is not None
    record = {"model": model, "scale": None if size_given else scale if scale is not None else upscaler.default_scale}
    reporter = progress_ui.BatchReporter(len(jobs), quiet=quiet, as_json=as_json, record=record,
                                         stdout_busy=output == "-")
    converter = upscaler
    if restore:  # restore at the input size with the default restoration model, then upscale
        from upscale_cli.restore import RestoreConfig, RestoreThenUpscale, batch_restore

        restore_config = RestoreConfig(device=device, half=half, tile=tile, tile_overlap=tile_overlap)
        converter = RestoreThenUpscale(batch_restore(restore_config, progress=not quiet), upscaler)
    recipe = None
    if ray is not None:  # each Ray worker builds the same converter from these settings
        from upscale_cli.ray_batch import ConverterRecipe

        recipe = ConverterRecipe(config, restore_config if restore else None)
    results = reporter.run(jobs, converter, options, ray=ray, recipe=recipe)
    for note in upscaler.notes:
        reporter.note(note)
    if any(r.status == "failed" for r in results):
        raise typer.Exit(1)
