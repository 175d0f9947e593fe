"""One input of several frames (an animation, a video) through the converter: the batch runner's
(pipeline.py) step for a frames.FrameSource, run on the caller's thread like any image's model call.

Three stages overlap, each bounded: a thread decodes the next frames (at most DECODED_AHEAD batches
waiting), the converter runs on the caller's thread on batches of frames of one size (as the runner
batches small files), and a thread encodes the finished ones into the sink (at most ENCODE_BEHIND
batches waiting). So memory holds a few batches, whatever the number of frames, and the encoder works
while the next batch is converted. A failure or an interruption aborts the sink: nothing is left at
the output's name (a video keeps its finished segments, and a rerun continues after them).
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

from upscale_cli.answers import Answers
from upscale_cli.errors import UpscaleError
from upscale_cli.frames import DEFAULT_MAX_FRAMES, Frame, FrameSink, FrameSource, MediaSummary
from upscale_cli.images.atomic import make_folder
from upscale_cli.images.formats import ANIMATED_FORMATS, FALLBACK_FORMAT, OUTPUT_FORMATS, could_be_animated
from upscale_cli.report import ReportRow

DECODED_AHEAD = 2  # batches of decoded frames waiting for the model
ENCODE_BEHIND = 2  # batches of converted frames waiting for the encoder
FrameCallback = Callable[[str, int, "int | None"], None]  # (label, frames done, frames in all)


@dataclass(frozen=True)
class MediaWritten:
    """What converting a FrameSource gives the runner: the output is already in place."""

    output: Path | None  # None: written to stdout
    summary: MediaSummary


def open_input(source, max_pixels: int, max_frames: int | None, stdin_reader: Callable[[], bytes]):
    """A source as the runner converts it: a video (by its name) or an animation opened as a
    frames.FrameSource, read frame by frame; any other image decoded (images.read.read_image)."""
    from upscale_cli.images.read import decode_image, read_bytes

    frames = DEFAULT_MAX_FRAMES if max_frames is None else max_frames
    if source.is_video:
        from upscale_cli.video import open_video

        return open_video(source.path, max_pixels, frames)
    label, data = read_bytes(stdin_reader() if source.path is None else source.path, max_pixels)
    if could_be_animated(data):
        from upscale_cli.images.animation import open_animation

        animation = open_animation(data, label, max_pixels, frames)
        if animation is not None:
            return animation
    return decode_image(label, data, max_pixels)


def convert_frames(files, source: FrameSource, job, row: ReportRow, options, stdout_writer: Callable[[bytes], None],
                   on_frame: FrameCallback | None = None) -> MediaWritten:
    """run_frames into the job's output (a file, or stdout for an animation)."""
    try:
        if job.output is not None:
            make_folder(job.output.parent, path=job.output)  # as an image's output folder is made
        sink = _sink_for(source, job, options, stdout_writer, files.converter, row)
    except BaseException:
        source.close()
        raise
    summary = run_frames(files, source, sink, row, job.source.label, on_frame)
    return MediaWritten(job.output, summary)


def _sink_for(source: FrameSource, job, options, stdout_writer: Callable[[bytes], None], converter,
              row: ReportRow) -> FrameSink:
    """The writer of the job's output: a video's own container (the output name's suffix), or an
    animation in a format that holds frames (GIF, PNG, WebP)."""
    if source.kind == "video":
        from upscale_cli.video.settings import VideoSettings

        if job.output is None:
            raise UpscaleError("a video is written to a file, not to stdout (-o -); give -o FILE")
        size = converter.target_size(source.height, source.width) if hasattr(converter, "target_size") else None
        output_size = None if size is None else (size[1], size[0])
        # a rerun continues after the finished segments only when they were made the same way
        conversion = (f"{type(converter).__name__}: model {row.model}, task {row.task}, strength {row.strength}, "
                      f"ensemble {row.ensemble}, output {output_size}")
        settings = replace(options.video or VideoSettings(), conversion=conversion)
        return source.sink(job.output, settings, output_size)
    fmt = job.format or (source.source_format if source.source_format in ANIMATED_FORMATS else FALLBACK_FORMAT)
    if fmt not in ANIMATED_FORMATS:
        kinds = ", ".join(sorted(n for n, f in OUTPUT_FORMATS.items() if f in ANIMATED_FORMATS))
        raise UpscaleError(f"{source.kind} of {source.frame_count} frames: {fmt} holds one image; "
                           f"use --format {kinds} (or -o NAME.gif, .png, .webp)")
    return source.sink(job.output, fmt, options.quality, stdout_writer if job.output is None else None)


def run_frames(files, source: FrameSource, sink: FrameSink, row: ReportRow, label: str,
               on_frame: FrameCallback | None = None) -> MediaSummary:
    """Every frame of `source` (from the sink's frames_done on) through `files` (a FileReport) into
    `sink`, then finish it; the row records what the output holds. Any failure aborts the sink."""
    counts = _Counts(label, sink.frames_done, source.frame_count, on_frame)
    encoder = _Encoder(sink)
    try:
        batches = _ahead(_batches(source.frames(start=sink.frames_done), _batch_size(source)))
        for number, batch in enumerate(batches):  # the first converted (also after a resume) fills the row
            if number == 0:
                files = files.for_frames(batch[0].image)  # one decision (restore's route) for every frame
            outs = _convert(files, [frame.image for frame in batch], row, first=number == 0)
            encoder.put(list(zip(outs, batch)))
            counts.advance(len(batch))
        encoder.close()
        summary = sink.finish()
    except BaseException:
        encoder.stop()
        sink.abort()
        raise
    finally:
        source.close()
    _describe(row, source, summary)
    return summary


def _batch_size(source: FrameSource) -> int:
    """How many frames go through the model at once: the runner's rule for small files of one size."""
    from upscale_cli.pipeline import batch_size_for

    return batch_size_for(source.width * source.height)


def _batches(frames: Iterator[Frame], most: int) -> Iterator[list[Frame]]:
    """Consecutive frames the runner would batch as small files (pipeline.same_batch), up to `most`."""
    from upscale_cli.pipeline import same_batch

    batch: list[Frame] = []
    for frame in frames:
        if batch and (len(batch) >= most or not same_batch(batch[0].image, frame.image)):
            yield batch
            batch = []
        batch.append(frame)
    if batch:
        yield batch


def _convert(files, images: list, row: ReportRow, first: bool) -> list:
    """One batch through the converter: together when it can take a batch (a plain Upscaler), else
    each frame alone. The file's row records the first frame's run (notes, passes, model, size);
    later frames' records are dropped, so a note is said once, not once a frame."""
    from upscale_cli.file_report import can_batch

    rows = [row if first and k == 0 else ReportRow(input=row.input) for k in range(len(images))]
    if len(images) > 1 and can_batch(files.converter):
        outs = files.convert_many(images, rows)
    else:
        outs = [files.convert(image, r) for image, r in zip(images, rows)]
    if any(isinstance(out, Answers) for out in outs):
        raise UpscaleError("a model that writes several answers takes still images, not frames")
    return outs


class _Counts:
    """Frames done, said to the progress callback."""

    def __init__(self, label: str, done: int, total: int | None, on_frame: FrameCallback | None) -> None:
        self.label, self.done, self.total, self.on_frame = label, done, total, on_frame
        self.report()

    def advance(self, count: int) -> None:
        self.done += count
        self.report()

    def report(self) -> None:
        if self.on_frame is not None:
            self.on_frame(self.label, self.done, self.total)


def _describe(row: ReportRow, source: FrameSource, summary: MediaSummary) -> None:
    row.notes += [*source.notes, *summary.notes]
    row.frames = summary.frames
    row.fps = None if summary.fps is None else round(summary.fps, 3)
    row.duration = None if summary.duration is None else round(summary.duration, 3)
    row.streams_copied = list(summary.streams_copied)


_END = object()


def _ahead(batches: Iterator[list[Frame]]) -> Iterator[list[Frame]]:
    """The batches, decoded on a thread up to DECODED_AHEAD ahead of the caller; its failure is
    raised here, in order. Stopping early (a failure downstream) ends the thread."""
    waiting: queue.Queue = queue.Queue(DECODED_AHEAD)
    stop = threading.Event()

    def decode() -> None:
        try:
            for batch in batches:
                if not _put(waiting, batch, stop):
                    return
            _put(waiting, _END, stop)
        except BaseException as err:  # handed to the caller, who raises it
            _put(waiting, err, stop)

    thread = threading.Thread(target=decode, name="upscale-frames-read", daemon=True)
    thread.start()
    try:
        while True:
            item = waiting.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def _put(waiting: queue.Queue, item, stop: threading.Event) -> bool:
    """Put unless the consumer stopped; whether it was put."""
    while not stop.is_set():
        try:
            waiting.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


class _Encoder:
    """sink.add on its own thread, at most ENCODE_BEHIND batches behind; its failure is raised on the
    next put or at close."""

    def __init__(self, sink: FrameSink) -> None:
        self.sink = sink
        self.waiting: queue.Queue = queue.Queue(ENCODE_BEHIND)
        self.error: BaseException | None = None
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._run, name="upscale-frames-write", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            batch = self.waiting.get()
            if batch is _END:
                return
            if self.error is not None or self.halt.is_set():
                continue  # drain: the caller learns of the failure and stops
            try:
                for image, frame in batch:
                    self.sink.add(image, frame)
            except BaseException as err:
                self.error = err

    def put(self, batch: list) -> None:
        self._raise()
        _put(self.waiting, batch, self.halt)
        self._raise()

    def close(self) -> None:
        """Wait for every frame to be encoded; the encoder's failure, if any."""
        self.waiting.put(_END)
        self.thread.join()
        self._raise()

    def stop(self) -> None:
        """Stop without encoding what waits (a failure elsewhere): the thread ends before abort().
        Once halted it only drains the queue (at most the batch it is encoding is finished), so the
        end marker always finds room."""
        self.halt.set()
        self.waiting.put(_END)
        self.thread.join()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error
