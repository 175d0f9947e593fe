"""Image files <-> tensors: the one place that knows about image formats.

`read_image` turns a file (or bytes from stdin) into a `DecodedImage`: a float
tensor (1, C, H, W) in [0, 1] plus what must survive an upscale (alpha, 16-bit
depth, ICC profile, EXIF).  `write_image` / `encode_image` turn one back into a
file or bytes.  Pillow does the work, except for 16-bit colour PNG/TIFF, which
Pillow can neither read at full depth nor write, so OpenCV handles those.

Choices worth knowing:
- EXIF orientation is applied on read, so the pixels are upright and the EXIF
  kept on the image says orientation 1.
- Formats without alpha (JPEG, BMP) get the image composited over white.
- 16 bits survive only in PNG and TIFF; other formats are quantised to 8 bits.
- WebP has no greyscale mode: a grey image comes back from WebP as RGB.
- 16-bit grey with alpha is written as 16-bit RGBA (no encoder here writes
  16-bit grey+alpha), keeping depth and alpha rather than greyscale.
- 16-bit colour TIFF is written by OpenCV, which cannot embed ICC or EXIF.
- JPEG at quality >= 90 (the default is 95) is written 4:4:4, not 4:2:0.
- Only the first page of a multi-page TIFF, and the first frame of an animated
  GIF, PNG or WebP, is read; the DecodedImage's `notes` say so, naming the count.
- Writes are atomic: bytes are encoded in memory, written to a hidden
  `.NAME.<owner>-<pid>-<random>.upscale-part` file beside the target, then
  renamed over it.  A run killed mid-write (kill -9, SIGTERM) leaves that file;
  the next write of the same target by a run on the same machine removes it
  once its pid is gone.  A live pid (a concurrent run) and any other file are
  left alone.
"""
from __future__ import annotations

import dataclasses
import errno
import functools
import hashlib
import io
import os
import re
import secrets
import socket
import stat
import struct
import threading
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import torch
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from .errors import ImageReadError, ImageTooLargeError, ImageWriteError, printable_path

DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own default; --max-pixels overrides it
DEFAULT_QUALITY = 95  # JPEG / WebP quality when none is given
# PNG's zlib level (0 = stored, 9 = smallest) and strategy. Measured on 1024x1024 upscaled photos
# (scripts/measure_throughput.py, README table): Pillow's default, level 6, takes 1.8 s an image on a
# busy 2-core machine; level 1 with zlib's run-length strategy (Z_RLE: PNG's row filters leave runs,
# not long repeats) takes a fifth of that for files only 5% larger (plain level 1: 17% larger, as fast).
# That is the default; --png-compression N asks for zlib level N with its usual strategy.
DEFAULT_PNG_COMPRESSION = 1
DEFAULT_PNG_STRATEGY = zlib.Z_RLE
PNG_COMPRESSION_LEVELS = range(0, 10)
STDIN_LABEL = "<stdin>"  # the name used in messages for images given as bytes

# Formats we read (JPEG includes multi-picture MPO); others (EPS would start
# Ghostscript) are refused as not images.
READ_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF")
OUTPUT_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP",
                  "tif": "TIFF", "tiff": "TIFF", "bmp": "BMP"}
# File names treated as images when a folder is expanded (anything else there is reported as
# skipped); GIF is read but never written (256 colours would undo the upscale): PNG instead.
READ_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif")
WRITE_SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tiff", "BMP": ".bmp"}
FALLBACK_FORMAT = "PNG"  # for inputs whose own format is not written (GIF, stdin of unknown kind)
ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}
SIXTEEN_BIT_FORMATS = {"PNG", "TIFF"}
METADATA_FORMATS = {"PNG", "JPEG", "WEBP", "TIFF"}  # can hold ICC and EXIF
LOSSY_FORMATS = {"JPEG", "WEBP"}
PALETTE_FORMATS = {"PNG", "BMP", "TIFF"}  # a palette source is written back as a palette where possible
FULL_CHROMA_QUALITY = 90  # JPEG at this quality or above keeps full-resolution colour
JPEG_SUBSAMPLING_444 = 0  # Pillow's code for 4:4:4 (no chroma subsampling)

# File signatures: a file that starts like an image but will not open is corrupt,
# not "not an image".
SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM",
              b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # TIFF, BigTIFF
SNIFF_BYTES = 16  # read from a pipe or device before deciding it could be an image
# Formats that can hold several images; we read the first and say so.
MULTI_IMAGE_KINDS = {"TIFF": ("multi-page TIFF", "page"), "GIF": ("animated GIF", "frame"),
                     "PNG": ("animated PNG", "frame"), "WEBP": ("animated WebP", "frame")}

ORIENTATION_TAG = 0x0112
EXIF_IFD_TAG = 0x8769
GPS_IFD_TAG = 0x8825
# A TIFF's "EXIF" is its whole tag directory (strip offsets, sizes...); only the
# descriptive tags make sense on another file.
TIFF_KEPT_TAGS = {270, 271, 272, 305, 306, 315, 33432}

U8_MAX = 255.0
U16_MAX = 65535.0
QUANTISE_ROWS = 512  # rows quantised at a time: bounds the float temporaries of huge outputs
PNG_IHDR_END = 33  # 8-byte signature + 4 length + 4 type + 13 data + 4 CRC
PNG_BIT_DEPTH_OFFSET = 24
PNG_COLOUR_TYPE_OFFSET = 25
PNG_GREY_ALPHA = 4
PNG_COLOUR_TYPES_FOR_OPENCV = {2, 4, 6}  # RGB, grey+alpha, RGBA at 16 bits

# Exceptions Pillow and its codecs raise for broken data.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error,
                 zlib.error, IndexError, KeyError, TypeError)
ENCODE_ERRORS = (OSError, ValueError, TypeError, KeyError, struct.error, cv2.error)


@dataclass
class DecodedImage:
    """An image as the engine sees it, plus what must be written back."""

    pixels: torch.Tensor  # (1, C, H, W) float32 in [0, 1], C = 1 (grey) or 3 (RGB)
    alpha: torch.Tensor | None = None  # (1, 1, H, W) float32 in [0, 1]
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


# --------------------------------------------------------------------- reading


def read_image(source: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode a file (or bytes) into a DecodedImage; raise ImageReadError naming it."""
    label, data = _read_source(source)
    with _pillow_pixel_limit_off():
        im = _open(data, label)
        _check_pixel_limit(im.size, max_pixels, label)
        notes = _unread_pages_note(im)
        if _needs_opencv(im, data):
            image = _decode_with_opencv(im, data, label)
        else:
            image = _decode_with_pillow(im, label)
    return image.replace(notes=notes) if notes else image


def _read_source(source: str | Path | bytes) -> tuple[str, bytes]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        label, data = STDIN_LABEL, bytes(source)
    else:
        label = printable_path(source)  # a newline or escape in a name must not break the message
        try:
            data = _read_file(Path(source), label)
        except FileNotFoundError:
            raise ImageReadError("no such file", path=label) from None
        except IsADirectoryError:
            raise ImageReadError("is a directory, not an image file", path=label) from None
        except PermissionError:
            raise ImageReadError("permission denied", path=label) from None
        except OSError as e:
            raise ImageReadError(f"cannot read: {e.strerror or e}", path=label) from e
        except ValueError as e:  # a NUL in the name
            raise ImageReadError(f"cannot read: invalid file name ({e})", path=label) from e
    if not data:
        raise ImageReadError("empty file", path=label)
    return label, data


def _read_file(path: Path, label: str) -> bytes:
    with open(path, "rb") as file:
        if stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            return file.read()
        # A pipe or device may never end (/dev/zero): read on only if it starts like an image.
        head = file.read(SNIFF_BYTES)
        if head and not _has_image_signature(head):
            raise ImageReadError("not an image (unrecognised format)", path=label)
        return head + file.read()


def _has_image_signature(data: bytes) -> bool:
    return data.startswith(SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


_limit_lock = threading.Lock()
_limit_users = 0
_saved_limit: int | None = None


@contextmanager
def _pillow_pixel_limit_off() -> Iterator[None]:
    """Switch off Pillow's global decompression-bomb check while we decode.

    We check --max-pixels ourselves from the header; Pillow's own global limit
    would otherwise refuse images the user allowed.  Counted, so overlapping
    reads in several threads restore the original value only once.
    """
    global _limit_users, _saved_limit
    with _limit_lock:
        if _limit_users == 0:
            _saved_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        _limit_users += 1
    try:
        yield
    finally:
        with _limit_lock:
            _limit_users -= 1
            if _limit_users == 0:
                Image.MAX_IMAGE_PIXELS = _saved_limit


def _open(data: bytes, label: str) -> Image.Image:
    """Parse the header only (Pillow decodes lazily)."""
    try:
        return Image.open(io.BytesIO(data), formats=READ_FORMATS)
    except UnidentifiedImageError:
        if _has_image_signature(data):
            raise ImageReadError("truncated or corrupt image: unreadable header", path=label) from None
        raise ImageReadError("not an image (unrecognised format)", path=label) from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"image too large: {e}", path=label) from e
    except DECODE_ERRORS as e:
        raise _corrupt(e, label) from e


def _unread_pages_note(im: Image.Image) -> tuple[str, ...]:
    """Only the first page or frame is decoded; a note naming how many there are."""
    kind = MULTI_IMAGE_KINDS.get(str(im.format))
    if kind is None:
        return ()  # MPO (a camera JPEG's extra previews) on purpose: its first image is the photo
    what, unit = kind
    try:
        count = int(getattr(im, "n_frames", 1))
    except DECODE_ERRORS:
        count = 0  # a later page is broken; the first may still be fine
    try:
        im.seek(0)
    except DECODE_ERRORS:
        pass  # decoding frame 0 reports what is wrong
    if count == 1:
        return ()
    if count == 0:
        return (f"{what}: only {unit} 1 was used (the other {unit}s could not be read)",)
    return (f"{what}: only {unit} 1 of {count} was used",)


def _corrupt(error: BaseException, label: str) -> ImageReadError:
    detail = str(error).strip() or type(error).__name__
    return ImageReadError(f"truncated or corrupt image: {detail}", path=label)


def _check_pixel_limit(size: tuple[int, int], max_pixels: int, label: str) -> None:
    width, height = size
    pixels = width * height
    if max_pixels and pixels > max_pixels:
        raise ImageTooLargeError(
            f"{width} x {height} = {pixels} pixels is over the limit of {max_pixels} (--max-pixels)",
            path=label)


def _needs_opencv(im: Image.Image, data: bytes) -> bool:
    """16-bit colour (or grey+alpha) PNG/TIFF: Pillow would cut it to 8 bits."""
    if im.format == "PNG":
        return (data[PNG_BIT_DEPTH_OFFSET] == 16
                and data[PNG_COLOUR_TYPE_OFFSET] in PNG_COLOUR_TYPES_FOR_OPENCV)
    if im.format == "TIFF":
        bits = im.tag_v2.get(258, (8,))
        bits = bits if isinstance(bits, tuple) else (bits,)
        return len(bits) > 1 and 16 in bits
    return False


def _decode_with_pillow(im: Image.Image, label: str) -> DecodedImage:
    icc = None if im.mode == "CMYK" else im.info.get("icc_profile")  # a CMYK profile is wrong for RGB
    try:
        im.load()  # full decode here, so truncation fails now and not later
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"image too large: {e}", path=label) from e
    except DECODE_ERRORS as e:
        raise _corrupt(e, label) from e
    exif, orientation = _read_exif(im)
    upright = ImageOps.exif_transpose(im) if orientation != 1 else im
    colour, alpha, bit_depth = _pillow_planes(upright, label)
    return DecodedImage(_to_tensor(colour), None if alpha is None else _to_tensor(alpha),
                        bit_depth, icc, exif, _format_name(im), estimate_jpeg_quality(im),
                        palette=_palette_rgba(upright))


def _palette_rgba(im: Image.Image) -> bytes | None:
    """The RGBA colour of every palette index of a P image (transparency included), exactly as
    Pillow converts its pixels; None for other modes."""
    if im.mode != "P" or im.palette is None:
        return None
    entries = len(im.getpalette() or ()) // 3
    if not 0 < entries <= 256:
        return None
    index = Image.new("P", (entries, 1))
    index.putpalette(im.getpalette())
    if "transparency" in im.info:
        index.info["transparency"] = im.info["transparency"]
    index.putdata(list(range(entries)))
    return index.convert("RGBA").tobytes()


# The IJG (libjpeg) base luminance table (JPEG standard, Annex K), which encoders scale by quality.
IJG_LUMA_TABLE = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
                  14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
                  18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
                  49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)


def _ijg_table_sum(quality: int) -> int:
    """Sum of the luminance table libjpeg writes at `quality` (its scaling rule, clamped to 1..255)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return sum(min(255, max(1, (value * scale + 50) // 100)) for value in IJG_LUMA_TABLE)


def estimate_jpeg_quality(im: Image.Image) -> int | None:
    """The IJG quality whose luminance table is closest to the file's (exact for libjpeg-family
    encoders: Pillow, OpenCV, most cameras and editors); None for non-JPEG images."""
    tables = getattr(im, "quantization", None) or {}
    luma = tables.get(0)
    if im.format != "JPEG" or luma is None or len(luma) != len(IJG_LUMA_TABLE):
        return None
    target = sum(luma)  # the sum does not depend on the order (zigzag or natural) of the table
    return min(range(1, 101), key=lambda q: abs(_ijg_table_sum(q) - target))


def _pillow_planes(im: Image.Image, label: str) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(H, W, C) colour and (H, W, 1) alpha as float32 in [0, 1], and the bit depth."""
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        grey = np.asarray(im).astype(np.float32)
        return np.clip(grey / U16_MAX, 0.0, 1.0)[..., None], None, 16
    if mode == "CMYK":
        return _cmyk_to_rgb(im), None, 8
    has_alpha = mode in ("LA", "La", "PA", "RGBA", "RGBa") or im.has_transparency_data
    if mode in ("1", "L", "LA", "La"):
        target = "LA" if has_alpha else "L"
    elif mode in ("P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "YCbCr"):
        target = "RGBA" if has_alpha else "RGB"
    else:
        raise ImageReadError(f"unsupported image mode {mode!r}", path=label)
    planes = np.asarray(im.convert(target), dtype=np.float32).reshape(im.height, im.width, -1) / U8_MAX
    if has_alpha:
        return planes[..., :-1], planes[..., -1:], 8
    return planes, None, 8


def _cmyk_to_rgb(im: Image.Image) -> np.ndarray:
    """CMYK -> RGB through the embedded profile, else by the multiplicative formula.

    Pillow's convert("RGB") subtracts K instead of multiplying, which darkens.
    """
    icc = im.info.get("icc_profile")
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            srgb = ImageCms.createProfile("sRGB")
            rgb = ImageCms.profileToProfile(im, source, srgb, outputMode="RGB")
            return np.asarray(rgb, dtype=np.float32) / U8_MAX
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken or odd profile: the plain formula is still close
    cmyk = np.asarray(im, dtype=np.float32) / U8_MAX
    return (1.0 - cmyk[..., :3]) * (1.0 - cmyk[..., 3:])


def _decode_with_opencv(im: Image.Image, data: bytes, label: str) -> DecodedImage:
    """Full-depth decode of 16-bit colour PNG/TIFF; metadata still comes from Pillow."""
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.dtype != np.uint16:
        raise ImageReadError("truncated or corrupt image: OpenCV could not decode it", path=label)
    exif, orientation = _read_exif(im)
    array = array.reshape(array.shape[0], array.shape[1], -1)
    # OpenCV orders channels BGR(A).
    array = array[..., [2, 1, 0, 3][: array.shape[2]]] if array.shape[2] >= 3 else array
    if _is_grey_alpha(im, data) and im.format == "PNG" and _opencv_swaps_grey_alpha_bytes():
        array = array.byteswap()
    array = _orient(array, orientation)
    planes = array.astype(np.float32) / U16_MAX
    colour, alpha = (planes[..., :3], planes[..., 3:]) if planes.shape[2] == 4 else (planes, None)
    if _is_grey_alpha(im, data):
        colour = colour[..., :1]  # OpenCV expands grey+alpha to BGRA
    return DecodedImage(_to_tensor(colour), None if alpha is None else _to_tensor(alpha),
                        16, im.info.get("icc_profile"), exif, _format_name(im))


@functools.lru_cache(maxsize=None)
def _opencv_swaps_grey_alpha_bytes() -> bool:
    """OpenCV 5.0 returns 16-bit grey+alpha PNG samples byte-swapped (and Pillow
    garbles them), so decode a 1x1 probe (grey 0x0102) once and see."""
    header = struct.pack(">IIBBBBB", 1, 1, 16, PNG_GREY_ALPHA, 0, 0, 0)
    scanline = b"\x00" + struct.pack(">HH", 0x0102, 0xFFFF)  # filter byte, grey, alpha
    probe = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
             + _png_chunk(b"IDAT", zlib.compress(scanline)) + _png_chunk(b"IEND", b""))
    decoded = cv2.imdecode(np.frombuffer(probe, np.uint8), cv2.IMREAD_UNCHANGED)
    return int(decoded.reshape(-1)[0]) == 0x0201


def _is_grey_alpha(im: Image.Image, data: bytes) -> bool:
    if im.format == "PNG":
        return data[PNG_COLOUR_TYPE_OFFSET] == PNG_GREY_ALPHA
    return im.tag_v2.get(277) == 2  # TIFF SamplesPerPixel: grey + alpha


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation to (H, W, C) like ImageOps.exif_transpose does."""
    operations = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
        8: lambda a: np.rot90(a, 1),
    }
    operation = operations.get(orientation)
    return np.ascontiguousarray(operation(array)) if operation else array


def _read_exif(im: Image.Image) -> tuple[bytes | None, int]:
    """(EXIF to carry along, orientation to apply); broken EXIF must not cost
    the pixels, so it reads as none."""
    try:
        orientation = int(im.getexif().get(ORIENTATION_TAG, 1))
        return _exif_bytes(im), orientation if 1 <= orientation <= 8 else 1
    except DECODE_ERRORS:
        return None, 1


def _exif_bytes(im: Image.Image) -> bytes | None:
    """The EXIF to carry along, with orientation 1 (the pixels get rotated)."""
    exif = im.getexif()
    if im.format == "TIFF":
        kept = Image.Exif()
        for tag in TIFF_KEPT_TAGS & set(exif):
            kept[tag] = exif[tag]
        for ifd_tag in (EXIF_IFD_TAG, GPS_IFD_TAG):
            if exif.get_ifd(ifd_tag):
                kept[ifd_tag] = dict(exif.get_ifd(ifd_tag))
    else:
        kept = Image.Exif()
        kept.load(exif.tobytes())  # a copy: exif_transpose still needs the original
    if not len(kept):
        return None
    kept[ORIENTATION_TAG] = 1
    return kept.tobytes()


def _format_name(im: Image.Image) -> str:
    return "JPEG" if im.format == "MPO" else str(im.format)


def _to_tensor(planes: np.ndarray) -> torch.Tensor:
    """(H, W, C) float32 -> (1, C, H, W)."""
    return torch.from_numpy(np.ascontiguousarray(planes.transpose(2, 0, 1)))[None].float()


# --------------------------------------------------------------------- writing


def write_image(image: DecodedImage, path: str | Path, format: str | None = None,
                quality: int | None = None, png_compression: int | None = None) -> None:
    """Encode and write atomically; raise ImageWriteError naming the path."""
    target = Path(path)
    try:
        fmt = output_format(format or target.suffix)
        if os.path.isdir(target):  # before encoding, which can take long
            raise ImageWriteError(_write_error_message(IsADirectoryError(errno.EISDIR, "")))
        data = encode_image(image, fmt, quality, png_compression)
    except ImageWriteError as e:
        raise ImageWriteError(e.message, path=printable_path(target)) from e
    _write_atomically(target, data)


def write_bytes_atomically(data: bytes, path: str | Path) -> None:
    """Write already-encoded bytes (an input kept as it was) the same atomic way; ImageWriteError naming the path."""
    target = Path(path)
    if os.path.isdir(target):
        raise ImageWriteError(_write_error_message(IsADirectoryError(errno.EISDIR, "")), path=printable_path(target))
    _write_atomically(target, data)


def writable_format(name: str) -> str | None:
    """'png', '.JPG', 'tiff' ... -> Pillow's format name, or None when we do not write it."""
    return OUTPUT_FORMATS.get(name.lower().lstrip("."))


def output_format(name: str) -> str:
    """'png', '.JPG', 'tiff' ... -> Pillow's format name; ImageWriteError if unknown."""
    key = name.lower().lstrip(".")
    if key not in OUTPUT_FORMATS:
        known = ", ".join(sorted(OUTPUT_FORMATS))
        raise ImageWriteError(f"unknown output format {name!r} (use one of: {known})")
    return OUTPUT_FORMATS[key]


def _write_atomically(target: Path, data: bytes) -> None:
    """Temp file beside the target, then os.replace: never a half-written image.

    Any exception (KeyboardInterrupt included) removes the temp file; only a kill
    that runs no Python code leaves it, for the next write of the target to remove.
    """
    remove_dead_leftovers(target)
    temp = _temp_path(target)
    created = False
    try:
        # os.open with 0o666 lets the umask decide the mode, like a plain open().
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        created = True
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, target)
    except BaseException as e:
        if created:
            _remove_quietly(temp)
        if isinstance(e, (OSError, ValueError)):  # ValueError: a NUL in the name
            message = _write_error_message(e)
            if isinstance(e, PermissionError) and not created:
                message += " (cannot create files in that folder)"
            raise ImageWriteError(message, path=printable_path(target)) from e
        raise


# The temp file's name says whose it is, so a later run can tell a killed run's
# leftover from a concurrent run's file in progress and from everything else.
TEMP_SUFFIX = ".upscale-part"
NAME_MAX_BYTES = 255  # the longest file name common file systems take
TEMP_NAME_EXTRA_BYTES = 2 + 8 + 1 + 10 + 1 + 8 + len(TEMP_SUFFIX)  # dots, owner, widest pid, random
LEFTOVER_NAME = re.compile(r"\.(.+)\.([0-9a-f]{8})-([1-9][0-9]{0,9})-[0-9a-f]{8}" + re.escape(TEMP_SUFFIX))

_sweep_lock = threading.Lock()
_dead_leftovers: dict[str, dict[str, list[str]]] = {}  # folder -> target stem -> leftover names


def _temp_path(target: Path) -> Path:
    owner = f"{_owner_tag()}-{os.getpid()}-{secrets.token_hex(4)}"
    return target.parent / f".{_temp_stem(target.name)}.{owner}{TEMP_SUFFIX}"


def _temp_stem(name: str) -> str:
    """The target's name inside its temp file's name; a hash where the name is so long
    that the temp file's name would pass the file system's limit."""
    encoded = os.fsencode(name)
    if len(encoded) + TEMP_NAME_EXTRA_BYTES <= NAME_MAX_BYTES:
        return name
    return "~" + hashlib.sha256(encoded).hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def _owner_tag() -> str:
    """Eight hex digits for this machine and pid namespace: a pid means something only there
    (another host on a shared folder, or another container, has its own pids)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{zlib.crc32(f'{socket.gethostname()}/{namespace}'.encode()):08x}"


def remove_dead_leftovers(target: str | Path) -> None:
    """Remove the temp files that killed runs of ours left for this same target.

    Every write calls it; a caller that decides not to write a target (it exists)
    may call it too.  A folder is listed once per process (a batch writes
    thousands of files into one), when the process first asks about it.
    """
    if os.name != "posix":
        return  # os.kill(pid, 0), the liveness test, would terminate the process on Windows
    target = Path(target)
    folder = os.path.abspath(target.parent)
    with _sweep_lock:
        if folder not in _dead_leftovers:
            _dead_leftovers[folder] = _find_dead_leftovers(folder)
        names = _dead_leftovers[folder].pop(_temp_stem(target.name), [])
    for name in names:
        _remove_quietly(Path(folder) / name)


def _find_dead_leftovers(folder: str) -> dict[str, list[str]]:
    """Our temp files in `folder` whose writer is gone, by target stem."""
    found: dict[str, list[str]] = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                match = LEFTOVER_NAME.fullmatch(entry.name) if entry.name.endswith(TEMP_SUFFIX) else None
                if match and match[2] == _owner_tag() and _is_dead_runs_file(entry, int(match[3])):
                    found.setdefault(match[1], []).append(entry.name)
    except (OSError, ValueError):
        pass  # an unlistable folder (or a NUL in its name): the write itself says what is wrong
    return found


def _is_dead_runs_file(entry: os.DirEntry, pid: int) -> bool:
    """A plain file of this user's whose writing process has ended."""
    try:
        if not entry.is_file(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != os.getuid():
            return False
    except OSError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):
        return False  # another user's live process (EPERM), or no pid at all
    return False  # alive: a concurrent run is still writing it


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _write_error_message(error: OSError | ValueError) -> str:
    if isinstance(error, ValueError):
        return f"cannot write: invalid file name ({error})"
    if error.errno == errno.EROFS:
        return "read-only file system"
    if isinstance(error, PermissionError):
        return "permission denied"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk full"
    if isinstance(error, FileNotFoundError):
        return "cannot write: the folder does not exist"
    if isinstance(error, NotADirectoryError):
        return "cannot write: the parent is not a folder"
    if isinstance(error, IsADirectoryError):
        return "cannot write: a folder of that name exists"
    return f"cannot write: {error.strerror or error}"


def encode_image(image: DecodedImage, format: str, quality: int | None = None,
                 png_compression: int | None = None) -> bytes:
    """Encode to bytes in `format` ('png', 'jpg', ...); ImageWriteError if impossible.
    `png_compression` is PNG's zlib level 0-9 (None = the measured default: level 1, run-length)."""
    fmt = output_format(format)
    if quality is not None and not 1 <= quality <= 100:
        raise ImageWriteError(f"quality must be 1..100, not {quality}")
    level = (DEFAULT_PNG_COMPRESSION, DEFAULT_PNG_STRATEGY) if png_compression is None else (png_compression, None)
    if level[0] not in PNG_COMPRESSION_LEVELS:
        raise ImageWriteError(f"PNG compression must be 0..9, not {png_compression}")
    colour, alpha = _output_planes(image, fmt)
    sixteen = image.bit_depth == 16 and fmt in SIXTEEN_BIT_FORMATS
    try:
        if sixteen and (colour.shape[2] == 3 or alpha is not None):
            return _encode_with_opencv(colour, alpha, fmt, image, level)
        pil = _to_pillow(colour, alpha, sixteen)
        if image.palette is not None and fmt in PALETTE_FORMATS and not sixteen:
            pil = _as_palette(pil, image.palette) or pil
        buffer = io.BytesIO()
        pil.save(buffer, fmt, **_save_options(image, fmt, quality, level))
        return buffer.getvalue()
    except ENCODE_ERRORS as e:
        raise ImageWriteError(f"cannot encode as {fmt}: {e}") from e


def _output_planes(image: DecodedImage, fmt: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W, C) and (H, W, 1) float32 arrays; alpha composited over white where
    the format has no alpha (white is what most viewers show behind a page)."""
    colour = _to_planes(image.pixels)
    if colour.shape[2] not in (1, 3):
        raise ImageWriteError(f"cannot write an image with {colour.shape[2]} channels (1 or 3 expected)")
    alpha = None if image.alpha is None else _to_planes(image.alpha)
    if alpha is not None and alpha.shape[:2] != colour.shape[:2]:
        raise ImageWriteError(f"alpha is {alpha.shape[1]}x{alpha.shape[0]} but the image is "
                              f"{colour.shape[1]}x{colour.shape[0]}")
    if alpha is not None and fmt not in ALPHA_FORMATS:
        colour, alpha = colour * alpha + (1.0 - alpha), None
    return colour, alpha


def _to_planes(x: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) or (C, H, W) tensor -> (H, W, C) float32 view (no copy: outputs can be gigabytes)."""
    x = x.detach().to(device="cpu", dtype=torch.float32)
    return (x[0] if x.dim() == 4 else x).permute(1, 2, 0).numpy()


def _quantise(planes: np.ndarray, sixteen: bool) -> np.ndarray:
    """Clip to [0, 1] and round to 8 or 16 bits, a band of rows at a time so that a
    12000x16000 output needs no full-size float temporaries."""
    peak = U16_MAX if sixteen else U8_MAX
    out = np.empty(planes.shape, dtype=np.uint16 if sixteen else np.uint8)
    for top in range(0, planes.shape[0], QUANTISE_ROWS):
        band = np.clip(planes[top : top + QUANTISE_ROWS], 0.0, 1.0) * peak
        out[top : top + QUANTISE_ROWS] = np.round(band, out=band)
    return out


def _quantise_planes(colour: np.ndarray, alpha: np.ndarray | None, sixteen: bool) -> np.ndarray:
    """Colour (+ alpha) -> one integer (H, W, C) array, joined after quantising (smaller)."""
    array = _quantise(colour, sixteen)
    return array if alpha is None else np.concatenate([array, _quantise(alpha, sixteen)], axis=2)


def _to_pillow(colour: np.ndarray, alpha: np.ndarray | None, sixteen: bool) -> Image.Image:
    """L, LA, RGB, RGBA (8-bit) or I;16 (16-bit grey without alpha)."""
    array = _quantise_planes(colour, alpha, sixteen)
    if array.shape[2] == 1:
        array = array[..., 0]  # fromarray: (H, W) uint8 -> L, uint16 -> I;16
    return Image.fromarray(np.ascontiguousarray(array))


def _as_palette(pil: Image.Image, palette: bytes) -> Image.Image | None:
    """The image in its source's palette when every pixel is one of its colours (nearest,
    pixel-art), else None (a network made new colours: written as RGB(A))."""
    rows = np.frombuffer(palette, dtype=np.uint8).reshape(-1, 4)
    rgba = np.asarray(pil.convert("RGBA"), dtype=np.uint8)
    keys = rgba.reshape(-1, 4).view(np.uint32).ravel()
    table = rows.view(np.uint32).ravel()
    order = np.argsort(table, kind="stable")
    found = np.searchsorted(table[order], keys)
    found = np.minimum(found, len(table) - 1)
    if not bool((table[order][found] == keys).all()):
        return None
    out = Image.fromarray(order[found].astype(np.uint8).reshape(rgba.shape[:2]), "P")
    out.putpalette(rows[:, :3].tobytes())
    alphas = rows[:, 3]
    if (alphas < 255).any():
        out.info["transparency"] = alphas.tobytes()
    return out


def _save_options(image: DecodedImage, fmt: str, quality: int | None, png_level: tuple[int, int | None]) -> dict:
    options: dict = {}
    if fmt == "PNG":
        options["compress_level"] = png_level[0]
        if png_level[1] is not None:
            options["compress_type"] = png_level[1]
    if fmt in LOSSY_FORMATS:
        options["quality"] = DEFAULT_QUALITY if quality is None else quality
    if fmt == "JPEG" and options["quality"] >= FULL_CHROMA_QUALITY:
        # 4:2:0 smears colour over fine detail, which is what an upscale adds.
        options["subsampling"] = JPEG_SUBSAMPLING_444
    if fmt in METADATA_FORMATS:
        if image.icc_profile:
            options["icc_profile"] = image.icc_profile
        exif = _exif_for_output(image.exif)
        if exif is not None:
            options["exif"] = exif
    return options


def _exif_for_output(exif_bytes: bytes | None) -> Image.Exif | None:
    """Parsed EXIF with orientation 1; None when absent or unparseable."""
    if not exif_bytes:
        return None
    exif = Image.Exif()
    try:
        exif.load(exif_bytes)
    except DECODE_ERRORS:
        return None  # broken EXIF is not worth failing the write over
    exif[ORIENTATION_TAG] = 1
    return exif


def _encode_with_opencv(colour: np.ndarray, alpha: np.ndarray | None, fmt: str,
                        image: DecodedImage, png_level: tuple[int, int | None]) -> bytes:
    """16-bit RGB(A) PNG/TIFF, which Pillow cannot write."""
    if colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)  # 16-bit grey+alpha -> RGBA, see module doc
    array = _quantise_planes(colour, alpha, sixteen=True)
    array = array[..., [2, 1, 0, 3][: array.shape[2]]]  # OpenCV wants BGR(A)
    params = [cv2.IMWRITE_PNG_COMPRESSION, png_level[0]] if fmt == "PNG" else []
    if fmt == "PNG" and png_level[1] is not None:
        params += [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    ok, buffer = cv2.imencode(".png" if fmt == "PNG" else ".tiff", np.ascontiguousarray(array), params)
    if not ok:
        raise ImageWriteError(f"cannot encode as {fmt}: OpenCV refused the image")
    data = buffer.tobytes()
    if fmt == "PNG":
        exif = _exif_for_output(image.exif)
        data = _png_with_metadata(data, image.icc_profile, exif.tobytes() if exif else None)
    return data


def _png_with_metadata(png: bytes, icc: bytes | None, exif: bytes | None) -> bytes:
    """Insert iCCP / eXIf chunks right after IHDR (both must precede IDAT)."""
    chunks = b""
    if icc:
        chunks += _png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc))
    if exif:
        chunks += _png_chunk(b"eXIf", exif.removeprefix(b"Exif\x00\x00"))
    return png[:PNG_IHDR_END] + chunks + png[PNG_IHDR_END:]


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


# --------------------------------------------------- helpers for tests and metrics


def tensor_to_uint8(x: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) or (C, H, W) float in [0, 1] -> (H, W, C) uint8."""
    return _quantise(_to_planes(x), sixteen=False)


def uint8_to_tensor(array: np.ndarray) -> torch.Tensor:
    """(H, W, C) or (H, W) uint8 -> (1, C, H, W) float32 in [0, 1]."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[..., None]
    return _to_tensor(array.astype(np.float32) / U8_MAX)


def load_rgb_uint8(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB by a plain Pillow convert("RGB"), as SR benchmarks do.

    No EXIF rotation and no colour management on purpose: the published
    protocol reads dataset files exactly like this.
    """
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
