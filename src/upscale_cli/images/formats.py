"""The one format table: which formats are read and written, their suffixes, what each can hold
(alpha, 16 bits, ICC/EXIF, a palette), and the file-layout facts reading and writing share
(signatures, PNG header offsets and chunks, EXIF tags). Every other module asks here; nothing
here imports Pillow, OpenCV or torch, so a folder can be listed without loading them.
"""
from __future__ import annotations

import struct
import zlib
from typing import Literal, get_args

from upscale_cli.errors import ImageWriteError

DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own default; --max-pixels overrides it

# Formats we read (JPEG includes multi-picture MPO); others (EPS would start
# Ghostscript) are refused as not images.
READ_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF")
# --format's words (any case) and the Pillow format each writes
FormatName = Literal["png", "jpg", "jpeg", "webp", "tif", "tiff", "bmp"]
FORMAT_NAMES: tuple[FormatName, ...] = get_args(FormatName)
OUTPUT_FORMATS: dict[FormatName, str] = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP",
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
# File signatures: a file that starts like an image but will not open is corrupt,
# not "not an image".
SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM",
              b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # TIFF, BigTIFF
SNIFF_BYTES = 16  # read from a pipe or device before deciding it could be an image
# Formats that can hold several images; we read the first and say so.
MULTI_IMAGE_KINDS = {"TIFF": ("multi-page TIFF", "page"), "GIF": ("animated GIF", "frame"),
                     "PNG": ("animated PNG", "frame"), "WEBP": ("animated WebP", "frame")}

ORIENTATION_TAG = 0x0112  # EXIF orientation: applied on read, written as 1

PNG_IHDR_END = 33  # 8-byte signature + 4 length + 4 type + 13 data + 4 CRC
PNG_BIT_DEPTH_OFFSET = 24
PNG_COLOUR_TYPE_OFFSET = 25
PNG_GREY_ALPHA = 4

# Exceptions Pillow and its codecs raise for broken data.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error,
                 zlib.error, IndexError, KeyError, TypeError)


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


def png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)
