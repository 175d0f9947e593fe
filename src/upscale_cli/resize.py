"""Resampling of image arrays that matches Pillow's `Image.resize` (pure array code).

Pillow's antialiased filters are the reference of the SR evaluation protocol, so the
`bicubic` baseline, the engine's final resize, the training degradations and the
fit-single consistency loss all use this one implementation. It is separable and
differentiable: each axis is a gather of K taps with per-output weights, which keeps
memory at a few copies of the output rather than a dense (out x in) matrix.

Speed: the axis being resized is moved to the front first, so each tap gathers whole
contiguous rows (a gather along the last axis is several times slower), and the taps of
an (in, out, method) triple are computed once per process (a folder of same-size images
reuses them). The arithmetic, and so every output value, is the same as the plain
per-tap sum: float32 multiply, then add, tap after tap. A CPU tensor that needs no gradient
(every inference call) runs the same steps in NumPy: the same IEEE operations, one thread. Torch
spreads each of these small, memory-bound steps over its thread pool, and on a busy machine
waiting for the pool cost more than the work (bicubic x4 of 128x128: 0.3 s instead of 10 ms).

A NumPy array (float32 or float64) takes that NumPy path directly and gives a NumPy array, without
importing torch (a run whose model needs no PyTorch). Its taps are computed in NumPy; a tensor's
are computed with torch's own functions, as always. The two agree to the last bit in float32 (the
precision every image runs at; tests/test_resize_numpy.py checks a grid), but not always in float64:
torch's sin and sum round the last float64 bit their own way, and a float64 tensor keeps its values.
"""
from __future__ import annotations

import functools
import math
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported lazily, only for a tensor
    import torch

FILTER_SUPPORT = {"bilinear": 1.0, "bicubic": 2.0, "lanczos": 3.0}
BICUBIC_A = -0.5  # Pillow's (and MATLAB imresize's) cubic coefficient
METHODS = ("nearest", *FILTER_SUPPORT)
CACHE_FLOATS = 65_536  # float32 values of output made at a time (256 KB: the sums and products fit L2)


def _filter(name: str, x, xp: ModuleType):
    """The filter's weight at distance x (float64), with xp's functions (numpy or torch)."""
    x = xp.abs(x)
    if name == "bilinear":
        return (1.0 - x).clip(min=0.0)
    if name == "bicubic":
        a = BICUBIC_A
        near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
        far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
        return xp.where(x < 1.0, near, xp.where(x < 2.0, far, xp.zeros_like(x)))
    if name == "lanczos":
        return xp.where(x < 3.0, xp.sinc(x) * xp.sinc(x / 3.0), xp.zeros_like(x))
    raise ValueError(f"unknown filter {name!r}")


@functools.lru_cache(maxsize=64)
def _axis_taps(in_size: int, out_size: int, method: str, xp: ModuleType = np):
    """Indices (out, K) and normalised float64 weights (out, K) for one axis, as Pillow computes
    them; xp: numpy (NumPy arrays) or torch (tensors), the same steps with either's functions."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)  # widen the kernel when shrinking: antialiasing
    support = FILTER_SUPPORT[method] * filterscale
    taps = int(math.ceil(support)) * 2 + 1
    centre = (xp.arange(out_size, dtype=xp.float64) + 0.5) * scale
    xmin = xp.floor(centre - support + 0.5).clip(min=0)
    xmax = xp.floor(centre + support + 0.5).clip(max=in_size)
    idx = xmin[:, None] + xp.arange(taps, dtype=xp.float64)[None, :]
    weights = _filter(method, (idx - centre[:, None] + 0.5) / filterscale, xp)
    weights = xp.where(idx < xmax[:, None], weights, xp.zeros_like(weights))
    weights = weights / weights.sum(1, keepdims=True)
    idx = idx.clip(max=in_size - 1)
    return (idx.astype(np.int64) if xp is np else idx.long()), weights


def _torch_taps(in_size: int, out_size: int, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    return _axis_taps(in_size, out_size, method, torch)


def axis_matrix(in_size: int, out_size: int, method: str) -> torch.Tensor:
    """(out_size, in_size): row i holds the weights output pixel i takes from the input axis, the
    same taps `resize` applies along one axis (before its clipping), as a dense float32 tensor."""
    import torch

    idx, weights = _torch_taps(in_size, out_size, method)
    matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
    matrix.scatter_add_(1, idx, weights)
    return matrix.float()


def _resize_axis(x: torch.Tensor, out_size: int, dim: int, method: str) -> torch.Tensor:
    in_size = x.shape[dim]
    if in_size == out_size:
        return x
    if method == "nearest":
        return x.index_select(dim, _nearest_source_tensor(in_size, out_size).to(x.device))
    idx, weights = _torch_taps(in_size, out_size, method)
    idx, weights = idx.to(x.device), weights.to(device=x.device, dtype=x.dtype)
    used = [k for k in range(idx.shape[1]) if bool(weights[:, k].any())]
    rows = x.movedim(dim, 0).contiguous()  # (in, ...): each tap gathers whole rows
    shape = (out_size,) + (1,) * (x.dim() - 1)
    out = None
    for k in used:
        term = rows.index_select(0, idx[:, k]) * weights[:, k].reshape(shape)
        out = term if out is None else out.add_(term)
    return out.movedim(0, dim)


@functools.lru_cache(maxsize=64)
def _nearest_source(in_size: int, out_size: int) -> np.ndarray:
    """The input pixel each output pixel copies (int64, out_size): exact in float64 either way."""
    src = np.floor((np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size))
    return np.minimum(src, in_size - 1).astype(np.int64)


def _nearest_source_tensor(in_size: int, out_size: int) -> torch.Tensor:
    import torch

    return torch.from_numpy(_nearest_source(in_size, out_size))


def _resize_axis_numpy(x: np.ndarray, out_size: int, axis: int, method: str, xp: ModuleType) -> np.ndarray:
    """_resize_axis in NumPy: the same taps, the same multiply-then-add order, so the same values.
    Each tap gathers whole contiguous rows: along the last axis the array is transposed first and
    back after. The output is made a block of CACHE_FLOATS at a time, every tap of a block before
    the next, so the gathered rows, products and sums stay in the CPU's cache. A tap is skipped
    only where it is zero for every output, as before. The result is C-contiguous. xp: the module
    whose taps are used (torch for a tensor's values, numpy for an array's)."""
    in_size = x.shape[axis]
    if in_size == out_size:
        return x
    if method == "nearest":
        return np.take(x, _nearest_source(in_size, out_size), axis=axis, mode="clip")  # in range
    idx, weights = _axis_taps(in_size, out_size, method, xp)
    idx, weights = np.asarray(idx), np.asarray(weights).astype(x.dtype)
    used = [k for k in range(idx.shape[1]) if weights[:, k].any()]
    if axis == x.ndim - 1:  # (..., in) -> (in, ...): a gather of single values would be slow
        moved = np.ascontiguousarray(np.moveaxis(x, axis, 0))
        out = _resize_rows(moved.reshape(1, in_size, -1), idx, weights, used)
        return np.ascontiguousarray(np.moveaxis(out.reshape((out_size,) + moved.shape[1:]), 0, axis))
    slabs = np.ascontiguousarray(x).reshape(math.prod(x.shape[:axis]), in_size, math.prod(x.shape[axis + 1 :]))
    out = _resize_rows(slabs, idx, weights, used)
    return out.reshape(x.shape[:axis] + (out_size,) + x.shape[axis + 1 :])


def _resize_rows(slabs: np.ndarray, idx: np.ndarray, weights: np.ndarray, used: list[int]) -> np.ndarray:
    """(L, in, T) -> (L, out, T): output row j of each slab = sum over the used taps k, in order,
    of input row idx[j, k] times weights[j, k] (float multiply, then add)."""
    lead, _, trail = slabs.shape
    out_size = idx.shape[0]
    out = np.empty((lead, out_size, trail), dtype=slabs.dtype)
    step = max(1, CACHE_FLOATS // max(1, trail))
    term = np.empty((min(step, out_size), trail), dtype=slabs.dtype)
    for slab in range(lead):
        rows = slabs[slab]
        for start in range(0, out_size, step):
            stop = min(out_size, start + step)
            block, product = out[slab, start:stop], term[: stop - start]
            for n, k in enumerate(used):
                target = block if n == 0 else product  # the first tap's product is the running sum
                np.take(rows, idx[start:stop, k], axis=0, out=target, mode="clip")  # indices are in range
                np.multiply(target, weights[start:stop, k, None], out=target)
                if n:
                    np.add(block, product, out=block)
    return out


def _resize_numpy(x: np.ndarray, size: tuple[int, int], method: str, clamp: bool, xp: ModuleType = np) -> np.ndarray:
    """Width pass, then height pass (each clipped with clamp), one image of a batch at a time: the
    values do not depend on the batch, and one image's passes fit the cache where eight do not."""
    height, width = size
    if x.ndim > 3 and x.shape[0] > 1 and method != "nearest":  # nearest copies: no sums to keep in cache
        out = np.empty(x.shape[:-2] + (height, width), dtype=x.dtype)
        for k in range(x.shape[0]):
            out[k] = _resize_numpy(x[k], size, method, clamp, xp)
        return out
    array = _resize_axis_numpy(x, width, x.ndim - 1, method, xp)
    if clamp:  # in place on a new buffer, never on the caller's array
        array = np.clip(array, 0.0, 1.0, out=array if width != x.shape[-1] else None)
    array = _resize_axis_numpy(array, height, x.ndim - 2, method, xp)
    if clamp:
        array = np.clip(array, 0.0, 1.0, out=array if height != x.shape[-2] else None)
    return array


def _numpy_path(x: torch.Tensor) -> bool:
    import torch

    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False  # a traced graph (the compiled runtime's conversion) must see the operations, not constants
    return x.device.type == "cpu" and not x.requires_grad and x.dtype in (torch.float32, torch.float64)


def resize(x: torch.Tensor | np.ndarray, size: tuple[int, int], method: str = "bicubic",
           clamp: bool = True) -> torch.Tensor | np.ndarray:
    """Resize (..., H, W) to size=(height, width) like Pillow: width pass, then height pass.

    x: a tensor (any device, differentiable) or a float32/float64 NumPy array; the result is the
    same kind. With clamp (the default, for images in [0, 1]) each pass is clipped to [0, 1] as
    Pillow clips between its passes; that is what makes sharp edges match Pillow's output.
    """
    if method not in METHODS:
        raise ValueError(f"unknown resize method {method!r}; choose from {', '.join(METHODS)}")
    height, width = size
    if height < 1 or width < 1:
        raise ValueError(f"cannot resize to {width}x{height}")
    if isinstance(x, np.ndarray):
        if x.dtype not in (np.float32, np.float64):
            raise ValueError(f"resize takes a float32 or float64 array, not {x.dtype}")
        return _resize_numpy(x, (height, width), method, clamp)
    if _numpy_path(x):
        import torch

        return torch.from_numpy(_resize_numpy(x.numpy(), (height, width), method, clamp, torch))
    x = _resize_axis(x, width, x.dim() - 1, method)
    if clamp:
        x = x.clamp(0.0, 1.0)
    x = _resize_axis(x, height, x.dim() - 2, method)
    return x.clamp(0.0, 1.0) if clamp else x
