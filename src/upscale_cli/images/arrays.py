"""Float (1, C, H, W) arrays <-> integer (H, W, C) arrays: the conversions reading and writing share
(rounding a band of rows at a time), the uint8 helpers tests, metrics and the benchmark use, and
the SR protocol's plain Pillow read and bicubic resize.

NumPy only: torch is imported only inside uint8_to_tensor, and in to_planes when it is handed a
tensor (tensor_to_array uses the tensor's own methods), so decoding and encoding never load it.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from upscale_cli.errors import ImageReadError
from upscale_cli.images.formats import DECODE_ERRORS

if TYPE_CHECKING:
    import torch

U8_MAX = 255.0
U16_MAX = 65535.0
QUANTISE_FLOATS = 65_536  # float32 values quantised at a time (256 KB, in cache): no full-size temporaries


def to_nchw(planes: np.ndarray) -> np.ndarray:
    """(H, W, C) float -> (1, C, H, W) float32, C-contiguous and writable (a DecodedImage's layout:
    torch.from_numpy takes it without a copy or a warning)."""
    return np.require(planes.transpose(2, 0, 1), dtype=np.float32, requirements=("C", "W"))[None]


def to_planes(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """(1, C, H, W) or (C, H, W) array -> (H, W, C) float32 view (no copy: outputs can be gigabytes).
    A torch tensor (a caller's own, never a DecodedImage's) is taken too: moved to the CPU first."""
    if not isinstance(x, np.ndarray):
        import torch

        x = x.detach().to(device="cpu", dtype=torch.float32).numpy()
    x = np.asarray(x, dtype=np.float32)
    return (x[0] if x.ndim == 4 else x).transpose(1, 2, 0)


def quantise(planes: np.ndarray, sixteen: bool) -> np.ndarray:
    """Clip to [0, 1] and round to 8 or 16 bits (half to even), a band of rows at a time in one
    reused float buffer of about QUANTISE_FLOATS values: no full-size float temporaries for a
    12000x16000 output, and the band stays in the CPU's cache (a 512x512 RGB output: 1 ms, was 2)."""
    peak = U16_MAX if sixteen else U8_MAX
    out = np.empty(planes.shape, dtype=np.uint16 if sixteen else np.uint8)
    rows = max(1, QUANTISE_FLOATS // max(1, math.prod(planes.shape[1:])))
    dtype = planes.dtype if planes.dtype.kind == "f" else np.float64  # the arithmetic of clip(...) * peak
    buffer = np.empty((min(rows, planes.shape[0]),) + planes.shape[1:], dtype=dtype)
    for top in range(0, planes.shape[0], rows):
        source = planes[top : top + rows]
        band = buffer[: source.shape[0]]
        np.clip(source, 0.0, 1.0, out=band)
        np.multiply(band, peak, out=band)
        np.rint(band, out=band)
        out[top : top + rows] = band
    return out


def quantise_planes(colour: np.ndarray, alpha: np.ndarray | None, sixteen: bool) -> np.ndarray:
    """Colour (+ alpha) -> one integer (H, W, C) array, joined after quantising (smaller)."""
    array = quantise(colour, sixteen)
    return array if alpha is None else np.concatenate([array, quantise(alpha, sixteen)], axis=2)


def tensor_to_uint8(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """(1, C, H, W) or (C, H, W) float in [0, 1], array or tensor -> (H, W, C) uint8."""
    return quantise(to_planes(x), sixteen=False)


def tensor_to_array(x: torch.Tensor) -> np.ndarray:
    """A torch tensor (a model's output) -> the float32, C-contiguous NumPy array on the CPU that a
    DecodedImage holds: the same memory when the tensor already is one (no copy of a large output)."""
    return x.detach().cpu().float().contiguous().numpy()


def uint8_to_array(array: np.ndarray) -> np.ndarray:
    """(H, W, C) or (H, W) uint8 -> (1, C, H, W) float32 in [0, 1] (a DecodedImage's pixels)."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[..., None]
    return to_nchw(array.astype(np.float32) / U8_MAX)


def uint8_to_tensor(array: np.ndarray) -> torch.Tensor:
    """(H, W, C) or (H, W) uint8 -> (1, C, H, W) float32 torch tensor in [0, 1]."""
    import torch

    return torch.from_numpy(uint8_to_array(array))


def load_rgb_uint8(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB by a plain Pillow convert("RGB"), as SR benchmarks do.

    No EXIF rotation and no colour management on purpose: the published
    protocol reads dataset files exactly like this.
    """
    from upscale_cli.images.codecs import load_for

    load_for(path)  # a HEIC/AVIF/JPEG XL file's codec
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise ImageReadError("no such file", path=path) from None
    except DECODE_ERRORS as e:
        raise ImageReadError(f"cannot read image: {e}", path=path) from e


def pil_bicubic_downscale(rgb_uint8: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pillow BICUBIC resize to (width, height): the protocol's LR maker."""
    image = Image.fromarray(np.ascontiguousarray(rgb_uint8))
    return np.asarray(image.resize(size, Image.Resampling.BICUBIC))
