"""Inputs (files, folders, globs, stdin) -> jobs; output naming; per-file isolation.

One bad file never stops the others: each job ends as a JobResult with its status and
error line. Outputs are written atomically by images.write.write_image; an input file is never
the target of a write.
"""
from __future__ import annotations

import functools
import glob
import hashlib
import os
import re
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from upscale_cli.errors import InputNotFoundError, UpscaleError, UsageError
from upscale_cli.images.formats import (FALLBACK_FORMAT, OUTPUT_FORMATS, READ_SUFFIXES, WRITE_SUFFIX, output_format,
                                        writable_format)

STDIO = "-"
GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Source:
    """One input: a file (with the folder it was found under, for mirroring), or stdin."""

    path: Path | None  # None = stdin
    root: Path | None = None  # the folder argument it came from, if any
    missing: str | None = None  # why a command-line path names nothing (reported as a failed file)
    ignored: str | None = None  # why a file found in a folder is not read (reported as skipped)

    @property
    def label(self) -> str:
        return "<stdin>" if self.path is None else str(self.path)


@dataclass(frozen=True)
class Job:
    source: Source
    output: Path | None  # None = stdout
    skip_reason: str | None = None  # set when planning already decided not to run it
    format: str | None = None  # Pillow format to write; None = decided from the image (stdout)
    notes: tuple[str, ...] = ()  # what planning chose that the user did not ask for


@dataclass
class JobResult:
    input: str
    output: str | None
    status: str  # "ok", "skipped" or "failed"
    seconds: float = 0.0
    error: str | None = None


def _expand_folder(folder: Path, recursive: bool) -> list[Source]:
    """Every visible file of a folder: images to read, anything else to report as skipped."""
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in folder.glob(pattern) if p.is_file() and not p.name.startswith("."))
    return [Source(p, root=folder, ignored=None if p.suffix.lower() in READ_SUFFIXES
                   else f"not an image file name ({p.suffix or 'no extension'})") for p in files]


def expand_inputs(args: Iterable[str], recursive: bool = False) -> list[Source]:
    """Command-line paths -> sources. A missing path or an empty glob becomes a source that fails
    (so the other inputs still run); only when nothing at all is found is it an error."""
    sources: list[Source] = []
    for arg in args:
        if arg == STDIO:
            sources.append(Source(None))
            continue
        path = Path(arg).expanduser()
        if path.is_dir():
            sources.extend(_expand_folder(path, recursive))
        elif path.exists():
            sources.append(Source(path))
        elif GLOB_CHARS.search(arg):
            matches = sorted(Path(m) for m in glob.glob(arg, recursive=True) if Path(m).is_file())
            sources.extend(Source(m) for m in matches)
            if not matches:
                sources.append(Source(path, missing=f"no files match {arg!r}"))
        else:
            sources.append(Source(path, missing=f"{arg}: no such file or folder"))
    if all(s.missing or s.ignored for s in sources):
        missing = "; ".join(s.missing for s in sources if s.missing)
        raise InputNotFoundError(missing or "no image files found in the given inputs")
    return sources


def output_suffix(source: Source, fmt: str | None) -> str:
    """The suffix of a planned output: --format's, else the input's own when we write that format,
    else PNG's (GIF inputs, stdin)."""
    if fmt:
        return WRITE_SUFFIX[output_format(fmt)]
    if source.path is not None and writable_format(source.path.suffix):
        return source.path.suffix
    return WRITE_SUFFIX[FALLBACK_FORMAT]


def _default_output(source: Source, tag: str, fmt: str | None) -> Path:
    return source.path.with_name(f"{source.path.stem}_{tag}{output_suffix(source, fmt)}")


def _folder_output(source: Source, folder: Path, fmt: str | None) -> Path:
    relative = source.path.relative_to(source.root) if source.root else Path(source.path.name)
    return folder / relative.with_suffix(output_suffix(source, fmt))


def _output_format(source: Source, target: Path | None, fmt: str | None) -> tuple[str | None, tuple[str, ...], str | None]:
    """(format, notes, failure) of one planned write. One rule for every format: --format wins;
    else the target's suffix when we write it; else (no suffix, or a folder/default name for an
    input whose format we do not write) the input's format or PNG, said on the file's line."""
    if target is None:
        return (output_format(fmt) if fmt else None), (), None
    if fmt:
        return output_format(fmt), (), None
    suffix = target.suffix
    own = writable_format(source.path.suffix) if source.path is not None else None
    chosen = writable_format(suffix) if suffix else own or FALLBACK_FORMAT
    if chosen is None:
        return None, (), f"cannot write {suffix!r} files ({target}); use one of {', '.join(sorted(OUTPUT_FORMATS))}"
    if not suffix:
        return chosen, (f"{target.name} has no extension: wrote {chosen}",), None
    if source.path is not None and source.path.suffix and own is None:
        return chosen, (f"{source.path.suffix.lstrip('.').upper()} is not written: wrote {chosen}",), None
    return chosen, (), None


def _output_is_folder(sources: list[Source], output: str) -> bool:
    if len(sources) != 1 or sources[0].root is not None:
        return True
    return output.endswith(("/", "\\")) or Path(output).is_dir()


def _is_own_output(source: Source, tag: str) -> bool:
    """A file this command wrote next to its input on an earlier run (`photo_x4.png`)."""
    return source.root is not None and source.path.stem.endswith(f"_{tag}")


def check_output_options(fmt: str | None, as_json: bool, output: str | None) -> None:
    """The usage errors every batch command shares: an unknown --format, --json with -o -."""
    if fmt is not None and fmt.lower() not in OUTPUT_FORMATS:
        raise UsageError(f"--format must be one of {', '.join(OUTPUT_FORMATS)}, not {fmt!r}")
    if as_json and output == "-":
        raise UsageError("--json and -o - both want stdout; choose one")


def plan_jobs(sources: list[Source], output: str | None, tag: str, fmt: str | None = None,
              overwrite: bool = False) -> list[Job]:
    """Decide every output path up front, so collisions and skips are known before any work.

    A target is never any input of the run (not only its own): compared by resolved path and,
    for files that exist, by device and inode, so a link or another name for an input counts too.
    --overwrite replaces earlier outputs, never inputs.
    """
    if output == STDIO and len(sources) != 1:
        raise UsageError("-o - (stdout) takes exactly one input")
    folder = Path(output) if output not in (None, STDIO) and _output_is_folder(sources, output) else None
    _resolved_folder.cache_clear()  # folders may have changed since an earlier run in this process
    inputs = _InputIndex(sources)
    jobs, claimed = [], {}
    for source in sources:
        if output is None and _is_own_output(source, tag):
            continue
        target = _target_path(source, output, folder, tag, fmt)
        reason = _skip_reason(source, target, claimed, overwrite, inputs, folder_output=folder is not None)
        chosen, notes, failure = _output_format(source, target, fmt)
        if failure and not reason:
            reason = f"failed:{source.label}: {failure}"
        jobs.append(Job(source, target, reason, chosen, notes))
    return jobs


class _InputIndex:
    """Every input file of a run, by resolved path and by (device, inode)."""

    def __init__(self, sources: list[Source]) -> None:
        self.by_path: dict[Path, str] = {}
        self.by_inode: dict[tuple[int, int], str] = {}
        for source in sources:
            if source.path is None or source.missing:
                continue
            self.by_path.setdefault(_resolved(source.path), source.label)
            identity = _file_identity(source.path)
            if identity is not None:
                self.by_inode.setdefault(identity, source.label)

    def input_at(self, target: Path) -> str | None:
        """The input a write to `target` would replace, or None."""
        found = self.by_path.get(_resolved(target))
        if found is None:
            identity = _file_identity(target)
            found = self.by_inode.get(identity) if identity is not None else None
        return found


def _resolved(path: Path) -> Path:
    """path.resolve(), with each folder resolved once per run (10,000 files in 10 folders: 10 walks,
    not 10,000). A file that is itself a link is resolved too, so links still count as their target."""
    if ".." in path.parts or path.name in ("", ".") or path.is_symlink():  # '..' after a link: resolve's way
        return path.resolve()
    return _resolved_folder(os.path.abspath(path.parent)) / path.name


@functools.lru_cache(maxsize=4096)
def _resolved_folder(folder: str) -> Path:
    return Path(folder).resolve()


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except (OSError, ValueError):
        return None
    return (stat.st_dev, stat.st_ino)


def _target_path(source: Source, output: str | None, folder: Path | None, tag: str, fmt: str | None) -> Path | None:
    if output == STDIO or (output is None and source.path is None):
        return None
    if folder is not None:
        if source.path is None:
            return folder / f"stdin{output_suffix(source, fmt)}"
        return _folder_output(source, folder, fmt)
    if output is not None:
        return Path(output)
    return _default_output(source, tag, fmt)


def _skip_reason(source: Source, target: Path | None, claimed: dict, overwrite: bool, inputs: _InputIndex,
                 folder_output: bool) -> str | None:
    if source.missing:
        return f"failed:{source.missing}"
    if source.ignored:
        return f"skipped:{source.ignored}"
    if target is None:
        return None
    replaced = inputs.input_at(target)
    if replaced is not None:
        whose = "itself" if replaced == source.label else replaced
        return f"failed:{source.label}: the output {target} would overwrite the input {whose}; choose another -o or --format"
    key = _resolved(target)
    if key in claimed:
        hint = "use --format or another -o" if folder_output else "use -o with a folder"
        return f"failed:{source.label}: the output {target} would also be written by {claimed[key]}; {hint}"
    claimed[key] = source.label
    if target.exists() and not overwrite:
        return "skipped:output exists (use --overwrite to replace it)"
    return None


def scale_tag(scale: float | None, width: int | None, height: int | None, default_scale: float) -> str:
    """The `x4` in `photo_x4.png`; sizes name themselves as `1920w`, `1080h` or `1920x1080`."""
    if width and height:
        return f"{width}x{height}"
    if width:
        return f"{width}w"
    if height:
        return f"{height}h"
    value = default_scale if scale is None else scale
    return f"x{value:g}"


@dataclass(frozen=True)
class WriteOptions:
    format: str | None = None
    quality: int | None = None
    max_pixels: int | None = None  # inputs over this are refused unread; 0 = no limit; None = the default
    png_compression: int | None = None  # PNG zlib level 0-9; None = images.write.DEFAULT_PNG_COMPRESSION

    def __post_init__(self) -> None:
        if self.max_pixels is not None and self.max_pixels < 0:
            raise UsageError(f"--max-pixels must be 0 (no limit) or a number of pixels, not {self.max_pixels}")
        if self.png_compression is not None and not 0 <= self.png_compression <= 9:
            raise UsageError(f"--png-compression must be 0 (fastest, largest) to 9 (slowest, smallest), "
                             f"not {self.png_compression}")


# ------------------------------------------------------------------ sharding

def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N) with 0 <= K < N: this run takes shard K of N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match:
        raise UsageError(f"--shard takes K/N (this run's part K of N parts, K from 0 to N-1), not {text!r}")
    index, count = int(match[1]), int(match[2])
    if count < 1 or index >= count:
        raise UsageError(f"--shard {text}: K must be 0 to N-1 and N at least 1")
    return index, count


def shard_key(source: Source) -> str:
    """What decides a file's shard: its path relative to the folder argument it was found under
    (the same on every machine that mounts the folder elsewhere), else the path as given."""
    if source.path is None:
        return STDIO
    if source.root is not None:
        return source.path.relative_to(source.root).as_posix()
    return source.path.as_posix()


def in_shard(source: Source, shard: tuple[int, int]) -> bool:
    """Stable: the same file is in the same shard on every run, machine and Python (a sha1 of
    its key, not hash()), and adding files to the folder never moves the others."""
    index, count = shard
    digest = hashlib.sha1(shard_key(source).encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count == index


def select_shard(jobs: list[Job], shard: tuple[int, int] | None) -> list[Job]:
    """The jobs of one shard. Planned over every input first, so each shard decides collisions,
    skips and names exactly as an unsharded run would."""
    if shard is None:
        return jobs
    return [job for job in jobs if in_shard(job.source, shard)]


# ------------------------------------------------------------------ running

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


def _read_when_room(budget: _ReadBudget, source: Source, max_pixels: int | None, stdin_reader: Callable[[], bytes]):
    if not budget.wait_for_room():
        return None  # the run is ending
    image = _read_source(source, max_pixels, stdin_reader)
    budget.hold(image.width * image.height)
    return image


def _read_source(source: Source, max_pixels: int | None, stdin_reader: Callable[[], bytes]):
    from upscale_cli.images.formats import DEFAULT_MAX_PIXELS
    from upscale_cli.images.read import read_image

    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    data = stdin_reader() if source.path is None else source.path
    return read_image(data, max_pixels=limit)


def _write_result(image, job: Job, options: WriteOptions, stdout_writer: Callable[[bytes], None],
                  unchanged: bool = False) -> None:
    """Encode and write one output. An image the converter left as it was (restore's "clean: left
    as is") is the input file's own bytes when the format stays and no --quality was asked: a
    re-encode would only lose quality (a q95 JPEG: about 3 dB)."""
    from upscale_cli.images.atomic import write_bytes_atomically
    from upscale_cli.images.write import encode_image, write_image

    if job.output is not None:
        try:
            job.output.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            from upscale_cli.errors import ImageWriteError

            raise ImageWriteError(f"cannot create folder {job.output.parent}: {err.strerror}", path=job.output) from None
    if unchanged and _same_file_format(job, options):
        data = job.source.path.read_bytes()
        if job.output is None:
            stdout_writer(data)
        else:
            write_bytes_atomically(data, job.output)
        return
    if job.output is None:
        fmt = job.format or writable_format(image.source_format or "") or FALLBACK_FORMAT
        stdout_writer(encode_image(image, fmt.lower(), options.quality, options.png_compression))
        return
    write_image(image, job.output, format=job.format, quality=options.quality,
                       png_compression=options.png_compression)


def _same_file_format(job: Job, options: WriteOptions) -> bool:
    if job.source.path is None or options.quality is not None or options.png_compression is not None:
        return False
    own = writable_format(job.source.path.suffix)
    target = job.format or (writable_format(job.output.suffix) if job.output is not None else own)
    return own is not None and own == target


def _failed(job: Job, err: BaseException, seconds: float) -> JobResult:
    """Any failure of one file as its failed JobResult, one line naming the file."""
    output = None if job.output is None else str(job.output)
    if isinstance(err, UpscaleError):
        if err.path is None:
            err.path = job.source.label
        message = str(err)
    elif isinstance(err, MemoryError):
        message = f"{job.source.label}: out of memory; try a smaller --tile"
    else:
        message = f"{job.source.label}: unexpected error ({type(err).__name__}: {err})"
    return JobResult(job.source.label, output, "failed", seconds, message)


def _planned_result(job: Job) -> JobResult:
    """A job planning already decided: skipped (an existing output's dead temp files tidied) or failed."""
    status, _, reason = job.skip_reason.partition(":")
    if status == "skipped" and job.output is not None:  # an existing output is kept: still tidy
        from upscale_cli.images.atomic import remove_dead_leftovers  # what a killed earlier run left beside it

        remove_dead_leftovers(job.output)
    return JobResult(job.source.label, None if job.output is None else str(job.output), status, error=reason)


def _timed(fn: Callable, *args):
    """(value, seconds, None) or (None, seconds, exception): a file's failure never escapes a thread."""
    start = time.perf_counter()
    try:
        value = fn(*args)
    except Exception as err:  # KeyboardInterrupt and the like are not one file's failure
        return None, time.perf_counter() - start, err
    return value, time.perf_counter() - start, None


def run_job(job: Job, convert: Callable, options: WriteOptions,
            stdin_reader: Callable[[], bytes], stdout_writer: Callable[[bytes], None]) -> JobResult:
    """Read, convert, write one job; every failure ends as a failed JobResult, never an exception."""
    return next(iter(run_jobs([job], lambda _, image: convert(image), options, stdin_reader, stdout_writer)))[1]


def run_jobs(jobs: list[Job], convert: Callable, options: WriteOptions, stdin_reader: Callable[[], bytes],
             stdout_writer: Callable[[bytes], None], convert_many: Callable | None = None
             ) -> Iterator[tuple[int, JobResult]]:
    """Run every job: decoding ahead and writing behind `convert(index, image)`, which runs on the
    caller's thread (the model and its progress callbacks stay there); with `convert_many(indices,
    images)`, consecutive small images of one size are converted together (if that fails, each
    alone, so errors stay per file). Yields (index, JobResult) in input order, each as soon as it
    and all before it are done. On an interruption, writes already started finish (each is atomic)
    and nothing queued starts."""
    readers = ThreadPoolExecutor(1, thread_name_prefix="upscale-read")
    writers = ThreadPoolExecutor(WRITER_THREADS, thread_name_prefix="upscale-write")
    pipe = _Pipe(jobs, options, stdin_reader, readers, _ReadBudget())
    slots: deque[_Slot] = deque()  # in input order, done or being written
    index = 0
    try:
        while index < len(jobs):
            group = pipe.take(index, batch=convert_many is not None)
            for slot in _convert_group(group, convert, convert_many, options, writers, stdout_writer):
                slots.append(slot)
                while slots and (slots[0].ready() or slot.big or _too_many_writes(slots)):
                    yield slots.popleft().finish()
            index += len(group)
        while slots:
            yield slots.popleft().finish()
    finally:
        pipe.budget.close()
        readers.shutdown(wait=True, cancel_futures=True)
        writers.shutdown(wait=True, cancel_futures=True)


def _too_many_writes(slots: deque) -> bool:
    """Outputs waiting to be written: WRITE_BEHIND, or up to BATCH_MAX small ones (a batch's worth)."""
    writing = [slot for slot in slots if not slot.ready()]
    if len(writing) <= WRITE_BEHIND:
        return False
    return len(writing) > BATCH_MAX or sum(slot.pixels for slot in writing) > BIG_OUTPUT_PIXELS


class _Pipe:
    """The decoded inputs, in order: reads submitted ahead, taken one job or one batch at a time."""

    def __init__(self, jobs: list[Job], options: WriteOptions, stdin_reader: Callable[[], bytes],
                 pool: ThreadPoolExecutor, budget: _ReadBudget) -> None:
        self.jobs, self.options, self.stdin_reader, self.pool, self.budget = jobs, options, stdin_reader, pool, budget
        self.reads: dict[int, Future] = {}

    def _submit(self, index: int) -> None:
        for ahead in range(index, min(len(self.jobs), index + BATCH_MAX + 1)):
            if ahead not in self.reads and not self.jobs[ahead].skip_reason:
                self.reads[ahead] = self.pool.submit(_timed, _read_when_room, self.budget, self.jobs[ahead].source,
                                                     self.options.max_pixels, self.stdin_reader)

    def _pop(self, index: int) -> tuple:
        """(index, job, image or None, read seconds, error); a decoded image leaves the budget."""
        job = self.jobs[index]
        if job.skip_reason:
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
        most = BATCH_MAX if first.width * first.height <= TINY_PIXELS else BATCH_LARGER
        while len(group) < most and index + len(group) < len(self.jobs):
            following = index + len(group)
            if self.jobs[following].skip_reason:
                break
            self._submit(following)
            image, _, err = self.reads[following].result()
            if err is not None or image is None or not _same_kind(first, image):
                break
            group.append(self._pop(following))
        return group


def _batchable(image) -> bool:
    return image.alpha is None and image.width * image.height <= BATCH_MAX_PIXELS


def _same_kind(a, b) -> bool:
    return _batchable(b) and a.pixels.shape == b.pixels.shape and a.pixels.dtype == b.pixels.dtype


def _convert_group(group: list[tuple], convert: Callable, convert_many: Callable | None, options: WriteOptions,
                   writers: ThreadPoolExecutor, stdout_writer: Callable[[bytes], None]) -> list["_Slot"]:
    """Convert one job, or a batch of them (each alone if the batch fails); one slot per job."""
    together: list = [None] * len(group)
    if len(group) > 1:
        outs, seconds, err = _timed(convert_many, [g[0] for g in group], [g[2] for g in group])
        if err is None:
            together = [(out, seconds / len(group), None) for out in outs]
    slots = []
    for (index, job, image, read_s, err), done in zip(group, together):
        if job.skip_reason:
            slots.append(_Slot(index, job, _planned_result(job)))
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
        write = writers.submit(_timed, _write_result, out, job, options, stdout_writer, unchanged)
        pixels = out.width * out.height
        slots.append(_Slot(index, job, seconds=read_s + convert_s, write=write, pixels=pixels,
                           big=pixels > BIG_OUTPUT_PIXELS))
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

    def ready(self) -> bool:
        return self.write is None or self.write.done()

    def finish(self) -> tuple[int, JobResult]:
        if self.write is not None:
            _, write_s, err = self.write.result()
            output = None if self.job.output is None else str(self.job.output)
            self.result = (_failed(self.job, err, self.seconds + write_s) if err is not None else
                           JobResult(self.job.source.label, output, "ok", self.seconds + write_s))
        return self.index, self.result
