"""The sizes a fit-single run works at: the largest input a one-image fit takes, and the output
size asked for (--size, --width/--height or -x)."""
from __future__ import annotations

import math

from upscale_cli.errors import ImageTooLargeError, UsageError

MAX_FIT_PIXELS = 1_048_576  # 1 megapixel: beyond this a one-image fit takes too long on a CPU
DEFAULT_SCALE = 4.0  # output scale when no size is given


def check_fit_size(height: int, width: int) -> None:
    """Refuse images a one-image fit cannot handle in sensible time."""
    if height * width > MAX_FIT_PIXELS:
        side = int(math.sqrt(MAX_FIT_PIXELS * width / height))
        raise ImageTooLargeError(
            f"too large to fit ({width} x {height}); downscale it first (e.g. to {side} px wide) or use -m unet"
        )


def output_size(height: int, width: int, size: int | None = None, out_width: int | None = None,
                out_height: int | None = None, scale: float | None = None) -> tuple[int, int]:
    """(h, w) to render: --size (longer side, aspect kept), --width/--height, or -x scale (default 4)."""
    if size is not None and (out_width is not None or out_height is not None or scale is not None) or \
            scale is not None and (out_width is not None or out_height is not None):
        raise UsageError("give one of --size, --width/--height or -x")
    for name, value in (("--size", size), ("--width", out_width), ("--height", out_height), ("-x", scale)):
        if value is not None and not value > 0:
            raise UsageError(f"{name} must be positive: cannot render a zero-size image")
    if size is not None:
        long_side = max(height, width)
        target = (round(height * size / long_side), round(width * size / long_side))
    elif out_width is not None or out_height is not None:
        target = (out_height or round(height * out_width / width), out_width or round(width * out_height / height))
    else:
        factor = DEFAULT_SCALE if scale is None else scale
        target = (round(height * factor), round(width * factor))
    if min(target) < 1:
        raise UsageError(f"the target size {target[1]}x{target[0]} is empty")
    return max(1, target[0]), max(1, target[1])
