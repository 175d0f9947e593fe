"""Our own super-resolution U-Net: a residual encoder-decoder in low-resolution space.

After the U-Net write-up (a ResNet encoder, a decoder with skip connections, pixel-shuffle
upsampling with ICNR initialisation, and the input carried around the network):

    x (B, 3, h, w) ──┬─ head conv ─ [ResBlocks ─ stride-2 conv] x levels ─ ResBlocks (bottleneck)
                     │                   │ skips                               │
                     │              [pixel-shuffle x2 up + skip + ResBlocks] x levels
                     │                                                         │
                     │                         tail conv ─ pixel shuffle (scale)
                     └─ bicubic upscale (Pillow-exact) ───────────────────────(+)─> (B, 3, h*s, w*s)

All the convolutions run at the input's (low) resolution or below; only the final pixel
shuffle produces the output size, which keeps the model fast on a CPU. The global bicubic
residual means the network only learns the missing detail, so it starts from a good image
and trains quickly. ICNR initialisation makes every sub-pixel convolution start as a
nearest-neighbour upsampler, so the untrained model has no checkerboard.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from functools import lru_cache

from torch.nn import functional as F

from upscale_cli.errors import UnsupportedScaleError, UsageError
from upscale_cli.models.base import Between, OneOf
from upscale_cli.models.descriptor import FixedScale, Masked, SizeRequirements
from upscale_cli.resize import resize

SCALES = (1, 2, 3, 4)
RESIDUAL_INIT_GAIN = 0.1  # the last conv of each residual block starts small: blocks start near identity
TAIL_INIT_GAIN = 0.1  # the detail head starts small: the untrained model is close to bicubic
MATRIX_RESIZE_MAX = 1024  # pixels: sides up to this resize by a dense matrix product (fast, exact)
RESIDUALS = ("bicubic", "bilinear")
MAX_LEVEL_WIDTH = 2048  # channels at any level: width * width_mult**levels may not pass this
# Checked before anything is built (models.check_settings): settings also come from weights files.
SETTING_LIMITS = {
    "scale": OneOf(SCALES, UnsupportedScaleError), "width": Between(1, 512), "levels": Between(0, 6),
    "blocks": Between(0, 32), "decoder_blocks": Between(0, 32), "bottleneck_blocks": Between(0, 32),
    "width_mult": Between(0.5, 4.0), "residual": OneOf(RESIDUALS), "mask_channel": OneOf((False, True)),
}


@lru_cache(maxsize=64)
def _resize_matrix(size_in: int, size_out: int, method: str) -> torch.Tensor:
    """(size_in, size_out) matrix W^T of upscale_cli.resize along one axis, found by resizing
    the identity, so `x @ W^T` is exactly resize's pass along the last axis."""
    eye = torch.eye(size_in, dtype=torch.float64)
    return resize(eye, (size_in, size_out), method, clamp=False).float()


def matrix_resize(x: torch.Tensor, size: tuple[int, int], method: str = "bicubic", clamp: bool = True) -> torch.Tensor:
    """upscale_cli.resize computed as two small matrix products: the same numbers (to float
    rounding), 10-30x faster on small images, which is what training crops and tiles are.
    Falls back to resize for large sides, where dense matrices would cost more than taps."""
    (h_in, w_in), (h, w) = x.shape[-2:], size
    if max(h_in, w_in, h, w) > MATRIX_RESIZE_MAX or method == "nearest":
        return resize(x, size, method, clamp=clamp)
    if w_in != w:
        x = x @ _resize_matrix(w_in, w, method).to(x)  # (..., h_in, w)
    if clamp:
        x = x.clamp(0.0, 1.0)
    if h_in != h:
        x = _resize_matrix(h_in, h, method).to(x).transpose(0, 1) @ x  # (..., h, w)
    return x.clamp(0.0, 1.0) if clamp else x


def icnr_(weight: torch.Tensor, ratio: int, init=nn.init.kaiming_normal_) -> torch.Tensor:
    """ICNR (Aitken et al. 2017): init a conv feeding PixelShuffle(ratio) so that the shuffled
    output equals nearest-neighbour upsampling of one sub-kernel: no checkerboard at start.

    PixelShuffle reads output channel c*ratio^2 + k as sub-pixel k of channel c, so each
    sub-kernel is repeated ratio^2 times along the output dimension.
    """
    out_channels = weight.shape[0]
    if out_channels % (ratio * ratio):
        raise ValueError("ICNR needs out_channels divisible by ratio^2")
    if weight.is_meta:  # a skeleton (models.model_skeleton) holds no values; on the meta device,
        return weight  # repeat_interleave imports torch's reference ops: 2.9 s of every first unet load
    sub = torch.empty(out_channels // (ratio * ratio), *weight.shape[1:], dtype=weight.dtype)
    init(sub)
    with torch.no_grad():
        weight.copy_(sub.repeat_interleave(ratio * ratio, dim=0))
    return weight


def icnr_bias_(bias: torch.Tensor, ratio: int) -> torch.Tensor:
    """Biases of an ICNR conv: equal within each group of ratio^2 sub-pixels (here: zero)."""
    with torch.no_grad():
        bias.zero_()
    return bias


class ResBlock(nn.Module):
    """conv3x3 - ReLU - conv3x3, plus the input (ResNet basic block without batch norm:
    batch norm hurts SR by normalising away the image's contrast)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        with torch.no_grad():
            self.conv2.weight.mul_(RESIDUAL_INIT_GAIN)
            self.conv2.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x), inplace=True))


class SubPixelUp(nn.Module):
    """conv (ICNR) then PixelShuffle(ratio): (B, C_in, H, W) -> (B, C_out, H*r, W*r)."""

    def __init__(self, in_channels: int, out_channels: int, ratio: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels * ratio * ratio, kernel, padding=kernel // 2)
        self.shuffle = nn.PixelShuffle(ratio)
        icnr_(self.conv.weight, ratio)
        icnr_bias_(self.conv.bias, ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv(x))


def _stage(channels: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(*(ResBlock(channels) for _ in range(blocks)))


class UNetSR(nn.Module):
    """The U-Net super-resolver; see the module docstring. Build it with `build_unet`."""

    def __init__(self, scale: int, width: int, levels: int, blocks: int, decoder_blocks: int,
                 bottleneck_blocks: int, width_mult: float, residual: str, mask_channel: bool = False) -> None:
        super().__init__()
        self.scale = scale
        self.residual = residual
        widths = level_widths(width, levels, width_mult)
        self.head = nn.Conv2d(3, widths[0], 3, padding=1)
        # The inpainting layout: a 4th input channel, the mask (1 = fill), through its own conv that
        # starts at zero, so a mask model fine-tuned from a colour-only one starts as that model.
        self.mask_head = nn.Conv2d(1, widths[0], 3, padding=1) if mask_channel else None
        if self.mask_head is not None:
            nn.init.zeros_(self.mask_head.weight)
            nn.init.zeros_(self.mask_head.bias)
        self.mask_channel = bool(mask_channel)
        self.encoders = nn.ModuleList(_stage(widths[i], blocks) for i in range(levels))
        self.downs = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1) for i in range(levels))
        self.bottleneck = _stage(widths[levels], bottleneck_blocks)
        self.ups = nn.ModuleList(SubPixelUp(widths[i + 1], widths[i], 2, kernel=1) for i in range(levels))
        self.decoders = nn.ModuleList(_stage(widths[i], decoder_blocks) for i in range(levels))
        tail_ratio = max(scale, 1)
        self.tail = SubPixelUp(widths[0], 3, tail_ratio) if scale > 1 else nn.Conv2d(widths[0], 3, 3, padding=1)
        with torch.no_grad():
            tail_conv = self.tail.conv if scale > 1 else self.tail
            tail_conv.weight.mul_(TAIL_INIT_GAIN)
        kind = Masked if self.mask_channel else FixedScale
        self.info = kind(
            scale=scale, in_channels=3, supports_half=True, size=SizeRequirements(multiple_of=2**levels),
            channels_last=True,  # measured: 1.4x faster on the CPU in float32, more in bfloat16
            receptive_field=unet_receptive_field(levels, blocks, decoder_blocks, bottleneck_blocks),
            bytes_per_input_pixel=bytes_per_input_pixel(width, scale),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, h, w) -> (B, 3, h*s, w*s). A mask model takes the mask (B, 1, h, w), 1 = fill, as
        `mask=` (restore.py) or as a 4th channel of x (training batches)."""
        h, w = x.shape[-2:]
        if self.mask_head is not None:  # colour (holes pre-filled) + mask
            if mask is None:
                x, mask = (x[:, :3], x[:, 3:4]) if x.shape[1] == 4 else (x, torch.zeros_like(x[:, :1]))
            feat = self.head(x - 0.5) + self.mask_head(mask.to(x))
        else:
            feat = self.head(x - 0.5)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            feat = encoder(feat)
            skips.append(feat)
            feat = down(feat)
        feat = self.bottleneck(feat)
        for i in reversed(range(len(self.ups))):
            feat = self.decoders[i](self.ups[i](feat) + skips[i])
        detail = self.tail(feat)  # (B, 3, h*s, w*s)
        if x.dtype in (torch.float16, torch.bfloat16):
            # the carried input is most of each output value: in float32 it keeps its precision
            # (bfloat16 holds 8 bits of mantissa, about one grey level) and CPU resizing stays fast
            detail, x = detail.float(), x.float()
        return detail + self._carried_input(x, (h * self.scale, w * self.scale))

    def _carried_input(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if self.scale == 1:
            return x
        if self.residual == "bicubic":
            # Pillow-exact antialiased bicubic, unclamped: the residual target stays smooth
            return matrix_resize(x, size, "bicubic", clamp=False)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def bytes_per_input_pixel(width: int, scale: int) -> int:
    """Peak activation memory of one float32 forward per input pixel (bytes): 19 x width + 12 x scale^2
    bounds every shipped shape measured in research/memory_per_pixel.md (309 at x1 width 16; 568, 598
    and 780 at x2, x3, x4 width 32), times 1.25 for headroom."""
    return math.ceil(1.25 * (19 * width + 12 * scale**2))


def level_widths(width: int, levels: int, width_mult: float) -> list[int]:
    """Channels at each level, full resolution first."""
    return [int(round(width * width_mult**i)) for i in range(levels + 1)]


def unet_receptive_field(levels: int, blocks: int, decoder_blocks: int, bottleneck_blocks: int) -> int:
    """Input pixels of context on each side of an output pixel (an upper bound from the layout).

    A 3x3 conv at level l (stride 2^l) widens the field by 2^l input pixels on each side;
    the stride-2 3x3 down conv leaving level l by 2^l, and the up/down pixel alignment by 2^l; the
    head and the 3x3 tail at level 0 add 1 each, the bicubic residual 2.
    """
    radius = 1 + 1  # head and tail
    for level in range(levels):
        # + one 2^l for the stride-2 conv, one for the down/up pixel alignment
        radius += (2 * blocks + 2 * decoder_blocks) * 2**level + 2 * 2**level
    radius += 2 * bottleneck_blocks * 2**levels
    return max(radius, 2)


def build_unet(scale: int = 4, width: int = 32, levels: int = 2, blocks: int = 2, decoder_blocks: int = 1,
               bottleneck_blocks: int = 2, width_mult: float = 1.5, residual: str = "bicubic",
               mask_channel: bool = False) -> UNetSR:
    """The U-Net super-resolver. Settings are JSON-able (they are stored in weights files).

    scale: 1 (same-size restoration), 2, 3 or 4. width: channels at full (input) resolution;
    each level multiplies them by width_mult. levels: number of 2x downsamplings (the input
    must be a multiple of 2**levels; the engine pads). blocks / decoder_blocks /
    bottleneck_blocks: residual blocks per encoder level / decoder level / at the bottom.
    residual: how the input is carried to the output: "bicubic" (Pillow-exact) or "bilinear".
    mask_channel: the model also takes the mask of pixels to fill (1 = fill; inpainting) as an input
    channel of its own; the colour then holds the holes pre-filled (restore.prefill). It says so with
    a Masked descriptor, and takes the mask as forward's `mask=` or as a 4th channel of x.
    """
    scale = int(scale)
    if scale not in SCALES:
        raise UnsupportedScaleError(f"unet supports scales {', '.join(map(str, SCALES))}, not {scale}")
    if residual not in RESIDUALS:
        raise UsageError(f"unet residual must be 'bicubic' or 'bilinear', not {residual!r}")
    if min(width, levels + 1, blocks + 1, decoder_blocks + 1, bottleneck_blocks + 1) < 1 or width < 1:
        raise UsageError("unet width must be >= 1 and levels/blocks >= 0")
    widths = level_widths(width, levels, width_mult)
    if not 1 <= min(widths) <= max(widths) <= MAX_LEVEL_WIDTH:
        raise UsageError(f"unet levels would have {min(widths)} to {max(widths)} channels (width * width_mult**level); "
                         f"each must be 1 to {MAX_LEVEL_WIDTH}")
    return UNetSR(scale, int(width), int(levels), int(blocks), int(decoder_blocks), int(bottleneck_blocks),
                  float(width_mult), residual, bool(mask_channel))
