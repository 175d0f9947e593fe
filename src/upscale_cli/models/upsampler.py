"""The stacked upsampler: a x2 network stacked for x4 and x8 (after the stacked-upsampler write-up).

One x2 stage is a small encoder-decoder with batch norm:

    x (B, 3, h, w) ─ conv3x3 ─ [strided conv 2x down] ─ convs ─ [transposed conv 2x up] (h, w)
        ─ (+ skip) ─ transposed conv 2x up (2h, 2w) ─ conv3x3 ─ (+ bicubic x2 of x) ─> (B, 3, 2h, 2w)

x4 is two stages in a row and x8 three; a stacked model is trained by initialising every
stage from a trained x2 model (`upscale train --init x2-run`: stage tensors are copied to
each stage) and fine-tuning the stack end to end.
"""
from __future__ import annotations

import torch
from torch import nn

from upscale_cli.errors import UnsupportedScaleError, UsageError
from upscale_cli.models.base import Between, OneOf
from upscale_cli.models.descriptor import FixedScale, SizeRequirements
from upscale_cli.models.unet import matrix_resize

SCALES = (2, 4, 8)
OUTPUT_INIT_GAIN = 0.1  # the last conv starts small: an untrained stage is close to bicubic
# Checked before anything is built (models.check_settings): settings also come from weights files.
# Peak activation per input pixel and channel of width, times scale^2: 281 x s^2 measured at width 32
# (x4, x8: research/memory_per_pixel.md) is 8.8 x width x s^2; with 25% headroom:
BYTES_PER_PIXEL_PER_WIDTH = 11
SETTING_LIMITS = {"scale": OneOf(SCALES, UnsupportedScaleError), "width": Between(1, 512), "depth": Between(0, 64)}


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def _up_bn(cin: int, cout: int) -> nn.Sequential:
    """Transposed conv, kernel 4 stride 2: an exact 2x size increase."""
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class UpsamplerStage(nn.Module):
    """One x2 stage: (B, 3, h, w) -> (B, 3, 2h, 2w)."""

    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.head = _conv_bn(3, width)
        self.down = _conv_bn(width, 2 * width, stride=2)  # (B, 2w, h/2, w/2)
        self.body = nn.Sequential(*(_conv_bn(2 * width, 2 * width) for _ in range(depth)))
        self.up1 = _up_bn(2 * width, width)  # back to (h, w)
        self.up2 = _up_bn(width, width)  # (2h, 2w)
        self.out = nn.Conv2d(width, 3, 3, padding=1)
        with torch.no_grad():
            self.out.weight.mul_(OUTPUT_INIT_GAIN)
            self.out.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        feat = self.head(x - 0.5)  # (B, width, h, w)
        feat = self.up1(self.body(self.down(feat))) + feat
        detail = self.out(self.up2(feat))  # (B, 3, 2h, 2w)
        return detail + matrix_resize(x, (2 * h, 2 * w), "bicubic", clamp=False)


class StackedUpsampler(nn.Module):
    """log2(scale) x2 stages in a row."""

    def __init__(self, scale: int, width: int, depth: int) -> None:
        super().__init__()
        self.stages = nn.ModuleList(UpsamplerStage(width, depth) for _ in range(scale.bit_length() - 1))
        # per stage: head 1 + down 1 + body 2*depth + up1 2 (at half res) + up2/out ~2; stage k sees 2^k-times input
        stage_field = 1 + 2 + 2 * (depth + 2) + 2
        self.info = FixedScale(scale=scale, in_channels=3, supports_half=True, size=SizeRequirements(multiple_of=2),
                               channels_last=True, bytes_per_input_pixel=BYTES_PER_PIXEL_PER_WIDTH * width * scale**2,
                              receptive_field=sum(-(-stage_field // 2**k) for k in range(len(self.stages))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, h, w) -> (B, 3, h*s, w*s)
        for stage in self.stages:
            x = stage(x)
        return x


def build_upsampler(scale: int = 2, width: int = 32, depth: int = 2) -> StackedUpsampler:
    """The stacked upsampler at scale 2, 4 or 8 (1, 2 or 3 x2 stages). width: channels at the
    stage's input resolution; depth: conv blocks at half resolution in each stage."""
    scale = int(scale)
    if scale not in SCALES:
        raise UnsupportedScaleError(f"upsampler supports scales {', '.join(map(str, SCALES))}, not {scale}")
    if width < 1 or depth < 0:
        raise UsageError("upsampler width must be >= 1 and depth >= 0")
    return StackedUpsampler(scale, int(width), int(depth))
