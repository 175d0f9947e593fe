"""Opening an animation (`open_animation`, `AnimationSource`: frames.FrameSource) and writing one
(`AnimationSink`: frames.FrameSink), whatever its format (gif.py, apng.py, webp.py).

Reading. `open_animation` returns None for a file that is not an animation of two frames or more
(the still reader, read.py, takes those). Otherwise it walks the file's structure (GIF blocks, PNG
chunks, libwebp's demuxer for WebP): the frame count is checked against --max-frames and the canvas
against --max-pixels before anything is decoded. Then every frame is decoded once, one canvas at a
time, so that a truncated or corrupt frame fails at open, in one line, before any model work, and so
that frames carry alpha only when some frame shows transparency (an opaque animation goes through
the model in batches, as RGB).

Writing (`AnimationSource.sink`): each converted frame is encoded as it arrives, never held at full
size: GIF frames are LZW-encoded one at a time (Pillow's GifImagePlugin.getdata), APNG frames are
PNG-encoded (write.py's fast default PNG) and their IDAT data rewritten as fdAT chunks by hand, WebP
frames go one by one into libwebp's animation encoder. What is held is the encoded output (the file
appears atomically at finish, from bytes), plus one output frame for GIF's unchanged-area cropping.
Kept: every frame's duration, the loop count, transparency (GIF: alpha below one half is the
transparent index), ICC (APNG, WebP) and EXIF (APNG, WebP; its orientation is applied to every frame
on read, as for stills, and written as 1). APNG is always lossless, WebP lossless unless --quality is
given.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from upscale_cli.errors import ImageReadError, ImageWriteError, printable_path
from upscale_cli.frames import DEFAULT_MAX_FRAMES, FRAMES_LIMIT_OPTION, Frame, MediaSummary
from upscale_cli.images import DecodedImage
from upscale_cli.images.animation.apng import PNG_SIGNATURE, _ApngEncoder, _ApngReader
from upscale_cli.images.animation.common import FrameTiming, _Corrupt, _frame_pixels
from upscale_cli.images.animation.gif import GIF_SIGNATURES, _GifEncoder, _GifReader, _gif_usable
from upscale_cli.images.animation.webp import _WebpEncoder, _WebpReader
from upscale_cli.images.arrays import U8_MAX, to_nchw
from upscale_cli.images.atomic import write_bytes_atomically
from upscale_cli.images.formats import ANIMATED_FORMATS, DECODE_ERRORS, ORIENTATION_TAG
from upscale_cli.images.read import _check_pixel_limit, _orient
from upscale_cli.images.write import ENCODE_ERRORS


KINDS = {"GIF": "animated GIF", "PNG": "animated PNG", "WEBP": "animated WebP"}
STDOUT_LABEL = "<stdout>"


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


# Frames in one animation: --max-frames (frames.DEFAULT_MAX_FRAMES; 0 = no limit). Checked from the
# file's structure before a frame is decoded: a GIF frame can take 20 bytes, so a small file can hold
# a million frames, each costing a whole canvas to composite and a model run.
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
        alpha = to_nchw(planes[..., 3:]) if self.has_alpha else None
        return DecodedImage(to_nchw(planes[..., :3]), alpha, 8, self.icc_profile, self.exif,
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
