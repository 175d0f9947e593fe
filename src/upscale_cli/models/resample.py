"""Interpolation (nearest, bilinear, bicubic, Lanczos) as a model that needs no PyTorch.

It has no weights and no native scale: the engine asks for an output size and `Resampler(x, size)`
resamples with `upscale_cli.resize.resize`, the Pillow-exact implementation the evaluation
protocol uses (so the `bicubic` model reproduces the protocol's bicubic baseline). It takes NumPy
arrays (a run on the CPU, which then never imports torch) or torch tensors; models/interpolate.py
wraps it as the nn.Module the PyTorch engine runs.
"""
from __future__ import annotations

from upscale_cli.models.base import OneOf
from upscale_cli.models.descriptor import AnySize
from upscale_cli.resize import METHODS, resize

BYTES_PER_INPUT_PIXEL = 128  # bytes per input pixel, one float32 forward (research/memory_per_pixel.md)
SETTING_LIMITS = {"method": OneOf(tuple(METHODS))}


class Resampler:
    """Resample (B, C, H, W) in [0, 1] to (B, C, *size) with one of resize.METHODS."""

    def __init__(self, method: str = "bicubic") -> None:
        if method not in METHODS:
            raise ValueError(f"unknown interpolation method {method!r}; choose from {', '.join(METHODS)}")
        self.method = method
        # Whole image in one pass: resize is exact and cheap, tiling would only add seams.
        # Nearest copies pixels, so colour and alpha go through it together (RGBA): transparent pixels
        # keep their own colour and a palette image keeps its palette. The smooth methods take RGB with
        # the hidden colour under transparency filled first, or it would bleed into the edges.
        self.info = AnySize(supports_half=False, in_channels=4 if method == "nearest" else 3,
                            bytes_per_input_pixel=BYTES_PER_INPUT_PIXEL)

    def __call__(self, x, size: tuple[int, int]):  # (B, C, H, W) -> (B, C, h, w), NumPy or torch
        return resize(x, (int(size[0]), int(size[1])), method=self.method)


def build_resampler(method: str = "bicubic") -> Resampler:
    """The array builder for arch "interpolate" (catalogue options: method)."""
    return Resampler(method=method)
