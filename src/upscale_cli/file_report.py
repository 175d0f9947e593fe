"""A converter run on decoded images, and what each file's report row says about its run.

`FileReport` is the `convert` (and, for a plain Upscaler, the `convert_many`) that
pipeline.run_converted drives: it runs the converter (an engine.Upscaler, restore's converters,
fit-single's, sampling's several answers.Answers) and records in the file's report.ReportRow its
notes (reading's, an output too large to read back), the model that ran, what restore --task auto
found, the passes, the real scale and size. `can_batch` says which converters may take several small images as one batch.
"""
from __future__ import annotations

from typing import Callable

from upscale_cli.answers import Answers
from upscale_cli.batch import WriteOptions
from upscale_cli.images.formats import DEFAULT_MAX_PIXELS
from upscale_cli.models.descriptor import Fitting
from upscale_cli.report import ReportRow


def can_batch(converter) -> bool:
    """Only a plain Upscaler runs several images as one batch: a converter that routes each image
    (restore) does not, nor a model that fits each image as it runs (fit-single)."""
    from upscale_cli.engine import Upscaler

    if type(converter) is not Upscaler or converter.config.width or converter.config.height:
        return False
    try:  # an any-size model is one model (info(None)), whatever passes it runs inside
        natives = converter.passes_for(1, 1) if converter.native_scales() else ()
        infos = [converter.info(native) for native in (natives or (None,))]
    except Exception:  # anything unusual: one image at a time, as before
        return False
    return not any(isinstance(info, Fitting) for info in infos)


class FileReport:
    """Runs the converter on decoded images and records, in each file's ReportRow, what its report
    says: notes (reading's, an output too large to read back), the model that ran, what restore
    --task auto found, the passes, the real scale and size.

    on_tile(done, total) follows the tiles of one image; on_note(line) hears an early note (an
    output over --max-pixels) before the long work starts. Neither is needed: no display here.
    """

    def __init__(self, converter, options: WriteOptions,
                 on_tile: Callable[[int, int], None] | None = None,
                 on_note: Callable[[str], None] | None = None) -> None:
        self.converter = converter
        self.options = options
        self.on_tile = on_tile
        self.on_note = on_note

    def for_frames(self, first) -> "FileReport":
        """The FileReport for every frame of one animation or video: a converter that decides per
        image (restore --task auto) decides once, from the first frame, for all of them."""
        if not hasattr(self.converter, "for_frames"):
            return self
        return FileReport(self.converter.for_frames(first), self.options, self.on_tile, self.on_note)

    def convert(self, image, row: ReportRow):
        """Run the converter; one that picks a model per image (restore's JPEG routing) says which,
        and what reading the file had to say (pages left unread) goes on its line."""
        converter = self.converter
        row.notes += image.notes
        if hasattr(converter, "model_for"):
            row.model = converter.model_for(image)
        found = converter.found_for(image) if hasattr(converter, "found_for") else None
        if found:  # restore --task auto: what it found in this file (JPEG quality, noise) and what it ran
            row.found = found
        if hasattr(converter, "passes_for"):  # the passes (x8 = [4, 2]) before any final resize
            row.passes = list(converter.passes_for(image.height, image.width))
            self._warn_unreadable_output(converter.target_size(image.height, image.width), row)
        out = converter.upscale_image(image, self._on_tile)
        if hasattr(converter, "notes_for"):  # what its run found (fit-single: the fit's PSNR)
            row.notes += converter.notes_for(image)
        _describe_output(image, out.images[0] if isinstance(out, Answers) else out, row)  # answers: one size
        return out

    def convert_many(self, images: list, rows: list[ReportRow]) -> list:
        """Several images of one size, no alpha, through the model as one batch (an Upscaler only:
        can_batch decides which); each file's report as if it had run alone."""
        converter = self.converter
        first = images[0]
        size = converter.target_size(first.height, first.width)
        for image, row in zip(images, rows):
            row.notes += image.notes
            row.passes = list(converter.passes_for(image.height, image.width))
            self._warn_unreadable_output(size, row)
        pixels = converter.upscale_tensor(_stack(images), self._on_tile, size=size)
        outs = [image.replace(pixels=pixels[k : k + 1]) for k, image in enumerate(images)]
        for image, out, row in zip(images, outs, rows):
            _describe_output(image, out, row)
        return outs

    def _on_tile(self, done: int, total: int) -> None:
        if self.on_tile is not None:
            self.on_tile(done, total)

    def _warn_unreadable_output(self, size: tuple[int, int], row: ReportRow) -> None:
        """An output over the input guard is written, but this tool would refuse it as an input:
        say so before the (long) work starts, and on the file's line."""
        from upscale_cli.scale_plan import format_pixels

        limit = DEFAULT_MAX_PIXELS if self.options.max_pixels is None else self.options.max_pixels
        pixels = size[0] * size[1]
        if limit and pixels > limit:
            note = (f"the output ({size[1]} x {size[0]} = {format_pixels(pixels)}) is over --max-pixels "
                    f"({limit:,}): to read it back with upscale, pass --max-pixels 0 or a larger value")
            row.notes.append(note)
            if self.on_note is not None:
                self.on_note(note)


def _describe_output(image, out, row: ReportRow) -> None:
    """The real factor (also with --width/--height; 1 for restore) and the output's [width, height]."""
    row.scale = round(out.width / image.width, 4)
    row.size = [out.width, out.height]


def _stack(images: list):
    """The images' (1, C, H, W) NumPy pixels as one (B, C, H, W) array (the engine takes arrays)."""
    import numpy as np

    return np.concatenate([image.pixels for image in images])
