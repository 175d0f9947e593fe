"""What every model tells the engine and the tiler about itself (see ARCHITECTURE.md, convention 5),
and the limits a model module puts on its builder's settings."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


TILING_SUPPORTED = "supported"  # tiles are fine (conv nets): cut whenever memory asks
TILING_DISCOURAGED = "discouraged"  # tiles work but cost quality (global attention): only when needed
TILING_INTERNAL = "internal"  # the model must see the whole image (fit-single) or tiles itself
TILING_MODES = (TILING_SUPPORTED, TILING_DISCOURAGED, TILING_INTERNAL)


@dataclass(frozen=True)
class ModelInfo:
    """The one description every kind of model gives the rest of the program (ARCHITECTURE.md,
    "One contract for every model"): the engine, tiler, restore, benchmark and train read only
    this, never the model's class or file type.

    scale: native upscaling factor of one forward pass (1 = same-size restoration);
        None means any output size: forward then takes `size=(height, width)`.
    in_channels / out_channels: channels the model takes and gives (3 = RGB; 1 = grey, fed each
        colour plane; 4 = RGBA, fed colour and alpha together when the image has alpha).
    size_multiple: input height and width must be multiples of this (the engine pads once).
    min_size: the smallest height and width the model accepts (the engine pads up to it).
    square: the input must be square (the engine pads to a square).
    receptive_field: input pixels of context an output pixel depends on, on each side (for
        attention models, a measured safe context); the tile margin and overlap come from it.
    tiling: one of TILING_MODES.
    supports_half / supports_bf16: float16 (CUDA) / bfloat16 give correct results.
    takes_mask: forward(x, mask) with mask (B, 1, H, W), 1 = fill (inpainting models).
    fits_at_runtime: forward optimises (fit-single): it needs autograd and is never tiled.
    channels_last: the model runs faster with channels-last tensors on the CPU (measured per model).
    samples: the model draws its output from a distribution (pixel-recursive): besides the plain
        call (its most likely answer) it has `sample(x, temperature, generator, on_row)`.
    max_input_side: the largest input height and width it takes (0 = any); larger is refused.
    device_bound: None when the model runs on any torch device; else the one device it runs
        on ("cpu" for OpenCV models), whatever the user picked.
    """

    scale: int | None
    in_channels: int = 3
    supports_half: bool = True
    size_multiple: int = 1
    receptive_field: int = 16
    tiling: str = TILING_SUPPORTED
    device_bound: str | None = None
    out_channels: int | None = None  # None = in_channels
    min_size: int = 0
    square: bool = False
    supports_bf16: bool = True
    takes_mask: bool = False
    fits_at_runtime: bool = False
    channels_last: bool = False
    samples: bool = False
    max_input_side: int = 0
    tileable: bool = True  # derived: tiling != TILING_INTERNAL (builders may say tileable=False)

    def __post_init__(self) -> None:
        if self.tiling not in TILING_MODES:
            raise ValueError(f"tiling must be one of {TILING_MODES}, not {self.tiling!r}")
        if self.out_channels is None:
            object.__setattr__(self, "out_channels", self.in_channels)
        if not self.tileable or self.fits_at_runtime:
            object.__setattr__(self, "tiling", TILING_INTERNAL)
        object.__setattr__(self, "tileable", self.tiling != TILING_INTERNAL)


# ---- limits on builder settings
# A model module may declare SETTING_LIMITS = {parameter name: limit} for its builder;
# models.check_settings applies them (and the builder's own signature) before anything is
# built, because settings also come from weights files, which anyone can write.


@dataclass(frozen=True)
class Between:
    """A number in [low, high], both included."""

    low: float
    high: float


@dataclass(frozen=True)
class OneOf:
    """One of a few values (scales, method names); `error` is the UpscaleError subclass a refusal
    raises (None: ModelSettingsError), e.g. UnsupportedScaleError for a scale, as builders raise."""

    values: tuple
    error: type | None = None


@dataclass(frozen=True)
class KeywordsOf:
    """A JSON-object setting passed on as keywords to `target` ("module:attribute"), checked
    against that target's own parameters and `limits`. Under the key "**" of SETTING_LIMITS it
    checks the settings a builder takes through **settings."""

    target: str
    limits: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class FilePath:
    """A setting naming a file the builder reads; never taken from a weights file's metadata."""
