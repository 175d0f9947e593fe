"""SPADE: spatially-adaptive normalisation (Park et al. 2019), used by pixelrec's conditioning network.

Batch norm without its own affine parameters, then a per-pixel scale and shift predicted from a
guide image (here the low-resolution input) resized to the feature map:

    out = BN(x) * (1 + gamma(guide)) + beta(guide)      # x (B, C, H, W), guide (B, 3, h, w)
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Spade(nn.Module):
    """Normalise `x`, then modulate it with a scale and shift read from `guide` at x's size."""

    def __init__(self, channels: int, guide_channels: int = 3, hidden: int = 32) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.shared = nn.Sequential(nn.Conv2d(guide_channels, hidden, 3, padding=1), nn.ReLU(inplace=True))
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)
        for conv in (self.gamma, self.beta):  # start as plain batch norm: scale 1, shift 0
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        if guide.shape[-2:] != x.shape[-2:]:
            guide = F.interpolate(guide, size=x.shape[-2:], mode="nearest")
        hidden = self.shared(guide)  # (B, hidden, H, W)
        return self.norm(x) * (1 + self.gamma(hidden)) + self.beta(hidden)


class BatchNormIgnoringGuide(nn.Module):
    """Plain batch norm with SPADE's call signature, so one block serves both variants."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


def make_norm(channels: int, spade: bool) -> nn.Module:
    """SPADE or plain batch norm, both called as norm(x, guide)."""
    return Spade(channels) if spade else BatchNormIgnoringGuide(channels)
