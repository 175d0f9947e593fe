"""Animated GIF: the reader (blocks walked, frames composited as browsers show them) and the encoder
(frames LZW-encoded one at a time by Pillow's GifImagePlugin.getdata); `encode_gif` for still GIFs.

Compositing follows what browsers show. The canvas starts transparent.
- GIF: a frame draws its rectangle (clipped to the canvas) except where it uses its transparent
  index; afterwards disposal 2 clears the rectangle to transparent (browsers ignore the background
  colour), 3 restores what was there before, and 0, 1 (and the undefined 4-7) leave it.

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
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from PIL import GifImagePlugin, Image

from upscale_cli.errors import ImageWriteError
from upscale_cli.images import DecodedImage
from upscale_cli.images.animation.common import FrameTiming, _CanvasSize, _Clock, _Corrupt, _frame_pixels
from upscale_cli.images.formats import DECODE_ERRORS
from upscale_cli.images.read import _pillow_pixel_limit_off
from upscale_cli.images.write import ENCODE_ERRORS, _as_palette


GIF_SIGNATURES = (b"GIF87a", b"GIF89a")
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


# ------------------------------------------------------------------------------------------ reading


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


# ------------------------------------------------------------------------------------------ writing


def _gif_usable(palette: bytes | None) -> bytes | None:
    """A palette GIF can hold as it is: at most 256 rows, each opaque or fully transparent."""
    if palette is None:
        return None
    alphas = np.frombuffer(palette, np.uint8).reshape(-1, 4)[:, 3]
    return palette if len(alphas) <= GIF_COLOURS and bool(np.isin(alphas, (0, 255)).all()) else None


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
