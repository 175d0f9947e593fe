"""Image files <-> NumPy arrays: the one place that knows about image formats.

`read.read_image` turns a file (or bytes from stdin) into a `DecodedImage` (below): a float32
NumPy array (1, C, H, W) in [0, 1] plus what must survive an upscale (alpha, 16-bit depth, ICC
profile, EXIF). `write.write_image` / `write.encode_image` turn one back into a file or bytes.
Pillow does the work, except for 16-bit colour PNG/TIFF, which Pillow can neither read at full
depth nor write, so OpenCV handles those.

The package, by concern:
  formats.py  the one format table (what is read, what is written, suffixes, what each format
              can hold) and the file-layout facts reading and writing share; no Pillow, no torch
  read.py     decoding: sniffing, the pixel limit, Pillow or OpenCV, EXIF orientation, ICC, pages
  codecs.py   HEIF, AVIF and JPEG XL codecs (pillow-heif, Pillow's AVIF, pillow-jxl-plugin):
              loaded when first needed, and one line naming the package when one is missing
  write.py    encoding: alpha over white, 8/16 bits, palettes, quality, PNG compression, metadata
  atomic.py   the atomic write (temp file beside the target, then rename) and the leftovers of
              killed runs
  arrays.py   float (1, C, H, W) arrays <-> integer (H, W, C) arrays, and the SR protocol's plain Pillow read and resize

Choices worth knowing:
- EXIF orientation is applied on read, so the pixels are upright and the EXIF
  kept on the image says orientation 1.
- Formats without alpha (JPEG, BMP) get the image composited over white.
- 16 bits survive in PNG and TIFF, as 10 bits in HEIF, and in grey JPEG XL; other formats
  (AVIF included: its codec here is 8-bit) are quantised to 8 bits.
- WebP has no greyscale mode: a grey image comes back from WebP as RGB.
- 16-bit grey with alpha is written as 16-bit RGBA (no encoder here writes
  16-bit grey+alpha), keeping depth and alpha rather than greyscale.
- 16-bit colour TIFF is written by OpenCV, which cannot embed ICC or EXIF.
- JPEG at quality >= 90 (the default is 95) is written 4:4:4, not 4:2:0.
- Only the first page of a multi-page TIFF, and the first frame of an animated
  GIF, PNG or WebP, is read; the DecodedImage's `notes` say so, naming the count.
- Writes are atomic (atomic.py says how a killed run's temp file is tidied).

This file holds only DecodedImage, the type every module here passes around, and imports
neither torch nor Pillow, so `images.formats` stays cheap to import. Nothing in the package imports
torch: a model's code converts at its own boundary (torch.from_numpy(image.pixels), no copy, and
arrays.tensor_to_array(result) back), so a run whose model needs no PyTorch never loads it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # not at run time: `images.formats` lists a folder without loading NumPy either
    import numpy as np


@dataclass
class DecodedImage:
    """An image as the engine sees it, plus what must be written back."""

    pixels: np.ndarray  # (1, C, H, W) float32 in [0, 1], C-contiguous; C = 1 (grey) or 3 (RGB)
    alpha: np.ndarray | None = None  # (1, 1, H, W) float32 in [0, 1], C-contiguous
    bit_depth: int = 8  # 8 or 16
    icc_profile: bytes | None = None
    exif: bytes | None = None  # with orientation 1: the pixels are upright
    source_format: str = ""  # "PNG", "JPEG", ...
    jpeg_quality: int | None = None  # a JPEG source's estimated IJG quality (1-100); None otherwise
    notes: tuple[str, ...] = ()  # what the user should hear about this file (pages left unread)
    palette: bytes | None = None  # a palette (P) source's colours as RGBA rows, to write it back as one

    @property
    def height(self) -> int:
        return int(self.pixels.shape[-2])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[-1])

    def replace(self, **changes: object) -> "DecodedImage":
        return dataclasses.replace(self, **changes)
