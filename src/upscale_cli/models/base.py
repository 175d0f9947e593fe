"""What every model tells the engine and the tiler about itself (see ARCHITECTURE.md, convention 5)."""
from __future__ import annotations

from dataclasses import dataclass


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
