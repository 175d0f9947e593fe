"""Animated PNG (APNG): the reader (chunks walked, frames composited as browsers show them) and the
encoder (each frame PNG-encoded by write.py's fast default PNG, its IDAT data rewritten as fdAT
chunks by hand; always lossless).

Compositing follows what browsers show. The canvas starts transparent.
- APNG: a frame replaces its rectangle (blend source) or is alpha-composited over it (blend over);
  afterwards dispose background clears the rectangle to transparent and dispose previous restores it
  (on the first frame, previous means background, as the specification says). An IDAT image that
  comes before the first fcTL is not part of the animation and is not shown.
"""
from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import numpy as np
from PIL import Image

from upscale_cli.errors import ImageReadError, ImageWriteError
from upscale_cli.images.animation.common import FrameTiming, _CanvasSize, _Corrupt
from upscale_cli.images.animation.gif import GIF_COLOURS
from upscale_cli.images.arrays import U8_MAX, quantise
from upscale_cli.images.formats import DECODE_ERRORS, PNG_SIGNATURE, png_chunk
from upscale_cli.images.read import _pillow_pixel_limit_off, _pillow_planes
from upscale_cli.images.write import _exif_for_output, metadata_chunks, png_data_pieces, png_image_data


APNG_DISPOSE_NONE, APNG_DISPOSE_BACKGROUND, APNG_DISPOSE_PREVIOUS = 0, 1, 2
APNG_BLEND_SOURCE, APNG_BLEND_OVER = 0, 1
APNG_DEFAULT_DENOMINATOR = 100  # a delay denominator of 0 means hundredths (APNG specification)
APNG_MAX_DELAY_PART = 0xFFFF


# ------------------------------------------------------------------------------------------ reading


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


# ------------------------------------------------------------------------------------------ writing


class _ApngEncoder:
    """APNG written chunk by chunk: each frame's rows filtered and compressed as the default PNG's
    (blend source, dispose none), the first frame's as IDAT chunks, the others' as fdAT; the header
    (acTL needs the count) is put in front on finish."""

    def __init__(self, plays: int, icc: bytes | None, exif: bytes | None) -> None:
        self._plays, self._icc, self._exif = plays, icc, exif
        self._size = _CanvasSize()
        self._header: bytes | None = None
        self._parts: list[bytes] = []
        self._sequence = self._count = 0

    def add(self, pixels: np.ndarray, timing: FrameTiming) -> None:
        self._size.check(pixels, 2**31 - 1)
        header, stream = png_image_data(pixels)
        if self._header is None:
            self._header = header
        num, den = timing.apng_delay or _apng_delay(timing.duration_ms)
        height, width = pixels.shape[:2]
        self._parts.append(png_chunk(b"fcTL", struct.pack(">IIIIIHHBB", self._sequence, width, height, 0, 0,
                                                          num, den, APNG_DISPOSE_NONE, APNG_BLEND_SOURCE)))
        self._sequence += 1
        for piece in png_data_pieces(stream):
            if self._count == 0:
                self._parts.append(png_chunk(b"IDAT", piece))
            else:
                self._parts.append(png_chunk(b"fdAT", struct.pack(">I", self._sequence) + piece))
                self._sequence += 1
        self._count += 1

    def finish(self) -> bytes:
        if self._header is None:
            raise ImageWriteError("no frames to write")
        exif = _exif_for_output(self._exif)
        head = [PNG_SIGNATURE, png_chunk(b"IHDR", self._header),
                metadata_chunks(self._icc, exif.tobytes() if exif else None),
                png_chunk(b"acTL", struct.pack(">II", self._count, self._plays))]
        return b"".join([*head, *self._parts, png_chunk(b"IEND", b"")])

    def notes(self) -> tuple[str, ...]:
        return ()


def _apng_delay(duration_ms: float) -> tuple[int, int]:
    """A duration as APNG's (numerator, denominator) of seconds, both 16-bit."""
    exact = Fraction(duration_ms).limit_denominator(APNG_MAX_DELAY_PART) / 1000
    if exact.numerator <= APNG_MAX_DELAY_PART and exact.denominator <= APNG_MAX_DELAY_PART:
        return exact.numerator, exact.denominator
    milliseconds = round(duration_ms)
    if milliseconds <= APNG_MAX_DELAY_PART:
        return milliseconds, 1000
    return min(round(duration_ms / 10), APNG_MAX_DELAY_PART), 100
