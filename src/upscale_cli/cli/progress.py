"""Console reporting for batch commands: a rich bar (files, tiles within a file, and the frames of an
animation or a video with their rate and time left) on a terminal, one plain line per file otherwise
(and a video's progress every FRAME_LINE_SECONDS), JSON lines for scripts, and the closing summary."""
from __future__ import annotations

import json
import sys
import time
from contextlib import nullcontext

import typer

from upscale_cli.cli import stdout
from upscale_cli.errors import printable_path
from upscale_cli.report import ReportRow, RowDefaults


FRAME_LINE_SECONDS = 10.0  # without a terminal, a long video's progress line at most this often


def _read_stdin() -> bytes:
    from upscale_cli.images.read import read_stream

    return read_stream(getattr(sys.stdin, "buffer", None))  # bounded: an endless stdin ends in one line


def _write_stdout(data: bytes) -> None:
    stdout.write_bytes(data)  # all of it, or one line and exit 1: never a truncated image and exit 0


class BatchReporter:
    """Shows a batch's files as the user asked (bar, lines, JSON or quiet) while they run, and
    closes it; the running is pipeline.py's (or ray_batch.py's)."""

    def __init__(self, total: int, quiet: bool, as_json: bool, defaults: RowDefaults,
                 stdout_busy: bool = False) -> None:
        self.total = total
        self.quiet = quiet
        self.as_json = as_json
        self.defaults = defaults  # what every row of the batch carries (model, task, ...)
        self.stdout_busy = stdout_busy
        self.use_bar = not (quiet or as_json) and sys.stderr.isatty()
        self._progress = None
        self._tile_task = None
        self._tile_label = "tiles"  # the bar's line for a file's progress: the converter may name its own
        self._frames: _FrameRate | None = None  # the animation or video being converted

    def run(self, jobs, upscaler, options, ray: str | None = None, recipe=None) -> list:
        """Report each file as the batch runs it, in input order as soon as it and those before it
        are done: pipeline.run_converted here (decoding ahead, writing behind the model), or
        ray_batch.run_on_ray on Ray workers that each build `recipe` (--ray ADDRESS)."""
        if ray is not None:
            from upscale_cli.ray_batch import run_on_ray

            results = run_on_ray(ray, jobs, recipe, self.defaults, options)
        else:
            from upscale_cli.pipeline import run_converted

            self._tile_label = getattr(upscaler, "progress_label", self._tile_label)  # sampling: "sampling N x rows"
            results = run_converted(jobs, upscaler, options, self.defaults, _read_stdin, _write_stdout,
                                    on_tile=self._on_tile, on_note=self._early_note, on_frame=self._on_frame)
        return self.show(jobs, results)

    def show(self, jobs, results) -> list[ReportRow]:
        """Show (index, ReportRow) pairs as they come: the bar, each row's line or JSON row, then the
        summary; the rows, in order. A file with several answers has a row each (one index): the bar
        and the summary count files."""
        shown, first_rows = [], {}
        with self._bar() as bar:
            file_task = bar.add_task("files", total=len(jobs)) if bar else None
            for index, row in results:
                shown.append(row)
                self.report(row, plain_line=jobs[index].source.has_own_line)
                if index not in first_rows:
                    first_rows[index] = row
                    if bar:
                        bar.advance(file_task)
        self._summary(list(first_rows.values()))
        return shown

    def _early_note(self, note: str) -> None:
        """A note about a file said before its (long) work starts, besides its line (plain output only)."""
        if not (self.quiet or self.as_json):
            self.echo(f"note: {note}")

    def _bar(self):
        if not self.use_bar:
            return nullcontext(None)
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        # stderr: rich's default console is stdout, where the bar and each file's line (echo) would
        # follow an `-o -` image or land in `> list.txt` whenever stderr is a terminal
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeRemainingColumn(), transient=True, console=Console(stderr=True))
        return self._progress

    def _on_tile(self, done: int, total: int) -> None:
        if self._progress is None or total <= 1:
            return
        if self._tile_task is None:
            self._tile_task = self._progress.add_task(self._tile_label, total=total)
        self._progress.update(self._tile_task, completed=done, total=total)
        if done >= total:
            self._progress.remove_task(self._tile_task)
            self._tile_task = None

    def _on_frame(self, label: str, done: int, total: int | None) -> None:
        """An animation's or a video's frames: a bar with the rate and the time left on a terminal,
        else a plain line every FRAME_LINE_SECONDS (none with -q or --json)."""
        if self._frames is None or self._frames.label != label:
            self._frames = _FrameRate(label, done)
        rate = self._frames.update(done)
        if self._progress is not None:
            self._frames_bar(label, done, total, rate)
        elif not (self.quiet or self.as_json) and self._frames.line_due(done, total):
            self.echo(printable_path(self._frames.line(done, total, rate)))

    def _frames_bar(self, label: str, done: int, total: int | None, rate: float | None) -> None:
        frames = self._frames
        title = f"frames{f' ({rate:.1f} fps)' if rate else ''}"
        if frames.task is None:
            frames.task = self._progress.add_task(title, total=total, completed=done)
        self._progress.update(frames.task, completed=done, total=total, description=title)
        if total is not None and done >= total:
            self._progress.remove_task(frames.task)
            frames.task = None

    def report(self, row: ReportRow, plain_line: bool = True) -> ReportRow:
        """One JSON row per input (per answer written) on stdout (--json), error lines on stderr
        always, a plain line per row otherwise (skipped ones too) unless not `plain_line` (files in
        a folder that are not images are only counted, and in --json); the row."""
        if self.as_json:
            stdout.echo(json.dumps(row.as_json()))  # a failed write: one line, exit 1
        if row.status == "failed":
            typer.echo(f"error: {printable_path(row.error)}", err=True)  # one line, whatever the name holds
        elif plain_line and not (self.quiet or self.as_json):
            self.echo(printable_path(self._line(row)))  # one line, whatever the names hold
        return row

    def _line(self, row: ReportRow) -> str:
        """`in -> out (0.12s, ...; note: ...)`, or `in (skipped: why)`."""
        if row.status != "ok":
            return f"{row.input} (skipped: {row.error})"
        detail = f"{row.seconds:.2f}s"
        if row.found:
            detail += f", {row.found['summary']}"  # what was found and what ran
        elif row.model and row.model != self.defaults.model:
            detail += f", {row.model}"  # the batch's model was not the one that ran
        for note in row.notes:
            detail += f"; note: {note}"
        return f"{row.input} -> {row.output or '<stdout>'} ({detail})"

    def echo(self, line: str) -> None:
        if self._progress is not None:
            self._progress.console.print(line, markup=False, highlight=False)
        else:
            typer.echo(line, err=True)

    def finish(self, results, notes) -> None:
        """The close every batch command shares: each note once, then exit 1 if any file failed."""
        for note in dict.fromkeys(notes):
            self.note(note)
        if any(r.status == "failed" for r in results):
            raise typer.Exit(1)

    def note(self, line: str) -> None:
        if not self.quiet:
            typer.echo(f"note: {line}", err=True)

    def _summary(self, results) -> None:
        counts = {s: sum(r.status == s for r in results) for s in ("ok", "skipped", "failed")}
        if self.quiet and not counts["failed"]:
            return
        if len(results) > 1 or counts["failed"]:
            typer.echo(f"{counts['ok']} done, {counts['skipped']} skipped, {counts['failed']} failed", err=True)


class _FrameRate:
    """One input's frames over time: the rate since it started (frames resumed from an earlier run
    do not count), and when the next plain progress line is due."""

    def __init__(self, label: str, done: int) -> None:
        self.label, self.first, self.start = label, done, time.monotonic()
        self.next_line = self.start + FRAME_LINE_SECONDS
        self.task = None

    def update(self, done: int) -> float | None:
        seconds = time.monotonic() - self.start
        return (done - self.first) / seconds if seconds > 0 and done > self.first else None

    def line_due(self, done: int, total: int | None) -> bool:
        now = time.monotonic()
        if now < self.next_line or (total is not None and done >= total):
            return False
        self.next_line = now + FRAME_LINE_SECONDS
        return True

    def line(self, done: int, total: int | None, rate: float | None) -> str:
        of = f" of {total:,}" if total else ""
        speed = f", {rate:.1f} fps" if rate else ""
        left = f", about {(total - done) / rate:.0f} s left" if rate and total else ""
        return f"{self.label}: {done:,}{of} frames{speed}{left}"
