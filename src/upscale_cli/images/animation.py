"""Animated GIF, PNG (APNG) and WebP: every frame read as a viewer shows it, and written back frame
by frame (frames.py's FrameSource and FrameSink).

Reading. `open_animation` returns None for a file that is not an animation of two frames or more
(the still reader, read.py, takes those). Otherwise it walks the file's structure (GIF blocks, PNG
chunks, libwebp's demuxer for WebP): the frame count is checked against --max-frames and the canvas
against --max-pixels before anything is decoded. Then every frame is decoded once, one canvas at a
time, so that a truncated or corrupt frame fails at open, in one line, before any model work, and so
that frames carry alpha only when some frame shows transparency (an opaque animation goes through
the model in batches, as RGB).

Compositing follows what browsers show. The canvas starts transparent.
- GIF: a frame draws its rectangle (clipped to the canvas) except where it uses its transparent
  index; afterwards disposal 2 clears the rectangle to transparent (browsers ignore the background
  colour), 3 restores what was there before, and 0, 1 (and the undefined 4-7) leave it.
- APNG: a frame replaces its rectangle (blend source) or is alpha-composited over it (blend over);
  afterwards dispose background clears the rectangle to transparent and dispose previous restores it
  (on the first frame, previous means background, as the specification says). An IDAT image that
  comes before the first fcTL is not part of the animation and is not shown.
- WebP: libwebp's animation decoder (Pillow's _webp module) composites as the WebP specification says
  (it is the reference implementation, and the tests check it against canvases built by hand).
Pillow's own GIF and APNG readers are not used for compositing: measured against canvases built by
hand (tests/test_animation.py), Pillow carries a GIF frame's disposal over to later frames that set
none, fills a GIF's cleared areas and uncovered canvas with the background colour (or index 0) instead
of transparency, blends APNG "over" frames by pasting with their alpha as the mask (right only where
alpha is 0 or 255), clears APNG frames to opaque black in RGB files, and shows the default image as
frame 0. So the frames' own data is decoded by Pillow (each as a small file of its own, or libwebp's
canvas) and composited here.

Writing (`AnimationSource.sink`): each converted frame is encoded as it arrives, never held at full
size: GIF frames are LZW-encoded one at a time (Pillow's GifImagePlugin.getdata), APNG frames are
PNG-encoded (write.py's fast default PNG) and their IDAT data rewritten as fdAT chunks by hand, WebP
frames go one by one into libwebp's animation encoder. What is held is the encoded output (the file
appears atomically at finish, from bytes), plus one output frame for GIF's unchanged-area cropping.
Kept: every frame's duration, the loop count, transparency (GIF: alpha below one half is the
transparent index), ICC (APNG, WebP) and EXIF (APNG, WebP; its orientation is applied to every frame
on read, as for stills, and written as 1). APNG is always lossless, WebP lossless unless --quality is
given.

GIF colours (`_GifEncoder`): when every opaque colour of a frame is in the source's palette (-m
nearest and the pixel-art scalers only copy pixels), the frame is written in that palette, each index
the same colour as in the source, with no colour table of its own. Otherwise the frame gets its own
palette: its exact colours where it has at most 256 (255 and a transparent index), else median cut
without dithering. Dithering is left out on purpose: error diffusion spreads each pixel's error to its
neighbours, so the dot pattern depends on the whole frame and changes from frame to frame even where
the picture stands still, which shimmers when played. A palette of each frame's own gives every scene
its best colours; in an animation without transparency only the rectangle that changed since the
previous frame is written, so still areas keep the exact pixels already shown.
"""
from __future__ import annotations

import io
import math
import struct
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import GifImagePlugin, Image

from upscale_cli.errors import ImageReadError, ImageWriteError, printable_path
from upscale_cli.frames import DEFAULT_MAX_FRAMES, FRAMES_LIMIT_OPTION, Frame, MediaSummary
from upscale_cli.images import DecodedImage
from upscale_cli.images.arrays import U8_MAX, quantise, quantise_planes, to_planes, to_tensor
from upscale_cli.images.atomic import write_bytes_atomically
from upscale_cli.images.formats import ANIMATED_FORMATS, DECODE_ERRORS, ORIENTATION_TAG, png_chunk
from upscale_cli.images.read import _check_pixel_limit, _orient, _pillow_pixel_limit_off, _pillow_planes
from upscale_cli.images.write import ENCODE_ERRORS, _as_palette, _default_png, _exif_for_output

# Frames in one animation, unless --max-frames says otherwise (0 = no limit). Checked from the file's
# structure before a frame is decoded: a GIF frame can take 20 bytes, so a small file can hold a
# million frames, each costing a whole canvas to composite and a model run. 10,000 frames is over five
# minutes at 30 frames a second, longer than the animations people keep as GIF, APNG or WebP.
KINDS = {"GIF": "animated GIF", "PNG": "animated PNG", "WEBP": "animated WebP"}
STDOUT_LABEL = "<stdout>"

GIF_SIGNATURES = (b"GIF87a", b"GIF89a")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GIF_TIME_UNIT_MS = 10  # GIF delays are in hundredths of a second
GIF_MAX_DELAY = 0xFFFF  # in GIF_TIME_UNIT_MS
GIF_MAX_LOOPS = 0xFFFF
GIF_MAX_SIDE = 0xFFFF
GIF_COLOURS = 256
# GIF transparency is on or off: alpha below one half (of 255) becomes the transparent index.
GIF_ALPHA_THRESHOLD = 128
# A frame of more colours than GIF holds gets its palette by median cut on a grid sample of at most
# this many pixels, then each pixel its nearest colour. Median cut's time grows with the colours it
# sees: on a 1024x1024 photo-like frame it took 1.5 s on every pixel, 33 ms on a 16,384-pixel sample
# (this machine), for a result 0.2-0.8 dB (PSNR) worse; the nearest-colour mapping takes ~10 ms.
GIF_PALETTE_SAMPLE = 16_384
GIF_DISPOSE_NONE, GIF_DISPOSE_BACKGROUND, GIF_DISPOSE_PREVIOUS = 1, 2, 3
APNG_DISPOSE_NONE, APNG_DISPOSE_BACKGROUND, APNG_DISPOSE_PREVIOUS = 0, 1, 2
APNG_BLEND_SOURCE, APNG_BLEND_OVER = 0, 1
APNG_DEFAULT_DENOMINATOR = 100  # a delay denominator of 0 means hundredths (APNG specification)
APNG_MAX_DELAY_PART = 0xFFFF
# WebP: lossless frames with libwebp's fastest method. Measured on 512x512 frames (6 upscaled-looking
# frames, this machine): method 0 took 14 ms a frame, method 4 (the still default) 225 ms, for files
# 3% larger. Lossy frames (--quality) use method 4 like write.py's stills (55 ms a frame, 13% smaller
# than method 0). Keyframe spacing as libwebp's gif2webp sets it.
WEBP_LOSSLESS_METHOD, WEBP_LOSSY_METHOD = 0, 4
WEBP_LOSSLESS_EFFORT = 80  # libwebp's "quality" of a lossless frame: effort, not loss
WEBP_ALPHA_QUALITY = 100
WEBP_KEYFRAMES_LOSSLESS, WEBP_KEYFRAMES_LOSSY = (9, 17), (3, 5)
WEBP_MAX_SIDE = 16383
WEBP_VP8X_END = 30  # RIFF header, VP8X chunk header and its 10 bytes
WEBP_ANIMATION_FLAG, WEBP_ALPHA_FLAG = 0x02, 0x10  # VP8X flags (byte 20)


@dataclass(frozen=True)
class FrameTiming:
    """An animation frame's timing, as frames.Frame.timing carries it to the sink."""

    duration_ms: float  # how long the frame shows
    apng_delay: tuple[int, int] | None = None  # an APNG source's exact delay (numerator, denominator) s


class _Corrupt(Exception):
    """A broken file's structure; open_animation says it in one line, naming the file."""


# ------------------------------------------------------------------------------------------ reading


def open_animation(data: bytes, label: str, max_pixels: int, max_frames: int = DEFAULT_MAX_FRAMES) -> "AnimationSource | None":
    """The animation in `data` as a frames.FrameSource, or None when it is not one (a still image, or a
    format other than GIF, PNG and WebP). ImageReadError (one line naming `label`) when it has more
    frames than `max_frames` (0 = no limit), a canvas over `max_pixels` (0 = no limit), or a frame
    that is truncated or corrupt."""
    try:
        reader = _reader_for(data, max_frames)
        if reader is None:
            return None
        _check_pixel_limit((reader.width, reader.height), max_pixels, label)
        if reader.count < 2:
            return None
        _check_frames(reader.count, max_frames, label)
        has_alpha = _check_every_frame(reader)
    except (_Corrupt, *DECODE_ERRORS) as e:
        raise _read_error(e, KINDS[reader_format(data)], label) from None
    return AnimationSource(reader, label, has_alpha)


def _read_error(error: BaseException, kind: str, label: str) -> ImageReadError:
    detail = str(error).strip() or type(error).__name__
    return ImageReadError(f"truncated or corrupt {kind}: {detail}", path=label)


def reader_format(data: bytes) -> str:
    """'GIF', 'PNG', 'WEBP' by the first bytes, or '' for anything else."""
    if data.startswith(GIF_SIGNATURES):
        return "GIF"
    if data.startswith(PNG_SIGNATURE):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return ""


def _reader_for(data: bytes, max_frames: int) -> "_GifReader | _ApngReader | _WebpReader | None":
    """The file's reader, its structure walked; frames past `max_frames` are counted, not kept."""
    fmt = reader_format(data)
    if fmt == "GIF":
        return _GifReader.parse(data, max_frames)
    if fmt == "PNG":
        return _ApngReader.parse(data, max_frames)
    if fmt == "WEBP":
        return _WebpReader.parse(data)
    return None


def _check_frames(count: int, max_frames: int, label: str) -> None:
    if max_frames and count > max_frames:
        raise ImageReadError(f"{count:,} frames is over {FRAMES_LIMIT_OPTION} {max_frames:,} "
                             f"(raise it, or 0 = no limit)", path=label)


def _check_every_frame(reader) -> bool:
    """Decode and composite every frame once (a broken one raises); whether any shows transparency."""
    transparent = False
    for canvas, _ in reader.canvases():
        transparent = transparent or bool((canvas[..., 3] < 255).any())
    return transparent


class AnimationSource:
    """An opened animation (frames.FrameSource): its frames, composited, one at a time, and the sink
    that writes the converted ones. `loop` counts plays (0 = forever, 1 = once), whatever the format
    stores; `palette` is the source's colours as RGBA rows (DecodedImage.palette), None without one."""

    def __init__(self, reader, label: str, has_alpha: bool) -> None:
        self._reader, self.label, self.has_alpha = reader, label, has_alpha
        self.source_format: str = reader.format
        self.kind = KINDS[reader.format]
        self.frame_count: int | None = reader.count
        self._orientation = _exif_orientation(reader.exif)  # applied to every frame, as to stills
        self.width, self.height = reader.width, reader.height
        if self._orientation >= 5:  # a quarter turn
            self.width, self.height = self.height, self.width
        self.loop: int = reader.loop
        self.background: tuple[int, int, int, int] | None = reader.background
        self.palette: bytes | None = reader.palette
        self.icc_profile: bytes | None = reader.icc_profile
        self.exif: bytes | None = reader.exif
        self.notes: tuple[str, ...] = reader.notes

    def frames(self, start: int = 0) -> Iterator[Frame]:
        """Frames from `start` on, each the whole canvas as shown; ImageReadError if one is broken."""
        if self._reader is None:
            raise ValueError("the animation is closed")
        try:
            for index, (canvas, timing) in enumerate(self._reader.canvases()):
                if index >= start:
                    yield Frame(self._image(canvas), index, timing)
        except (_Corrupt, *DECODE_ERRORS) as e:
            raise _read_error(e, self.kind, self.label) from None

    def _image(self, canvas: np.ndarray) -> DecodedImage:
        planes = _orient(canvas, self._orientation).astype(np.float32) / U8_MAX
        alpha = to_tensor(planes[..., 3:]) if self.has_alpha else None
        return DecodedImage(to_tensor(planes[..., :3]), alpha, 8, self.icc_profile, self.exif,
                            self.source_format, palette=self.palette)

    def sink(self, target: Path | None, fmt: str, quality: int | None,
             write: Callable[[bytes], None] | None = None) -> "AnimationSink":
        """The writer of the converted frames: `fmt` is 'GIF', 'PNG' (APNG) or 'WEBP'; the file appears
        at `target` on finish (or goes to `write`, stdout, when target is None)."""
        return AnimationSink(self, target, fmt, quality, write)

    def close(self) -> None:
        self._reader = None


def _exif_orientation(exif: bytes | None) -> int:
    """The EXIF orientation (1-8; 1 without EXIF, or when it is broken or out of range)."""
    if not exif:
        return 1
    try:
        parsed = Image.Exif()
        parsed.load(exif)
        orientation = int(parsed.get(ORIENTATION_TAG, 1))
    except DECODE_ERRORS:
        return 1
    return orientation if 1 <= orientation <= 8 else 1


# --------------------------------------------------------------------------------------------- GIF


@dataclass(frozen=True)
class _GifFrame:
    left: int
    top: int
    width: int
    height: int
    disposal: int
    delay: int  # hundredths of a second
    transparent: int | None
    local_table: bytes | None
    interlaced: bool
    data: tuple[int, int]  # the LZW minimum code size byte through the block terminator


class _GifReader:
    """A GIF's blocks, walked once (no pixels decoded); canvases() composites its frames."""

    format = "GIF"
    icc_profile = exif = None

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.width, self.height, flags, self._background = struct.unpack_from("<HHBB", data, 6)
        self._table, self._first_block = _gif_table(data, 13, flags)
        self._plays = 1  # no NETSCAPE extension: shown once
        self._frames: list[_GifFrame] = []
        self._keep, self._past_keep = 0, 0  # frames kept at most (0: all); frames past that, counted only
        self.notes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, data: bytes, keep: int = 0) -> "_GifReader | None":
        """The GIF's frames; None when not one frame is whole (a broken still image, which the still
        reader reports), _Corrupt when a later one is broken."""
        try:
            if len(data) < 13:
                return None
            reader = cls(data)
            if not reader.width or not reader.height:
                return None
            reader._keep = keep
        except _Corrupt:
            return None
        try:
            reader._walk(reader._first_block)
        except _Corrupt:
            if reader._frames:
                raise
            return None
        return reader

    @property
    def count(self) -> int:
        return len(self._frames) + self._past_keep

    @property
    def loop(self) -> int:
        return self._plays

    @property
    def background(self) -> tuple[int, int, int, int] | None:
        if self._table is None or 3 * self._background + 3 > len(self._table):
            return None
        return (*self._table[3 * self._background: 3 * self._background + 3], 255)

    @property
    def palette(self) -> bytes | None:
        """The global colour table as RGBA rows, at alpha 0 the transparent index most frames use
        (GIF output has one transparent index; the writer keeps this one)."""
        if self._table is None:
            return None
        rows = np.frombuffer(self._table, np.uint8).reshape(-1, 3)
        rgba = np.concatenate([rows, np.full((len(rows), 1), 255, np.uint8)], axis=1)
        used = [f.transparent for f in self._frames if f.transparent is not None and f.local_table is None]
        transparent = max(set(used), key=used.count) if used else None
        if transparent is not None and transparent < len(rgba):
            rgba[transparent, 3] = 0
        return rgba.tobytes()

    def _walk(self, pos: int) -> None:
        data, control = self._data, None
        while pos < len(data):
            introducer = data[pos]
            if introducer == 0x3B:  # trailer
                return
            if introducer == 0x21:
                pos, control = self._extension(pos, control)
            elif introducer == 0x2C:
                pos = self._image(pos, control)
                control = None
            elif self._frames:
                return  # garbage after the last frame: browsers show what came before
            else:
                raise _Corrupt(f"unexpected byte 0x{introducer:02x} at offset {pos}")

    def _extension(self, pos: int, control: tuple | None) -> tuple[int, tuple | None]:
        data = self._data
        if pos + 2 > len(data):
            raise _Corrupt("cut short in an extension")
        kind, start = data[pos + 1], pos + 2
        end = _skip_sub_blocks(data, start)
        first = data[start + 1: start + 1 + data[start]]
        if kind == 0xF9 and len(first) >= 4:  # graphic control: for the next image only
            disposal = (first[0] >> 2) & 7
            control = (disposal, first[1] | first[2] << 8, first[3] if first[0] & 1 else None)
        elif kind == 0xFF and first[:11] in (b"NETSCAPE2.0", b"ANIMEXTS1.0"):
            after = start + 1 + data[start]
            loop = data[after + 1: after + 1 + data[after]] if after < end else b""
            if len(loop) >= 3 and loop[0] == 1:
                count = loop[1] | loop[2] << 8
                self._plays = 0 if count == 0 else count + 1  # GIF counts repeats after the first play
        elif kind == 0x01:
            control = None  # a plain-text block (never drawn by browsers) takes the control block
        return end, control

    def _image(self, pos: int, control: tuple | None) -> int:
        data = self._data
        if pos + 10 > len(data):
            raise _Corrupt(f"frame {len(self._frames) + 1}: cut short in its descriptor")
        left, top, width, height, flags = struct.unpack_from("<HHHHB", data, pos + 1)
        local, start = _gif_table(data, pos + 10, flags)
        if start >= len(data):
            raise _Corrupt(f"frame {len(self._frames) + 1}: cut short before its pixels")
        try:
            end = _skip_sub_blocks(data, start + 1)
        except _Corrupt:
            raise _Corrupt(f"frame {len(self._frames) + 1}: cut short in its pixels") from None
        disposal, delay, transparent = control or (0, 0, None)
        if self._keep and len(self._frames) >= self._keep:
            self._past_keep += 1  # over --max-frames: refused once counted
            return end
        if width > self.width or height > self.height:  # decoded whole before clipping: bounded by the canvas
            raise _Corrupt(f"frame {len(self._frames) + 1} is {width} x {height}, larger than the "
                           f"{self.width} x {self.height} canvas")
        self._frames.append(_GifFrame(left, top, width, height, disposal, delay, transparent, local,
                                      bool(flags & 0x40), (start, end)))
        return end

    def canvases(self) -> Iterator[tuple[np.ndarray, FrameTiming]]:
        """Each frame's canvas (H, W, 4) uint8, composited; the same array, changed in place."""
        canvas = np.zeros((self.height, self.width, 4), np.uint8)
        for number, frame in enumerate(self._frames, 1):
            region = canvas[frame.top: frame.top + frame.height, frame.left: frame.left + frame.width]
            saved = region.copy() if frame.disposal == GIF_DISPOSE_PREVIOUS else None
            if region.size:
                self._draw(region, frame, number)
            yield canvas, FrameTiming(frame.delay * GIF_TIME_UNIT_MS)
            if frame.disposal == GIF_DISPOSE_BACKGROUND:
                region[...] = 0
            elif saved is not None:
                region[...] = saved

    def _draw(self, region: np.ndarray, frame: _GifFrame, number: int) -> None:
        indices = _gif_indices(self._data, frame, number)[: region.shape[0], : region.shape[1]]
        colours = _gif_colours(frame.local_table or self._table, frame.transparent)
        if frame.transparent is None:
            region[...] = colours[indices]
        else:
            drawn = indices != frame.transparent
            region[drawn] = colours[indices[drawn]]


def _gif_table(data: bytes, pos: int, flags: int) -> tuple[bytes | None, int]:
    """The colour table a descriptor's flags announce at `pos` (None without), and the offset after."""
    if not flags & 0x80:
        return None, pos
    size = 3 << ((flags & 7) + 1)
    if pos + size > len(data):
        raise _Corrupt("cut short in a colour table")
    return data[pos: pos + size], pos + size


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    """The offset after the data sub-blocks starting at `pos` (their terminator included)."""
    end = len(data)
    while True:
        if pos >= end:
            raise _Corrupt("cut short in a data block")
        size = data[pos]
        pos += 1 + size
        if size == 0:
            return pos


def _gif_colours(table: bytes | None, transparent: int | None) -> np.ndarray:
    """(256, 4) uint8 RGBA of every index: an index past the table is opaque black; no table at all
    reads as greys (as Pillow does)."""
    colours = np.zeros((GIF_COLOURS, 4), np.uint8)
    colours[:, 3] = 255
    if table is None:
        colours[:, :3] = np.arange(GIF_COLOURS, dtype=np.uint8)[:, None]
    else:
        rows = np.frombuffer(table, np.uint8).reshape(-1, 3)[:GIF_COLOURS]
        colours[: len(rows), :3] = rows
    if transparent is not None:
        colours[transparent, 3] = 0
    return colours


def _gif_indices(data: bytes, frame: _GifFrame, number: int) -> np.ndarray:
    """A frame's (height, width) palette indices, decoded by Pillow from a one-frame GIF of its own
    (no colour table, so the pixels come back as the indices themselves)."""
    start, end = frame.data
    mini = (b"GIF89a" + struct.pack("<HHBBB", frame.width, frame.height, 0, 0, 0)
            + b"," + struct.pack("<HHHHB", 0, 0, frame.width, frame.height, 0x40 if frame.interlaced else 0)
            + data[start:end] + b";")
    try:
        with _pillow_pixel_limit_off(), Image.open(io.BytesIO(mini), formats=("GIF",)) as im:
            im.load()  # within the canvas, which --max-pixels allowed: Pillow's own limit is off
            return np.asarray(im)
    except DECODE_ERRORS as e:
        raise _Corrupt(f"frame {number}: {str(e).strip() or type(e).__name__}") from None


# -------------------------------------------------------------------------------------------- APNG


@dataclass
class _ApngFrame:
    width: int
    height: int
    left: int
    top: int
    delay: tuple[int, int]
    dispose: int
    blend: int
    parts: list[tuple[int, int]]  # (start, end) of the frame's zlib data in the file


@dataclass
class _ApngReader:
    """An APNG's chunks, walked once (CRCs checked, no pixels decoded); canvases() composites."""

    data: bytes
    header: bytes  # IHDR's body
    declared: int  # acTL's frame count
    plays: int
    frames: list[_ApngFrame]
    plte: bytes | None = None
    trns: bytes | None = None
    icc_profile: bytes | None = None
    exif: bytes | None = None
    keep: int = 0  # frames kept at most (0: all)
    past_keep: int = 0  # frames past that, counted only (over --max-frames: refused once counted)
    format = "PNG"
    background = None

    @classmethod
    def parse(cls, data: bytes, keep: int = 0) -> "_ApngReader | None":
        """The APNG's frames; None for a PNG without acTL before its image data (a still PNG, which
        the still reader takes, broken or not)."""
        if not _announces_animation(data):
            return None
        reader = cls(data, b"", 0, 1, [], keep=keep)
        reader._walk()
        found = len(reader.frames) + reader.past_keep
        if found < reader.declared:
            raise _Corrupt(f"acTL says {reader.declared:,} frames, {found:,} found")
        del reader.frames[reader.declared:]  # frames past the declared count are not shown
        reader.past_keep = max(0, min(reader.past_keep, reader.declared - len(reader.frames)))
        return reader

    @property
    def width(self) -> int:
        return struct.unpack_from(">I", self.header, 0)[0]

    @property
    def height(self) -> int:
        return struct.unpack_from(">I", self.header, 4)[0]

    @property
    def count(self) -> int:
        return len(self.frames) + self.past_keep

    @property
    def loop(self) -> int:
        return self.plays

    @property
    def notes(self) -> tuple[str, ...]:
        return ("animated PNG: 16-bit frames were read at 8 bits",) if self.header[8] == 16 else ()

    @property
    def palette(self) -> bytes | None:
        """PLTE (with tRNS alphas) as RGBA rows."""
        if self.plte is None or self.header[9] != 3:
            return None
        rows = np.frombuffer(self.plte[: len(self.plte) // 3 * 3], np.uint8).reshape(-1, 3)[:GIF_COLOURS]
        alpha = np.full((len(rows), 1), 255, np.uint8)
        trns = np.frombuffer(self.trns or b"", np.uint8)[: len(rows)]
        alpha[: len(trns), 0] = trns
        return np.concatenate([rows, alpha], axis=1).tobytes()

    def _walk(self) -> None:
        """Read every chunk's place and the animation's control chunks."""
        data, pos, seen_idat = self.data, len(PNG_SIGNATURE), False
        while True:
            if pos + 12 > len(data):
                raise _Corrupt("cut short before IEND")
            length, kind = struct.unpack_from(">I4s", data, pos)
            start, end = pos + 8, pos + 8 + length
            if end + 4 > len(data):
                raise _Corrupt(f"cut short in a {kind.decode('latin-1')!r} chunk")
            if zlib.crc32(memoryview(data)[pos + 4: end]) != struct.unpack_from(">I", data, end)[0]:
                raise _Corrupt(f"the {kind.decode('latin-1')!r} chunk at offset {pos} fails its CRC")
            pos = end + 4
            if kind == b"IEND":
                return
            if kind == b"acTL":
                self.declared, self.plays = struct.unpack_from(">II", data, start)
            elif kind == b"IDAT" and not seen_idat and self.frames:  # a first fcTL before IDAT: frame 1
                self._idat_frame(data, pos, start, end)
            self._chunk(kind, start, end)
            seen_idat = seen_idat or kind == b"IDAT"

    def _idat_frame(self, data: bytes, pos: int, start: int, end: int) -> None:
        self.frames[0].parts.append((start, end))
        while pos + 8 <= len(data) and data[pos + 4: pos + 8] == b"IDAT":  # the rest of the image
            length = struct.unpack_from(">I", data, pos)[0]
            self.frames[0].parts.append((pos + 8, pos + 8 + length))
            pos += length + 12

    def _chunk(self, kind: bytes, start: int, end: int) -> None:
        data = self.data
        body = data[start:end] if kind in (b"IHDR", b"PLTE", b"tRNS", b"fcTL", b"iCCP", b"eXIf") else b""
        if kind == b"IHDR":
            if len(body) != 13:
                raise _Corrupt("IHDR is not 13 bytes")
            self.header = body
        elif kind == b"fcTL" and self.keep and len(self.frames) + self.past_keep >= self.keep:
            self.past_keep += 1
        elif kind == b"fcTL":
            self.frames.append(self._control(body))
        elif kind == b"fdAT" and self.past_keep:
            return
        elif kind == b"fdAT":
            if not self.frames:
                raise _Corrupt("frame data before any frame control chunk")
            self.frames[-1].parts.append((start + 4, end))  # after its sequence number
        elif kind in (b"PLTE", b"tRNS"):
            setattr(self, kind.decode().lower(), body)
        elif kind == b"iCCP":
            self.icc_profile = _iccp_profile(body)
        elif kind == b"eXIf":
            self.exif = body

    def _control(self, body: bytes) -> _ApngFrame:
        if len(body) != 26:
            raise _Corrupt(f"frame {len(self.frames) + 1}: fcTL is not 26 bytes")
        _, width, height, left, top, num, den, dispose, blend = struct.unpack(">IIIIIHHBB", body)
        number = len(self.frames) + 1
        if not width or not height or left + width > self.width or top + height > self.height:
            raise _Corrupt(f"frame {number}: {width} x {height} at ({left}, {top}) is not inside "
                           f"the {self.width} x {self.height} canvas")
        if dispose > APNG_DISPOSE_PREVIOUS or blend > APNG_BLEND_OVER:
            raise _Corrupt(f"frame {number}: unknown dispose {dispose} or blend {blend}")
        if number == 1 and dispose == APNG_DISPOSE_PREVIOUS:
            dispose = APNG_DISPOSE_BACKGROUND  # nothing before the first frame to go back to
        return _ApngFrame(width, height, left, top, (num, den or APNG_DEFAULT_DENOMINATOR), dispose, blend, [])

    def canvases(self) -> Iterator[tuple[np.ndarray, FrameTiming]]:
        canvas = np.zeros((self.height, self.width, 4), np.uint8)
        for number, frame in enumerate(self.frames, 1):
            region = canvas[frame.top: frame.top + frame.height, frame.left: frame.left + frame.width]
            saved = region.copy() if frame.dispose == APNG_DISPOSE_PREVIOUS else None
            pixels = self._decode(frame, number)
            region[...] = pixels if frame.blend == APNG_BLEND_SOURCE else _over(pixels, region)
            num, den = frame.delay
            yield canvas, FrameTiming(1000 * num / den, frame.delay)
            if frame.dispose == APNG_DISPOSE_BACKGROUND:
                region[...] = 0
            elif saved is not None:
                region[...] = saved

    def _decode(self, frame: _ApngFrame, number: int) -> np.ndarray:
        """The frame's own pixels (height, width, 4) uint8, decoded by Pillow as a PNG of its own."""
        if not frame.parts:
            raise _Corrupt(f"frame {number} has no image data")
        header = struct.pack(">II", frame.width, frame.height) + self.header[8:]
        mini = b"".join([PNG_SIGNATURE, png_chunk(b"IHDR", header),
                         png_chunk(b"PLTE", self.plte) if self.plte else b"",
                         png_chunk(b"tRNS", self.trns) if self.trns else b"",
                         *(png_chunk(b"IDAT", self.data[s:e]) for s, e in frame.parts),
                         png_chunk(b"IEND", b"")])
        try:
            with _pillow_pixel_limit_off(), Image.open(io.BytesIO(mini), formats=("PNG",)) as im:
                im.load()  # within the canvas, which --max-pixels allowed: Pillow's own limit is off
                colour, alpha, _ = _pillow_planes(im, "")
        except (ImageReadError, *DECODE_ERRORS) as e:
            detail = getattr(e, "message", None) or str(e).strip() or type(e).__name__
            raise _Corrupt(f"frame {number}: {detail}") from None
        return _rgba_u8(colour, alpha)


def _announces_animation(data: bytes) -> bool:
    """Whether an acTL chunk comes before the first IDAT (only chunk headers read)."""
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"acTL":
            return True
        if kind in (b"IDAT", b"IEND"):
            return False
        pos += length + 12
    return False


def _iccp_profile(body: bytes) -> bytes | None:
    """An iCCP chunk's profile (name, NUL, method 0, zlib data); None when it will not inflate."""
    name_end = body.find(b"\x00")
    try:
        return zlib.decompress(body[name_end + 2:]) if name_end > 0 else None
    except zlib.error:
        return None


def _rgba_u8(colour: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Float planes (grey or RGB, alpha or not) -> (H, W, 4) uint8."""
    rgb = quantise(colour, sixteen=False)
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    a = np.full(rgb.shape[:2] + (1,), 255, np.uint8) if alpha is None else quantise(alpha, sixteen=False)
    return np.concatenate([rgb, a], axis=2)


def _over(source: np.ndarray, destination: np.ndarray) -> np.ndarray:
    """`source` alpha-composited over `destination`, both straight (not premultiplied) RGBA uint8."""
    src_a = source[..., 3:].astype(np.float32) / U8_MAX
    dst_a = destination[..., 3:].astype(np.float32) / U8_MAX
    out_a = src_a + dst_a * (1 - src_a)
    weighted = source[..., :3] * src_a + destination[..., :3] * (dst_a * (1 - src_a))
    colour = np.divide(weighted, out_a, out=np.zeros_like(weighted), where=out_a > 0)
    return np.concatenate([np.rint(colour), np.rint(out_a * U8_MAX)], axis=2).astype(np.uint8)


# -------------------------------------------------------------------------------------------- WebP


class _WebpReader:
    """An animated WebP through libwebp's demuxer and animation decoder (Pillow's _webp module, as
    Pillow's WebP reader uses it). Not through Pillow's reader: that labels a file without VP8X's alpha
    flag RGBX and drops the decoded alpha, but libwebp's own encoder (1.6.0) leaves the flag unset
    when transparency comes only from frames cleared to the background, which browsers show."""

    format = "WEBP"
    palette = None
    notes: tuple[str, ...] = ()

    def __init__(self, data: bytes, width: int, height: int) -> None:
        self._data, self.width, self.height = data, width, height
        self._info: tuple | None = None

    @classmethod
    def parse(cls, data: bytes) -> "_WebpReader | None":
        """The header of a WebP whose VP8X chunk says it is animated; None for any other WebP."""
        if len(data) < WEBP_VP8X_END or data[12:16] != b"VP8X" or not data[20] & WEBP_ANIMATION_FLAG:
            return None
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return cls(data, width, height)

    def _decoder(self):
        """A new libwebp animation decoder (it allocates the canvas: the size is checked before)."""
        from PIL import _webp

        try:
            return _webp.WebPAnimDecoder(self._data)
        except DECODE_ERRORS as e:
            raise _Corrupt(f"libwebp cannot read it ({str(e).strip() or type(e).__name__})") from None

    def _header(self) -> tuple:
        if self._info is None:
            decoder = self._decoder()
            (_, loop, background, count, _), icc, exif = (decoder.get_info(), decoder.get_chunk("ICCP"),
                                                           decoder.get_chunk("EXIF"))
            self._info = (count, loop, background, icc or None, exif or None)
        return self._info

    @property
    def count(self) -> int:
        return int(self._header()[0])

    @property
    def loop(self) -> int:
        return int(self._header()[1])

    @property
    def background(self) -> tuple[int, int, int, int]:
        colour = self._header()[2]  # ARGB as stored
        return (colour >> 16 & 255, colour >> 8 & 255, colour & 255, colour >> 24 & 255)

    @property
    def icc_profile(self) -> bytes | None:
        return self._header()[3]

    @property
    def exif(self) -> bytes | None:
        return self._header()[4]

    def canvases(self) -> Iterator[tuple[np.ndarray, FrameTiming]]:
        decoder, previous = self._decoder(), 0
        for number in range(1, self.count + 1):
            decoded = decoder.get_next()
            if decoded is None:
                raise _Corrupt(f"frame {number} cannot be decoded")
            pixels, end = decoded  # RGBA whatever the flags say; the time the frame ends, in ms
            canvas = np.frombuffer(pixels, np.uint8).reshape(self.height, self.width, 4)
            yield canvas, FrameTiming(float(end - previous))
            previous = end


# ------------------------------------------------------------------------------------------ writing


class AnimationSink:
    """frames.FrameSink for an animation: each converted frame encoded as it arrives (module doc);
    the file appears at its target, whole, on finish()."""

    frames_done = 0

    def __init__(self, source: AnimationSource, target: Path | None, fmt: str, quality: int | None,
                 write: Callable[[bytes], None] | None) -> None:
        if fmt not in ANIMATED_FORMATS:
            raise ImageWriteError(f"{fmt} holds one image, not an animation (use GIF, PNG or WebP)")
        if quality is not None and not 1 <= quality <= 100:
            raise ImageWriteError(f"quality must be 1..100, not {quality}")
        if target is None and write is None:
            raise ValueError("an animation sink needs a target or a writer")
        self._target, self._write, self._fmt = target, write, fmt
        self._label = printable_path(target) if target is not None else STDOUT_LABEL
        self._alpha = source.has_alpha
        self._encoder = _encoder_for(source, fmt, quality)
        self._count, self._duration_ms = 0, 0.0

    def add(self, image: DecodedImage, frame: Frame) -> None:
        if self._encoder is None:
            raise ImageWriteError("the animation was already finished or aborted", path=self._label)
        pixels = _frame_pixels(image, self._alpha)
        timing = frame.timing if isinstance(frame.timing, FrameTiming) else FrameTiming(0.0)
        try:
            self._encoder.add(pixels, timing)
        except ImageWriteError as e:
            raise ImageWriteError(f"frame {frame.index + 1}: {e.message}", path=self._label) from None
        except ENCODE_ERRORS as e:
            raise ImageWriteError(f"frame {frame.index + 1}: cannot encode as {self._fmt}: {e}",
                                  path=self._label) from None
        self._count += 1
        self._duration_ms += timing.duration_ms

    def finish(self) -> MediaSummary:
        if self._encoder is None:
            raise ImageWriteError("the animation was already finished or aborted", path=self._label)
        encoder, self._encoder = self._encoder, None
        try:
            data = encoder.finish()
        except ENCODE_ERRORS as e:
            raise ImageWriteError(f"cannot encode as {self._fmt}: {e}", path=self._label) from None
        if self._target is not None:
            write_bytes_atomically(data, self._target)
        else:
            self._write(data)
        seconds = self._duration_ms / 1000
        return MediaSummary(self._count, fps=self._count / seconds if seconds > 0 else None,
                            duration=seconds, notes=encoder.notes())

    def abort(self) -> None:
        """Nothing was written yet (the file appears only on finish): drop what was encoded."""
        self._encoder = None


def _encoder_for(source: AnimationSource, fmt: str, quality: int | None):
    if fmt == "GIF":
        return _GifEncoder(_gif_usable(source.palette), source.loop, source.has_alpha)
    if fmt == "PNG":
        return _ApngEncoder(source.loop, source.icc_profile, source.exif)
    if fmt == "WEBP":
        return _WebpEncoder(source.loop, quality, source.icc_profile, source.exif, source.background,
                            source.has_alpha)
    raise ImageWriteError(f"{fmt} holds one image, not an animation (use GIF, PNG or WebP)")


def _gif_usable(palette: bytes | None) -> bytes | None:
    """A palette GIF can hold as it is: at most 256 rows, each opaque or fully transparent."""
    if palette is None:
        return None
    alphas = np.frombuffer(palette, np.uint8).reshape(-1, 4)[:, 3]
    return palette if len(alphas) <= GIF_COLOURS and bool(np.isin(alphas, (0, 255)).all()) else None


def _frame_pixels(image: DecodedImage, alpha: bool) -> np.ndarray:
    """A converted frame as (H, W, 3) RGB or (H, W, 4) RGBA uint8 (`alpha`: the animation's kind,
    so every frame has the same channels: a frame without alpha is opaque, alpha on a frame of an
    opaque animation is dropped)."""
    colour = to_planes(image.pixels)
    frame_alpha = to_planes(image.alpha) if alpha and image.alpha is not None else None
    array = quantise_planes(colour, frame_alpha, sixteen=False)
    if array.shape[2] in (1, 2):  # grey (+ alpha)
        array = np.concatenate([np.repeat(array[..., :1], 3, axis=2), array[..., 1:]], axis=2)
    if alpha and array.shape[2] == 3:
        array = np.concatenate([array, np.full(array.shape[:2] + (1,), 255, np.uint8)], axis=2)
    return array


class _CanvasSize:
    """Every frame of an output must be the size of the first."""

    size: tuple[int, int] | None = None

    def check(self, pixels: np.ndarray, most: int) -> None:
        height, width = pixels.shape[:2]
        if self.size is None:
            if width > most or height > most:
                raise ImageWriteError(f"{width} x {height} is over the format's {most} pixels a side")
            self.size = (width, height)
        elif self.size != (width, height):
            raise ImageWriteError(f"{width} x {height}, but the first frame is {self.size[0]} x {self.size[1]}")


class _GifEncoder:
    """GIF frames encoded one at a time (module doc: colours, transparency, unchanged areas)."""

    def __init__(self, palette: bytes | None, plays: int, alpha: bool) -> None:
        self._rows, self._transparent = _gif_global_rows(palette, alpha)
        self._plays, self._alpha = plays, alpha
        self._size = _CanvasSize()
        self._parts: list[bytes] = []
        self._previous: np.ndarray | None = None  # the last frame's RGB (opaque animations only)
        self._clock = _Clock(GIF_TIME_UNIT_MS)
        self._quantised = self._count = 0
        self._partial_alpha = False

    def add(self, pixels: np.ndarray, timing: FrameTiming) -> None:
        self._size.check(pixels, GIF_MAX_SIDE)
        delay = min(self._clock.tick(timing.duration_ms), GIF_MAX_DELAY)
        left, top, pixels = self._changed(pixels)
        indexed, local, transparent = self._indexed(pixels)
        disposal = GIF_DISPOSE_BACKGROUND if self._alpha else GIF_DISPOSE_NONE
        # Pillow's documented single-frame encoder: GCE, descriptor, local table if asked, LZW data.
        self._parts += GifImagePlugin.getdata(indexed, (left, top), duration=delay * GIF_TIME_UNIT_MS,
                                              disposal=disposal, include_color_table=local,
                                              transparency=transparent if self._alpha else None)
        self._count += 1

    def _changed(self, pixels: np.ndarray) -> tuple[int, int, np.ndarray]:
        """The rectangle that differs from the previous frame (an opaque animation keeps the rest on
        screen, disposal none), or the whole frame."""
        if self._alpha:
            return 0, 0, pixels
        previous, self._previous = self._previous, pixels
        if previous is None:
            return 0, 0, pixels
        changed = (pixels != previous).any(axis=2)
        rows, columns = np.nonzero(changed.any(axis=1))[0], np.nonzero(changed.any(axis=0))[0]
        if not len(rows):
            return 0, 0, pixels[:1, :1]  # nothing changed: one pixel, the frame still takes its time
        top, bottom, left, right = rows[0], rows[-1] + 1, columns[0], columns[-1] + 1
        return int(left), int(top), pixels[top:bottom, left:right]

    def _indexed(self, pixels: np.ndarray) -> tuple[Image.Image, bool, int | None]:
        """The frame as a P image, whether it carries its own colour table, and its transparent index."""
        opaque = pixels[..., 3] >= GIF_ALPHA_THRESHOLD if pixels.shape[2] == 4 else None
        if opaque is not None and not self._partial_alpha:
            self._partial_alpha = bool(((pixels[..., 3] > 0) & (pixels[..., 3] < 255)).any())
        if self._rows is not None:
            indexed = self._in_global(pixels[..., :3], opaque)
            if indexed is not None:
                return indexed, False, self._transparent
        indexed, transparent, quantised = _own_palette(pixels[..., :3], opaque)
        self._quantised += quantised
        return indexed, True, transparent

    def _in_global(self, rgb: np.ndarray, opaque: np.ndarray | None) -> Image.Image | None:
        """The frame in the global palette when every opaque colour is one of its opaque rows, each
        transparent pixel at the transparent index (write.py's exact palette match); else None."""
        rows = self._rows
        rgba = np.empty(rgb.shape[:2] + (4,), np.uint8)
        rgba[..., :3], rgba[..., 3] = rgb, 255
        if opaque is not None and not opaque.all():
            if self._transparent is None:
                return None
            rgba[~opaque] = rows[self._transparent]
        return _as_palette(Image.fromarray(rgba, "RGBA"), rows.tobytes())

    def finish(self) -> bytes:
        if not self._count:
            raise ImageWriteError("no frames to write")
        return b"".join([*self._header(), *self._parts, b";"])

    def _header(self) -> list[bytes]:
        width, height = self._size.size or (1, 1)
        flags, table = 0, b""
        if self._rows is not None:
            bits = max(1, (len(self._rows) - 1).bit_length())
            table = self._rows[:, :3].tobytes().ljust(3 << bits, b"\x00")
            flags = 0x80 | 0x70 | (bits - 1)  # a global table, 8 bits a primary, 2^bits entries
        parts = [b"GIF89a", struct.pack("<HHBBB", width, height, flags, 0, 0), table]
        if self._plays != 1:
            loops = 0 if self._plays == 0 else min(self._plays - 1, GIF_MAX_LOOPS)
            parts.append(b"!\xff\x0bNETSCAPE2.0\x03\x01" + struct.pack("<H", loops) + b"\x00")
        return parts

    def notes(self) -> tuple[str, ...]:
        notes = []  # a frame given a palette of its own with its exact colours lost nothing: not said
        if self._quantised:
            notes.append(f"GIF: {self._quantised} of {self._count} frames had over 256 colours and were "
                         "reduced to 256 (median cut, no dithering)")
        if self._partial_alpha:
            notes.append("GIF: partly transparent pixels became opaque or transparent (alpha at 50%)")
        if self._clock.rounded:
            notes.append("GIF: frame durations were rounded to hundredths of a second")
        return tuple(notes)


def _gif_global_rows(palette: bytes | None, alpha: bool) -> tuple[np.ndarray | None, int | None]:
    """The global colour table as (N, 4) RGBA rows and its transparent index. An animation with
    transparency whose palette has no transparent row gets one appended where there is room."""
    if palette is None:
        return None, None
    rows = np.frombuffer(palette, np.uint8).reshape(-1, 4)[:GIF_COLOURS].copy()
    clear = np.nonzero(rows[:, 3] == 0)[0]
    if len(clear):
        return rows, int(clear[0])
    if alpha and len(rows) < GIF_COLOURS:
        return np.concatenate([rows, np.zeros((1, 4), np.uint8)]), len(rows)
    return rows, None


def _own_palette(rgb: np.ndarray, opaque: np.ndarray | None) -> tuple[Image.Image, int | None, bool]:
    """The frame with a palette of its own: its exact colours where they fit, else median cut
    without dithering; in an animation with transparency (`opaque` given) the last index is the
    transparent one, whether or not this frame uses it. Also whether the colours were reduced."""
    clear = opaque is not None
    room = GIF_COLOURS - 1 if clear else GIF_COLOURS
    shown = rgb if opaque is None else rgb[opaque]
    colours = np.unique(_rgb_keys(shown))
    if len(colours) <= room:
        indices = np.minimum(np.searchsorted(colours, _rgb_keys(rgb)), max(len(colours) - 1, 0)).astype(np.uint8)
        table = np.stack([colours >> 16, colours >> 8 & 255, colours & 255], axis=1).astype(np.uint8)
        reduced = False
    else:
        indices, table = _median_cut(rgb, opaque, shown[0], room)
        reduced = True
    transparent = None
    if clear:
        transparent = len(table)
        indices[~opaque] = transparent
        table = np.concatenate([table, np.zeros((1, 3), np.uint8)])
    indexed = Image.fromarray(indices, "P")
    indexed.putpalette(table.tobytes())
    return indexed, transparent, reduced


def _rgb_keys(rgb: np.ndarray) -> np.ndarray:
    """Each pixel's colour as one number (R, G, B bytes of a uint32)."""
    return rgb[..., 0].astype(np.uint32) << 16 | rgb[..., 1].astype(np.uint32) << 8 | rgb[..., 2]


def _median_cut(rgb: np.ndarray, opaque: np.ndarray | None, filler: np.ndarray,
                room: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, RGB table of at most `room` rows): median cut on a grid sample of the frame (at most
    GIF_PALETTE_SAMPLE pixels), then every pixel mapped to its nearest colour, without dithering."""
    filled = rgb.copy()
    if opaque is not None:
        filled[~opaque] = filler  # transparent pixels must not take palette entries
    step = max(1, math.ceil(math.sqrt(filled.shape[0] * filled.shape[1] / GIF_PALETTE_SAMPLE)))
    sample = Image.fromarray(np.ascontiguousarray(filled[::step, ::step]), "RGB")
    palette = sample.quantize(room, Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    indexed = Image.fromarray(filled, "RGB").quantize(palette=palette, dither=Image.Dither.NONE)
    table = np.frombuffer(bytes(palette.getpalette()[: 3 * room]), np.uint8).reshape(-1, 3)
    return np.asarray(indexed).copy(), table


class _Clock:
    """Durations in a format's time unit, rounded so that the running total stays as close as it can
    to the source's (no drift over many frames)."""

    def __init__(self, unit_ms: float) -> None:
        self._unit, self._total_ms, self._ticks = unit_ms, 0.0, 0
        self.rounded = False

    @property
    def ticks(self) -> int:
        """Units elapsed so far: where the next frame starts."""
        return self._ticks

    def tick(self, duration_ms: float) -> int:
        """The next frame's duration in units."""
        self._total_ms += duration_ms
        ticks = round(self._total_ms / self._unit)
        step, self._ticks = ticks - self._ticks, ticks
        self.rounded = self.rounded or step * self._unit != duration_ms
        return step


class _ApngEncoder:
    """APNG written chunk by chunk: each frame PNG-encoded whole (blend source, dispose none), its IDAT
    data kept as fdAT chunks; the header (acTL needs the count) is put in front on finish."""

    def __init__(self, plays: int, icc: bytes | None, exif: bytes | None) -> None:
        self._plays, self._icc, self._exif = plays, icc, exif
        self._size = _CanvasSize()
        self._header: bytes | None = None
        self._parts: list[bytes] = []
        self._sequence = self._count = 0

    def add(self, pixels: np.ndarray, timing: FrameTiming) -> None:
        self._size.check(pixels, 2**31 - 1)
        chunks = _png_chunks(_default_png(pixels, _NO_METADATA))
        if self._header is None:
            self._header = next(body for kind, body in chunks if kind == b"IHDR")
        num, den = timing.apng_delay or _apng_delay(timing.duration_ms)
        height, width = pixels.shape[:2]
        self._parts.append(png_chunk(b"fcTL", struct.pack(">IIIIIHHBB", self._sequence, width, height, 0, 0,
                                                          num, den, APNG_DISPOSE_NONE, APNG_BLEND_SOURCE)))
        self._sequence += 1
        for kind, body in chunks:
            if kind != b"IDAT":
                continue
            if self._count == 0:
                self._parts.append(png_chunk(b"IDAT", body))
            else:
                self._parts.append(png_chunk(b"fdAT", struct.pack(">I", self._sequence) + body))
                self._sequence += 1
        self._count += 1

    def finish(self) -> bytes:
        if self._header is None:
            raise ImageWriteError("no frames to write")
        head = [PNG_SIGNATURE, png_chunk(b"IHDR", self._header)]
        if self._icc:
            head.append(png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(self._icc)))
        exif = _exif_for_output(self._exif)
        if exif is not None:
            head.append(png_chunk(b"eXIf", exif.tobytes().removeprefix(b"Exif\x00\x00")))
        head.append(png_chunk(b"acTL", struct.pack(">II", self._count, self._plays)))
        return b"".join([*head, *self._parts, png_chunk(b"IEND", b"")])

    def notes(self) -> tuple[str, ...]:
        return ()


# What write.py's _default_png is given besides the pixels: it reads only the ICC profile and EXIF, which
# go once into the APNG's header, not into each frame.
_NO_METADATA = DecodedImage(pixels=None)  # type: ignore[arg-type]


def _png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """(type, body) of every chunk of a PNG we encoded."""
    chunks, pos = [], len(PNG_SIGNATURE)
    while pos < len(png):
        length, kind = struct.unpack_from(">I4s", png, pos)
        chunks.append((kind, png[pos + 8: pos + 8 + length]))
        pos += length + 12
    return chunks


def _apng_delay(duration_ms: float) -> tuple[int, int]:
    """A duration as APNG's (numerator, denominator) of seconds, both 16-bit."""
    exact = Fraction(duration_ms).limit_denominator(APNG_MAX_DELAY_PART) / 1000
    if exact.numerator <= APNG_MAX_DELAY_PART and exact.denominator <= APNG_MAX_DELAY_PART:
        return exact.numerator, exact.denominator
    milliseconds = round(duration_ms)
    if milliseconds <= APNG_MAX_DELAY_PART:
        return milliseconds, 1000
    return min(round(duration_ms / 10), APNG_MAX_DELAY_PART), 100


class _WebpEncoder:
    """Frames added one by one to libwebp's animation encoder (through Pillow's _webp module, as
    Pillow's own save_all does), which keeps them encoded until assemble()."""

    def __init__(self, plays: int, quality: int | None, icc: bytes | None, exif: bytes | None,
                 background: tuple[int, int, int, int] | None, alpha: bool) -> None:
        from PIL import _webp

        self._webp, self._plays, self._quality, self._alpha = _webp, plays, quality, alpha
        self._icc, self._exif = icc, exif
        red, green, blue, opacity = background or (0, 0, 0, 0)
        self._background = opacity << 24 | red << 16 | green << 8 | blue  # ANIM's ARGB (viewers ignore it)
        self._size = _CanvasSize()
        self._encoder = None
        self._clock = _Clock(1)

    def add(self, pixels: np.ndarray, timing: FrameTiming) -> None:
        self._size.check(pixels, WEBP_MAX_SIDE)
        lossless = self._quality is None
        if self._encoder is None:
            kmin, kmax = WEBP_KEYFRAMES_LOSSLESS if lossless else WEBP_KEYFRAMES_LOSSY
            height, width = pixels.shape[:2]
            self._encoder = self._webp.WebPAnimEncoder((width, height), self._background, self._plays,
                                                       False, kmin, kmax, False, False)
        start = self._clock.ticks
        self._clock.tick(timing.duration_ms)
        self._encoder.add(Image.fromarray(pixels).getim(), start, *self._settings())

    def _settings(self) -> tuple[bool, float, float, int]:
        if self._quality is None:
            return True, WEBP_LOSSLESS_EFFORT, WEBP_ALPHA_QUALITY, WEBP_LOSSLESS_METHOD
        return False, self._quality, WEBP_ALPHA_QUALITY, WEBP_LOSSY_METHOD

    def finish(self) -> bytes:
        if self._encoder is None:
            raise ImageWriteError("no frames to write")
        lossless, quality, alpha_quality, _ = self._settings()
        self._encoder.add(None, self._clock.ticks, lossless, quality, alpha_quality, 0)
        exif = _exif_for_output(self._exif)
        exif_chunk = exif.tobytes().removeprefix(b"Exif\x00\x00") if exif is not None else b""
        data = self._encoder.assemble(self._icc or b"", exif_chunk, b"")
        if data is None:
            raise ImageWriteError("libwebp could not assemble the animation")
        if self._alpha and data[12:16] == b"VP8X" and not data[20] & WEBP_ALPHA_FLAG:
            # libwebp leaves the flag unset when transparency comes only from frames cleared to the
            # background; readers that trust the flag (Pillow) would show those areas black.
            data = data[:20] + bytes([data[20] | WEBP_ALPHA_FLAG]) + data[21:]
        return data

    def notes(self) -> tuple[str, ...]:
        return ()


# ------------------------------------------------------------------------------------- still GIFs


def encode_gif(image: DecodedImage) -> bytes:
    """A still image as a one-frame GIF, by the animation writer's rules: the image's own palette
    (DecodedImage.palette) where every pixel is one of its colours, else its exact colours or median
    cut without dithering; alpha below one half is transparent. ImageWriteError if impossible."""
    alpha = image.alpha is not None
    encoder = _GifEncoder(_gif_usable(image.palette), 1, alpha)
    try:
        encoder.add(_frame_pixels(image, alpha), FrameTiming(0.0))
        return encoder.finish()
    except ENCODE_ERRORS as e:
        raise ImageWriteError(f"cannot encode as GIF: {e}") from e
