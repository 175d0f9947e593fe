"""`upscale fit-single IMAGE --size N`: fit a coordinate MLP to one image and render it at any size.

Output name, when -o is not given: next to the input (or the --from-model file) as
`{stem}_fit{W}x{H}.png`, e.g. sprite_fit256x256.png. The input is never overwritten.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from upscale_cli.cli import options as common

PLAIN_PROGRESS_LINES = 10  # lines of progress when stderr is not a terminal

HELP = """Fit a small network f(x, y) -> colour to one image (no dataset) and render it at any size.

Examples: upscale fit-single sprite.png --size 1024 ;
upscale fit-single logo.png -x 4 --save-model logo.safetensors ;
upscale fit-single --from-model logo.safetensors --size 4096 -o big.png"""


def fit_single_command(
    image: Optional[Path] = typer.Argument(None, help="The image to fit (not needed with --from-model)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output file (default: {stem}_fit{W}x{H}.png beside the input)."),
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
    save_model: Optional[Path] = typer.Option(None, "--save-model", help="Also save the fitted network (.safetensors)."),
    from_model: Optional[Path] = typer.Option(None, "--from-model", help="Render a network saved with --save-model instead of fitting."),
    max_output_pixels: common.MaxOutputPixels = None,
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Print nothing but errors."),
) -> None:
    from upscale_cli.fit_single import fitting
    from upscale_cli.errors import UsageError

    if (image is None) == (from_model is None):
        raise UsageError("give an IMAGE to fit, or --from-model FILE to render (not both)")
    say = (lambda line: None) if quiet else (lambda line: typer.echo(line, err=True))
    if from_model is not None:
        _render_saved(from_model, output, (size, width, height, scale, max_output_pixels), say)
        return
    overrides = dict(encoding=encoding, freq_scale=freq_scale, hidden=hidden, depth=depth, steps=steps, lr=lr,
                     seed=seed, consistency=consistency, target_psnr=target_psnr, palette_colours=palette_colours)
    config = fitting.FitConfig.for_encoding(**{k: v for k, v in overrides.items() if v is not None})
    _fit_and_render(image, output, (size, width, height, scale, max_output_pixels), config, save_model, quiet, say)


def _fit_and_render(image_path: Path, output: Optional[Path], size_args, config, save_model, quiet, say) -> None:
    from upscale_cli.fit_single import consistency, fitting, network, saved, sizes
    from upscale_cli.images.read import read_image
    from upscale_cli.images.write import write_image

    image = read_image(image_path)
    sizes.check_fit_size(image.height, image.width)
    target = sizes.output_size(image.height, image.width, *size_args)  # over --max-output-pixels: refused here
    out_path = _output_path(image_path, output, target)
    with _StepReporter(config.steps, quiet) as reporter:
        result = fitting.fit(image.pixels, image.alpha, config, on_step=reporter.update, target_size=target)
    pixels, alpha = network.render_image(result.mlp, *target, colour_channels=image.pixels.shape[1])
    write_image(image.replace(pixels=pixels, alpha=alpha), out_path)
    stats = result.stats
    detail = f"{fitting.describe_psnr(stats.psnr)} at the input's pixels"  # "exact at ...": nothing differs
    if consistency.consistency_size((image.height, image.width), target, config.consistency_scale) and config.consistency:
        import torch

        source = image.pixels if alpha is None else torch.cat([image.pixels, image.alpha], dim=1)
        rendered = pixels if alpha is None else torch.cat([pixels, alpha], dim=1)
        back = fitting.consistency_psnr(rendered, source)
        detail += ", output downscaled equals the input" if math.isinf(back) else f", output downscaled vs input {back:.2f} dB"
    early = ", reached --target-psnr" if stats.stopped_early else ""
    say(f"fitted {image.width}x{image.height} in {stats.steps} steps ({stats.seconds:.1f}s{early}): {detail}")
    if save_model is not None:
        saved.save_fitted(result.mlp, save_model, config, source=_source_info(image))
        say(f"saved the network to {save_model}")
    say(f"{image_path} -> {out_path} ({target[1]}x{target[0]})")


def _render_saved(model_path: Path, output: Optional[Path], size_args, say) -> None:
    from upscale_cli.fit_single import network, saved, sizes
    from upscale_cli.images import DecodedImage
    from upscale_cli.images.write import write_image

    mlp, source = saved.load_fitted(model_path)
    height, width = source.get("height"), source.get("width")
    if not height or not width:  # an older file: the rectangle's aspect is all we know
        width, height = [round(e * 1000) for e in mlp.extent]
    target = sizes.output_size(int(height), int(width), *size_args)
    out_path = _output_path(model_path, output, target)
    colour = 1 if mlp.channels in (1, 2) else 3
    pixels, alpha = network.render_image(mlp, *target, colour_channels=colour)
    write_image(DecodedImage(pixels=pixels, alpha=alpha, bit_depth=int(source.get("bit_depth", 8)),
                             source_format="PNG"), out_path)
    say(f"{model_path} -> {out_path} ({target[1]}x{target[0]})")


def _output_path(source: Path, output: Optional[Path], target: tuple[int, int]) -> Path:
    from upscale_cli.errors import UsageError

    height, width = target
    if output is not None and str(output) == "-":
        raise UsageError("fit-single writes a file, not stdout; for stdout use `upscale IMAGE -m fit-single -o -`")
    path = output if output is not None else source.with_name(f"{source.stem}_fit{width}x{height}.png")
    # by identity, as the batch planner compares: a symbolic or hard link to the input is the input
    if path.resolve() == source.resolve() or (path.exists() and os.path.samefile(path, source)):
        raise UsageError(f"refusing to overwrite the input {source}; pick another -o")
    return path


def _source_info(image) -> dict:
    return {"height": image.height, "width": image.width, "bit_depth": image.bit_depth}


class _StepReporter:
    """A rich bar with the live PSNR on a terminal; a few plain lines otherwise; nothing when quiet."""

    def __init__(self, steps: int, quiet: bool) -> None:
        self.steps = steps
        self.quiet = quiet
        self.bar = None
        self.task = None
        self.next_line = 0

    def __enter__(self) -> "_StepReporter":
        if not self.quiet and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            # stderr, as the plain lines: stdout carries nothing but data
            self.bar = Progress(TextColumn("fitting"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[psnr]}"),
                                TimeRemainingColumn(), transient=True, console=Console(stderr=True))
            self.bar.__enter__()
            self.task = self.bar.add_task("fit", total=self.steps, psnr="PSNR -")
        return self

    def update(self, step: int, steps: int, psnr: float) -> None:
        from upscale_cli.fit_single.fitting import describe_psnr

        if self.quiet:
            return
        if self.bar is not None:
            self.bar.update(self.task, completed=step, psnr=describe_psnr(psnr))
        elif step >= self.next_line or step == steps:
            typer.echo(f"step {step}/{steps}: {describe_psnr(psnr)}", err=True)
            self.next_line = step + max(1, steps // PLAIN_PROGRESS_LINES)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def register(app: typer.Typer) -> None:
    app.command("fit-single", help=HELP)(fit_single_command)
