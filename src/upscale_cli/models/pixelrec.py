"""Pixel-recursive super-resolution (after Dahl et al. 2017): x4 as a distribution, not an average.

Two networks give logits over the 256 values of every output sub-pixel (B, 3, 256, 4h, 4w):

    conditioning  LR (B, 3, h, w) -> ResNet blocks in LR space -> 2x pixel-shuffle twice -> 1x1 conv
                  (batch norm, or with spade=True SPADE blocks guided by the LR image)
    prior         a gated PixelCNN on the output image generated so far: a vertical stack (rows
                  above) and a horizontal stack (pixels to the left, and the current pixel's earlier
                  colours: R -> G -> B channel masks), no blind spot

Late fusion: p(y_i | x, y_<i) = softmax(conditioning_i + prior_i). Training is teacher-forced
cross-entropy over all sub-pixels at once, plus the same cross-entropy on the conditioning logits
alone (auxiliary, as in the paper), which keeps the conditioning network a predictor by itself.

Generation (`sample`) goes pixel after pixel, R then G then B: 3 x 4h x 4w sequential steps.
The conditioning logits are computed once; each row runs the vertical stack once over the rows
above, and each step runs only the horizontal stack over the current row up to the current pixel
and the output head at that pixel, so a 32x32 output is a few thousand small steps.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from upscale_cli.errors import UnsupportedScaleError
from upscale_cli.models.base import Between, OneOf
from upscale_cli.models.descriptor import Sampling, SizeRequirements
from upscale_cli.models.spade import make_norm

LEVELS = 256  # values of an 8-bit sub-pixel
COLOURS = 3  # R, G, B: generated in this order
SCALE = 4
TRAINING = "upscale_cli.train.pixelrec"  # models.training_module: it trains with its own recipe
# Largest input side sampled (16x16 -> 64x64, 12,288 sequential steps): the prior was trained on
# 32x32 outputs; larger inputs are refused with one line (README: "Several answers for tiny images").
MAX_INPUT_SIDE = 16
BYTES_PER_INPUT_PIXEL = 73_216  # bytes per input pixel: its logits live through sampling (research/memory_per_pixel.md: 58.5 KB)
SETTING_LIMITS = {"scale": OneOf((SCALE,), UnsupportedScaleError), "width": Between(3, 256),
                  "blocks": Between(0, 16), "prior_width": Between(3, 192), "prior_layers": Between(1, 16),
                  "kernel": OneOf((3, 5, 7))}


def colour_groups(channels: int, halves: int = 1) -> torch.Tensor:
    """The colour (0 R, 1 G, 2 B) each of `channels` feature channels belongs to: each of `halves`
    equal parts is laid out colour-major (R channels, then G, then B)."""
    part = channels // halves
    index = torch.arange(channels) % part
    return index * COLOURS // part


def centre_mask(out_groups: torch.Tensor, in_groups: torch.Tensor, include_own: bool) -> torch.Tensor:
    """(out, in) 0/1 mask of the centre tap: a colour sees earlier colours of the current pixel
    (mask A, the first layer) or earlier colours and its own (mask B, every later layer)."""
    if include_own:
        return (out_groups[:, None] >= in_groups[None, :]).float()
    return (out_groups[:, None] > in_groups[None, :]).float()


class RowCausalConv(nn.Module):
    """1 x (k//2 + 1) convolution over the current pixel and the k//2 to its left; the current
    pixel's tap is colour-masked. (B, cin, H, W) -> (B, cout, H, W)."""

    def __init__(self, cin: int, cout: int, kernel: int, in_groups: torch.Tensor, out_groups: torch.Tensor,
                 include_own: bool) -> None:
        super().__init__()
        self.left = kernel // 2
        self.conv = nn.Conv2d(cin, cout, (1, self.left + 1))
        mask = torch.ones(cout, cin, 1, self.left + 1)
        mask[:, :, 0, self.left] = centre_mask(out_groups, in_groups, include_own)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (self.left, 0, 0, 0)), self.conv.weight * self.mask, self.conv.bias)


class MaskedPointwise(nn.Module):
    """1x1 convolution with a colour mask (B): colour c reads colours <= c."""

    def __init__(self, cin: int, cout: int, in_groups: torch.Tensor, out_groups: torch.Tensor) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)
        self.register_buffer("mask", centre_mask(out_groups, in_groups, True)[:, :, None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.conv.weight * self.mask, self.conv.bias)


def _gate(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


def shift_down(x: torch.Tensor) -> torch.Tensor:
    """Move rows one down (zeros in the first row): row i then holds what row i-1 saw."""
    return F.pad(x, (0, 0, 1, 0))[..., :-1, :]


class GatedLayer(nn.Module):
    """One gated PixelCNN layer (van den Oord et al. 2016) with both stacks.

    vertical:   (k//2 + 1) x k conv over the current row and the k//2 rows above (all columns
                within k//2); it only reaches the horizontal stack shifted one row down.
    horizontal: row-causal conv + link from the vertical stack, gated, 1x1, residual.
    """

    def __init__(self, cin: int, channels: int, kernel: int, first: bool) -> None:
        super().__init__()
        in_groups = torch.arange(COLOURS) if first else colour_groups(cin)
        gated = colour_groups(2 * channels, halves=2)
        self.half = kernel // 2
        self.first = first
        self.vertical = nn.Conv2d(cin, 2 * channels, (self.half + 1, kernel))
        self.horizontal = RowCausalConv(cin, 2 * channels, kernel, in_groups, gated, include_own=not first)
        self.link = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.out = MaskedPointwise(channels, channels, colour_groups(channels), colour_groups(channels))

    def vertical_pre(self, v: torch.Tensor) -> torch.Tensor:
        """(B, cin, R, W) -> (B, 2C, R, W): pre-activations of the vertical stack (row r sees rows <= r)."""
        return self.vertical(F.pad(v, (self.half, self.half, self.half, 0)))

    def link_from(self, v_pre: torch.Tensor) -> torch.Tensor:
        """What the horizontal stack at row r reads: the vertical stack of row r - 1."""
        return shift_down(self.link(v_pre))

    def horizontal_step(self, h: torch.Tensor, link: torch.Tensor) -> torch.Tensor:
        out = self.out(_gate(self.horizontal(h) + link))
        return out if self.first else out + h


class GatedPixelCNN(nn.Module):
    """The prior: output image so far (B, 3, H, W) in [0, 1] -> logits (B, 3, 256, H, W), where
    sub-pixel (c, i, j) depends only on rows < i, pixels (i, < j) and colours < c of pixel (i, j)."""

    def __init__(self, channels: int, layers: int, kernel: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            GatedLayer(COLOURS if n == 0 else channels, channels, kernel, first=n == 0) for n in range(layers))
        groups, out_groups = colour_groups(channels), torch.arange(COLOURS * LEVELS) // LEVELS
        self.head_hidden = MaskedPointwise(channels, channels, groups, groups)
        self.head_out = MaskedPointwise(channels, COLOURS * LEVELS, groups, out_groups)

    def vertical_links(self, y: torch.Tensor) -> list[torch.Tensor]:
        """Per layer, the link each row of the horizontal stack reads: (B, 2C, H, W)."""
        v, links = y * 2 - 1, []
        for layer in self.layers:
            pre = layer.vertical_pre(v)
            links.append(layer.link_from(pre))
            v = _gate(pre)
        return links

    def horizontal(self, y: torch.Tensor, links: list[torch.Tensor]) -> torch.Tensor:
        """Rows of the output (B, 3, R, W') and their links -> features (B, C, R, W')."""
        h = y * 2 - 1
        for layer, link in zip(self.layers, links):
            h = layer.horizontal_step(h, link)
        return h

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, R, W) -> logits (B, 3, 256, R, W)."""
        out = self.head_out(F.relu(self.head_hidden(F.relu(features))))
        return out.unflatten(1, (COLOURS, LEVELS))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.head(self.horizontal(y, self.vertical_links(y)))


class ResBlock(nn.Module):
    """Pre-activation residual block; its norms are batch norm or SPADE (guided by the LR image)."""

    def __init__(self, width: int, spade: bool) -> None:
        super().__init__()
        self.norm1, self.norm2 = make_norm(width, spade), make_norm(width, spade)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x, guide)))
        return x + self.conv2(F.relu(self.norm2(out, guide)))


class ConditioningNet(nn.Module):
    """LR (B, 3, h, w) in [0, 1] -> logits (B, 3, 256, 4h, 4w): ResNet blocks in LR space, then
    two (conv, pixel shuffle x2, residual block) stages."""

    def __init__(self, width: int, blocks: int, spade: bool) -> None:
        super().__init__()
        self.stem = nn.Conv2d(COLOURS, width, 3, padding=1)
        self.blocks = nn.ModuleList(ResBlock(width, spade) for _ in range(blocks))
        self.ups = nn.ModuleList(nn.Conv2d(width, 4 * width, 3, padding=1) for _ in range(2))
        self.up_blocks = nn.ModuleList(ResBlock(width, spade) for _ in range(2))
        self.out_norm = make_norm(width, spade)
        self.out = nn.Conv2d(width, COLOURS * LEVELS, 1)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        guide = lr * 2 - 1
        x = self.stem(guide)  # (B, width, h, w)
        for block in self.blocks:
            x = block(x, guide)
        for up, block in zip(self.ups, self.up_blocks):
            x = block(F.pixel_shuffle(up(x), 2), guide)  # (B, width, 2h, 2w), then 4h x 4w
        return self.out(F.relu(self.out_norm(x, guide))).unflatten(1, (COLOURS, LEVELS))


StepFn = Callable[[int, int], None]


class PixelRecursiveSR(nn.Module):
    """The conditioning network and the prior, fused by adding their logits.

    forward(lr) draws the greedy (temperature 0) x4 answer, so the model also works wherever a
    plain (B, 3, h, w) -> (B, 3, 4h, 4w) call is expected; forward(lr, target) returns the
    teacher-forced (fused, conditioning) logits for training. `sample` draws at any temperature.
    """

    def __init__(self, width: int = 32, blocks: int = 4, spade: bool = False, prior_width: int = 24,
                 prior_layers: int = 4, kernel: int = 3) -> None:
        super().__init__()
        if prior_width % COLOURS:
            raise ValueError(f"prior_width must be a multiple of {COLOURS} (one group per colour)")
        self.conditioning = ConditioningNet(width, blocks, spade)
        self.prior = GatedPixelCNN(prior_width, prior_layers, kernel)
        self.info = Sampling(scale=SCALE, in_channels=COLOURS, supports_half=False, supports_bf16=False,
                             receptive_field=0, size=SizeRequirements(maximum=MAX_INPUT_SIDE),
                             bytes_per_input_pixel=BYTES_PER_INPUT_PIXEL)

    def forward(self, lr: torch.Tensor, target: torch.Tensor | None = None):
        if target is None:  # the engine's call (benchmark, library): refuse what would take hours
            from upscale_cli.sampling import check_input_size

            check_input_size(self, *lr.shape[-2:])
            return self.sample(lr, temperature=0.0)
        cond = self.conditioning(lr)  # (B, 3, 256, H, W)
        return cond + self.prior(target), cond

    @torch.no_grad()
    def sample(self, lr: torch.Tensor, temperature: float = 1.0, generator: torch.Generator | None = None,
               on_row: StepFn | None = None) -> torch.Tensor:
        """LR (B, 3, h, w) in [0, 1] -> one sample per batch item (B, 3, 4h, 4w) in [0, 1], pixel by
        pixel. temperature 0 takes the most likely value; on_row(rows_done, rows) after each row."""
        cond = self.conditioning(lr)  # computed once: (B, 3, 256, H, W)
        batch, _, _, height, width = cond.shape
        y = cond.new_zeros(batch, COLOURS, height, width)
        for i in range(height):
            links = [link[..., i:i + 1, :] for link in self.prior.vertical_links(y[..., : i + 1, :])]
            for j in range(width):
                row_links = [link[..., : j + 1] for link in links]
                for c in range(COLOURS):
                    feats = self.prior.horizontal(y[..., i:i + 1, : j + 1], row_links)[..., -1:]  # (B, C, 1, 1)
                    logits = self.prior.head(feats)[:, c, :, 0, 0] + cond[:, c, :, i, j]  # (B, 256)
                    y[:, c, i, j] = pick_level(logits, temperature, generator) / (LEVELS - 1)
            if on_row is not None:
                on_row(i + 1, height)
        return y


def pick_level(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """(B, 256) logits -> (B,) values: argmax at temperature 0, else a draw from softmax(logits / T)."""
    if temperature <= 0:
        return logits.argmax(dim=1).float()
    probs = torch.softmax(logits.float() / temperature, dim=1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0].float()


def nll_bits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood in bits per sub-pixel: logits (B, 3, 256, H, W), target
    (B, 3, H, W) in [0, 1] (8-bit levels)."""
    levels = target.mul(LEVELS - 1).round().long().flatten(0, 1)  # (B * 3, H, W)
    return F.cross_entropy(logits.flatten(0, 1), levels) / math.log(2)  # a view: no copy of the logits


def build_pixelrec(scale: int = SCALE, width: int = 32, blocks: int = 4, spade: bool = False, prior_width: int = 24,
                   prior_layers: int = 4, kernel: int = 3) -> PixelRecursiveSR:
    """The x4 pixel-recursive model (settings as in its weights file's metadata)."""
    if scale != SCALE:
        raise UnsupportedScaleError(f"pixelrec is x{SCALE} only, not x{scale}")
    return PixelRecursiveSR(width, blocks, spade, prior_width, prior_layers, kernel)
