"""The final file: the segments' video packets and the input's other streams, remuxed (never
re-encoded) into a temp file beside the target (atomic.py's naming, so a killed run's leftover is
tidied by the next write), made durable, then renamed over the target.

Copied as they are: every audio, subtitle and data stream, attachments (fonts in Matroska),
cover pictures and any further video stream, with their packets byte for byte and their
timestamps. An audio or subtitle stream the target's container cannot hold stops the video
before any work (one line naming a container that can); a data stream or attachment it cannot
hold is left out with a note.

Video timestamps: each frame's pts is the input's (a segment is moved back to its recorded first
pts where its container rounded its start: mov); the decode timestamps (which NUT does not store)
are rebuilt here from the pts, each segment being a closed run that starts with a keyframe.
"""
from __future__ import annotations

import heapq
import io
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av

from upscale_cli.errors import ImageWriteError, printable_path
# The temp file's name is atomic.py's, so the leftovers of a killed run are found and removed the same way.
from upscale_cli.images.atomic import temp_path, remove_dead_leftovers, write_error_message
from upscale_cli.video.read import VideoInfo

COPIED_TYPES = ("audio", "subtitle", "data", "attachment", "video")
MUST_COPY = ("audio", "subtitle")  # refusing these would lose what the user listens to or reads
# Tags that describe the old file or that the muxer writes itself; every other tag is kept.
DROPPED_TAGS = {"encoder", "major_brand", "minor_version", "compatible_brands", "duration", "handler_name",
                "vendor_id"}
HOLDS_ANY = "mkv"  # the suffix to suggest when a container refuses a stream


@dataclass(frozen=True)
class JoinStats:
    frames: int
    duration: float | None  # seconds of video
    streams_copied: tuple[str, ...]


def describe(stream) -> str:
    """'audio: aac' as a report row lists a copied stream."""
    name = stream.codec_context.codec.canonical_name if stream.codec_context is not None else "data"
    if stream.type == "attachment":
        name = stream.metadata.get("filename", "file")
    return f"{stream.type}: {name}"


def copy_plan(info: VideoInfo, container: str, target: Path) -> tuple[list[int], list[str]]:
    """(indexes of the input streams to copy, notes on those left out). ImageWriteError where the
    container cannot hold an audio or subtitle stream."""
    copies, notes = [], []
    with av.open(str(info.path)) as source:
        for stream in source.streams:
            if stream.index == info.stream_index or stream.type not in COPIED_TYPES:
                continue
            if _is_timecode_track(stream):
                notes.append(f"timecode {stream.metadata['timecode']} kept as the video's tag (mov and mp4 rebuild "
                             f"their timecode track from it)")
            elif _container_holds(container, stream):
                copies.append(stream.index)
            elif stream.type in MUST_COPY:
                raise ImageWriteError(f"the {container} container cannot hold its {describe(stream)} without "
                                      f"re-encoding: write .{HOLDS_ANY} (it holds any stream)",
                                      path=printable_path(target))
            else:
                notes.append(f"{describe(stream)} left out: the {container} container cannot hold it")
    return copies, notes


def _is_timecode_track(stream) -> bool:
    """A mov/mp4 timecode (tmcd) track: its muxer cannot take it copied beside the video, and
    rebuilds it from the video stream's `timecode` tag, which is copied (as `ffmpeg -c copy` does)."""
    return stream.type == "data" and "timecode" in stream.metadata


def _container_holds(container: str, stream) -> bool:
    """Whether a header with this stream can be written (avformat_query_codec, then the muxer's own checks)."""
    try:
        with av.open(io.BytesIO(), "w", format=container) as probe:
            _add_copy(probe, stream)
            probe.start_encoding()
    except (ValueError, av.FFmpegError):
        return False
    return True


def _add_copy(out, stream):
    copy = out.add_stream_from_template(stream, opaque=True)
    copy.metadata.update(_kept(stream.metadata))
    copy.disposition = stream.disposition
    return copy


def _kept(tags: dict) -> dict:
    return {key: value for key, value in tags.items() if key.lower() not in DROPPED_TAGS}


def join_segments(paths: list[tuple[Path, int]], info: VideoInfo, copies: list[int], container: str, target: Path) -> JoinStats:
    """Write the whole output to a temp file beside `target`, then rename it there."""
    remove_dead_leftovers(target)
    temp = temp_path(target)
    try:
        stats = _write(temp, paths, info, copies, container)
        fd = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
    except BaseException as err:
        temp.unlink(missing_ok=True)
        if isinstance(err, (av.FFmpegError, ValueError)):  # ValueError: what PyAV checks itself
            reason = getattr(err, "strerror", None) or str(err)
            raise ImageWriteError(f"cannot write the {container} file ({reason})", path=printable_path(target)) from None
        if isinstance(err, OSError):
            raise ImageWriteError(write_error_message(err), path=printable_path(target)) from None
        raise
    return stats


def _write(temp: Path, paths: list[tuple[Path, int]], info: VideoInfo, copies: list[int], container: str) -> JoinStats:
    with av.open(str(paths[0][0])) as first, av.open(str(info.path)) as source, \
            av.open(str(temp), "w", format=container) as out:
        out.metadata.update(_kept(source.metadata))
        video = _video_stream(out, first.streams.video[0], source.streams[info.stream_index], info)
        mapped = {index: _add_copy(out, source.streams[index]) for index in copies}
        packets = _VideoPackets(paths, first.streams.video[0].codec_context.extradata, video, info.time_base)
        copied = tuple(describe(source.streams[index]) for index in copies)
        for packet in heapq.merge(packets, _copied_packets(source, mapped), key=_time):
            out.mux(packet)
    return JoinStats(packets.frames, packets.seconds, copied)


def _video_stream(out, template, original, info: VideoInfo):
    """The output's video stream: the segments' codec parameters, the input's time base, colour
    description, display matrix and tags."""
    video = out.add_stream_from_template(template, opaque=True)
    video.time_base = info.time_base
    context = video.codec_context
    context.color_range, context.color_primaries, context.color_trc, context.colorspace = info.colour
    if info.rate:
        context.framerate = info.rate  # the stream's average rate: mov/mp4 need it for a timecode track
    if info.display_matrix:
        video.set_display_matrix(info.display_matrix)
    video.metadata.update(_kept(original.metadata))
    video.disposition = original.disposition
    return video


def _time(packet) -> Fraction:
    """When a packet is due, for interleaving: its decode time (else presentation time) in seconds."""
    stamp = packet.dts if packet.dts is not None else packet.pts
    return Fraction(stamp or 0) * packet.time_base


def _copied_packets(source, mapped: dict) -> Iterator["av.Packet"]:
    if not mapped:
        return
    streams = [source.streams[index] for index in mapped]
    last = None
    for packet in source.demux(*streams):
        if packet.size == 0 and packet.pts is None:
            continue  # the demuxer's end-of-stream marker, no data
        if packet.dts is None and packet.pts is None and last is not None:
            packet.dts = last  # untimed (rare in subtitles): keep it where it came
        last = packet.dts if packet.dts is not None else packet.pts
        packet.stream = mapped[packet.stream.index]
        yield packet


class _VideoPackets:
    """The segments' packets in decode order with rebuilt decode timestamps; counts frames and time."""

    def __init__(self, paths: list[tuple[Path, int]], extradata: bytes | None, stream, time_base: Fraction) -> None:
        self.paths, self.extradata, self.stream, self.time_base = paths, extradata, stream, time_base
        self.frames = 0
        self.start: Fraction | None = None
        self.end: Fraction | None = None

    @property
    def seconds(self) -> float | None:
        return float(self.end - self.start) if self.start is not None else None

    def __iter__(self) -> Iterator["av.Packet"]:
        last_dts = None
        for path, first_pts in self.paths:
            with av.open(str(path)) as segment:
                stream = segment.streams.video[0]
                if stream.codec_context.extradata != self.extradata:
                    raise ImageWriteError(f"segment {path.name} was encoded with other headers than the first")
                packets = [p for p in segment.demux(stream) if p.size]
                self._restore_start(packets, first_pts)
                for packet, dts in zip(packets, _decode_stamps([p.pts for p in packets])):
                    packet.dts = dts if last_dts is None else max(dts, last_dts + 1)
                    last_dts = packet.dts
                    self._count(packet)
                    packet.stream = self.stream
                    yield packet

    def _restore_start(self, packets: list, first_pts: int) -> None:
        """Move a segment's packets so its first frame is at `first_pts` again (a mov segment's
        start is rounded to the movie's time scale; NUT's is exact, so nothing moves)."""
        if not packets:
            return
        time_base = packets[0].time_base
        shift = round((first_pts * self.time_base - min(p.pts for p in packets) * time_base) / time_base)
        for packet in packets:
            packet.pts += shift

    def _count(self, packet) -> None:
        self.frames += 1
        begin = packet.pts * packet.time_base
        finish = (packet.pts + (packet.duration or 0)) * packet.time_base
        self.start = begin if self.start is None else min(self.start, begin)
        self.end = finish if self.end is None else max(self.end, finish)


def _decode_stamps(pts: list[int]) -> list[int]:
    """Decode timestamps for packets in decode order: the sorted presentation times shifted by the
    smallest reorder delay d that keeps every dts <= its pts (d = 0 without B-frames); the first d
    are extrapolated one frame step apart before the first pts."""
    ordered = sorted(pts)
    step = min((b - a for a, b in zip(ordered, ordered[1:]) if b > a), default=1)
    for delay in range(len(pts) + 1):
        if all(ordered[i - delay] <= pts[i] for i in range(delay, len(pts))):
            return [ordered[0] - (delay - i) * step if i < delay else ordered[i - delay] for i in range(len(pts))]
    return ordered  # not reached: delay = len(pts) always fits
