"""Several outputs of one input: a converter that gives `Answers` (pixel-recursive's N sampled
answers) instead of one image, as the batch runner (pipeline.py) writes and reports them.

The answers go to the job's planned names (batch.Job.answers, checked by planning like any output:
never an input, another's output, nor an existing file unless --overwrite), in order. All of a
file's answers are drawn before the first is written, every one is encoded before the first file
is written, and if any of them cannot be written, those already in place are removed: a failure
leaves none of that file's answers behind. Each answer has its own report row (report.ReportRow),
with its own notes and an equal share of the file's time.
"""
from __future__ import annotations

import copy
import os
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from upscale_cli.batch import Job, JobResult, WriteOptions
from upscale_cli.errors import ImageWriteError, UpscaleError, printable_path
from upscale_cli.report import ReportRow


@dataclass(frozen=True)
class Answers:
    """A converter's outputs for one input, in order; `notes[k]`: what answer k's row says."""

    images: tuple
    notes: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        if not self.images:
            raise ValueError("Answers needs at least one image")
        if self.notes and len(self.notes) != len(self.images):
            raise ValueError(f"{len(self.notes)} notes for {len(self.images)} answers")

    @property
    def pixels(self) -> int:
        """What the writes hold: every answer's pixels."""
        return sum(image.width * image.height for image in self.images)

    def notes_of(self, k: int) -> tuple[str, ...]:
        return self.notes[k] if self.notes else ()


def answer_paths(job: Job) -> tuple[Path, ...]:
    """Where a job's answers go: its planned answers, else its one output."""
    return job.answers or ((job.output,) if job.output is not None else ())


def write_answers(answers: Answers, job: Job, options: WriteOptions, group) -> Future:
    """Encode every answer, then write each atomically to its planned name through the DurableGroup;
    the future of them all in place (its exception: the first failure, every answer then removed)."""
    from upscale_cli.images.atomic import make_folder, write_bytes_atomically

    paths = answer_paths(job)
    if job.output is None:
        raise UpscaleError("several answers are written to files, not to stdout (-o -); give -o FILE")
    if len(paths) != len(answers.images):
        raise UpscaleError(f"{len(answers.images)} answers for {len(paths)} planned outputs")
    make_folder(job.output.parent, path=job.output)
    encoded = [_encode(image, path, job, options) for image, path in zip(answers.images, paths)]
    placed: list[Future] = []
    try:
        for data, path in zip(encoded, paths):
            placed.append(write_bytes_atomically(data, path, group))
    except BaseException:
        _undo(placed, paths, group)
        raise
    return _all_or_none(placed, paths)


def _encode(image, path: Path, job: Job, options: WriteOptions) -> bytes:
    from upscale_cli.images.formats import output_format
    from upscale_cli.images.write import encode_image

    try:
        return encode_image(image, output_format(job.format or path.suffix), options.quality, options.png_compression)
    except ImageWriteError as err:
        raise ImageWriteError(err.message, path=printable_path(path)) from err


def _undo(placed: list[Future], paths: tuple[Path, ...], group) -> None:
    """A write failed midway: the answers already queued are waited for, then removed."""
    if group is not None:
        group.flush()
    for future in placed:
        if future is not None:
            future.exception()  # waits for its rename (or its failure)
    _remove_placed(placed, paths)


def _remove_placed(placed: list[Future], paths: tuple[Path, ...]) -> None:
    for future, path in zip(placed, paths):
        if future is None or future.exception() is None:  # None: renamed already (no group)
            try:
                os.unlink(path)
            except OSError:
                pass


def _all_or_none(placed: list[Future], paths: tuple[Path, ...]) -> Future:
    """One future for every answer's rename: once all are done, ok, or the first failure with the
    answers that did reach their names removed."""
    whole: Future = Future()
    pending = [f for f in placed if f is not None]
    left = [len(pending)]
    lock = threading.Lock()

    def one_done(_) -> None:
        with lock:
            left[0] -= 1
            if left[0]:
                return
        errors = [f.exception() for f in pending if f.exception() is not None]
        if errors:
            _remove_placed(placed, paths)
            whole.set_exception(errors[0])
        else:
            whole.set_result(None)

    if not pending:
        whole.set_result(None)
    for future in pending:
        future.add_done_callback(one_done)
    return whole


def answer_rows(job: Job, result: JobResult, row: ReportRow, notes: list[tuple[str, ...]]) -> list[ReportRow]:
    """An ok job's rows, one per answer written: what its run recorded, the answer's notes, its
    name, an equal share of the time (the answers of a file are drawn, and written, together)."""
    rows = []
    for path, own in zip(answer_paths(job), notes):
        answer = copy.deepcopy(row)
        answer.notes = [*job.notes, *row.notes, *own]
        rows.append(answer.end("ok", result.seconds / len(notes), output=str(path)))
    return rows
