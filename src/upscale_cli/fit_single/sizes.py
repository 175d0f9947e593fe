"""The sizes a fit-single run works at: the largest input a one-image fit takes, and the output
size asked for (--size, --width/--height or -x), refused over --max-output-pixels before any
fitting: the batch command's limit (engine.DEFAULT_MAX_OUTPUT_PIXELS) and message, so
`upscale fit-single` and `upscale -m fit-single` refuse the same outputs."""
from __future__ import annotations

import math

from upscale_cli.errors import ImageTooLargeError, UsageError

MAX_FIT_PIXELS = 1_048_576  # 1 megapixel: beyond this a one-image fit takes too long on a CPU
DEFAULT_SCALE = 4.0  # output scale when no size is given
MAX_OUTPUT_SIDE = 2**31 - 1  # pixels: the largest side a PNG can hold, whatever --max-output-pixels says


def check_fit_size(height: int, width: int) -> None:
    """Refuse images a one-image fit cannot handle in sensible time."""
    if height * width > MAX_FIT_PIXELS:
        side = int(math.sqrt(MAX_FIT_PIXELS * width / height))
        raise ImageTooLargeError(
            f"too large to fit ({width} x {height}); downscale it first (e.g. to {side} px wide) or use -m unet"
        )


def output_size(height: int, width: int, size: int | None = None, out_width: int | None = None,
                out_height: int | None = None, scale: float | None = None,
                max_output_pixels: int | None = None) -> tuple[int, int]:
    """(h, w) to render: --size (longer side, aspect kept), --width/--height, or -x scale (default 4);
    OutputTooLargeError over max_output_pixels (None: the default limit; 0: no limit)."""
    check_request(size, out_width, out_height, scale, max_output_pixels)
    try:
        target = _target(height, width, size, out_width, out_height, scale)
    except (OverflowError, ValueError):  # inf, or a number too large for a float
        target = None
    if target is not None and min(target) < 1:
        raise UsageError(f"the target size {target[1]}x{target[0]} is empty")
    if target is not None and max(target) <= MAX_OUTPUT_SIDE:
        check_output_pixels(target, max_output_pixels)
        return target
    raise UsageError(f"the output size asked for is over {MAX_OUTPUT_SIDE:,} pixels a side (a PNG's limit)")


def check_request(size: int | None = None, out_width: int | None = None, out_height: int | None = None,
                  scale: float | None = None, max_output_pixels: int | None = None) -> None:
    """The usage errors of a size request that hold whatever the image (one kind of size, positive,
    within a PNG's side even for a 1-pixel input, a valid limit): said once, before any input is
    read; what depends on an image's size is that file's failure (output_size)."""
    if size is not None and (out_width is not None or out_height is not None or scale is not None) or \
            scale is not None and (out_width is not None or out_height is not None):
        raise UsageError("give one of --size, --width/--height or -x")
    for name, value in (("--size", size), ("--width", out_width), ("--height", out_height), ("-x", scale)):
        if value is not None and not value > 0:
            raise UsageError(f"{name} must be positive: cannot render a zero-size image")
    if max_output_pixels is not None and max_output_pixels < 0:
        raise UsageError(f"--max-output-pixels must be 0 (no limit) or a number of pixels, not {max_output_pixels}")
    try:
        smallest = max(_target(1, 1, size, out_width, out_height, scale))
    except (OverflowError, ValueError):  # inf, or a number too large for a float
        smallest = MAX_OUTPUT_SIDE + 1
    if smallest > MAX_OUTPUT_SIDE:
        raise UsageError(f"the output size asked for is over {MAX_OUTPUT_SIDE:,} pixels a side (a PNG's limit)")


def _target(height: int, width: int, size, out_width, out_height, scale) -> tuple[int, int]:
    if size is not None:
        long_side = max(height, width)
        return round(height * size / long_side), round(width * size / long_side)
    if out_width is not None or out_height is not None:
        return out_height or round(height * out_width / width), out_width or round(width * out_height / height)
    factor = DEFAULT_SCALE if scale is None else scale
    return round(height * factor), round(width * factor)


def check_output_pixels(target: tuple[int, int], limit: int | None = None) -> None:
    """The batch command's --max-output-pixels check (None: its default limit; 0: no limit; a negative
    limit was refused by check_request)."""
    from upscale_cli.scale_plan import DEFAULT_MAX_OUTPUT_PIXELS, check_output_size

    check_output_size(target, DEFAULT_MAX_OUTPUT_PIXELS if limit is None else limit)
