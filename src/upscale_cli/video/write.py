"""Encoding a video: VideoSink (a frames.FrameSink) takes the converted frames in order, encodes
them in segments into the work folder (segments.py), and on finish() joins the segments and the
input's other streams into the target (remux.py).

Each segment is a separate encoder run whose first frame is a keyframe. Frames keep the input's
timestamps exactly (the encoder's time base is the input stream's), so a variable frame rate
survives. Colour range, primaries, transfer and matrix are the input's, and the RGB -> YUV
conversion uses the same matrix and range the reader used the other way.

add() is thread-safe against itself and finish()/abort() (one lock). The encoders (x264, x265,
libvpx) run their own threads, and PyAV releases the GIL inside avcodec_send_frame/receive_packet
and sws_scale, so a writer thread encoding here leaves the GIL to the thread running the model.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from upscale_cli.errors import ImageReadError, ImageWriteError, printable_path
from upscale_cli.images.atomic import write_error_message
from upscale_cli.frames import Frame, MediaSummary
from upscale_cli.images import DecodedImage
from upscale_cli.images.arrays import quantise, to_planes
from upscale_cli.video.read import SWS_FLAGS, FrameTime, VideoInfo
from upscale_cli.video.remux import copy_plan, join_segments
from upscale_cli.video.segments import SegmentStore, input_identity
from upscale_cli.video.settings import (VideoSettings, bit_depth_of, container_for, container_takes, encoder_options,
                                        resolve_encoder, resolve_pix_fmt)

# Segments are NUT files (exact timestamps in any time base, any codec but a few); the codecs NUT
# cannot hold (ProRes, DNxHD, QuickTime RLE: all intra-only, mov's own) go in .mov segments.
SEGMENT_CONTAINERS = (("nut", ".nut"), ("mov", ".mov"))


@dataclass(frozen=True)
class EncodePlan:
    """One encoder set-up, the same for every segment (and recorded in the manifest)."""

    encoder: str
    options: tuple[tuple[str, str], ...]
    pix_fmt: str
    time_base: Fraction
    rate: Fraction | None
    colour: tuple[int, int, int, int]  # range, primaries, transfer, matrix
    global_header: bool  # the target's container wants headers out of band (mp4, mkv)
    container: str
    segment_container: str  # nut, or mov for what NUT cannot hold
    segment_suffix: str

    def record(self, settings: VideoSettings) -> dict:
        return {"encoder": self.encoder, "options": dict(self.options), "pix_fmt": self.pix_fmt,
                "time_base": str(self.time_base), "colour": list(self.colour), "container": self.container,
                "segment_container": self.segment_container,
                "conversion": settings.conversion, "segment_frames": settings.segment_frames}


def make_plan(info: VideoInfo, settings: VideoSettings, container: str) -> tuple[EncodePlan, tuple[str, ...]]:
    encoder, notes = resolve_encoder(settings, info.codec, container)
    options = encoder_options(settings, encoder)
    pix_fmt, more = resolve_pix_fmt(settings, encoder, info.pix_fmt)
    global_header = bool(av.format.ContainerFormat(container, "w").flags & av.format.Flags.global_header.value)
    segment_container, suffix = next(((name, suffix) for name, suffix in SEGMENT_CONTAINERS
                                      if container_takes(name, encoder)), SEGMENT_CONTAINERS[0])
    plan = EncodePlan(encoder, tuple(sorted(options.items())), pix_fmt, info.time_base, info.rate, info.colour,
                      global_header, container, segment_container, suffix)
    return plan, notes + more


def size_refusal(plan: EncodePlan, width: int, height: int) -> str | None:
    """Why the encoder would refuse frames of this size (None: it takes them). Chroma-subsampled
    formats need even sizes in x264/x265; anything else is found by opening the encoder once."""
    chroma = av.VideoFormat(plan.pix_fmt, 2, 2).components
    halves_w = len(chroma) > 1 and chroma[1].width < 2
    halves_h = len(chroma) > 1 and chroma[1].height < 2
    odd = (halves_w and width % 2) or (halves_h and height % 2)
    try:
        context = _encoder(plan, width, height)
        context.open()
    except av.FFmpegError as err:
        if odd:
            return (f"{plan.encoder} cannot write {width} x {height} in {plan.pix_fmt}, which needs an even width and "
                    f"height: choose a scale that gives even sizes, or --pix-fmt yuv444p")
        return f"{plan.encoder} refuses {width} x {height} in {plan.pix_fmt} ({err.strerror})"
    return None


def _quiet(encoder: str) -> None:
    """SVT-AV1 prints its configuration on stderr itself (not through FFmpeg's log); its own
    variable silences it, unless the user set it."""
    if encoder == "libsvtav1":
        os.environ.setdefault("SVT_LOG", "1")


def _encoder(plan: EncodePlan, width: int, height: int) -> "av.video.codeccontext.VideoCodecContext":
    _quiet(plan.encoder)
    context = av.CodecContext.create(plan.encoder, "w")
    context.width, context.height, context.pix_fmt = width, height, plan.pix_fmt
    context.time_base = plan.time_base
    if plan.rate:
        context.framerate = plan.rate
    context.color_range, context.color_primaries, context.color_trc, context.colorspace = plan.colour
    context.options = dict(plan.options)
    return context


class SegmentWriter:
    """One segment: its own encoder, writing a NUT file at `path` (a .part until committed)."""

    def __init__(self, path: Path, plan: EncodePlan, size: tuple[int, int]) -> None:
        self.path, self.plan, self.frames = path, plan, 0
        _quiet(plan.encoder)
        # Timestamps as given: by default the muxer shifts a segment whose first decode time is
        # negative (B-frames), which would move the first segment's frames later than the input's.
        self.container = av.open(str(path), "w", format=plan.segment_container,
                                 options={"avoid_negative_ts": "disabled"})
        self.first_pts: int | None = None
        self.stream = self.container.add_stream(plan.encoder, rate=plan.rate, options=dict(plan.options))
        self.stream.width, self.stream.height = size
        self.stream.pix_fmt = plan.pix_fmt
        self.stream.time_base = plan.time_base
        context = self.stream.codec_context
        context.time_base = plan.time_base  # the input's: no timestamp is rounded to a frame grid
        context.color_range, context.color_primaries, context.color_trc, context.colorspace = plan.colour
        if plan.global_header:  # NUT does not ask for it, the target's container does
            context.flags |= av.codec.context.Flags.global_header
        self.sixteen = bit_depth_of(plan.pix_fmt) > 8
        self.reformatter = av.video.reformatter.VideoReformatter()  # keeps its swscale context: 3x faster a frame

    def add(self, image: DecodedImage, timing: FrameTime) -> None:
        frame = self._frame(image)
        frame.pts, frame.duration, frame.time_base = timing.pts, timing.duration, timing.time_base
        self.container.mux(self.stream.encode(frame))
        self.first_pts = timing.pts if self.first_pts is None else self.first_pts  # frames come in pts order
        self.frames += 1

    def _frame(self, image: DecodedImage) -> "av.VideoFrame":
        planes = to_planes(image.pixels)  # (H, W, C) float
        if planes.shape[2] == 1:
            planes = np.repeat(planes, 3, axis=2)
        array = quantise(planes, self.sixteen)
        rgb = av.VideoFrame.from_ndarray(array, format="rgb48le" if self.sixteen else "rgb24")
        colour_range, _, _, matrix = self.plan.colour
        return self.reformatter.reformat(rgb, format=self.plan.pix_fmt, dst_colorspace=matrix,
                                         dst_color_range=colour_range, interpolation=SWS_FLAGS)

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))  # flush the encoder's delayed frames
        self.container.close()

    def discard(self) -> None:
        try:
            self.container.close()
        except (av.FFmpegError, OSError, ValueError):
            pass  # being thrown away: a trailer that cannot be written does not matter
        self.path.unlink(missing_ok=True)


def _reason(err: Exception) -> str:
    return getattr(err, "strerror", None) or str(err)


class VideoSink:
    """The converted frames of one video -> `target` (see the module docstring)."""

    def __init__(self, info: VideoInfo, target: Path, settings: VideoSettings,
                 output_size: tuple[int, int] | None = None) -> None:
        self.info, self.target, self.settings = info, target, settings
        container = container_for(target)
        self.plan, notes = make_plan(info, settings, container)
        self.copies, left_out = copy_plan(info, container, target)
        if output_size is not None:
            self._check_size(output_size)
        try:
            identity = input_identity(info.path, info.frame_count)
        except OSError as err:
            raise ImageReadError(f"cannot read: {err.strerror}", path=printable_path(info.path)) from None
        self.store = SegmentStore(target, identity, self.plan.record(settings), self.plan.segment_suffix)
        self.frames_done = self.store.frames_done
        self.notes = list(notes) + list(left_out) + self.store.notes
        if self.frames_done:
            self.notes.append(f"resumed after {self.frames_done} frames from an interrupted run")
        self._next = self.frames_done
        self._writer: SegmentWriter | None = None
        self._size_checked = False
        self._lock = threading.Lock()

    def _check_size(self, size: tuple[int, int]) -> None:
        """A size the encoder refuses fails this video alone (it comes from the input's size), not the batch."""
        refusal = size_refusal(self.plan, *size)
        if refusal:
            raise ImageWriteError(refusal, path=printable_path(self.target))

    def add(self, image: DecodedImage, frame: Frame) -> None:
        with self._lock:
            size = (image.width, image.height)
            if not self._size_checked:
                self._first_frame(size)
            if frame.index != self._next:
                raise ImageWriteError(f"frame {frame.index} arrived where frame {self._next} was due",
                                      path=printable_path(self.target))
            try:
                if self._writer is None:
                    self._writer = SegmentWriter(self.store.part_path(), self.plan, size)
                self._writer.add(image, frame.timing)
            except (av.FFmpegError, ValueError) as err:  # PyAV raises ValueError for what it checks itself
                raise ImageWriteError(f"{self.plan.encoder} failed at frame {frame.index} ({_reason(err)})",
                                      path=printable_path(self.target)) from None
            except OSError as err:  # the segment file cannot be created (disk full, permissions)
                raise ImageWriteError(write_error_message(err), path=printable_path(self.target)) from None
            self._next += 1
            if self._writer.frames >= self.settings.segment_frames:
                self._close_segment(size)

    def _first_frame(self, size: tuple[int, int]) -> None:
        """The first converted frame: its size must suit the encoder and the earlier segments."""
        if self.store.output_size is not None and self.store.output_size != size:
            old = self.store.output_size
            self.store.discard_segments()
            self.frames_done = 0
            raise ImageWriteError(f"the segments of an earlier run are {old[0]} x {old[1]} and this run makes "
                                  f"{size[0]} x {size[1]}: they are removed, run it again",
                                  path=printable_path(self.target))
        self._check_size(size)
        self._size_checked = True

    def _close_segment(self, size: tuple[int, int]) -> None:
        writer, self._writer = self._writer, None
        try:
            writer.close()
        except (av.FFmpegError, ValueError) as err:
            writer.discard()
            raise ImageWriteError(f"{self.plan.encoder} failed finishing a segment ({_reason(err)})",
                                  path=printable_path(self.target)) from None
        self.store.commit(writer.path, writer.frames, writer.first_pts, size)

    def finish(self) -> MediaSummary:
        """Join every segment and the copied streams into `target` (atomically); the work folder goes."""
        with self._lock:
            if self._writer is not None:
                self._close_segment((self._writer.stream.width, self._writer.stream.height))
            if not self.store.segments:
                raise ImageWriteError("no frames were converted", path=printable_path(self.target))
            stats = join_segments(self.store.paths(), self.info, self.copies, self.plan.container, self.target)
            self.store.remove()
        fps = stats.frames / stats.duration if stats.duration else None
        return MediaSummary(frames=stats.frames, fps=fps, duration=stats.duration,
                            streams_copied=stats.streams_copied, notes=tuple(self.notes))

    def abort(self) -> None:
        """Nothing at the target. Finished segments stay for a rerun to continue from; with none,
        the work folder goes too."""
        with self._lock:
            if self._writer is not None:
                self._writer.discard()
                self._writer = None
            if self.store.segments:
                self.store.release()
            else:
                self.store.remove()

    def discard(self) -> None:
        """Abort and remove the finished segments too (the input itself is bad: no rerun will use them)."""
        self.abort()
        self.store.remove()
