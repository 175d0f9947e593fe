"""Encoding: a DecodedImage -> bytes in a format, or a file written atomically (atomic.py).

Alpha is composited over white where the format has none, 16 bits are kept in PNG and TIFF
(OpenCV writes 16-bit colour, which Pillow cannot), in HEIF at HEIF_DEEP_BITS and in grey JPEG XL,
a palette source is written back as a palette when every pixel is one of its colours, JPEG and AVIF
at quality >= 90 are 4:4:4, quality 100 is lossless in HEIF and JPEG XL, and ICC and EXIF
(orientation 1) go with the image where the format holds them (JPEG XL: the pixels are converted to
sRGB instead of carrying the profile, which pillow-jxl-plugin cannot write).

HEIF, AVIF and JPEG XL need codecs Pillow may lack: formats.output_format asks codecs.py for the
encoder first, so a missing one is one line naming the package, before any work.
"""
from __future__ import annotations

import errno
import io
import os
import struct
import zlib
from concurrent.futures import Future
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageCms

from upscale_cli.errors import ImageWriteError, printable_path
from upscale_cli.images import DecodedImage
from upscale_cli.images.arrays import U16_MAX, quantise_planes, to_planes
from upscale_cli.images.atomic import DurableGroup, write_atomically, write_error_message
from upscale_cli.images.formats import (ALPHA_FORMATS, DECODE_ERRORS, LOSSY_FORMATS, METADATA_FORMATS,
                                        ORIENTATION_TAG, PALETTE_FORMATS, PNG_IHDR_END, PNG_SIGNATURE,
                                        SIXTEEN_BIT_FORMATS, output_format, png_chunk)

DEFAULT_QUALITY = 95  # JPEG / WebP quality when none is given
# PNG's zlib level (0 = stored, 9 = smallest) and strategy. --png-compression N asks for zlib level N
# with its usual strategy, through Pillow; Pillow's default, level 6, takes 1.8 s a 1024x1024 upscaled
# photo on a busy 2-core machine. Without it, 8-bit grey, RGB and RGBA go through `_default_png`
# (the Up filter, libdeflate level 1: docs/BENCHMARKS.md#png-encoding); other images through Pillow
# at level 1 with zlib's run-length strategy (Z_RLE: PNG's row filters leave runs, not long repeats).
DEFAULT_PNG_COMPRESSION = 1
DEFAULT_PNG_STRATEGY = zlib.Z_RLE
PNG_COMPRESSION_LEVELS = range(0, 10)
FULL_CHROMA_QUALITY = 90  # JPEG and AVIF at this quality or above keep full-resolution colour
JPEG_SUBSAMPLING_444 = 0  # Pillow's code for 4:4:4 (no chroma subsampling)
LOSSLESS_QUALITY = 100  # --quality 100: lossless where the codec has a lossless mode (HEIF, JPEG XL)
# The depth a 16-bit image is written at in HEIF. libheif's x265 takes 12 too, but 10 is the Main 10
# profile phones write and every HEIF viewer decodes; 12 needs the range extensions few do.
HEIF_DEEP_BITS = 10
HEIF_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}  # pillow-heif's raw modes by channel count
HEIF_LOSSLESS = {"quality": -1, "chroma": 444, "matrix_coefficients": 0}  # x265 lossless, RGB kept as RGB

ENCODE_ERRORS = (OSError, ValueError, TypeError, KeyError, struct.error, cv2.error)


def write_image(image: DecodedImage, path: str | Path, format: str | None = None,
                quality: int | None = None, png_compression: int | None = None,
                group: DurableGroup | None = None) -> Future | None:
    """Encode and write atomically; raise ImageWriteError naming the path. With a group (atomic.py)
    the file is renamed into place once the group has made it durable: the future says when."""
    target = Path(path)
    try:
        fmt = output_format(format or target.suffix)
        if os.path.isdir(target):  # before encoding, which can take long
            raise ImageWriteError(write_error_message(IsADirectoryError(errno.EISDIR, "")))
        data = encode_image(image, fmt, quality, png_compression)
    except ImageWriteError as e:
        raise ImageWriteError(e.message, path=printable_path(target)) from e
    return write_atomically(target, data, group)


def encode_image(image: DecodedImage, format: str, quality: int | None = None,
                 png_compression: int | None = None) -> bytes:
    """Encode to bytes in `format` ('png', 'jpg', ...); ImageWriteError if impossible.
    `png_compression` is PNG's zlib level 0-9 (None = the measured default: `_default_png`, else
    level 1 run-length)."""
    fmt = output_format(format)
    if quality is not None and not 1 <= quality <= 100:
        raise ImageWriteError(f"quality must be 1..100, not {quality}")
    if fmt == "GIF":  # a palette of at most 256 colours: the animation writer's rules for one frame
        from upscale_cli.images.animation import encode_gif  # it imports this module

        return encode_gif(image)
    level = (DEFAULT_PNG_COMPRESSION, DEFAULT_PNG_STRATEGY) if png_compression is None else (png_compression, None)
    if level[0] not in PNG_COMPRESSION_LEVELS:
        raise ImageWriteError(f"PNG compression must be 0..9, not {png_compression}")
    colour, alpha = _output_planes(image, fmt)
    sixteen = image.bit_depth == 16 and fmt in SIXTEEN_BIT_FORMATS
    if fmt == "JXL" and (colour.shape[2] == 3 or alpha is not None):
        sixteen = False  # pillow-jxl-plugin writes 16 bits for grey without alpha only
    try:
        if fmt == "HEIF":
            return _encode_heif(colour, alpha, image, quality, sixteen)
        if sixteen and (colour.shape[2] == 3 or alpha is not None):
            return _encode_with_opencv(colour, alpha, fmt, image, level)
        default_png = fmt == "PNG" and png_compression is None and not sixteen
        if default_png and image.palette is None:
            return _default_png(quantise_planes(colour, alpha, sixteen=False), image)  # no Pillow copies
        pil = _to_pillow(colour, alpha, sixteen)
        if image.palette is not None and fmt in PALETTE_FORMATS and not sixteen:
            pil = _as_palette(pil, image.palette) or pil
        if default_png and pil.mode in ("L", "LA", "RGB", "RGBA"):
            return _default_png(np.asarray(pil), image)
        if fmt == "JXL" and image.icc_profile:
            pil = _in_srgb(pil, image.icc_profile)
        buffer = io.BytesIO()
        pil.save(buffer, fmt, **_save_options(image, fmt, quality, level, grey=pil.mode in ("L", "I;16")))
        return buffer.getvalue()
    except ENCODE_ERRORS as e:
        raise ImageWriteError(f"cannot encode as {fmt}: {e}") from e


def _output_planes(image: DecodedImage, fmt: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W, C) and (H, W, 1) float32 arrays; alpha composited over white where
    the format has no alpha (white is what most viewers show behind a page)."""
    colour = to_planes(image.pixels)
    if colour.shape[2] not in (1, 3):
        raise ImageWriteError(f"cannot write an image with {colour.shape[2]} channels (1 or 3 expected)")
    alpha = None if image.alpha is None else to_planes(image.alpha)
    if alpha is not None and alpha.shape[:2] != colour.shape[:2]:
        raise ImageWriteError(f"alpha is {alpha.shape[1]}x{alpha.shape[0]} but the image is "
                              f"{colour.shape[1]}x{colour.shape[0]}")
    if alpha is not None and fmt not in ALPHA_FORMATS:
        colour, alpha = colour * alpha + (1.0 - alpha), None
    return colour, alpha


def _to_pillow(colour: np.ndarray, alpha: np.ndarray | None, sixteen: bool) -> Image.Image:
    """L, LA, RGB, RGBA (8-bit) or I;16 (16-bit grey without alpha)."""
    array = quantise_planes(colour, alpha, sixteen)
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


def _save_options(image: DecodedImage, fmt: str, quality: int | None, png_level: tuple[int, int | None],
                  grey: bool = False) -> dict:
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
    if fmt == "AVIF" and options["quality"] >= FULL_CHROMA_QUALITY and not grey:
        options["subsampling"] = "4:4:4"  # as for JPEG (grey is written as monochrome, 4:0:0)
    if fmt == "JXL" and options["quality"] >= LOSSLESS_QUALITY:
        options["lossless"] = True
    if fmt in METADATA_FORMATS:
        if image.icc_profile:
            options["icc_profile"] = image.icc_profile
        exif = _exif_for_output(image.exif)
        if exif is not None:
            options["exif"] = exif.tobytes() if fmt == "JXL" else exif  # the JXL plugin takes bytes only
    return options


def _encode_heif(colour: np.ndarray, alpha: np.ndarray | None, image: DecodedImage, quality: int | None,
                 sixteen: bool) -> bytes:
    """HEIF through pillow-heif itself, not its Pillow plugin: only that takes more than 8 bits.
    A 16-bit image is written at HEIF_DEEP_BITS (rounded, not cut); quality 100 is x265 lossless."""
    import pillow_heif

    array = quantise_planes(colour, alpha, sixteen)
    mode = HEIF_MODES[array.shape[2]]
    if sixteen:
        peak, full = 2**HEIF_DEEP_BITS - 1, int(U16_MAX)
        array = ((array.astype(np.uint32) * peak + full // 2) // full).astype("<u2")
        mode += f";{HEIF_DEEP_BITS}"
    level = DEFAULT_QUALITY if quality is None else quality
    options: dict = HEIF_LOSSLESS.copy() if level >= LOSSLESS_QUALITY else {"quality": level}
    if sixteen:
        options["bit_depth"] = HEIF_DEEP_BITS
    if image.icc_profile:
        options["icc_profile"] = image.icc_profile
    exif = _exif_for_output(image.exif)
    if exif is not None:
        options["exif"] = exif.tobytes()
    height, width = array.shape[:2]
    buffer = io.BytesIO()
    try:
        pillow_heif.from_bytes(mode, (width, height), np.ascontiguousarray(array).tobytes()).save(buffer, **options)
    except RuntimeError as e:  # libheif's errors (an encoder that refuses a size, say)
        raise ImageWriteError(f"cannot encode as HEIF: {e}") from e
    return buffer.getvalue()


def _in_srgb(pil: Image.Image, icc: bytes) -> Image.Image:
    """The image converted from its ICC profile to sRGB (for JPEG XL, whose encoder here cannot embed
    a profile but declares sRGB); alpha is kept as it is. A profile littlecms cannot apply (broken,
    or not for this kind of image), and 16-bit grey, which it cannot take, are left as they are."""
    colour_mode = {"RGB": "RGB", "RGBA": "RGB", "L": "L", "LA": "L"}.get(pil.mode)
    if colour_mode is None:
        return pil
    colour = pil.convert(colour_mode)
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(colour, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        return pil
    if colour_mode == "L":
        converted = converted.convert("L")  # a grey profile's neutral greys stay neutral in sRGB
    if "A" in pil.mode:
        converted = converted.convert(pil.mode)
        converted.putalpha(pil.getchannel("A"))
    return converted


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


PNG_FILTER_UP = 2  # a row minus the row above (the first row: minus zeros)
PNG_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> IHDR colour type: grey, grey+alpha, RGB, RGBA
PNG_IDAT_BYTES = 1 << 20  # the compressed stream is cut into IDAT chunks of at most this many bytes


def _default_png(array: np.ndarray, image: DecodedImage) -> bytes:
    """(H, W) or (H, W, 1|2|3|4) uint8 grey, grey+alpha, RGB or RGBA -> PNG bytes at the default
    setting: the Up filter on every row (one vectorised subtraction) and libdeflate at level 1 (the
    `deflate` package, which lets other threads run meanwhile). On 1024x1024 upscaled photos: 0.46x
    the time of zlib level 1 with Paeth rows (OpenCV, the default before) for files 4% smaller, the
    size of Pillow's level 6; over other upscales 0.99-1.11x the size of Pillow's per-row choice at
    level 1 (docs/BENCHMARKS.md#png-encoding). ICC and EXIF go in as with 16-bit PNGs."""
    header, stream = png_image_data(array)
    exif = _exif_for_output(image.exif)
    parts = [PNG_SIGNATURE, png_chunk(b"IHDR", header),
             metadata_chunks(image.icc_profile, exif.tobytes() if exif else None)]
    parts += [png_chunk(b"IDAT", piece) for piece in png_data_pieces(stream)]
    parts.append(png_chunk(b"IEND", b""))
    return b"".join(parts)


def png_image_data(array: np.ndarray) -> tuple[bytes, bytes]:
    """(IHDR body, zlib stream of the Up-filtered rows) for (H, W) or (H, W, 1|2|3|4) uint8 pixels:
    what a PNG, or one frame of an APNG, holds before it is cut into chunks (`png_data_pieces`)."""
    if array.ndim == 2:
        array = array[..., None]
    height, width, channels = array.shape
    rows = array.reshape(height, width * channels)
    filtered = np.empty((height, width * channels + 1), dtype=np.uint8)
    filtered[:, 0] = PNG_FILTER_UP
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    header = struct.pack(">IIBBBBB", width, height, 8, PNG_COLOUR_TYPES[channels], 0, 0, 0)
    return header, _zlib_level1(filtered)


def png_data_pieces(stream: bytes) -> list[memoryview]:
    """A zlib stream cut into the bodies of IDAT (or fdAT) chunks of at most PNG_IDAT_BYTES each."""
    view = memoryview(stream)
    return [view[at: at + PNG_IDAT_BYTES] for at in range(0, len(stream), PNG_IDAT_BYTES)]


def _zlib_level1(data: np.ndarray) -> bytes:
    """A zlib stream of `data` at level 1: libdeflate where the `deflate` package is installed (a
    dependency, with wheels for Linux, macOS and Windows), else Python's zlib (2-3x slower, and
    7% larger files after the Up filter)."""
    try:
        import deflate
    except ImportError:
        return zlib.compress(data, DEFAULT_PNG_COMPRESSION)
    return deflate.zlib_compress(data, DEFAULT_PNG_COMPRESSION)


def _encode_with_opencv(colour: np.ndarray, alpha: np.ndarray | None, fmt: str,
                        image: DecodedImage, png_level: tuple[int, int | None]) -> bytes:
    """16-bit RGB(A) PNG/TIFF, which Pillow cannot write."""
    if colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)  # 16-bit grey+alpha -> RGBA, see module doc
    array = quantise_planes(colour, alpha, sixteen=True)
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
    return png[:PNG_IHDR_END] + metadata_chunks(icc, exif) + png[PNG_IHDR_END:]


def metadata_chunks(icc: bytes | None, exif: bytes | None) -> bytes:
    """The iCCP and eXIf chunks for an ICC profile and EXIF bytes (each when given)."""
    chunks = b""
    if icc:
        chunks += png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc))
    if exif:
        chunks += png_chunk(b"eXIf", exif.removeprefix(b"Exif\x00\x00"))
    return chunks
