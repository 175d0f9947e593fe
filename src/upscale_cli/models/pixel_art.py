"""Deterministic pixel-art scalers: Scale2x (EPX / AdvMAME2x) and Scale3x (AdvMAME3x), as a model.

Written from the published rules (A. Mazzoleni, scale2x.sourceforge.net "Scale2x" and
"Scale3x" algorithm pages; EPX by E. Johnston). Around each input pixel E:

    A B C        Scale2x: when B != H and D != F,
    D E F          E0 = D if D == B else E     E1 = F if B == F else E
    G H I          E2 = D if D == H else E     E3 = F if H == F else E
                 else all four are E. Scale3x adds the edge and corner rules of its page.

Pixels are equal when every channel is exactly equal; with alpha (the last of 2 or 4
channels) it is compared with the colour, so alpha follows the same decisions, and fully
transparent pixels count as equal whatever colour they hide. Every output pixel is a copy of
an input pixel: no new colours, so a palette survives. Image borders repeat the edge pixel.

x4 is Scale2x twice, x6 Scale2x then Scale3x, and so on; a size that no chain of passes
reaches exactly takes the largest chain below it, then nearest-neighbour to the exact size.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from upscale_cli.models.descriptor import AnySize

PASS_FACTORS = (3, 2)  # native passes, tried largest first
MAX_PASSES = 6  # 2^6 = x64: beyond that nearest-neighbour does the rest
BYTES_PER_INPUT_PIXEL = 960  # bytes per input pixel, one float32 forward (research/memory_per_pixel.md)
RECEPTIVE_FIELD = 2  # input pixels: 1 + 1/2 + 1/4 ... for a chain of passes
ALPHA_CHANNEL_COUNTS = (2, 4)  # grey + alpha, RGBA: the last channel is alpha


def _keys(x: torch.Tensor) -> torch.Tensor:
    """What equality compares: the pixels, with the colour of fully transparent pixels zeroed."""
    if x.shape[1] not in ALPHA_CHANNEL_COUNTS:
        return x
    alpha = x[:, -1:]
    return torch.cat([torch.where(alpha > 0, x[:, :-1], torch.zeros_like(x[:, :-1])), alpha], dim=1)


def _neighbours(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The 3x3 neighbourhood A..I of every pixel, each (B, C, H, W), edges repeated."""
    height, width = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    names = "ABCDEFGHI"
    return {names[3 * dy + dx]: padded[..., dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)}


def _interleave(blocks: list[torch.Tensor], factor: int) -> torch.Tensor:
    """factor^2 sub-pixel planes (B, C, H, W), row-major within the block -> (B, C, H*f, W*f)."""
    batch, channels, height, width = blocks[0].shape
    stacked = torch.stack(blocks, dim=2).reshape(batch, channels, factor, factor, height, width)
    return stacked.permute(0, 1, 4, 2, 5, 3).reshape(batch, channels, height * factor, width * factor)


def _equal(keys: dict[str, torch.Tensor]):
    """eq(p, q): (B, 1, H, W) bool, all channels of the two neighbours equal."""
    def eq(p: str, q: str) -> torch.Tensor:
        return (keys[p] == keys[q]).all(dim=1, keepdim=True)

    return eq


def scale2x(x: torch.Tensor) -> torch.Tensor:
    """Scale2x (EPX): (B, C, H, W) -> (B, C, 2H, 2W), every output pixel a copy of an input pixel."""
    px, eq = _neighbours(x), _equal(_neighbours(_keys(x)))
    active = ~eq("B", "H") & ~eq("D", "F")
    e = px["E"]
    rules = [(eq("D", "B"), "D"), (eq("B", "F"), "F"), (eq("D", "H"), "D"), (eq("H", "F"), "F")]
    return _interleave([torch.where(active & cond, px[name], e) for cond, name in rules], 2)


def scale3x(x: torch.Tensor) -> torch.Tensor:
    """Scale3x (AdvMAME3x): (B, C, H, W) -> (B, C, 3H, 3W), every output pixel a copy of an input pixel."""
    px, eq = _neighbours(x), _equal(_neighbours(_keys(x)))
    active = ~eq("B", "H") & ~eq("D", "F")
    db, bf, dh, hf = eq("D", "B"), eq("B", "F"), eq("D", "H"), eq("H", "F")
    rules = [
        (db, "D"),
        (db & ~eq("E", "C") | bf & ~eq("E", "A"), "B"),
        (bf, "F"),
        (db & ~eq("E", "G") | dh & ~eq("E", "A"), "D"),
        (torch.zeros_like(db), "E"),
        (bf & ~eq("E", "I") | hf & ~eq("E", "C"), "F"),
        (dh, "D"),
        (dh & ~eq("E", "I") | hf & ~eq("E", "G"), "H"),
        (hf, "F"),
    ]
    return _interleave([torch.where(active & cond, px[name], px["E"]) for cond, name in rules], 3)


PASSES = {2: scale2x, 3: scale3x}


def plan_passes(height: int, width: int, size: tuple[int, int]) -> tuple[int, ...]:
    """The x3/x2 passes for a target size (x3 first): exact when the size is the input times
    2^a 3^b, else the largest such product below the smaller axis factor (nearest does the rest)."""
    factor = min(size[0] / height, size[1] / width)
    chains = [(3,) * threes + (2,) * twos for threes in range(MAX_PASSES + 1) for twos in range(MAX_PASSES + 1 - threes)]
    fitting = [c for c in chains if math.prod(c) <= factor + 1e-9]
    return max(fitting, key=lambda c: (math.prod(c), -len(c)))


def nearest(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour to (h, w), Pillow's sampling (pixel centres); copies input pixels only."""
    height, width = x.shape[-2:]
    rows = ((torch.arange(size[0], dtype=torch.float64) + 0.5) * (height / size[0])).floor().long().clamp(max=height - 1)
    cols = ((torch.arange(size[1], dtype=torch.float64) + 0.5) * (width / size[1])).floor().long().clamp(max=width - 1)
    return x.index_select(-2, rows.to(x.device)).index_select(-1, cols.to(x.device))


def upscale_pixel_art(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, *size): Scale2x/Scale3x passes, then nearest-neighbour if the size needs it."""
    for factor in plan_passes(x.shape[-2], x.shape[-1], size):
        x = PASSES[factor](x)
    if tuple(x.shape[-2:]) != tuple(size):
        x = nearest(x, size)
    return x


class PixelArt(nn.Module):
    """Any-size pixel-art scaler: forward(x (B, C, H, W), size=(h, w)); C may be 1-4 (alpha last of 2 or 4)."""

    def __init__(self) -> None:
        super().__init__()
        # in_channels=4: colour and alpha come in together, so alpha takes the colour's decisions
        # (an RGB image gets an opaque alpha from the engine, which changes no decision).
        # Whole image in one pass, like the interpolation models: it is cheap and exact.
        # No float16/bfloat16: they would merge distinct colours (16-bit, or 8-bit in bfloat16) before comparing.
        # receptive_field: each pass reads 1 pixel around each pixel of its own input (< 2 input pixels in all).
        self.info = AnySize(in_channels=4, supports_half=False, supports_bf16=False, receptive_field=RECEPTIVE_FIELD,
                            bytes_per_input_pixel=BYTES_PER_INPUT_PIXEL)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:  # (B, C, H, W) -> (B, C, h, w)
        return upscale_pixel_art(x, (int(size[0]), int(size[1])))

    def passes(self, height: int, width: int, size: tuple[int, int]) -> tuple[int, ...]:
        """The Scale3x/Scale2x passes forward runs for an input of this size (for the file's report)."""
        return plan_passes(height, width, size)


def build_pixel_art() -> PixelArt:
    """Builder for arch "pixel-art" (no options)."""
    return PixelArt()
