"""Decoding: a file (or bytes from stdin) -> a DecodedImage.

The bytes are sniffed, the header checked against --max-pixels before anything is decoded, then
Pillow decodes them, or OpenCV for 16-bit colour PNG/TIFF (Pillow would cut those to 8 bits),
or libheif itself for HEIF deeper than 8 bits (pillow-heif's Pillow plugin cuts those to 8).
HEIF, AVIF and JPEG XL need a codec Pillow may lack: codecs.py loads it when bytes start like one.
EXIF orientation is applied here, ICC and EXIF are kept for the write, CMYK goes to RGB through
its profile, a palette image keeps its palette, only the first page or frame is read (with a
note), and a JPEG's quality is estimated from its tables.

Streams (stdin, and pipes or devices given by path) have no size to check beforehand: the first
bytes must look like an image, and they are read in chunks up to MAX_STREAM_BYTES
(UPSCALE_MAX_STREAM_BYTES changes it), so an endless or huge stream ends in one line.
"""
from __future__ import annotations

import functools
import io
import os
import stat
import struct
import threading
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

import cv2
import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from upscale_cli.env import env_whole_number
from upscale_cli.errors import ImageReadError, ImageTooLargeError, printable_path
from upscale_cli.images import DecodedImage, codecs
from upscale_cli.images.arrays import U8_MAX, U16_MAX, to_nchw
from upscale_cli.images.formats import (DECODE_ERRORS, DEFAULT_MAX_PIXELS, MULTI_IMAGE_KINDS, ORIENTATION_TAG,
                                        PNG_BIT_DEPTH_OFFSET, PNG_COLOUR_TYPE_OFFSET, PNG_GREY_ALPHA, SNIFF_BYTES,
                                        PNG_SIGNATURE, png_chunk, starts_like_image)

STDIN_LABEL = "<stdin>"  # the name used in messages for images given as bytes
PNG_COLOUR_TYPES_FOR_OPENCV = {2, 4, 6}  # RGB, grey+alpha, RGBA at 16 bits
EXIF_IFD_TAG = 0x8769
GPS_IFD_TAG = 0x8825
# A TIFF's "EXIF" is its whole tag directory (strip offsets, sizes...); only the
# descriptive tags make sense on another file.
TIFF_KEPT_TAGS = {270, 271, 272, 305, 306, 315, 33432}
# A stream's size is unknown until its end and the decoders need all of it, so it is held in memory,
# up to this many bytes: a refused stream costs at most this on top of the process (torch alone is
# ~0.9 GB resident here; garbage after a PNG signature, cut at 256 MiB, peaked at 1.26 GB with the
# default model, cut at 384 MiB at 1.39 GB). 256 MiB holds typical JPEG photos (under 1.5 bytes a
# pixel) up to the --max-pixels default, PNG photos up to roughly 100 MP, uncompressed 8-bit RGB up
# to 89 MP; an image that big needs several GB to upscale anyway. Bigger ones: give a file (its
# size is known, so it has no cap) or set the variable below.
MAX_STREAM_BYTES = 256 * 2**20
STREAM_LIMIT_ENV = "UPSCALE_MAX_STREAM_BYTES"  # a whole number of bytes; 0 = no limit
STREAM_CHUNK_BYTES = 2**20  # one read of a stream
# A regular file is read whole before it is parsed, so its size is checked first: no image within
# --max-pixels needs more than this many bytes a pixel (16-bit RGBA stored uncompressed, the largest
# form we read) plus this much metadata (ICC, EXIF, XMP, thumbnails). At the default --max-pixels
# that is about 1.5 GB; a bigger file (junk named .png in a downloaded folder) fails alone, unread,
# instead of taking the machine's memory and the rest of the batch with it. --max-pixels 0 lifts it.
MAX_FILE_BYTES_PER_PIXEL = 8
FILE_METADATA_BYTES = 64 * 2**20


def read_image(source: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode a file (or bytes) into a DecodedImage; raise ImageReadError naming it."""
    return decode_image(*read_bytes(source, max_pixels), max_pixels)


def read_bytes(source: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, bytes]:
    """(the name messages use, the bytes) of a file, or of bytes given (stdin), read as read_image
    reads them: bounded by what an image within `max_pixels` can take."""
    return _read_source(source, max_file_bytes(max_pixels))


def decode_image(label: str, data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode a file's bytes (read_bytes) into a DecodedImage; raise ImageReadError naming `label`."""
    with _pillow_pixel_limit_off():
        im = _open(data, label, max_pixels)
        _check_pixel_limit(im.size, max_pixels, label)
        notes = _unread_pages_note(im)
        if _needs_opencv(im, data):
            image = _decode_with_opencv(im, data, label)
        else:
            image = _decode_with_pillow(im, label)
    return image.replace(notes=notes) if notes else image


def max_file_bytes(max_pixels: int) -> int | None:
    """The largest regular file that can hold an image within --max-pixels; None = no limit."""
    return max_pixels * MAX_FILE_BYTES_PER_PIXEL + FILE_METADATA_BYTES if max_pixels else None


def _read_source(source: str | Path | bytes, max_bytes: int | None = None) -> tuple[str, bytes]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        label, data = STDIN_LABEL, bytes(source)
    else:
        label = printable_path(source)  # a newline or escape in a name must not break the message
        try:
            data = _read_file(Path(source), label, max_bytes)
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


def _read_file(path: Path, label: str, max_bytes: int | None = None) -> bytes:
    with open(path, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            return read_stream(file, label)
        if max_bytes is not None and info.st_size > max_bytes:
            raise ImageTooLargeError(
                f"{info.st_size:,} bytes is more than an image within --max-pixels can take ({max_bytes:,} bytes: "
                f"{MAX_FILE_BYTES_PER_PIXEL} a pixel plus {FILE_METADATA_BYTES // 2**20} MiB of metadata); "
                "it was not read (raise --max-pixels, or 0 = no limit)", path=label)
        return file.read()


def read_stream(stream: BinaryIO | None, label: str = STDIN_LABEL) -> bytes:
    """All of a stream (stdin, a pipe, a device; None: a closed stdin), read in chunks:
    ImageReadError as soon as its first bytes do not start an image (/dev/zero, text), it passes
    stream_byte_limit(), or a read fails."""
    limit = stream_byte_limit()
    if stream is None:
        raise ImageReadError("nothing to read: stdin is closed", path=label)
    try:
        return _read_limited(stream, limit, label)
    except OSError as e:
        raise ImageReadError(f"cannot read: {e.strerror or e}", path=label) from e


def _read_limited(stream: BinaryIO, limit: int, label: str) -> bytes:
    head = _read_up_to(stream, SNIFF_BYTES)
    if head and not starts_like_image(head):
        raise ImageReadError("not an image (unrecognised format)", path=label)
    buffer = io.BytesIO()  # grows in place (realloc), and getvalue() hands over its bytes uncopied
    chunk = head
    while chunk:
        buffer.write(chunk)
        if limit and buffer.tell() > limit:
            raise ImageReadError(_over_stream_limit(limit), path=label)
        # One byte past the limit at most: enough to know the stream goes on.
        chunk = stream.read(min(STREAM_CHUNK_BYTES, limit + 1 - buffer.tell()) if limit else STREAM_CHUNK_BYTES)
    return buffer.getvalue()


def _read_up_to(stream: BinaryIO, size: int) -> bytes:
    """`size` bytes, fewer only at the end (an unbuffered pipe may hand over less at a time)."""
    data = b""
    while len(data) < size and (chunk := stream.read(size - len(data))):
        data += chunk
    return data


def stream_byte_limit() -> int:
    """MAX_STREAM_BYTES, or UPSCALE_MAX_STREAM_BYTES where set (0: no limit); UsageError naming it."""
    return env_whole_number(STREAM_LIMIT_ENV, MAX_STREAM_BYTES, "of bytes (0 = no limit)")


def _over_stream_limit(limit: int) -> str:
    size = f"{limit // 2**20} MiB ({limit:,} bytes)" if limit % 2**20 == 0 else f"{limit:,} bytes"
    return (f"more than {size} without reaching the end: stdin, pipes and devices are read up to that "
            f"limit ({STREAM_LIMIT_ENV}=BYTES raises it, 0 = no limit)")


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


def _open(data: bytes, label: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Parse the header only (Pillow decodes lazily; pillow-jxl-plugin does not, so a JPEG XL's
    size is read from its header and checked first)."""
    formats = codecs.formats_to_open(data, label)
    jxl_size = jxl_header_size(data)
    if jxl_size is not None:
        _check_pixel_limit(jxl_size, max_pixels, label)
    try:
        return Image.open(io.BytesIO(data), formats=formats)
    except UnidentifiedImageError:
        codecs.check_unopened(data, label)
        if starts_like_image(data):
            raise ImageReadError("truncated or corrupt image: unreadable header", path=label) from None
        raise ImageReadError("not an image (unrecognised format)", path=label) from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"image too large: {e}", path=label) from e
    except DECODE_ERRORS as e:
        raise _corrupt(e, label) from e


JXL_CODESTREAM = b"\xff\x0a"
JXL_SIZE_BITS = (9, 13, 18, 30)  # a SizeHeader dimension's width, by its 2-bit selector
# A SizeHeader's ratio codes 1-7: the width as a fraction of the height (0: the width is coded too).
JXL_RATIOS = ((1, 1), (12, 10), (4, 3), (3, 2), (16, 9), (5, 4), (2, 1))


def jxl_header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a JPEG XL file from its SizeHeader (ISO/IEC 18181-1), right after the
    codestream's FF 0A, which the ISO container holds in a jxlc box or the first jxlp box; None
    when `data` is not JPEG XL. Orientations that swap the sides keep the pixel count."""
    stream = _jxl_codestream(data)
    if stream is None:
        return None
    # At most 68 bits; read least significant bit first. Bits past a cut-short end read as 0, and the
    # decoder then refuses the file.
    bits = int.from_bytes(stream[2:2 + 12], "little")

    def take(count: int) -> int:
        nonlocal bits
        value, bits = bits & ((1 << count) - 1), bits >> count
        return value

    def dimension(small: bool) -> int:
        return (take(5) + 1) * 8 if small else take(JXL_SIZE_BITS[take(2)]) + 1

    small = bool(take(1))
    height = dimension(small)
    ratio = take(3)
    if ratio:
        numerator, denominator = JXL_RATIOS[ratio - 1]
        return height * numerator // denominator, height
    return dimension(small), height


def _jxl_codestream(data: bytes) -> bytes | None:
    """The start of a JPEG XL codestream: `data` itself, or the payload of its container's box."""
    if data.startswith(JXL_CODESTREAM):
        return data
    if not data.startswith(b"\x00\x00\x00\x0cJXL \r\n\x87\n"):
        return None
    at = 0
    while at + 8 <= len(data):
        size, kind = int.from_bytes(data[at:at + 4], "big"), data[at + 4:at + 8]
        header = 8
        if size == 1:  # a 64-bit size follows the type
            size, header = int.from_bytes(data[at + 8:at + 16], "big"), 16
        elif size == 0:  # the last box: to the end of the file
            size = len(data) - at
        if kind == b"jxlc":
            return data[at + header:at + size]
        if kind == b"jxlp":
            return data[at + header + 4:at + size]  # after the part's 4-byte index
        if size < header:
            return None  # a box shorter than its own header: corrupt
        at += size
    return None


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
    detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if isinstance(error, RuntimeError):  # a codec library's own error, worded for its developers
        detail = "the decoder refused it"
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
    if im.format == "HEIF" and int(im.info.get("bit_depth", 8)) > 8:
        return _decode_deep_heif(im, label)
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
    return DecodedImage(to_nchw(colour), None if alpha is None else to_nchw(alpha),
                        bit_depth, icc, exif, _format_name(im), estimate_jpeg_quality(im),
                        palette=_palette_rgba(upright))


def _decode_deep_heif(im: Image.Image, label: str) -> DecodedImage:
    """A 10- or 12-bit HEIF at full depth, as bit_depth 16: pillow-heif's Pillow plugin would give 8
    bits, so libheif decodes the primary image again, unconverted. It applies the file's rotation
    and mirroring itself, and the plugin has set the EXIF orientation to 1 to match."""
    import pillow_heif

    try:
        heif = pillow_heif.open_heif(io.BytesIO(im.fp.getvalue()), convert_hdr_to_8bit=False, hdr_to_16bit=False)
        frame = heif[heif.primary_index]
        array = np.asarray(frame)
    except (*DECODE_ERRORS, RuntimeError) as e:
        raise _corrupt(e, label) from e
    width, height = frame.size
    array = array.reshape(array.shape[0], -1, len(frame.mode.split(";")[0]))[:height, :width]
    planes = array.astype(np.float32) / float(2 ** int(frame.info["bit_depth"]) - 1)
    alpha = planes[..., -1:] if frame.has_alpha else None
    colour = planes[..., :-1] if frame.has_alpha else planes
    exif, _ = _read_exif(im)
    return DecodedImage(to_nchw(colour), None if alpha is None else to_nchw(alpha), 16,
                        im.info.get("icc_profile"), exif, _format_name(im))


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
    if mode == "F" and im.format == "JXL":  # libjxl's float grey, 0..1 (a float TIFF's range is anyone's)
        return np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0)[..., None], None, 16
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
    return DecodedImage(to_nchw(colour), None if alpha is None else to_nchw(alpha),
                        16, im.info.get("icc_profile"), exif, _format_name(im))


@functools.lru_cache(maxsize=None)
def _opencv_swaps_grey_alpha_bytes() -> bool:
    """OpenCV 5.0 returns 16-bit grey+alpha PNG samples byte-swapped (and Pillow
    garbles them), so decode a 1x1 probe (grey 0x0102) once and see."""
    header = struct.pack(">IIBBBBB", 1, 1, 16, PNG_GREY_ALPHA, 0, 0, 0)
    scanline = b"\x00" + struct.pack(">HH", 0x0102, 0xFFFF)  # filter byte, grey, alpha
    probe = (PNG_SIGNATURE + png_chunk(b"IHDR", header)
             + png_chunk(b"IDAT", zlib.compress(scanline)) + png_chunk(b"IEND", b""))
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


# Formats whose decoder applies the orientation the file itself declares, where an EXIF orientation
# is only a copy (JPEG XL: the codestream's, which libjxl applies, is the one that counts; the spec
# says to ignore the EXIF one). HEIF's and AVIF's rotations reach us as the EXIF orientation already:
# pillow-heif applies them and sets it to 1, Pillow's AVIF plugin writes them into it.
DECODER_ORIENTED = frozenset({"JXL"})


def _read_exif(im: Image.Image) -> tuple[bytes | None, int]:
    """(EXIF to carry along, orientation to apply); broken EXIF must not cost
    the pixels, so it reads as none."""
    try:
        exif = im.getexif()
        if not len(exif):  # most PNGs: nothing to carry, nothing to turn
            return None, 1
        orientation = int(exif.get(ORIENTATION_TAG, 1))
        if im.format in DECODER_ORIENTED:
            orientation = 1
        return _exif_bytes(im, exif), orientation if 1 <= orientation <= 8 else 1
    except DECODE_ERRORS:
        return None, 1


def _exif_bytes(im: Image.Image, exif: Image.Exif) -> bytes | None:
    """The EXIF to carry along (`exif`, im's own), with orientation 1 (the pixels get rotated)."""
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
