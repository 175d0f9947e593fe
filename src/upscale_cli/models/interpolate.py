"""Interpolation baselines (nearest, bilinear, bicubic, Lanczos) as the nn.Module the PyTorch engine
runs: a wrapper of models/resample.py's Resampler, which holds the method, its descriptor and the
call (and runs on NumPy arrays by itself where no PyTorch is needed).
"""
from __future__ import annotations

import torch
from torch import nn

from upscale_cli.models.resample import SETTING_LIMITS, Resampler  # noqa: F401 - the builder's limits


class Interpolate(nn.Module):
    """Resample (B, C, H, W) in [0, 1] to (B, C, *size) with one of resize.METHODS."""

    def __init__(self, method: str = "bicubic") -> None:
        super().__init__()
        self.resampler = Resampler(method)
        self.method = method
        self.info = self.resampler.info

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:  # (B, C, H, W) -> (B, C, h, w)
        return self.resampler(x, size)

    def extra_repr(self) -> str:
        return f"method={self.method!r}"


def build_interpolate(method: str = "bicubic") -> Interpolate:
    """Builder for arch "interpolate" (catalogue options: method)."""
    return Interpolate(method=method)
