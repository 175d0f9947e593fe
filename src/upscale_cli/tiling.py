r"""Tiled inference: cut an image into overlapping tiles, run the model on each, blend the outputs.

Pure array code (no files, no console). The engine calls `tiled_forward` with the model's forward
function; everything here works in INPUT pixels unless a name says otherwise. It takes a torch tensor
(any device; blended on the model's device) or a NumPy array (the CPU, for a model that needs no
PyTorch): the windows are built in NumPy either way and torch is imported only for a tensor, so a
NumPy run never pays PyTorch's import. Both give the same float32 numbers for the same tiles.

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
  exactly 0 over that band (m * scale output pixels), so those outputs never reach the image. The
  plan sets it to the model's receptive field (per side), which makes every output pixel that gets
  weight exactly what the untiled model computes there: tiled == untiled, to float rounding.
* The remaining o - 2m pixels in the middle of the overlap are a raised-cosine ramp: A falls as B
  rises, sin^2 + cos^2 = 1, so the two weights sum to exactly 1 there. Sides that touch the image
  border stay at weight 1 up to the border. Requires o >= 2m (o == 2m is a hard cut mid-overlap).

Memory: one float32 accumulator for the output lives on `out_device` (the model's device unless
told otherwise; pass out_device="cpu" when a GPU is too small to hold the whole output). The tile
grid is a product of row spans and column spans and every window is an outer product wy(y) * wx(x),
so the summed weight is exactly (sum_i wy_i)(y) * (sum_j wx_j)(x): two 1-D vectors instead of an
(H*s, W*s) weight map (768 MB saved on a x4 4000x3000 run). Every output pixel has positive weight.

Models with a size multiple (a U-Net with 2^levels downsamplings) compute different numbers for
the same pixel when a tile starts at another phase of their stride-2 grid, and different numbers
near the bottom/right border when the border is padding rather than image. So the whole image is
padded ONCE to the multiple (exactly as an untiled run pads it), every tile, overlap and tile start
is a multiple of it, and the output is cropped back: each tile then sees what the untiled run sees.

`plan_tiling` is the one place that decides tile, overlap and margin (`TilePlan`); the engine only
executes the plan, and on out-of-memory asks `plan_tiling` again for a smaller tile.
"""
from __future__ import annotations

import math
import os
import sys
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from upscale_cli.errors import UsageError
from upscale_cli.models.descriptor import ModelDescriptor, SizeRequirements

if TYPE_CHECKING:  # torch is imported lazily, only where a tensor is handled
    import torch
    from torch import Tensor

    Array = Tensor | np.ndarray
    Device = torch.device | str | None
    Arrays = _NumpyArrays | _TorchArrays  # the operations for the kind of array a run holds

Box = tuple[int, int, int, int]  # (y0, y1, x0, x1) in input pixels, end exclusive
Span = tuple[int, int]  # (start, end) in input pixels along one axis

MIN_OVERLAP = 8  # input pixels: a ramp of a few pixels even for models with a tiny receptive field
MAX_OVERLAP = 128  # input pixels: beyond this the overlap costs more compute than it saves seams
MIN_TILE = 32  # input pixels: smaller tiles are dominated by overlap
CPU_MAX_TILE = 512  # input pixels: bounds CPU memory per tile (and keeps progress updates frequent)
MEMORY_SAFETY = 0.5  # use at most this fraction of the free memory for the tile's working set
FLOAT32_BYTES = 4
NORMALISE_BLOCK_FLOATS = 65_536  # float32 values (256 KB) a NumPy run divides at a time: both divisions in cache


# ----------------------------------------------------------------------------- tile grid


@dataclass(frozen=True)
class TilePlan:
    """How one pass is cut into tiles; built by `plan_tiling`, executed by `tiled_forward`.

    tile: tile side in input pixels, a multiple of size.multiple_of; 0 = one tile (no cutting).
    overlap: input pixels neighbouring tiles share, a multiple of size.multiple_of, < tile.
    margin: input pixels of zero weight along inner tile edges (the receptive field); <= overlap / 2.
    size: the model's size requirements; the whole image is padded to them once.
    out_device: where the float32 output accumulates (None = the input's device).
    note: what the plan changed from the request, for the user (e.g. a tile raised to the minimum).
    """

    tile: int
    overlap: int
    margin: int
    size: SizeRequirements = SizeRequirements()
    out_device: str | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        m = self.size.multiple_of
        if m < 1 or self.tile < 0 or self.overlap < 0 or self.margin < 0 or 2 * self.margin > self.overlap:
            raise ValueError(f"invalid tile plan {self}")
        if self.tile and (self.tile % m or self.overlap % m or self.tile <= self.overlap):
            raise ValueError(f"invalid tile plan {self}: tile and overlap must be multiples of {m}, overlap < tile")

    def spans(self, length: int) -> list[Span]:
        """Spans of `tile` every `tile - overlap` over a (padded) axis, the last one shifted back
        inside it; all starts are multiples of size.multiple_of when `length` is."""
        tile, overlap = self.tile, self.overlap
        if tile <= 0 or tile >= length:
            return [(0, length)]
        stride = tile - overlap
        count = math.ceil((length - overlap) / stride)
        starts = [i * stride for i in range(count - 1)] + [length - tile]
        return [(s, s + tile) for s in starts]


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _round_down(value: int, multiple: int) -> int:
    return value - value % multiple


def exact_overlap(receptive_field: int, size_multiple: int = 1) -> int:
    """The smallest overlap whose tiles give exactly the untiled output: a zero band of the
    receptive field on each side of the cut, rounded up to the size multiple."""
    return _round_up(max(2 * receptive_field, 1), size_multiple)


def plan_tiling(
    height: int,
    width: int,
    channels: int,
    scale: int,
    info: ModelDescriptor,
    *,
    device: Device = "cpu",
    tile: int = 0,
    overlap: int | None = None,
    free_memory_bytes: int | None = None,
) -> TilePlan:
    """The tile plan for one pass of a model (its descriptor `info`) over a (height x width) input.

    tile: the user's tile (0 = chosen from free memory and the model's memory per pixel); overlap:
    the user's overlap (None = from the receptive field, which keeps tiled == untiled). The model's
    tiling mode is honoured: internal is never cut; discouraged runs untiled whenever its working
    set fits in memory, else in the largest tile that fits (no CPU cap); supported is cut as memory
    and CPU_MAX_TILE ask. Everything is rounded to the size multiple first and validated once; a
    tile too small for the model is raised to the smallest that works (said in `note`). Asking again
    with half the tile always gives a valid, smaller plan until the minimum, where it returns the
    same tile (so an out-of-memory retry knows it has to stop).
    """
    size = info.size
    m, rf = size.multiple_of, max(0, int(info.receptive_field))
    out_device = _out_device(height, width, channels, scale, device)
    explicit_overlap = overlap is not None
    if explicit_overlap:
        overlap = _round_up(overlap, m)
        margin, min_tile = min(rf, overlap // 2), overlap + m
    else:
        floor = exact_overlap(rf, m)
        overlap, margin, min_tile = max(_round_up(overlap_for(rf), m), floor), rf, 2 * floor
    min_tile = max(min_tile, _round_up(MIN_TILE, m), _round_up(size.minimum, m))
    padded_side = max(size.padded(height, width))
    if not info.tileable:
        return TilePlan(0, overlap, margin, size, out_device)
    requested = tile
    if tile == 0:
        tile = auto_tile_size(height, width, channels, scale, info.bytes_per_input_pixel, device=device,
                              free_memory_bytes=free_memory_bytes, out_device=out_device, overlap=overlap,
                              size_multiple=m, cpu_max_tile=CPU_MAX_TILE if info.tiling == "supported" else 0)
    if tile == 0 or tile >= padded_side:
        return TilePlan(0, overlap, margin, size, out_device)
    tile, note = _round_down(tile, m), None
    if tile < min_tile:
        if requested:
            note = f"--tile {requested} is below the smallest tile this model can use ({min_tile}); used {min_tile}"
        tile = min_tile
    if not explicit_overlap:  # a small tile keeps at least half of itself as stride, never less than exact
        overlap = max(exact_overlap(rf, m), min(overlap, _round_down(tile // 2, m)))
    if tile >= padded_side:
        return TilePlan(0, overlap, margin, size, out_device, note)
    return TilePlan(tile, overlap, margin, size, out_device, note)


def _out_device(height: int, width: int, channels: int, scale: int, device: Device) -> str | None:
    """A huge output accumulates in RAM while the tiles still run on the GPU."""
    on_gpu = _device_key(device)[0] == "cuda"
    if on_gpu and output_bytes(height, width, channels, scale) > available_memory(device) // 2:
        return "cpu"
    return None


def _device_key(device: Device) -> tuple[str, int | None]:
    """(type, index) of a torch.device, a device string ("cpu", "cuda:1") or None (the CPU), equal
    exactly when the torch.devices are equal ("cuda" is not "cuda:0"), without importing torch."""
    if device is None:
        return "cpu", None
    if isinstance(device, str):
        kind, _, index = device.partition(":")
        return kind, int(index) if index else None
    return device.type, device.index


def overlap_for(receptive_field: int) -> int:
    """Default overlap in input pixels for a model: 2 * rf of zero band + 2 * rf of ramp, capped
    (`plan_tiling` never goes below `exact_overlap`, whatever the cap)."""
    return int(min(max(4 * receptive_field, MIN_OVERLAP), MAX_OVERLAP))


# ----------------------------------------------------------------------------- blend window


def _edge_profile(size_out: int, overlap: int, margin: int, scale: int) -> np.ndarray:
    """Weight against distance from one inner edge: 0 over margin, raised-cosine rise, then 1.  (size_out,)
    float64 then rounded to float32: the same float32 values torch's sin gave (tests/test_tiling_numpy.py)."""
    centres = np.arange(size_out, dtype=np.float64) + 0.5  # output pixel centres, from the edge
    zero_end, ramp = margin * scale, (overlap - 2 * margin) * scale
    if ramp == 0:  # overlap == 2 * margin: a hard cut in the middle of the overlap
        return (centres >= zero_end).astype(np.float32)
    t = np.clip((centres - zero_end) / ramp, 0.0, 1.0)
    return np.square(np.sin(t * (math.pi / 2))).astype(np.float32)


def axis_window(size: int, scale: int, margin: int, before: int = 0, after: int = 0) -> np.ndarray:
    """1-D float32 window over `size` input pixels of a tile, in output pixels.  (size * scale,)

    before / after: overlap in input pixels with the neighbouring tile on that side; 0 means the
    side touches the image border (weight stays 1 up to it).
    """
    if min(before, after, margin) < 0 or (before and before < 2 * margin) or (after and after < 2 * margin):
        raise UsageError(f"tile overlap ({before or after}) must be at least twice the margin ({margin})")
    n = size * scale
    window = np.ones(n, dtype=np.float32)
    if before:
        window *= _edge_profile(n, before, margin, scale)
    if after:
        window *= _edge_profile(n, after, margin, scale)[::-1]
    return window


def _axis_windows(spans: list[Span], scale: int, margin: int) -> list[np.ndarray]:
    """One 1-D window per span, each knowing how much it overlaps its neighbours."""
    windows = []
    for i, (start, end) in enumerate(spans):
        before = spans[i - 1][1] - start if i > 0 else 0
        after = end - spans[i + 1][0] if i + 1 < len(spans) else 0
        windows.append(axis_window(end - start, scale, margin, before, after))
    return windows


def _axis_weight_sum(spans: list[Span], windows: list[np.ndarray], scale: int, length: int) -> np.ndarray:
    """Summed float32 weight of all spans' windows along one axis, in output pixels.  (length * scale,)"""
    total = np.zeros(length * scale, dtype=np.float32)
    for (start, end), window in zip(spans, windows):
        total[start * scale : end * scale] += window
    return total


# ----------------------------------------------------------------------------- running tiles


def pad_for_model(x: Array, size: SizeRequirements) -> Array:
    """Pad bottom/right to the model's size requirements (reflect, replicate when too small); a
    tensor with F.pad, a NumPy array with np.pad's equivalents ("reflect" does not repeat the edge
    pixel either, "edge" is replicate)."""
    h, w = x.shape[-2:]
    th, tw = size.padded(h, w)
    ph, pw = th - h, tw - w
    if ph == 0 and pw == 0:
        return x
    reflect = ph < h and pw < w
    if isinstance(x, np.ndarray):
        return np.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, ph), (0, pw)], mode="reflect" if reflect else "edge")
    import torch.nn.functional as F

    return F.pad(x, (0, pw, 0, ph), mode="reflect" if reflect else "replicate")


class _NumpyArrays:
    """The few array operations a tiled run needs, for NumPy arrays: everything on the CPU, one thread,
    so the weighting reuses one buffer and the division goes a cache-sized block at a time (torch
    spreads each whole-array step over its threads instead). Same float32 operations, same order."""

    def __init__(self, out_device: Device) -> None:
        if _device_key(out_device)[0] != "cpu":
            raise ValueError(f"a NumPy array is blended on the CPU, not on {out_device}")
        self.scratch = np.empty(0, dtype=np.float32)

    def weigh(self, y: np.ndarray, wy: np.ndarray, wx: np.ndarray) -> np.ndarray:
        """(y * wy[:, None]) * wx[None, :] in a buffer reused from tile to tile (a new array a tile
        costs the pages' first touch every time); the buffer is the caller's until the next call."""
        if self.scratch.size < y.size:
            self.scratch = np.empty(y.size, dtype=np.float32)
        weighted = self.scratch[: y.size].reshape(y.shape)
        np.multiply(y, wy[:, None], out=weighted)
        weighted *= wx[None, :]
        return weighted

    def divide(self, out: np.ndarray, wsum_y: np.ndarray, wsum_x: np.ndarray) -> None:
        """out /= wsum_y[:, None], then /= wsum_x[None, :], a block of rows at a time."""
        rows = max(1, NORMALISE_BLOCK_FLOATS // max(1, out[..., :1, :].size))
        for start in range(0, out.shape[-2], rows):
            block = out[..., start : start + rows, :]
            block /= wsum_y[start : start + rows, None]
            block /= wsum_x[None, :]

    def vector(self, values: np.ndarray) -> np.ndarray:
        return values

    def float32(self, y: np.ndarray) -> np.ndarray:
        return y.astype(np.float32, copy=False)

    def zeros(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.zeros(shape, dtype=np.float32)

    def to_out(self, y: np.ndarray) -> np.ndarray:
        return y

    def result(self, y: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(y)


class _TorchArrays:
    """The same operations for torch tensors: tiles weighted on the model's device, the output
    accumulated on out_device (default: the input's device)."""

    def __init__(self, device: torch.device, out_device: Device) -> None:
        import torch

        self.torch, self.device = torch, device
        self.out_device = torch.device(out_device) if out_device is not None else device

    def vector(self, values: np.ndarray) -> Tensor:
        return self.torch.from_numpy(values).to(self.device)

    def weigh(self, y: Tensor, wy: Tensor, wx: Tensor) -> Tensor:
        """Out of place first, as fn may hand back a view of its input."""
        return (y * wy[:, None]).mul_(wx[None, :])

    def divide(self, out: Tensor, wsum_y: np.ndarray, wsum_x: np.ndarray) -> None:
        """In place: no second (H*s, W*s) buffer."""
        out.div_(self.torch.from_numpy(wsum_y).to(out.device)[:, None])
        out.div_(self.torch.from_numpy(wsum_x).to(out.device)[None, :])

    def float32(self, y: Tensor) -> Tensor:
        return y.float()

    def zeros(self, shape: tuple[int, ...]) -> Tensor:
        return self.torch.zeros(shape, device=self.out_device)

    def to_out(self, y: Tensor) -> Tensor:
        return y.to(self.out_device)

    def result(self, y: Tensor) -> Tensor:
        return y.to(self.out_device).contiguous()


def _run_tile(fn: Callable[[Array], Array], tile: Array, scale: int, keep: tuple[int, int], arrays: Arrays) -> Array:
    """fn on one tile, output cropped to the `keep` (rows, cols) input pixels; float32.  (B, C', h*s, w*s)"""
    h, w = tile.shape[-2:]
    y = fn(tile)
    if y.shape[-2] < h * scale or y.shape[-1] < w * scale:
        raise ValueError(f"model returned {tuple(y.shape[-2:])} for a {h}x{w} tile at scale {scale}")
    return arrays.float32(y[..., : keep[0] * scale, : keep[1] * scale])


def _accumulate(fn, x, scale, rows, cols, windows, size, on_tile, arrays: Arrays) -> Array:
    """Run every tile of the padded x and add its weighted output, cropped to `size` (the unpadded
    input), into one accumulator.  (B, C', H*s, W*s)"""
    height, width = size
    row_windows, col_windows = ([arrays.vector(w) for w in ws] for ws in windows)
    out, total, done = None, len(rows) * len(cols), 0
    for (y0, y1), wy in zip(rows, row_windows):
        keep_h = min(y1, height) - y0
        for (x0, x1), wx in zip(cols, col_windows):
            keep_w = min(x1, width) - x0
            y = _run_tile(fn, x[..., y0:y1, x0:x1], scale, (keep_h, keep_w), arrays)
            y = arrays.weigh(y, wy[: keep_h * scale], wx[: keep_w * scale])  # on the model's device
            if out is None:
                out = arrays.zeros((*y.shape[:2], height * scale, width * scale))
            out[..., y0 * scale : (y0 + keep_h) * scale, x0 * scale : (x0 + keep_w) * scale] += arrays.to_out(y)
            del y  # free the tile before the next forward
            done += 1
            if on_tile is not None:
                on_tile(done, total)
    return out


def _normalise(out: Array, rows, cols, windows, scale: int, padded: tuple[int, int], arrays: Arrays) -> None:
    """Divide the accumulator in place by the summed weight, which is separable: wsum_y(y) * wsum_x(x)."""
    height, width = out.shape[-2], out.shape[-1]
    wsum_y = _axis_weight_sum(rows, windows[0], scale, padded[0])[:height]
    wsum_x = _axis_weight_sum(cols, windows[1], scale, padded[1])[:width]
    # Positive everywhere by construction (overlap >= 2 * margin); a zero here would be a bug.
    assert bool((wsum_y > 0).all()) and bool((wsum_x > 0).all()), "tile grid leaves output pixels unweighted"
    arrays.divide(out, wsum_y, wsum_x)


def tiled_forward(
    fn: Callable[[Array], Array],
    x: Array,
    scale: int,
    plan: TilePlan,
    on_tile: Callable[[int, int], None] | None = None,
) -> Array:
    """Run `fn` over the overlapping tiles of `plan` and blend the outputs.  (B, C, H, W) -> (B, C', H*s, W*s)

    fn: the model on one tile (already on x's device and dtype), (B, C, h, w) -> (B, C', h*s, w*s),
    taking and returning the kind of array x is: a torch tensor, or a NumPy array (then everything
    runs in NumPy on the CPU and torch is not imported; plan.out_device must be None or "cpu").
    x is padded once to the plan's size multiple (reflect, replicate when too small), as an untiled
    run would be, and the output cropped back; see the module docstring for overlap and margin.
    on_tile(done, total): called after each tile.
    The float32 output is on plan.out_device (default: x.device).
    Out of memory propagates (see `is_out_of_memory`); the failed run's buffers are released first.
    No gradients flow through this function.
    """
    if isinstance(x, np.ndarray):
        return _tiled_forward(fn, x, scale, plan, on_tile, _NumpyArrays(plan.out_device))
    import torch

    with torch.no_grad():
        return _tiled_forward(fn, x, scale, plan, on_tile, _TorchArrays(x.device, plan.out_device))


def _tiled_forward(fn, x, scale, plan, on_tile, arrays: Arrays) -> Array:
    """tiled_forward for one kind of array (`arrays`: _NumpyArrays or _TorchArrays)."""
    height, width = x.shape[-2:]
    padded = pad_for_model(x, plan.size)
    rows, cols = plan.spans(padded.shape[-2]), plan.spans(padded.shape[-1])
    if len(rows) == 1 and len(cols) == 1:  # one tile: no accumulator, exactly the untiled result
        y = arrays.result(_run_tile(fn, padded, scale, (height, width), arrays))
        if on_tile is not None:
            on_tile(1, 1)
        return y
    windows = (_axis_windows(rows, scale, plan.margin), _axis_windows(cols, scale, plan.margin))
    try:
        out = _accumulate(fn, padded, scale, rows, cols, windows, (height, width), on_tile, arrays)
    except BaseException as err:
        if is_out_of_memory(err):  # drop the failed run's tiles and accumulator before the retry
            traceback.clear_frames(err.__traceback__)
        raise
    _normalise(out, rows, cols, windows, scale, tuple(padded.shape[-2:]), arrays)
    return out


def is_out_of_memory(err: BaseException) -> bool:
    """True for an allocation failure on any device (so the caller can halve the tile and retry):
    MemoryError (NumPy's failed allocations are one), torch's OutOfMemoryError, or a RuntimeError
    saying so. Torch is not imported for this: an error of torch's means torch is loaded already."""
    if isinstance(err, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None)
    if isinstance(oom, type) and isinstance(err, oom):
        return True
    message = str(err).lower()
    return isinstance(err, RuntimeError) and (
        "out of memory" in message or "can't allocate memory" in message or "failed to allocate" in message
    )


# ----------------------------------------------------------------------------- choosing a tile size


def available_memory(device: Device) -> int:
    """Bytes free for new tensors on `device`.

    CUDA: the driver's free memory plus what PyTorch's caching allocator holds but does not use.
    Anything else (CPU; MPS shares system memory): MemAvailable from /proc/meminfo (free pages plus
    reclaimable cache), else os.sysconf free pages, else a conservative 2 GiB.
    device: a torch.device, a device string, or None (the CPU); torch is imported only for CUDA.
    """
    if _device_key(device)[0] == "cuda":
        import torch

        device = torch.device(device)
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
    device: Device = "cpu",
    free_memory_bytes: int | None = None,
    out_device: Device = None,
    overlap: int = 0,
    size_multiple: int = 1,
    cpu_max_tile: int = CPU_MAX_TILE,
) -> int:
    """Largest tile side (input pixels) whose working set fits in free memory; 0 = no tiling needed.

    bytes_per_input_pixel: rough peak activation memory of the model per input pixel in the model's
        dtype (e.g. a conv net with F feature channels holding ~3 maps at once in float32: 12 * F).
    The budget is MEMORY_SAFETY of (free memory - the input - the output accumulator when it lives
    on the same device); each tile pixel also costs its float32 output (channels * scale^2 * 4, twice:
    the model's output and the weighted copy). On the CPU the tile is capped at `cpu_max_tile` (0 =
    no cap: a model whose tiling is discouraged) so memory stays bounded whatever the machine reports. When the accumulator alone does not fit
    (see `output_bytes`), pass out_device="cpu" to tiled_forward and here.
    """
    free = available_memory(device) if free_memory_bytes is None else free_memory_bytes
    resident = channels * height * width * FLOAT32_BYTES
    if out_device is None or _device_key(out_device) == _device_key(device):
        resident += output_bytes(height, width, channels, scale)
    per_pixel = bytes_per_input_pixel + 2 * channels * scale * scale * FLOAT32_BYTES
    side = math.isqrt(max(int((free - resident) * MEMORY_SAFETY), 0) // per_pixel)
    if _device_key(device)[0] == "cpu" and cpu_max_tile:
        side = min(side, cpu_max_tile)
    if side >= max(height, width):
        return 0
    floor = max(MIN_TILE, 2 * overlap + size_multiple)  # a tile must be wider than its overlap
    side = max(side, floor)
    return side - side % size_multiple if side > size_multiple else side
