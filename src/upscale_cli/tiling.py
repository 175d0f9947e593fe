r"""Tiled inference: cut an image into overlapping tiles, run the model on each, blend the outputs.

Pure tensor code (no files, no console). The engine calls `tiled_forward` with the model's forward
function; everything here works in INPUT pixels unless a name says otherwise.

How overlap, margin and the blend window relate (one axis; the other is the same):

    tile A  |==========================================|
    tile B                  |==========================================|
                            |<-------- overlap o ----->|
    weight of A   1 1 1 1 1 1 1 1 \  ramp  \ 0 0 0 0 0 0
    weight of B   0 0 0 0 0 0 0 0 /  ramp  / 1 1 1 1 1 1
                            |<- m ->|<- o-2m ->|<- m ->|

* `overlap` (o): input pixels two neighbouring tiles share.
* `margin` (m): input pixels next to a tile's INNER edge (a side shared with a neighbour) whose
  outputs are wrong because the model's receptive field reached into padding there. The window is
  exactly 0 over that band (m * scale output pixels), so those outputs never reach the image. Set it
  to the model's receptive field (per side). Default: o // 4, which matches `overlap_for(rf)` = 4 * rf.
* The remaining o - 2m pixels in the middle of the overlap are a raised-cosine ramp: A falls as B
  rises, sin^2 + cos^2 = 1, so the two weights sum to exactly 1 there. Sides that touch the image
  border stay at weight 1 up to the border. Requires o >= 2m (o == 2m is a hard cut mid-overlap).

Memory: one float32 accumulator for the output lives on `out_device` (the model's device unless
told otherwise; pass out_device="cpu" when a GPU is too small to hold the whole output). The tile
grid is a product of row spans and column spans and every window is an outer product wy(y) * wx(x),
so the summed weight is exactly (sum_i wy_i)(y) * (sum_j wx_j)(x): two 1-D vectors instead of an
(H*s, W*s) weight map (768 MB saved on a x4 4000x3000 run). Every output pixel has positive weight.
"""
from __future__ import annotations

import math
import os
import traceback
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from upscale_cli.errors import UsageError

Box = tuple[int, int, int, int]  # (y0, y1, x0, x1) in input pixels, end exclusive
Span = tuple[int, int]  # (start, end) in input pixels along one axis

MIN_OVERLAP = 8  # input pixels: a ramp of a few pixels even for models with a tiny receptive field
MAX_OVERLAP = 128  # input pixels: beyond this the overlap costs more compute than it saves seams
MIN_TILE = 32  # input pixels: smaller tiles are dominated by overlap
CPU_MAX_TILE = 512  # input pixels: bounds CPU memory per tile (and keeps progress updates frequent)
MEMORY_SAFETY = 0.5  # use at most this fraction of the free memory for the tile's working set
FLOAT32_BYTES = 4


# ----------------------------------------------------------------------------- tile grid


def _plan_axis(length: int, tile: int, overlap: int) -> list[Span]:
    """Spans of `tile` pixels every `tile - overlap`, the last one shifted back inside the image."""
    if tile <= 0 or tile >= length:
        return [(0, length)]
    if not 0 <= overlap < tile:
        raise UsageError(f"tile overlap ({overlap}) must be at least 0 and smaller than the tile size ({tile})")
    stride = tile - overlap
    count = math.ceil((length - overlap) / stride)
    starts = [i * stride for i in range(count - 1)] + [length - tile]
    return [(s, s + tile) for s in starts]


def plan_tiles(height: int, width: int, tile: int, overlap: int) -> list[Box]:
    """Tile boxes (y0, y1, x0, x1) covering a height x width image, row by row.

    All tiles are tile x tile (an axis shorter than `tile` gets one full-length span); the last row
    and column are shifted back inside the image rather than shrunk, so they overlap their
    neighbour by at least `overlap`. tile == 0 (or >= both sides) means one tile, no cutting.
    """
    rows, cols = _plan_axis(height, tile, overlap), _plan_axis(width, tile, overlap)
    return [(y0, y1, x0, x1) for (y0, y1) in rows for (x0, x1) in cols]


def overlap_for(receptive_field: int) -> int:
    """Default overlap in input pixels for a model: 2 * rf of zero band + 2 * rf of ramp, capped.

    With the default margin (overlap // 4) the zero band then equals the receptive field.
    """
    return int(min(max(4 * receptive_field, MIN_OVERLAP), MAX_OVERLAP))


def default_margin(overlap: int) -> int:
    """Margin used when tiled_forward is given none: a quarter of the overlap (= rf for overlap_for(rf))."""
    return overlap // 4


# ----------------------------------------------------------------------------- blend window


def _edge_profile(size_out: int, overlap: int, margin: int, scale: int) -> Tensor:
    """Weight against distance from one inner edge: 0 over margin, raised-cosine rise, then 1.  (size_out,)"""
    centres = torch.arange(size_out, dtype=torch.float64) + 0.5  # output pixel centres, from the edge
    zero_end, ramp = margin * scale, (overlap - 2 * margin) * scale
    if ramp == 0:  # overlap == 2 * margin: a hard cut in the middle of the overlap
        return (centres >= zero_end).to(torch.float32)
    t = ((centres - zero_end) / ramp).clamp(0.0, 1.0)
    return torch.sin(t * (math.pi / 2)).square().to(torch.float32)


def axis_window(size: int, scale: int, margin: int, before: int = 0, after: int = 0) -> Tensor:
    """1-D window over `size` input pixels of a tile, in output pixels.  (size * scale,)

    before / after: overlap in input pixels with the neighbouring tile on that side; 0 means the
    side touches the image border (weight stays 1 up to it).
    """
    if min(before, after, margin) < 0 or (before and before < 2 * margin) or (after and after < 2 * margin):
        raise UsageError(f"tile overlap ({before or after}) must be at least twice the margin ({margin})")
    n = size * scale
    window = torch.ones(n)
    if before:
        window *= _edge_profile(n, before, margin, scale)
    if after:
        window *= _edge_profile(n, after, margin, scale).flip(0)
    return window


def blend_window(
    height: int, width: int, scale: int, margin: int, overlaps: tuple[int, int, int, int] = (0, 0, 0, 0)
) -> Tensor:
    """Weight map of one height x width (input pixels) tile's output.  (height * scale, width * scale)

    overlaps = (top, bottom, left, right): input pixels shared with the neighbour on that side, 0 for
    a side on the image border. Exactly 1 in the interior and up to border sides; exactly 0 over the
    `margin * scale` output pixels along each inner edge; a raised cosine in between.
    """
    top, bottom, left, right = overlaps
    wy = axis_window(height, scale, margin, top, bottom)
    wx = axis_window(width, scale, margin, left, right)
    return wy[:, None] * wx[None, :]


def _axis_windows(spans: list[Span], scale: int, margin: int) -> list[Tensor]:
    """One 1-D window per span, each knowing how much it overlaps its neighbours."""
    windows = []
    for i, (start, end) in enumerate(spans):
        before = spans[i - 1][1] - start if i > 0 else 0
        after = end - spans[i + 1][0] if i + 1 < len(spans) else 0
        windows.append(axis_window(end - start, scale, margin, before, after))
    return windows


def _axis_weight_sum(spans: list[Span], windows: list[Tensor], scale: int, length: int) -> Tensor:
    """Summed weight of all spans' windows along one axis, in output pixels.  (length * scale,)"""
    total = torch.zeros(length * scale)
    for (start, end), window in zip(spans, windows):
        total[start * scale : end * scale] += window
    return total


# ----------------------------------------------------------------------------- running tiles


def _pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Pad bottom/right so H and W are multiples of `multiple` (reflect, replicate when too small)."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def _run_tile(fn: Callable[[Tensor], Tensor], tile: Tensor, scale: int, size_multiple: int) -> Tensor:
    """fn on one tile, padded to the size multiple and cropped back; float32.  (B, C', h*s, w*s)"""
    h, w = tile.shape[-2:]
    y = fn(_pad_to_multiple(tile, size_multiple) if size_multiple > 1 else tile)
    if y.shape[-2] < h * scale or y.shape[-1] < w * scale:
        raise ValueError(f"model returned {tuple(y.shape[-2:])} for a {h}x{w} tile at scale {scale}")
    return y[..., : h * scale, : w * scale].float()


def _accumulate(fn, x, scale, rows, cols, windows, size_multiple, on_tile, out_device) -> Tensor:
    """Run every tile and add its weighted output into one accumulator.  (B, C', H*s, W*s)"""
    row_windows, col_windows = ([w.to(x.device) for w in ws] for ws in windows)
    out, total, done = None, len(rows) * len(cols), 0
    for (y0, y1), wy in zip(rows, row_windows):
        for (x0, x1), wx in zip(cols, col_windows):
            y = _run_tile(fn, x[..., y0:y1, x0:x1], scale, size_multiple)
            # Weight on the model's device; out of place first, as fn may hand back a view of its input.
            y = (y * wy[:, None]).mul_(wx[None, :])
            if out is None:
                out = torch.zeros((*y.shape[:2], x.shape[-2] * scale, x.shape[-1] * scale), device=out_device)
            out[..., y0 * scale : y1 * scale, x0 * scale : x1 * scale] += y.to(out_device)
            del y  # free the tile before the next forward
            done += 1
            if on_tile is not None:
                on_tile(done, total)
    return out


def _normalise(out: Tensor, rows, cols, windows, scale: int) -> None:
    """Divide the accumulator in place by the summed weight, which is separable: wsum_y(y) * wsum_x(x)."""
    height, width = out.shape[-2] // scale, out.shape[-1] // scale
    wsum_y = _axis_weight_sum(rows, windows[0], scale, height).to(out.device)
    wsum_x = _axis_weight_sum(cols, windows[1], scale, width).to(out.device)
    # Positive everywhere by construction (overlap >= 2 * margin); a zero here would be a bug.
    assert bool((wsum_y > 0).all()) and bool((wsum_x > 0).all()), "tile grid leaves output pixels unweighted"
    out.div_(wsum_y[:, None]).div_(wsum_x[None, :])  # in place: no second (H*s, W*s) buffer


@torch.no_grad()
def tiled_forward(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    scale: int,
    tile: int,
    overlap: int,
    size_multiple: int = 1,
    on_tile: Callable[[int, int], None] | None = None,
    out_device: torch.device | str | None = None,
    margin: int | None = None,
) -> Tensor:
    """Run `fn` over overlapping tiles of x and blend the outputs.  (B, C, H, W) -> (B, C', H*s, W*s)

    fn: the model on one tile (already on x's device and dtype), (B, C, h, w) -> (B, C', h*s, w*s).
    tile: tile side in input pixels; 0 or >= max(H, W) runs one tile. When size_multiple > 1 the
        tile is rounded down to a multiple of it; tiles that still are not (an axis shorter than the
        tile) are padded bottom/right (reflect, else replicate) and their output cropped back.
    overlap: input pixels shared by neighbours; margin: input pixels of zero weight along inner
        edges (use the receptive field; default overlap // 4); see the module docstring.
    on_tile(done, total): called after each tile.
    out_device: where the float32 output accumulates and is returned (default: x.device).
    Out of memory propagates (see `is_out_of_memory`); the failed run's buffers are released first.
    No gradients flow through this function.
    """
    height, width = x.shape[-2:]
    out_device = torch.device(out_device) if out_device is not None else x.device
    margin = default_margin(overlap) if margin is None else margin
    if size_multiple < tile < max(height, width):  # whole tiles need no padding
        tile -= tile % size_multiple
    rows, cols = _plan_axis(height, tile, overlap), _plan_axis(width, tile, overlap)
    if len(rows) == 1 and len(cols) == 1:  # one tile: no accumulator, exactly the untiled result
        y = _run_tile(fn, x, scale, size_multiple).to(out_device).contiguous()
        if on_tile is not None:
            on_tile(1, 1)
        return y
    windows = (_axis_windows(rows, scale, margin), _axis_windows(cols, scale, margin))
    try:
        out = _accumulate(fn, x, scale, rows, cols, windows, size_multiple, on_tile, out_device)
    except BaseException as err:
        if is_out_of_memory(err):  # drop the failed run's tiles and accumulator before the retry
            traceback.clear_frames(err.__traceback__)
        raise
    _normalise(out, rows, cols, windows, scale)
    return out


def is_out_of_memory(err: BaseException) -> bool:
    """True for an allocation failure on any device (so the caller can halve the tile and retry)."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    message = str(err).lower()
    return isinstance(err, RuntimeError) and (
        "out of memory" in message or "can't allocate memory" in message or "failed to allocate" in message
    )


# ----------------------------------------------------------------------------- choosing a tile size


def available_memory(device: torch.device | str) -> int:
    """Bytes free for new tensors on `device`.

    CUDA: the driver's free memory plus what PyTorch's caching allocator holds but does not use.
    Anything else (CPU; MPS shares system memory): MemAvailable from /proc/meminfo (free pages plus
    reclaimable cache), else os.sysconf free pages, else a conservative 2 GiB.
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # reported in KiB
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 2 << 30


def output_bytes(height: int, width: int, channels: int, scale: int) -> int:
    """Bytes of the float32 output accumulator (e.g. 2.3 GB for x4 on a 4000x3000 RGB image)."""
    return channels * height * scale * width * scale * FLOAT32_BYTES


def auto_tile_size(
    height: int,
    width: int,
    channels: int,
    scale: int,
    bytes_per_input_pixel: int,
    *,
    device: torch.device | str = "cpu",
    free_memory_bytes: int | None = None,
    out_device: torch.device | str | None = None,
    overlap: int = 0,
    size_multiple: int = 1,
    cpu_max_tile: int = CPU_MAX_TILE,
) -> int:
    """Largest tile side (input pixels) whose working set fits in free memory; 0 = no tiling needed.

    bytes_per_input_pixel: rough peak activation memory of the model per input pixel in the model's
        dtype (e.g. a conv net with F feature channels holding ~3 maps at once in float32: 12 * F).
    The budget is MEMORY_SAFETY of (free memory - the input - the output accumulator when it lives
    on the same device); each tile pixel also costs its float32 output (channels * scale^2 * 4, twice:
    the model's output and the weighted copy). On the CPU the tile is capped at `cpu_max_tile` so
    memory stays bounded whatever the machine reports. When the accumulator alone does not fit
    (see `output_bytes`), pass out_device="cpu" to tiled_forward and here.
    """
    device = torch.device(device)
    out_device = torch.device(out_device) if out_device is not None else device
    free = available_memory(device) if free_memory_bytes is None else free_memory_bytes
    resident = channels * height * width * FLOAT32_BYTES
    if out_device == device:
        resident += output_bytes(height, width, channels, scale)
    per_pixel = bytes_per_input_pixel + 2 * channels * scale * scale * FLOAT32_BYTES
    side = math.isqrt(max(int((free - resident) * MEMORY_SAFETY), 0) // per_pixel)
    if device.type == "cpu":
        side = min(side, cpu_max_tile)
    if side >= max(height, width):
        return 0
    floor = max(MIN_TILE, 2 * overlap + size_multiple)  # a tile must be wider than its overlap
    side = max(side, floor)
    return side - side % size_multiple if side > size_multiple else side
