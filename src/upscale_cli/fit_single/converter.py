"""fit-single as a converter the batch runner drives (pipeline.run_converted), as restore is one:
each decoded image is fitted and its network rendered at the asked size; what the fit reached goes
on the file's line and --json row as a note.

Also what `upscale fit-single` plans with: the size request, and each input's output tag
(`fit{W}x{H}`, for the default name `{stem}_fit{W}x{H}.png`), which needs the image's size before
any work: read from its header (EXIF orientation applied, as reading applies it), never decoded.
"""
from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from upscale_cli.fit_single import fitting, network, sizes

TAG_PATTERN = r"fit\d+x\d+"  # every output tag, so a rerun over a folder skips earlier outputs
UNSIZED_TAG = "fit"  # the tag of an input whose size cannot be read before the run (it fails when read)
SWAPPED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that turn the image a quarter: width <-> height

StepCallback = Callable[[int, int, float], None]


@dataclass(frozen=True)
class SizeRequest:
    """--size, --width/--height or -x, and --max-output-pixels (None: the default limit; 0: none)."""

    size: int | None = None
    width: int | None = None
    height: int | None = None
    scale: float | None = None
    max_output_pixels: int | None = None

    def check(self) -> None:
        """The usage errors that hold whatever the image, before any input is read."""
        sizes.check_request(self.size, self.width, self.height, self.scale, self.max_output_pixels)

    def target(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) to render an image of this size at; refused over the output limit."""
        return sizes.output_size(height, width, self.size, self.width, self.height, self.scale,
                                 self.max_output_pixels)


def header_size(path: Path | None) -> tuple[int, int] | None:
    """(height, width) of an image file as reading will decode it, from its header; None when it
    cannot be told (stdin, a pipe, which reading a header would consume, or an unreadable file)."""
    from PIL import Image

    from upscale_cli.images.codecs import load_for
    from upscale_cli.images.formats import DECODE_ERRORS, ORIENTATION_TAG, READ_FORMATS

    try:
        if path is None or not stat.S_ISREG(os.stat(path).st_mode):
            return None
        load_for(path)  # a HEIC/AVIF/JPEG XL file's codec
        with Image.open(path, formats=READ_FORMATS) as im:
            width, height = im.size
            orientation = int(im.getexif().get(ORIENTATION_TAG, 1))
    except (OSError, ValueError, *DECODE_ERRORS):
        return None
    return (width, height) if orientation in SWAPPED_ORIENTATIONS else (height, width)


def output_tag(request: SizeRequest, size: tuple[int, int] | None) -> str:
    """`fit{W}x{H}` for an image of `size` (h, w); UNSIZED_TAG when the size or its target is unknown."""
    if size is None:
        return UNSIZED_TAG
    try:
        height, width = request.target(*size)
    except Exception:  # over the limit, or empty: the file fails with that line when it runs
        return UNSIZED_TAG
    return f"fit{width}x{height}"


def too_large_to_fit(size: tuple[int, int] | None) -> str | None:
    """Why an image of `size` (h, w) is refused before it is decoded, or None."""
    from upscale_cli.errors import ImageTooLargeError

    if size is None:
        return None
    try:
        sizes.check_fit_size(*size)
    except ImageTooLargeError as err:
        return err.message
    return None


class FitConverter:
    """Fits each image (fitting.fit) and renders it at the request's size (network.render_image).

    `save_model`: also save the fitted network there (one input: the command refuses more).
    `on_step(step, steps, psnr)`: the fit's progress, besides `on_tile(step, steps)` of the batch bar.
    """

    name = "fit-single"

    def __init__(self, config: fitting.FitConfig, request: SizeRequest, save_model: Path | None = None,
                 on_step: StepCallback | None = None) -> None:
        self.config, self.request, self.save_model, self.on_step = config, request, save_model, on_step
        self._notes: tuple[object, list[str]] | None = None  # (image, its notes): the file at hand

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        return self.request.target(height, width)

    def passes_for(self, height: int, width: int) -> tuple[int, ...]:
        return ()  # any size in one render

    def upscale_image(self, image, on_tile=None):
        from upscale_cli.images.arrays import tensor_to_array

        sizes.check_fit_size(image.height, image.width)
        target = self.target_size(image.height, image.width)  # refused here, before fitting
        given, given_alpha = _tensors(image)
        result = fitting.fit(given, given_alpha, self.config, on_step=self._progress(on_tile), target_size=target)
        pixels, alpha = network.render_image(result.mlp, *target, colour_channels=image.pixels.shape[1])
        notes = [self._describe(image, result.stats, target, pixels, alpha)]
        if self.save_model is not None:
            from upscale_cli.fit_single import saved

            saved.save_fitted(result.mlp, self.save_model, self.config,
                              source={"height": image.height, "width": image.width, "bit_depth": image.bit_depth})
            notes.append(f"saved the network to {self.save_model}")
        self._notes = (image, notes)
        return image.replace(pixels=tensor_to_array(pixels), alpha=None if alpha is None else tensor_to_array(alpha))

    def notes_for(self, image) -> list[str]:
        """What the fit of this image reached (its PSNR at the input's pixels, the downscale check)."""
        return list(self._notes[1]) if self._notes is not None and self._notes[0] is image else []

    def _progress(self, on_tile) -> StepCallback:
        def step(done: int, total: int, psnr: float) -> None:
            if on_tile is not None:
                on_tile(done, total)
            if self.on_step is not None:
                self.on_step(done, total, psnr)
        return step

    def _describe(self, image, stats: fitting.FitStats, target, pixels, alpha) -> str:
        """`fitted in 300 steps: PSNR 31.42 dB at the input's pixels, output downscaled vs input 30.1 dB`."""
        from upscale_cli.fit_single.consistency import consistency_size

        early = ", reached --target-psnr" if stats.stopped_early else ""
        said = f"fitted in {stats.steps} steps{early}: {fitting.describe_psnr(stats.psnr)} at the input's pixels"
        if self.config.consistency and consistency_size((image.height, image.width), target,
                                                        self.config.consistency_scale):
            import torch

            given, given_alpha = _tensors(image)
            source = given if given_alpha is None else torch.cat([given, given_alpha], dim=1)
            rendered = pixels if alpha is None else torch.cat([pixels, alpha], dim=1)
            back = fitting.consistency_psnr(rendered, source)
            said += (", output downscaled equals the input" if math.isinf(back)
                     else f", output downscaled vs input {back:.2f} dB")
        return said


def _tensors(image) -> tuple:
    """A DecodedImage's NumPy pixels and alpha (or None) as torch tensors on the same memory."""
    import torch

    alpha = None if image.alpha is None else torch.from_numpy(image.alpha)
    return torch.from_numpy(image.pixels), alpha
