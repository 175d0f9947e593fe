"""Animated WebP: the reader (libwebp's demuxer and animation decoder) and the encoder (frames added
one by one to libwebp's animation encoder; lossless unless --quality is given), both through
Pillow's _webp module.

Compositing follows what browsers show. The canvas starts transparent.
- WebP: libwebp's animation decoder (Pillow's _webp module) composites as the WebP specification says
  (it is the reference implementation, and the tests check it against canvases built by hand).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
from PIL import Image

from upscale_cli.errors import ImageWriteError
from upscale_cli.images.animation.common import FrameTiming, _CanvasSize, _Clock, _Corrupt
from upscale_cli.images.formats import DECODE_ERRORS
from upscale_cli.images.write import _exif_for_output


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


# ------------------------------------------------------------------------------------------ reading


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
