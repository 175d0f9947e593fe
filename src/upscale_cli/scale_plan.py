"""What a run of the engine will do, decided without PyTorch: its settings (`UpscaleConfig`), the
output size, the native passes that reach it, and the output-size limit.

Pure Python: the engines (engine.py for PyTorch, numpy_engine.py for the runs that need none) and the
runner's planning read it, and importing it loads nothing heavy.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from upscale_cli.choices import ALPHA_MODES, DEFAULT_RUNTIME, RUNTIMES, Alpha, Runtime
from upscale_cli.errors import OutputTooLargeError, UsageError

DEFAULT_MODEL = "unet"
MAX_PASSES = 4  # x2^4 = x16 is as far as repeated passes go before the final resize
# Largest output written by default: about 21 bytes of RAM per output pixel are needed (the float32
# accumulator, 8-bit planes, the encoder), so 500 MP needs about 11 GB. --max-output-pixels changes it.
DEFAULT_MAX_OUTPUT_PIXELS = 500_000_000


@dataclass(frozen=True)
class UpscaleConfig:
    """What to run and how. Exactly one of scale / width / height may be left to the others."""

    model: str = DEFAULT_MODEL
    scale: float | None = None
    width: int | None = None
    height: int | None = None
    device: str = "auto"  # choices.Device, or cuda:N
    half: bool = False
    tile: int = 0  # input pixels; 0 = chosen from free memory
    tile_overlap: int | None = None  # input pixels; None = from the model's receptive field
    alpha: Alpha = "auto"
    max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS  # 0 = no limit
    ensemble: bool = False  # average the model over the 8 flips/rotations of each image (8x the time)
    # what runs a tile on the CPU: PyTorch, or compiled.py (OpenVINO); auto uses OpenVINO from a tile
    # shape's second use where the model converts (research/runtime_speed.md: the whole command 0.33x
    # to 0.56x of PyTorch's time once compiled)
    runtime: Runtime = DEFAULT_RUNTIME

    def __post_init__(self) -> None:
        if self.scale is not None and not (math.isfinite(self.scale) and self.scale >= 1):
            raise UsageError(f"--scale must be a number >= 1, not {self.scale}")
        if self.scale is not None and (self.width or self.height):
            raise UsageError("-x/--scale and --width/--height both set the output size; give one of them")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name} must be at least 1 pixel")
        if self.tile < 0 or (self.tile_overlap is not None and self.tile_overlap < 0):
            raise UsageError("--tile and --tile-overlap cannot be negative")
        if self.tile and self.tile_overlap is not None and self.tile <= self.tile_overlap:
            raise UsageError(f"--tile {self.tile} must be larger than --tile-overlap {self.tile_overlap}")
        if self.alpha not in ALPHA_MODES:
            raise UsageError(f"--alpha must be one of {', '.join(ALPHA_MODES)}, not {self.alpha!r}")
        if self.runtime not in RUNTIMES:
            raise UsageError(f"--runtime must be one of {', '.join(RUNTIMES)}, not {self.runtime!r}")
        if self.max_output_pixels < 0:
            raise UsageError(f"--max-output-pixels must be 0 (no limit) or a number of pixels, not {self.max_output_pixels}")


def plan_passes(native_scales: tuple[int, ...], factor: float) -> tuple[int, ...]:
    """Fewest native passes whose product reaches `factor`, least overshoot first (largest pass first)."""
    if factor <= 1 + 1e-9:
        return (1,) if 1 in native_scales else ()
    upscaling = sorted(s for s in native_scales if s > 1)
    if not upscaling:
        return (native_scales[0],) if native_scales else ()
    for count in range(1, MAX_PASSES + 1):
        combos = [c for c in itertools.combinations_with_replacement(upscaling, count) if math.prod(c) >= factor - 1e-9]
        if combos:
            best = min(combos, key=lambda c: (math.prod(c), -max(c)))
            return tuple(sorted(best, reverse=True))
    return (upscaling[-1],) * MAX_PASSES


def target_size(height: int, width: int, config: UpscaleConfig, default_scale: float = 4.0) -> tuple[int, int]:
    """Output (height, width): from both sides, one side (keeping aspect), or the scale."""
    if config.width and config.height:
        return config.height, config.width
    if config.width:
        return max(1, round(height * config.width / width)), config.width
    if config.height:
        return config.height, max(1, round(width * config.height / height))
    factor = config.scale if config.scale is not None else default_scale
    return max(1, round(height * factor)), max(1, round(width * factor))



MEGAPIXEL = 1_000_000  # pixels: the unit of messages above it


def format_pixels(count: int) -> str:
    """A pixel count for a message: "4,000 pixels" under a megapixel, else megapixels to three
    significant figures ("1.05 MP", "500 MP", "10,000 MP"); a limit of 4,000 read "0 MP" before."""
    if count < MEGAPIXEL:
        return f"{count:,} pixel{'' if count == 1 else 's'}"
    megapixels = count / MEGAPIXEL
    text = f"{megapixels:,.{max(0, 2 - int(math.log10(megapixels)))}f}"
    return (text.rstrip("0").rstrip(".") if "." in text else text) + " MP"


def format_pixel_pair(count: int, limit: int) -> tuple[str, str]:
    """Two counts compared in a message: exact pixels where rounding would print them alike
    ("1,000,001 pixels" over "1,000,000 pixels", not "1 MP" over "1 MP")."""
    shown = format_pixels(count), format_pixels(limit)
    return shown if shown[0] != shown[1] else (f"{count:,} pixels", f"{limit:,} pixels")  # both over 1 MP here


def check_output_size(size: tuple[int, int], limit: int) -> None:
    """Refuse an output over `limit` pixels (0 = no limit) before anything is allocated."""
    height, width = size
    if limit and height * width > limit:
        count, cap = format_pixel_pair(height * width, limit)
        raise OutputTooLargeError(f"the output would be {width} x {height} = {count}, over the limit of {cap} "
                                  "(--max-output-pixels; 0 = no limit)")
