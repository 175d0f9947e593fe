"""Running planned jobs (batch.py plans them): decoding ahead, the model on the caller's thread,
writing behind, each file alone, results in input order.

`run_jobs` is the pipeline for any `convert(index, image)`; `run_converted` runs it with a
converter (an engine.Upscaler, restore's converters) and file_report.FileReport, which records in each
file's report.ReportRow what its line and --json row say (notes, the model that ran, what was
found, passes, the real scale and size). Showing those rows is the CLI's (cli/progress.py);
ray_batch.py runs the same `run_converted` on each Ray worker. One bad file never stops the
others: each job ends as a JobResult with its status and error line, then as its ReportRow.
Outputs are written atomically (images.write).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

from upscale_cli.answers import Answers, answer_paths, answer_rows, write_answers
from upscale_cli.batch import Job, JobResult, Source, WriteOptions
from upscale_cli.errors import UpscaleError
from upscale_cli.file_report import FileReport, can_batch
from upscale_cli.frame_runner import MediaWritten, convert_frames
from upscale_cli.frames import FrameSource
from upscale_cli.images import DecodedImage
from upscale_cli.images.formats import DEFAULT_MAX_PIXELS, FALLBACK_FORMAT, writable_format
from upscale_cli.report import ReportRow, RowDefaults

# The pipeline: one thread decodes the next images while the model runs on the caller's
# thread, and writer threads encode and write finished ones. Bounded so that memory stays a
# few images: READ_AHEAD decoded inputs wait at most (up to BATCH_MAX small ones while they hold
# under HELD_PIXELS in all), WRITE_BEHIND finished outputs wait at most (up to BATCH_MAX while they
# hold under BIG_OUTPUT_PIXELS), and an output over BIG_OUTPUT_PIXELS is written before the next
# image is converted. Consecutive small images of one size go through the model together, up to
# BATCH_LARGER of them, or BATCH_MAX tiny ones (measured on a busy 2-core CPU, unet x4, 8 at once:
# 0.2-0.45x the time per image at 48-128 px, 0.4x at 256 px: each step's per-call cost is paid
# once; 2,000 files of 64x48 with -m nearest: 32 at once took 0.82x the time of 8 at once).
READ_AHEAD = 2
WRITE_BEHIND = 2
WRITER_THREADS = 4  # encoding (zlib) and fsync (1-9 ms a file here) release the GIL: writes overlap
BIG_OUTPUT_PIXELS = 16_000_000  # also the most output pixels waiting beyond WRITE_BEHIND outputs
BATCH_MAX = 32  # images through the model at once, at most: tiny ones (up to TINY_PIXELS)
BATCH_MAX_PIXELS = 256 * 256  # per image; larger ones run alone
BATCH_LARGER = 8  # images at once above TINY_PIXELS (x4 bicubic of 128x128: 32 at once was 10% slower)
TINY_PIXELS = 64 * 64
HELD_PIXELS = 4_000_000  # decoded images waiting beyond READ_AHEAD: at most this many pixels


class _ReadBudget:
    """How many decoded images may wait for the model: the reader asks before each decode."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._count = 0
        self._pixels = 0
        self._closed = False

    def wait_for_room(self) -> bool:
        with self._cond:
            while not self._closed and self._count >= READ_AHEAD and (
                    self._count >= BATCH_MAX or self._pixels >= HELD_PIXELS):
                self._cond.wait()
            return not self._closed

    def hold(self, pixels: int) -> None:
        with self._cond:
            self._count += 1
            self._pixels += pixels

    def release(self, pixels: int) -> None:
        with self._cond:
            self._count -= 1
            self._pixels -= pixels
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def _read_when_room(budget: _ReadBudget, source: Source, options: WriteOptions, stdin_reader: Callable[[], bytes]):
    if not budget.wait_for_room():
        return None  # the run is ending
    image = _read_source(source, options, stdin_reader)
    budget.hold(image.width * image.height)
    return image


def _read_source(source: Source, options: WriteOptions, stdin_reader: Callable[[], bytes]):
    """The decoded image, or a frames.FrameSource (an animation, a video) opened to be read frame by frame."""
    from upscale_cli.frame_runner import open_input

    limit = DEFAULT_MAX_PIXELS if options.max_pixels is None else options.max_pixels
    return open_input(source, limit, options.max_frames, stdin_reader)


def _write_result(image, job: Job, options: WriteOptions, stdout_writer: Callable[[bytes], None],
                  unchanged: bool = False, group=None):
    """Encode and write one output; with a DurableGroup, the future of its rename into place.
    An image the converter left as it was (restore's "clean: left as is") is the input file's own
    bytes when the format stays and no --quality was asked: a re-encode would only lose quality
    (a q95 JPEG: about 3 dB)."""
    from upscale_cli.images.atomic import make_folder, write_bytes_atomically
    from upscale_cli.images.write import encode_image, write_image

    if job.output is not None:
        make_folder(job.output.parent, path=job.output)
    if unchanged and _same_file_format(job, options):
        data = job.source.path.read_bytes()
        if job.output is None:
            stdout_writer(data)
            return None
        return write_bytes_atomically(data, job.output, group)
    if job.output is None:
        fmt = job.format or writable_format(image.source_format or "") or FALLBACK_FORMAT
        stdout_writer(encode_image(image, fmt.lower(), options.quality, options.png_compression))
        return None
    return write_image(image, job.output, format=job.format, quality=options.quality,
                       png_compression=options.png_compression, group=group)


def _same_file_format(job: Job, options: WriteOptions) -> bool:
    if job.source.path is None or options.quality is not None or options.png_compression is not None:
        return False
    own = writable_format(job.source.path.suffix)
    target = job.format or (writable_format(job.output.suffix) if job.output is not None else own)
    return own is not None and own == target


def _failed(job: Job, err: BaseException, seconds: float) -> JobResult:
    """Any failure of one file as its failed JobResult, one line naming the file (no output: it
    was not written)."""
    if isinstance(err, UpscaleError):
        if err.path is None:
            err.path = job.source.label
        message = str(err)
    elif isinstance(err, MemoryError):
        message = f"{job.source.label}: out of memory; try a smaller --tile"
    else:
        message = f"{job.source.label}: unexpected error ({type(err).__name__}: {err})"
    return JobResult(job.source.label, None, "failed", seconds, message)


def planned_result(job: Job) -> JobResult:
    """A job planning already decided: skipped (an existing output's dead temp files tidied) or failed.
    Nothing was written, so its result names no output."""
    status, reason = job.planned.status, job.planned.message
    if status == "skipped" and job.output is not None:  # an existing output is kept: still tidy
        from upscale_cli.images.atomic import remove_dead_leftovers  # what a killed earlier run left beside it

        for path in answer_paths(job):  # its one output, or each of its answers
            remove_dead_leftovers(path)
    return JobResult(job.source.label, None, status, error=reason)


def report_row(job: Job, result: JobResult, row: ReportRow) -> ReportRow:
    """A job's JobResult and what its run recorded, as its one report row. Planning's notes (an
    output format it chose) go first, and only on a row that wrote that output."""
    if result.status == "ok":
        row.notes = [*job.notes, *row.notes]
    return row.end(result.status, result.seconds, result.output, result.error)


def planned_row(job: Job, defaults: RowDefaults) -> ReportRow:
    """The row of a job planning already decided (skipped or failed): it never runs."""
    return report_row(job, planned_result(job), ReportRow.start(job.source.label, defaults))


def failed_row(job: Job, defaults: RowDefaults, message: str, seconds: float = 0.0) -> ReportRow:
    """The row of a job that failed outside the pipeline (a Ray worker that died)."""
    return ReportRow.start(job.source.label, defaults).end("failed", seconds, error=message)


def _timed(fn: Callable, *args):
    """(value, seconds, None) or (None, seconds, exception): a file's failure never escapes a thread."""
    start = time.perf_counter()
    try:
        value = fn(*args)
    except Exception as err:  # KeyboardInterrupt and the like are not one file's failure
        return None, time.perf_counter() - start, err
    return value, time.perf_counter() - start, None


def run_jobs(jobs: list[Job], convert: Callable, options: WriteOptions, stdin_reader: Callable[[], bytes],
             stdout_writer: Callable[[bytes], None], convert_many: Callable | None = None
             ) -> Iterator[tuple[int, JobResult]]:
    """Run every job: decoding ahead and writing behind `convert(index, image)`, which runs on the
    caller's thread (the model and its progress callbacks stay there); with `convert_many(indices,
    images)`, consecutive small images of one size are converted together (if that fails, each
    alone, so errors stay per file). Yields (index, JobResult) in input order, each as soon as it
    and all before it are done. Written files are made durable a group at a time (one syncfs for
    up to atomic.GROUP_FILES of them, instead of an fsync each) before they are renamed into place
    and reported. On an interruption, writes already started finish (each is atomic, and durable
    before its rename) and nothing queued starts."""
    from upscale_cli.images.atomic import DurableGroup

    readers = ThreadPoolExecutor(1, thread_name_prefix="upscale-read")
    writers = ThreadPoolExecutor(WRITER_THREADS, thread_name_prefix="upscale-write")
    pipe = _Pipe(jobs, options, stdin_reader, readers, _ReadBudget())
    durable, writing = DurableGroup(), _Writing()
    slots: deque[_Slot] = deque()  # in input order, done or being written
    index = 0
    try:
        while index < len(jobs):
            group = pipe.take(index, batch=convert_many is not None)
            for slot in _convert_group(group, convert, convert_many, options, writers, stdout_writer, durable):
                slots.append(slot)
                if slot.write is not None:
                    writing.started(slot.write, slot.pixels)
                while slots and (slots[0].ready() or slot.big or writing.too_many()):
                    yield slots.popleft().finish()
            index += len(group)
        while slots:
            yield slots.popleft().finish()
    finally:
        pipe.budget.close()
        readers.shutdown(wait=True, cancel_futures=True)
        try:
            writers.shutdown(wait=True, cancel_futures=True)
        finally:
            durable.close()  # what was written is made durable and renamed: no temp file stays


class _Writing:
    """The outputs being encoded and written now (not those written and waiting for their group's
    sync, which hold no image): counted as writes start and end, so asking costs nothing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.pixels = 0

    def started(self, write: Future, pixels: int) -> None:
        with self._lock:
            self.count += 1
            self.pixels += pixels
        write.add_done_callback(lambda _: self._ended(pixels))

    def _ended(self, pixels: int) -> None:
        with self._lock:
            self.count -= 1
            self.pixels -= pixels

    def too_many(self) -> bool:
        """More than WRITE_BEHIND, and more than BATCH_MAX small ones (a batch's worth) or more
        than BIG_OUTPUT_PIXELS in all."""
        with self._lock:
            count, pixels = self.count, self.pixels
        if count <= WRITE_BEHIND:
            return False
        return count > BATCH_MAX or pixels > BIG_OUTPUT_PIXELS


class _Pipe:
    """The decoded inputs, in order: reads submitted ahead, taken one job or one batch at a time."""

    def __init__(self, jobs: list[Job], options: WriteOptions, stdin_reader: Callable[[], bytes],
                 pool: ThreadPoolExecutor, budget: _ReadBudget) -> None:
        self.jobs, self.options, self.stdin_reader, self.pool, self.budget = jobs, options, stdin_reader, pool, budget
        self.reads: dict[int, Future] = {}

    def _submit(self, index: int) -> None:
        for ahead in range(index, min(len(self.jobs), index + BATCH_MAX + 1)):
            if ahead not in self.reads and not self.jobs[ahead].planned:
                self.reads[ahead] = self.pool.submit(_timed, _read_when_room, self.budget, self.jobs[ahead].source,
                                                     self.options, self.stdin_reader)

    def _pop(self, index: int) -> tuple:
        """(index, job, image or None, read seconds, error); a decoded image leaves the budget."""
        job = self.jobs[index]
        if job.planned:
            return index, job, None, 0.0, None
        image, seconds, err = self.reads.pop(index).result()
        if image is not None:
            self.budget.release(image.width * image.height)
        return index, job, image, seconds, err

    def take(self, index: int, batch: bool) -> list[tuple]:
        """This job, and with `batch` the next ones decoded to the same small size (no alpha)."""
        self._submit(index)
        group = [self._pop(index)]
        first = group[0][2]
        if not batch or first is None or not _batchable(first):
            return group
        most = batch_size_for(first.width * first.height)
        while len(group) < most and index + len(group) < len(self.jobs):
            following = index + len(group)
            if self.jobs[following].planned:
                break
            self._submit(following)
            image, _, err = self.reads[following].result()
            if err is not None or image is None or not _same_kind(first, image):
                break
            group.append(self._pop(following))
        return group


def _batchable(image) -> bool:
    return isinstance(image, DecodedImage) and image.alpha is None and image.width * image.height <= BATCH_MAX_PIXELS


def batch_size_for(pixels: int) -> int:
    """How many images (or frames) of `pixels` each go through the model at once."""
    if pixels <= TINY_PIXELS:
        return BATCH_MAX
    return BATCH_LARGER if pixels <= BATCH_MAX_PIXELS else 1


def _same_kind(a, b) -> bool:
    return _batchable(b) and a.pixels.shape == b.pixels.shape and a.pixels.dtype == b.pixels.dtype


def same_batch(a, b) -> bool:
    """Whether image `b` may go through the model in one batch with `a` (frame_runner's frames too):
    both small, without alpha, of one shape and type."""
    return _batchable(a) and _same_kind(a, b)


def _convert_group(group: list[tuple], convert: Callable, convert_many: Callable | None, options: WriteOptions,
                   writers: ThreadPoolExecutor, stdout_writer: Callable[[bytes], None], durable) -> list["_Slot"]:
    """Convert one job, or a batch of them (each alone if the batch fails); one slot per job."""
    together: list = [None] * len(group)
    if len(group) > 1:
        outs, seconds, err = _timed(convert_many, [g[0] for g in group], [g[2] for g in group])
        if err is None:
            together = [(out, seconds / len(group), None) for out in outs]
    slots = []
    for (index, job, image, read_s, err), done in zip(group, together):
        if job.planned:
            slots.append(_Slot(index, job, planned_result(job)))
            continue
        if err is not None:
            slots.append(_Slot(index, job, _failed(job, err, read_s)))
            continue
        out, convert_s, err = done if done is not None else _timed(convert, index, image)
        unchanged = out is image  # the converter found nothing to do
        del image  # the decoded input is not held while the output waits to be written
        if err is not None:
            slots.append(_Slot(index, job, _failed(job, err, read_s + convert_s)))
            continue
        if isinstance(out, MediaWritten):  # an animation or a video: written as it was converted
            output = None if out.output is None else str(out.output)
            slots.append(_Slot(index, job, JobResult(job.source.label, output, "ok", read_s + convert_s)))
            continue
        if isinstance(out, Answers):  # several outputs: all in place, or none of them
            write, pixels = writers.submit(_timed, write_answers, out, job, options, durable), out.pixels
        else:
            write = writers.submit(_timed, _write_result, out, job, options, stdout_writer, unchanged, durable)
            pixels = out.width * out.height
        slots.append(_Slot(index, job, seconds=read_s + convert_s, write=write, pixels=pixels,
                           big=pixels > BIG_OUTPUT_PIXELS, durable=durable))
    return slots


@dataclass
class _Slot:
    """One job's place in the output order: its result, or the write that will give it."""

    index: int
    job: Job
    result: JobResult | None = None
    seconds: float = 0.0  # reading and converting, before the write
    write: Future | None = None
    pixels: int = 0  # of the output being written
    big: bool = False  # an output large enough to be written before anything else is converted
    durable: object = None  # the DurableGroup that renames the written file into place

    def ready(self) -> bool:
        if self.write is None:
            return True
        if not self.write.done():
            return False
        renamed = self.write.result()[0]  # None: written in full already (stdout), or failed
        return renamed is None or renamed.done()

    def finish(self) -> tuple[int, JobResult]:
        if self.write is not None:
            renamed, write_s, err = self.write.result()
            if renamed is not None:
                if not renamed.done():
                    self.durable.flush()  # we wait for it: no point waiting for company
                err = renamed.exception()
            output = None if self.job.output is None else str(self.job.output)
            self.result = (_failed(self.job, err, self.seconds + write_s) if err is not None else
                           JobResult(self.job.source.label, output, "ok", self.seconds + write_s))
        return self.index, self.result


def run_converted(jobs: list[Job], converter, options: WriteOptions, defaults: RowDefaults,
                  stdin_reader: Callable[[], bytes], stdout_writer: Callable[[bytes], None],
                  on_tile: Callable[[int, int], None] | None = None,
                  on_note: Callable[[str], None] | None = None,
                  on_frame: Callable[[str, int, int | None], None] | None = None) -> Iterator[tuple[int, ReportRow]]:
    """run_jobs with a converter: yields (index, the file's ReportRow) in input order, each as soon
    as it and all before it are done; consecutive small images go through the model together when
    can_batch(converter). A converter that gives several outputs (answers.Answers) has them written
    to the job's planned answers, and a row per answer written (the same index each). An input of
    several frames (an animation, a video) is converted frame by frame into its one output
    (frame_runner.py), on_frame(label, frames done, frames in all) following it."""
    files = FileReport(converter, options, on_tile, on_note)
    rows = [ReportRow.start(job.source.label, defaults) for job in jobs]
    answer_notes: dict[int, list[tuple[str, ...]]] = {}  # the jobs whose converter gave several answers

    def convert(index, image):
        if isinstance(image, FrameSource):  # every frame, into the job's output, as they are converted
            return convert_frames(files, image, jobs[index], rows[index], options, stdout_writer, on_frame)
        out = files.convert(image, rows[index])
        if isinstance(out, Answers):
            answer_notes[index] = [out.notes_of(k) for k in range(len(out.images))]
        return out

    def convert_many(indices, images):
        return files.convert_many(images, [rows[i] for i in indices])

    batching = convert_many if can_batch(converter) else None
    for index, result in run_jobs(jobs, convert, options, stdin_reader, stdout_writer, batching):
        notes = answer_notes.pop(index, None)
        if notes is not None and result.status == "ok":  # a row per answer written
            for row in answer_rows(jobs[index], result, rows[index], notes):
                yield index, row
        else:
            yield index, report_row(jobs[index], result, rows[index])
