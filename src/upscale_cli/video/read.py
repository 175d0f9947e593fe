"""Decoding a video: open_video probes the file (its first frame included, so an undecodable
codec, a file without frames or one over the limits fails before any work), and
VideoSource.frames yields every frame as an RGB DecodedImage with its timestamp.

YUV -> RGB uses the stream's own matrix and range (swscale with accurate rounding), so colours
come out as a player shows them; the sink applies the inverse. Rotation is NOT applied to the
pixels: the frames come as stored, and the display matrix travels to the output unchanged
(exact, and no transpose of every frame), so `width`/`height` are the stored size.
"""
from __future__ import annotations

import struct
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import av
import numpy as np

from upscale_cli.errors import ImageReadError, ImageTooLargeError, printable_path
from upscale_cli.frames import Frame
from upscale_cli.images import DecodedImage
from upscale_cli.images.arrays import U8_MAX, U16_MAX, to_nchw
from upscale_cli.frames import DEFAULT_MAX_FRAMES, FRAMES_LIMIT_OPTION

if TYPE_CHECKING:
    from upscale_cli.video.settings import VideoSettings
    from upscale_cli.video.write import VideoSink

# Accurate rounding: swscale's fast path is off by up to 2/255 on a YUV -> RGB -> YUV round trip.
# Bicubic chroma, FFmpeg's default and what players show: on a 4:2:0 H.264 clip of a known sequence
# it decodes 0.46 dB closer to the truth than bilinear (31.13 against 30.67 dB; area 30.67, point 30.99).
SWS_FLAGS = av.video.reformatter.Interpolation.BICUBIC | av.video.reformatter.Interpolation.ACCURATE_RND
DISPLAY_MATRIX_BYTES = 36  # nine int32 (libavutil/display.h)
PROBE_PACKETS = 256  # packets read at most while looking for the first frame (a decoder's delay)


@dataclass(frozen=True)
class FrameTime:
    """A frame's timestamp, as its Frame.timing: pts and duration in time_base units."""

    pts: int
    duration: int
    time_base: Fraction

    @property
    def seconds(self) -> float:
        return float(self.pts * self.time_base)


@dataclass(frozen=True)
class VideoInfo:
    """What the sink needs to know about the input's video stream."""

    path: Path
    stream_index: int
    codec: str  # the codec's name (not its decoder's): h264, hevc, vp9, av1...
    pix_fmt: str
    width: int
    height: int
    time_base: Fraction
    rate: Fraction | None  # average frames per second
    colour: tuple[int, int, int, int]  # range, primaries, transfer, matrix (FFmpeg's AVCOL_* values)
    display_matrix: tuple[int, ...] | None  # rotation/flip as stored
    rotation: int  # degrees counter-clockwise, for notes
    frame_count: int | None
    frame_count_exact: bool  # from the container's index (mp4, mov); else estimated from duration
    duration: float | None


def open_video(path: Path, max_pixels: int, max_frames: int = DEFAULT_MAX_FRAMES) -> "VideoSource":
    """Probe `path`; ImageReadError (one line) for anything that cannot be decoded, or is over
    max_pixels (a frame) or max_frames (0: no limit for either)."""
    label = printable_path(path)
    with _opened(path) as container:
        stream = _video_stream(container, label)
        info = _probe(container, stream, path, label)
    if max_pixels and info.width * info.height > max_pixels:
        raise ImageTooLargeError(f"{info.width} x {info.height} = {info.width * info.height} pixels a frame is "
                                 f"over the limit of {max_pixels} (--max-pixels)", path=label)
    if max_frames and info.frame_count_exact and info.frame_count > max_frames:
        raise ImageReadError(_too_many(info.frame_count, max_frames), path=label)
    return VideoSource(info, max_frames, _notes(info))


def _too_many(frames: int, limit: int) -> str:
    return f"{frames} frames is over the limit of {limit} ({FRAMES_LIMIT_OPTION})"


@contextmanager
def _opened(path: Path) -> Iterator["av.container.InputContainer"]:
    """av.open whose failures are one ImageReadError line; closed on leaving."""
    try:
        container = av.open(str(path), "r")
    except av.FFmpegError as err:
        raise ImageReadError(_open_error(err), path=printable_path(path)) from None
    except OSError as err:  # PyAV raises FileNotFoundError etc. as FFmpegError, others plain
        raise ImageReadError(f"cannot read: {err.strerror or err}", path=printable_path(path)) from None
    try:
        yield container
    finally:
        container.close()


def _open_error(err: av.FFmpegError) -> str:
    if isinstance(err, av.error.FileNotFoundError):
        return "file not found"
    if isinstance(err, (av.error.PermissionError,)):
        return "permission denied"
    if isinstance(err, av.error.InvalidDataError):
        return "not a readable video: truncated, corrupt or not a video file"
    return f"not a readable video ({err.strerror})"


def _video_stream(container, label: str):
    """The first video stream that is not a cover picture."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            if stream.codec_context is None:
                raise ImageReadError("cannot decode its video: the codec is unknown to this installation's FFmpeg",
                                     path=label)
            return stream
    raise ImageReadError("has no video stream", path=label)


def _probe(container, stream, path: Path, label: str) -> VideoInfo:
    first = _first_frame(container, stream, label)
    count, exact = _frame_count(container, stream)
    matrix = _display_matrix(first)
    return VideoInfo(
        path=path, stream_index=stream.index, codec=stream.codec_context.codec.canonical_name, pix_fmt=first.format.name,
        width=first.width, height=first.height, time_base=stream.time_base,
        rate=stream.average_rate or stream.guessed_rate,
        colour=(first.color_range, first.color_primaries, first.color_trc, first.colorspace),
        display_matrix=matrix, rotation=first.rotation if matrix else 0,
        frame_count=count, frame_count_exact=exact, duration=_duration(container, stream),
    )


def _first_frame(container, stream, label: str):
    stream.thread_type = "AUTO"
    packets = 0
    try:
        for packet in container.demux(stream):  # ends with an empty packet, which flushes the decoder
            packets += 1 if packet.size else 0
            for frame in stream.decode(packet):
                return frame
            if packets > PROBE_PACKETS:
                break
    except av.FFmpegError as err:
        raise ImageReadError(_decode_error(stream, 0, err), path=label) from None
    raise ImageReadError("has no video frames (empty or cut short)" if packets == 0 else
                         f"cannot decode its {stream.codec_context.codec.canonical_name} video", path=label)


def _decode_error(stream, index: int, err: av.FFmpegError) -> str:
    where = "at its start" if index == 0 else f"after frame {index}"
    return f"corrupt or undecodable {stream.codec_context.codec.canonical_name} video {where} ({err.strerror})"


def _frame_count(container, stream) -> tuple[int | None, bool]:
    """(frames, exact): the container's count where it has one (mp4, mov), else duration x rate."""
    if stream.frames:
        return stream.frames, True
    seconds = _duration(container, stream)
    rate = stream.average_rate or stream.guessed_rate
    if seconds and rate:
        return max(1, round(seconds * rate)), False
    return None, False


def _duration(container, stream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def _display_matrix(frame) -> tuple[int, ...] | None:
    for side in frame.side_data:
        if side.type == av.sidedata.sidedata.Type.DISPLAYMATRIX and len(bytes(side)) == DISPLAY_MATRIX_BYTES:
            matrix = struct.unpack("=9i", bytes(side))  # native byte order (libavutil/display.h)
            return None if matrix == (65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30) else matrix  # identity
    return None


def _notes(info: VideoInfo) -> tuple[str, ...]:
    notes = []
    if info.rotation:
        notes.append(f"rotation {info.rotation}° kept as metadata: frames are converted as stored")
    if info.frame_count is not None and not info.frame_count_exact:
        notes.append(f"about {info.frame_count} frames (estimated from the duration)")
    return tuple(notes)


@dataclass
class VideoSource:
    """An opened video (a frames.FrameSource): frames() decodes from the start each time."""

    info: VideoInfo
    max_frames: int = 0
    notes: tuple[str, ...] = ()
    kind: str = "video"
    _open: list = field(default_factory=list, repr=False)

    @property
    def frame_count(self) -> int | None:
        return self.info.frame_count

    @property
    def width(self) -> int:
        return self.info.width

    @property
    def height(self) -> int:
        return self.info.height

    @property
    def bit_depth(self) -> int:
        """16 where the source has more than 8 bits a sample (10-bit HEVC), else 8."""
        return 16 if max(c.bits for c in av.VideoFormat(self.info.pix_fmt).components) > 8 else 8

    def frames(self, start: int = 0) -> Iterator[Frame]:
        """Every frame from index `start` on (earlier ones are decoded and dropped, not converted)."""
        label = printable_path(self.info.path)
        with _opened(self.info.path) as container:
            self._open.append(container)
            try:
                yield from self._decoded(container, start, label)
            finally:
                self._open.remove(container)

    def _decoded(self, container, start: int, label: str) -> Iterator[Frame]:
        stream = container.streams[self.info.stream_index]
        stream.thread_type = "AUTO"
        clock = _Clock(self.info)
        reformatter = av.video.reformatter.VideoReformatter()  # one swscale context for every frame
        index = 0
        for frame in _decode(container, stream, label):
            if self.max_frames and index >= self.max_frames:
                raise ImageReadError(_too_many(index + 1, self.max_frames) + ", counted while decoding", path=label)
            timing = clock.next(frame)
            if index >= start:
                yield Frame(image=self._image(frame, reformatter), index=index, timing=timing)
            index += 1
        if index == 0:
            raise ImageReadError("has no video frames", path=label)
        if self.info.frame_count_exact and index < self.info.frame_count:
            raise ImageReadError(f"truncated: {index} of its {self.info.frame_count} frames could be decoded",
                                 path=label)

    def _image(self, frame, reformatter) -> DecodedImage:
        """RGB at 8 or 16 bits through the frame's own matrix and range (a mid-stream size change
        is scaled to the first frame's size, as ffmpeg does)."""
        sixteen = self.bit_depth == 16
        rgb = reformatter.reformat(frame, width=self.info.width, height=self.info.height,
                                   format="rgb48le" if sixteen else "rgb24", src_colorspace=frame.colorspace,
                                   src_color_range=frame.color_range, interpolation=SWS_FLAGS)
        array = rgb.to_ndarray()
        pixels = to_nchw(array.astype(np.float32) / np.float32(U16_MAX if sixteen else U8_MAX))
        return DecodedImage(pixels=pixels, bit_depth=16 if sixteen else 8, source_format=self.info.codec.upper())

    def sink(self, target: Path, settings: "VideoSettings", output_size: tuple[int, int] | None = None) -> "VideoSink":
        """Where the converted frames go (see write.VideoSink); `output_size` (width, height), when
        known, has the encoder's size rules checked before any frame is converted."""
        from upscale_cli.video.write import VideoSink

        return VideoSink(self.info, Path(target), settings, output_size)

    def close(self) -> None:
        for container in list(self._open):
            container.close()
        self._open.clear()


def _decode(container, stream, label: str):
    """Frames in presentation order; a decoder error is one ImageReadError line."""
    count = 0
    try:
        for packet in container.demux(stream):
            for frame in stream.decode(packet):
                count += 1
                yield frame
    except av.FFmpegError as err:
        raise ImageReadError(_decode_error(stream, count, err), path=label) from None


class _Clock:
    """Each frame's FrameTime: its own pts where it has one and moves forward, else the previous
    pts plus a frame (an encoder refuses a timestamp that does not increase)."""

    def __init__(self, info: VideoInfo) -> None:
        rate = info.rate or Fraction(25)
        self.step = max(1, round(1 / (rate * info.time_base)))  # one frame in time_base units
        self.time_base = info.time_base
        self.last: int | None = None

    def next(self, frame) -> FrameTime:
        pts = frame.pts
        if pts is None or (self.last is not None and pts <= self.last):
            pts = 0 if self.last is None else self.last + self.step
        self.last = pts
        duration = frame.duration if frame.duration and frame.duration > 0 else self.step
        return FrameTime(pts=pts, duration=duration, time_base=self.time_base)
