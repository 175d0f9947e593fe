"""The one home of format knowledge: one ImageFormat record per format (FORMATS) says which are read
and written, their --format words and suffixes, what a written file can hold (alpha, 16 bits, ICC/EXIF,
a palette), how a file starts and whether it holds several images; every lookup the program uses is
derived from those records (derive_tables), so a new format is one record plus its --format words in
FormatName. Also here: the file-layout facts reading and writing share (PNG header offsets and chunks,
EXIF tags). Nothing here imports Pillow, OpenCV or torch, so a folder can be listed without loading them.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Literal, NamedTuple, cast, get_args

from upscale_cli.errors import ImageWriteError

DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own default; --max-pixels overrides it
SNIFF_BYTES = 16  # read from a pipe or device before deciding it could be an image


@dataclass(frozen=True)
class Signature:
    """How a file of the format starts: `prefix` at byte 0, and `then` (or one of several) at byte
    `then_at` too where the prefix is a container's (RIFF holds WebP, but also WAVE and AVI; an ISO
    media file, HEIF or AVIF, has no fixed first bytes but says `ftyp` and its brand at byte 4). A
    file that starts like an image but will not open is reported corrupt, not "not an image"."""

    prefix: bytes
    then: bytes | tuple[bytes, ...] = b""
    then_at: int = 0

    @property
    def alternatives(self) -> tuple[bytes, ...]:
        return self.then if isinstance(self.then, tuple) else (self.then,)

    @property
    def end(self) -> int:
        """Bytes needed to tell: every signature must fit in SNIFF_BYTES."""
        return max(len(self.prefix), self.then_at + max(len(t) for t in self.alternatives))

    def matches(self, data: bytes) -> bool:
        return data.startswith(self.prefix) and data.startswith(self.alternatives, self.then_at)


def iso_media(*brands: bytes) -> Signature:
    """An ISO base media file (HEIF, AVIF) whose `ftyp` box, first in the file, names one of `brands`
    as its major brand. The box's size (bytes 0-3) varies, so the signature starts at byte 4."""
    return Signature(b"", then=tuple(b"ftyp" + brand for brand in brands), then_at=4)


class MultiImage(NamedTuple):
    """A format that can hold several images: we read the first and say how many there were."""

    kind: str  # "multi-page TIFF"
    unit: str  # "page"


@dataclass(frozen=True)
class ImageFormat:
    """Everything the program knows about one format. Capabilities (alpha ... palette) are what a
    file we WRITE in it can hold, so a read-only format has none."""

    pillow_name: str  # Image.format, and the name Image.open(formats=...) and save() take
    names: tuple[str, ...]  # --format words (lower case); () when never written. FormatName lists them.
    suffixes: tuple[str, ...]  # file names read as this format when a folder is expanded (lower case)
    write_suffix: str | None  # the suffix a written file gets; None: read only
    signatures: tuple[Signature, ...]
    alpha: bool = False
    sixteen_bit: bool = False
    metadata: bool = False  # can hold ICC and EXIF
    lossy: bool = False  # takes --quality
    palette: bool = False  # a palette source is written back as a palette where possible
    multi_image: MultiImage | None = None
    animated: bool = False  # several frames in are written as an animation (images/animation/)

    def __post_init__(self) -> None:
        problem = _record_problem(self)
        if problem:
            raise ValueError(f"format record {self.pillow_name}: {problem}")

    @property
    def written(self) -> bool:
        return self.write_suffix is not None


def _record_problem(f: ImageFormat) -> str | None:
    """Why a record contradicts itself (a programming error, caught at import), or None."""
    if any(not s.startswith(".") or s != s.lower() for s in f.suffixes):
        return f"suffixes {f.suffixes} must be lower case and start with '.'"
    if any(n != n.lower() for n in f.names):
        return f"names {f.names} must be lower case"
    if f.written != bool(f.names):
        return "a written format needs --format words, and only a written one has them"
    if f.write_suffix is not None and f.write_suffix not in f.suffixes:
        return f"writes {f.write_suffix}, which it does not read back"
    if not f.written and (f.alpha or f.sixteen_bit or f.metadata or f.lossy or f.palette):
        return "capabilities are what a written file holds; this format is never written"
    if not f.signatures:
        return "no signature: a corrupt file could not be told from a non-image"
    if f.animated and not (f.written and f.multi_image and f.multi_image.unit == "frame"):
        return "an animation is written only in a written format that reads several frames"
    if any(not s.prefix and not all(s.alternatives) for s in f.signatures):
        return "a signature that every file matches"
    if any(s.end > SNIFF_BYTES for s in f.signatures):
        return f"a signature longer than the {SNIFF_BYTES} bytes a stream is told by"
    return None


_TIFF_SIGNATURES = (Signature(b"II*\x00"), Signature(b"MM\x00*"),
                    Signature(b"II+\x00"), Signature(b"MM\x00+"))  # TIFF, BigTIFF (either byte order)

# Every format we read, in the order --help, messages and Pillow's plugin search see them. JPEG includes
# multi-picture MPO; others (EPS would start Ghostscript) are refused as not images. GIF is written
# with up to 256 colours a frame (a source's palette kept where every colour is in it: images/animation/gif.py).
FORMATS: tuple[ImageFormat, ...] = (
    ImageFormat("PNG", names=("png",), suffixes=(".png",), write_suffix=".png",
                signatures=(Signature(b"\x89PNG"),), alpha=True, sixteen_bit=True, metadata=True, palette=True,
                multi_image=MultiImage("animated PNG", "frame"), animated=True),
    ImageFormat("JPEG", names=("jpg", "jpeg"), suffixes=(".jpg", ".jpeg"), write_suffix=".jpg",
                signatures=(Signature(b"\xff\xd8\xff"),), metadata=True, lossy=True),
    ImageFormat("WEBP", names=("webp",), suffixes=(".webp",), write_suffix=".webp",
                signatures=(Signature(b"RIFF", then=b"WEBP", then_at=8),), alpha=True, metadata=True,
                lossy=True, multi_image=MultiImage("animated WebP", "frame"), animated=True),
    ImageFormat("TIFF", names=("tif", "tiff"), suffixes=(".tif", ".tiff"), write_suffix=".tiff",
                signatures=_TIFF_SIGNATURES, alpha=True, sixteen_bit=True, metadata=True, palette=True,
                multi_image=MultiImage("multi-page TIFF", "page")),
    ImageFormat("BMP", names=("bmp",), suffixes=(".bmp",), write_suffix=".bmp",
                signatures=(Signature(b"BM"),), palette=True),
    ImageFormat("GIF", names=("gif",), suffixes=(".gif",), write_suffix=".gif",
                signatures=(Signature(b"GIF8"),), alpha=True, palette=True,
                multi_image=MultiImage("animated GIF", "frame"), animated=True),
    # The three below are read and written through codecs Pillow may lack (codecs.py loads them when
    # first needed and names the package when one is missing). HEIF's brands are HEVC stills and
    # sequences; mif1/msf1 are the generic brands either format may carry, so both records list them
    # (HEIF is tried first: its plugin turns a file it cannot open into "try the next one").
    # HEIF: a 16-bit image is written at 10 bits (HEIF_DEEP_BITS in write.py), read back as 16.
    ImageFormat("HEIF", names=("heic", "heif"), suffixes=(".heic", ".heif", ".hif"), write_suffix=".heic",
                signatures=(iso_media(b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs",
                                      b"mif1", b"msf1"),),
                alpha=True, sixteen_bit=True, metadata=True, lossy=True,
                multi_image=MultiImage("HEIF image collection", "image")),
    # AVIF: Pillow's codec (and pillow-avif-plugin's) reads and writes 8 bits a channel only. Its
    # sequences are read at their first image (with a note): no animation reader or writer does AVIF yet.
    ImageFormat("AVIF", names=("avif",), suffixes=(".avif",), write_suffix=".avif",
                signatures=(iso_media(b"avif", b"avis", b"mif1", b"msf1"),), alpha=True, metadata=True,
                lossy=True, multi_image=MultiImage("AVIF sequence", "image")),
    # JPEG XL, a bare codestream or in its ISO container. pillow-jxl-plugin writes 16 bits for grey
    # without alpha only (colour at 8), and cannot embed an ICC profile: write.py converts the pixels
    # to the sRGB the file declares instead.
    ImageFormat("JXL", names=("jxl",), suffixes=(".jxl",), write_suffix=".jxl",
                signatures=(Signature(b"\xff\x0a"), Signature(b"\x00\x00\x00\x0cJXL \r\n\x87\n")),
                alpha=True, sixteen_bit=True, metadata=True, lossy=True),
)
FALLBACK_FORMAT = "PNG"  # for inputs whose own format is not written (stdin of unknown kind)


@dataclass(frozen=True)
class FormatTables:
    """The lookups the rest of the program uses, all read off the records (derive_tables)."""

    read_formats: tuple[str, ...]  # for Image.open(formats=...)
    format_names: tuple[str, ...]
    output_formats: dict[str, str]  # --format word -> Pillow name
    read_suffixes: tuple[str, ...]
    write_suffix: dict[str, str]  # Pillow name -> suffix
    alpha: frozenset[str]
    sixteen_bit: frozenset[str]
    metadata: frozenset[str]
    lossy: frozenset[str]
    palette: frozenset[str]
    signatures: tuple[Signature, ...]
    multi_image_kinds: dict[str, MultiImage]

    def starts_like_image(self, data: bytes) -> bool:
        return any(s.matches(data) for s in self.signatures)


def derive_tables(records: tuple[ImageFormat, ...]) -> FormatTables:
    """Every table, from `records`; ValueError when two records claim one word, suffix or name."""
    written = [f for f in records if f.written]
    for what, values in (("format", [f.pillow_name for f in records]),
                         ("--format word", [n for f in records for n in f.names]),
                         ("suffix", [s for f in records for s in f.suffixes])):
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise ValueError(f"{what} {', '.join(repeated)} claimed by two format records")

    def having(flag: str) -> frozenset[str]:
        return frozenset(f.pillow_name for f in records if getattr(f, flag))

    return FormatTables(
        read_formats=tuple(f.pillow_name for f in records),
        format_names=tuple(n for f in written for n in f.names),
        output_formats={n: f.pillow_name for f in written for n in f.names},
        read_suffixes=tuple(s for f in records for s in f.suffixes),
        write_suffix={f.pillow_name: str(f.write_suffix) for f in written},
        alpha=having("alpha"), sixteen_bit=having("sixteen_bit"), metadata=having("metadata"),
        lossy=having("lossy"), palette=having("palette"),
        signatures=tuple(s for f in records for s in f.signatures),
        multi_image_kinds={f.pillow_name: f.multi_image for f in records if f.multi_image})


TABLES = derive_tables(FORMATS)
# --format's words (any case), as the Literal Typer lists in --help and checks; a test keeps it equal
# to the records' names.
FormatName = Literal["png", "jpg", "jpeg", "webp", "tif", "tiff", "bmp", "gif", "heic", "heif", "avif", "jxl"]
FORMAT_NAMES: tuple[FormatName, ...] = get_args(FormatName)
# The tables under the names the rest of the program imports.
READ_FORMATS = TABLES.read_formats
OUTPUT_FORMATS = cast("dict[FormatName, str]", TABLES.output_formats)
READ_SUFFIXES = TABLES.read_suffixes  # a folder's other files are reported as skipped
WRITE_SUFFIX = TABLES.write_suffix
ALPHA_FORMATS = TABLES.alpha
SIXTEEN_BIT_FORMATS = TABLES.sixteen_bit
METADATA_FORMATS = TABLES.metadata
LOSSY_FORMATS = TABLES.lossy
PALETTE_FORMATS = TABLES.palette
# Signatures a file is told by from its first bytes alone (bytes.startswith takes the tuple).
SIGNATURES = tuple(s.prefix for s in TABLES.signatures if not s.then)
MULTI_IMAGE_KINDS = TABLES.multi_image_kinds


# Formats that hold an animation when written: their records read several images as frames.
ANIMATED_FORMATS = frozenset(f.pillow_name for f in FORMATS if f.animated)
APNG_CONTROL_CHUNK = b"acTL"  # before the first IDAT of an animated PNG
WEBP_ANIMATION_FLAG_AT, WEBP_ANIMATION_FLAG = 20, 0x02  # in a VP8X header's flags byte
WEBP_EXTENDED_AT, WEBP_EXTENDED = 12, b"VP8X"


def could_be_animated(data: bytes) -> bool:
    """Whether a file's bytes may hold an animation, told from its header without decoding (a still
    PNG or WebP: False, so a folder of stills pays nothing). A GIF always may: only its frames tell."""
    if data.startswith(b"GIF8"):
        return True
    if data.startswith(b"\x89PNG"):
        first_image = data.find(b"IDAT")
        return APNG_CONTROL_CHUNK in data[:first_image if first_image > 0 else len(data)]
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return (data[WEBP_EXTENDED_AT:WEBP_EXTENDED_AT + 4] == WEBP_EXTENDED
                and len(data) > WEBP_ANIMATION_FLAG_AT and bool(data[WEBP_ANIMATION_FLAG_AT] & WEBP_ANIMATION_FLAG))
    return False


def starts_like_image(data: bytes) -> bool:
    """Whether `data` begins with a signature of a format we read (a stream's first SNIFF_BYTES, say)."""
    return TABLES.starts_like_image(data)


ORIENTATION_TAG = 0x0112  # EXIF orientation: applied on read, written as 1

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IHDR_END = 33  # 8-byte signature + 4 length + 4 type + 13 data + 4 CRC
PNG_BIT_DEPTH_OFFSET = 24
PNG_COLOUR_TYPE_OFFSET = 25
PNG_GREY_ALPHA = 4

# Exceptions Pillow and its codecs raise for broken data (RuntimeError: libjxl's and libheif's own).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error,
                 zlib.error, IndexError, KeyError, TypeError, RuntimeError)


def writable_format(name: str) -> str | None:
    """'png', '.JPG', 'tiff' ... -> Pillow's format name, or None when we do not write it."""
    return OUTPUT_FORMATS.get(name.lower().lstrip("."))


def output_format(name: str) -> str:
    """'png', '.JPG', 'tiff' ... -> Pillow's format name; ImageWriteError if unknown, or when its
    codec is missing here (one line naming the package: --format heic fails before any work)."""
    key = name.lower().lstrip(".")
    if key not in OUTPUT_FORMATS:
        known = ", ".join(sorted(OUTPUT_FORMATS))
        raise ImageWriteError(f"unknown output format {name!r} (use one of: {known})")
    from upscale_cli.images.codecs import require_writer  # imports a codec only for its own format

    require_writer(OUTPUT_FORMATS[key])
    return OUTPUT_FORMATS[key]


def png_chunk(kind: bytes, body: bytes | memoryview) -> bytes:
    crc = zlib.crc32(body, zlib.crc32(kind)) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)
