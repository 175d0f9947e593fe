"""The one contract between a model and the rest of the program (ARCHITECTURE.md, "One contract
for every model"): every model, ours, OpenCV's, interpolation, fit-single or any file spandrel
detects, carries one of these descriptors as its `info`, and the engine, tiler, restore, benchmark
and train read only it, never the model's class, architecture name or file type.

The kind of model is its type, not a flag, and says how it is called:
- `FixedScale`: forward(x) -> x upscaled by `scale` (1 = same-size restoration).
- `Masked`: forward(x, mask=) with mask (B, 1, H, W), 1 = fill (inpainting); scale 1.
- `Sampling`: a fixed-scale model that models a distribution: forward(x) gives its most likely
  answer and sample(x, temperature, generator, on_row) draws others (pixel-recursive).
- `AnySize`: forward(x, size=(height, width)) renders any output size (interpolation, pixel art);
  `Fitting` is one that optimises inside forward (fit-single), so the engine keeps autograd on.
Each knows its size requirements, how it may be tiled, the context a tile needs, its precision
support and its peak memory per input pixel, which sizes the automatic tile.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal, get_args

TilingMode = Literal["supported", "discouraged", "internal"]
# supported: tiles are fine (conv nets), cut whenever memory asks. discouraged: tiles work but cost
# quality (global attention): untiled when memory allows, else the largest tile that fits.
# internal: the model must see the whole image (fit-single, pixel art) or tiles itself.
TILING_MODES: tuple[str, ...] = get_args(TilingMode)
# Peak activation memory per input pixel (bytes, float32) assumed for a model nobody measured: above
# every conv net of research/memory_per_pixel.md at x4 (not the attention models, which are listed).
DEFAULT_BYTES_PER_INPUT_PIXEL = 4096
DEFAULT_CONTEXT = 16  # input pixels of context assumed for a model that does not say


@dataclass(frozen=True)
class SizeRequirements:
    """The input sizes a model takes; the engine pads an input up to them once (`padded`).

    minimum: smallest height and width. multiple_of: height and width must be multiples of it.
    square: height must equal width. maximum: largest side it accepts (0 = any); larger is refused.
    """

    minimum: int = 0
    multiple_of: int = 1
    square: bool = False
    maximum: int = 0

    def __post_init__(self) -> None:
        if self.minimum < 0 or self.multiple_of < 1 or self.maximum < 0:
            raise ValueError(f"invalid size requirements {self}")

    def padded(self, height: int, width: int) -> tuple[int, int]:
        """The smallest (height, width) at least this large that meets the requirements."""
        height, width = max(height, self.minimum), max(width, self.minimum)
        if self.square:
            height = width = max(height, width)
        m = self.multiple_of
        return -(-height // m) * m, -(-width // m) * m

    def at_least(self, side: int) -> SizeRequirements:
        """These requirements with the minimum side raised to `side`."""
        return replace(self, minimum=max(self.minimum, side))


@dataclass(frozen=True, kw_only=True)
class ModelDescriptor:
    """What every kind of model tells the program about itself (the variants below add the call).

    in_channels / out_channels: channels it takes and gives (3 = RGB; 1 = grey, fed each colour
        plane; 4 = RGBA, fed colour and alpha together when the image has alpha). out None = in.
    size: its SizeRequirements. tiling: one of TILING_MODES.
    receptive_field: input pixels of context an output pixel depends on, on each side (for
        attention models, a measured safe context); the tile margin and overlap come from it.
    supports_half / supports_bf16: float16 (CUDA) / bfloat16 give correct results.
    bytes_per_input_pixel: peak activation memory of one float32 forward per input pixel, its output
        left out (the tiler adds that): the figure measured on one thread in
        research/memory_per_pixel.md with 25% headroom (thread buffers, the allocator); the
        automatic tile size is chosen from it.
    device_bound: None when it runs on any torch device, else the one device it runs on ("cpu"
        for OpenCV models), whatever the user picked.
    channels_last: it runs faster with channels-last tensors on the CPU (measured per model).
    """

    in_channels: int = 3
    out_channels: int | None = None
    size: SizeRequirements = field(default_factory=SizeRequirements)
    tiling: TilingMode = "supported"
    receptive_field: int = DEFAULT_CONTEXT
    supports_half: bool = True
    supports_bf16: bool = True
    bytes_per_input_pixel: int = DEFAULT_BYTES_PER_INPUT_PIXEL
    device_bound: str | None = None
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.tiling not in TILING_MODES:
            raise ValueError(f"tiling must be one of {TILING_MODES}, not {self.tiling!r}")
        if self.in_channels < 1 or self.receptive_field < 0 or self.bytes_per_input_pixel < 1:
            raise ValueError(f"invalid model descriptor {self}")
        if self.out_channels is None:
            object.__setattr__(self, "out_channels", self.in_channels)

    @property
    def tileable(self) -> bool:
        return self.tiling != "internal"


@dataclass(frozen=True, kw_only=True)
class FixedScale(ModelDescriptor):
    """forward(x): (B, C, H, W) -> (B, C', H*scale, W*scale)."""

    scale: int

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scale < 1:
            raise ValueError(f"scale must be at least 1, not {self.scale}")


@dataclass(frozen=True, kw_only=True)
class Masked(FixedScale):
    """forward(x, mask=): fills the pixels the (B, 1, H, W) mask marks with 1; same size out."""

    scale: int = 1


@dataclass(frozen=True, kw_only=True)
class Sampling(FixedScale):
    """forward(x) gives the most likely answer; sample(x, temperature, generator, on_row) draws one.
    It generates the whole output at once, so it is never tiled."""

    tiling: TilingMode = "internal"


@dataclass(frozen=True, kw_only=True)
class AnySize(ModelDescriptor):
    """forward(x, size=(height, width)) -> (B, C, height, width), any size; never tiled. It may
    also offer passes(height, width, size): the native steps it runs inside (for the report)."""

    tiling: TilingMode = "internal"
    receptive_field: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "tiling", "internal")


@dataclass(frozen=True, kw_only=True)
class Fitting(AnySize):
    """An any-size model that optimises inside forward (fit-single): it needs autograd."""


def native_scale(info: ModelDescriptor) -> int | None:
    """The scale of one forward pass, or None for an any-size model."""
    return info.scale if isinstance(info, FixedScale) else None


__all__ = ["AnySize", "DEFAULT_BYTES_PER_INPUT_PIXEL", "Fitting", "FixedScale", "Masked", "ModelDescriptor",
           "Sampling", "SizeRequirements", "TILING_MODES", "TilingMode", "native_scale"]
