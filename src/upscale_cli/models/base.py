"""What every model tells the engine and the tiler about itself (see ARCHITECTURE.md, convention 5),
and the limits a model module puts on its builder's settings."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class ModelInfo:
    """Self-description read by the engine and tiler; never `if arch == ...`.

    scale: native upscaling factor of one forward pass (1 = same-size restoration);
        None means any output size: forward then takes `size=(height, width)`.
    in_channels: colour channels the model expects (3 = RGB; greyscale is replicated).
    supports_half: whether float16 on CUDA gives correct results.
    size_multiple: input height and width must be multiples of this (the engine pads).
    receptive_field: input pixels of context an output pixel depends on, on each side;
        the tiler's default overlap comes from it.
    tileable: False for models that must see the whole image (e.g. fit-single).
    device_bound: None when the model runs on any torch device; else the one device it runs
        on ("cpu" for OpenCV models), whatever the user picked.
    """

    scale: int | None
    in_channels: int = 3
    supports_half: bool = True
    size_multiple: int = 1
    receptive_field: int = 16
    tileable: bool = True
    device_bound: str | None = None


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
