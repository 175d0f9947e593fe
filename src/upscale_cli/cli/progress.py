"""Console reporting for batch commands: a rich bar (files, and tiles within a file) on a terminal,
one plain line per file otherwise, JSON lines for scripts, and the closing summary."""
from __future__ import annotations

import json
import sys
from contextlib import nullcontext

import typer

from upscale_cli.errors import printable_path


def _read_stdin() -> bytes:
    return sys.stdin.buffer.read()


def _write_stdout(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _can_batch(upscaler) -> bool:
    """Only a plain Upscaler runs several images as one batch: a converter that routes each image
    (restore) does not, nor a model that fits each image as it runs (fit-single)."""
    from upscale_cli.engine import Upscaler

    if type(upscaler) is not Upscaler or upscaler.config.width or upscaler.config.height:
        return False
    try:
        models = [upscaler.model(native) for native in (upscaler.passes_for(1, 1) or (None,))]
    except Exception:  # anything unusual: one image at a time, as before
        return False
    return not any(getattr(getattr(m, "info", None), "fits_at_runtime", True) for m in models)


class BatchReporter:
    """Runs planned jobs and reports each one as the user asked (bar, lines, JSON or quiet)."""

    def __init__(self, total: int, quiet: bool, as_json: bool, record: dict, stdout_busy: bool = False) -> None:
        self.total = total
        self.quiet = quiet
        self.as_json = as_json
        self.record = record  # fields every JSON line carries (model, scale)
        self.stdout_busy = stdout_busy
        self.use_bar = not (quiet or as_json) and sys.stderr.isatty()
        self._progress = None
        self._tile_task = None

    def run(self, jobs, upscaler, options, ray: str | None = None, recipe=None) -> list:
        """Run the jobs through batch.run_jobs (decoding ahead, writing behind the model), or on Ray
        workers that each build `recipe` (--ray ADDRESS), and report each file in input order as
        soon as it and those before it are done."""
        results = []
        with self._bar() as bar:
            file_task = bar.add_task("files", total=len(jobs)) if bar else None
            for index, result, per_file in self._results(jobs, upscaler, options, ray, recipe):
                results.append(result)
                self._report(result, per_file, quiet_skip=jobs[index].source.ignored is not None)
                if bar:
                    bar.advance(file_task)
        self._summary(results)
        return results

    def _results(self, jobs, upscaler, options, ray, recipe):
        if ray is not None:
            from upscale_cli.ray_batch import run_on_ray

            yield from run_on_ray(ray, jobs, recipe, self.record, options)
            return
        from upscale_cli.batch import run_jobs

        # what each file's report adds: what planning chose (an output format), the model that ran
        per_files = [{"notes": list(job.notes)} for job in jobs]
        convert = lambda index, image: self.convert(upscaler, image, per_files[index], options)  # noqa: E731
        convert_many = None
        if _can_batch(upscaler):
            def convert_many(indices, images):
                return self.convert_many(upscaler, images, [per_files[i] for i in indices], options)
        for index, result in run_jobs(jobs, convert, options, _read_stdin, _write_stdout, convert_many):
            yield index, result, per_files[index]

    def convert(self, upscaler, image, per_file: dict, options):
        """Run the converter; one that picks a model per image (restore's JPEG routing) says which,
        and what reading the file had to say (pages left unread) goes on its line."""
        per_file["notes"] += image.notes
        if hasattr(upscaler, "model_for"):
            per_file["model"] = upscaler.model_for(image)
        found = upscaler.found_for(image) if hasattr(upscaler, "found_for") else None
        if found:  # restore --task auto: what it found in this file (JPEG quality, noise) and what it ran
            per_file["found"] = found
        if hasattr(upscaler, "passes_for"):  # the model's native passes (x8 = [4, 2]) before any final resize
            per_file["passes"] = list(upscaler.passes_for(image.height, image.width))
            self._warn_unreadable_output(upscaler.target_size(image.height, image.width), per_file, options)
        out = upscaler.upscale_image(image, self._on_tile)
        self._describe_output(image, out, per_file)
        return out

    def convert_many(self, upscaler, images: list, per_files: list, options) -> list:
        """Several images of one size, no alpha, through the model as one batch (an Upscaler only:
        batch.run_jobs decides which); each file's report as if it had run alone."""
        import torch

        first = images[0]
        size = upscaler.target_size(first.height, first.width)
        for image, per_file in zip(images, per_files):
            per_file["notes"] += image.notes
            per_file["passes"] = list(upscaler.passes_for(image.height, image.width))
            self._warn_unreadable_output(size, per_file, options)
        pixels = upscaler.upscale_tensor(torch.cat([image.pixels for image in images]), self._on_tile, size=size)
        outs = [image.replace(pixels=pixels[k : k + 1]) for k, image in enumerate(images)]
        for image, out, per_file in zip(images, outs, per_files):
            self._describe_output(image, out, per_file)
        return outs

    def _describe_output(self, image, out, per_file: dict) -> None:
        if "scale" in self.record:  # the real factor, also with --width/--height
            per_file["scale"] = round(out.width / image.width, 4)
            per_file["size"] = [out.width, out.height]

    def _warn_unreadable_output(self, size: tuple[int, int], per_file: dict, options) -> None:
        """An output over the input guard is written, but this tool would refuse it as an input:
        say so before the (long) work starts, and on the file's line."""
        from upscale_cli.images.formats import DEFAULT_MAX_PIXELS

        limit = DEFAULT_MAX_PIXELS if options.max_pixels is None else options.max_pixels
        pixels = size[0] * size[1]
        if limit and pixels > limit:
            note = (f"the output ({size[1]} x {size[0]} = {pixels / 1e6:,.0f} MP) is over --max-pixels "
                    f"({limit:,}): to read it back with upscale, pass --max-pixels 0 or a larger value")
            per_file["notes"].append(note)
            if not (self.quiet or self.as_json):
                self.echo(f"note: {note}")

    def _bar(self):
        if not self.use_bar:
            return nullcontext(None)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeRemainingColumn(), transient=True)
        return self._progress

    def _on_tile(self, done: int, total: int) -> None:
        if self._progress is None or total <= 1:
            return
        if self._tile_task is None:
            self._tile_task = self._progress.add_task("tiles", total=total)
        self._progress.update(self._tile_task, completed=done, total=total)
        if done >= total:
            self._progress.remove_task(self._tile_task)
            self._tile_task = None

    def _report(self, result, per_file: dict, quiet_skip: bool = False) -> None:
        """One JSON row per input on stdout (--json), error lines on stderr always, a plain line
        per file otherwise; files in a folder that are not images are only counted (and in --json)."""
        if self.as_json:
            line = {"input": result.input, "output": result.output, **self.record, "notes": [], **per_file,
                    "seconds": round(result.seconds, 4), "status": result.status, "error": result.error}
            typer.echo(json.dumps(line))
        if result.status == "failed":
            typer.echo(f"error: {printable_path(result.error)}", err=True)  # one line, whatever the name holds
        elif not (self.quiet or self.as_json or quiet_skip):
            arrow = result.output or "<stdout>"
            detail = f"{result.seconds:.2f}s" if result.status == "ok" else f"skipped: {result.error}"
            ran = per_file.get("model")
            if result.status == "ok" and per_file.get("found"):
                detail += f", {per_file['found']['summary']}"  # what was found and what ran
            elif result.status == "ok" and ran and ran != self.record.get("model"):
                detail += f", {ran}"  # the batch's model was not the one that ran
            for note in per_file.get("notes", ()):
                detail += f"; note: {note}"
            self.echo(printable_path(f"{result.input} -> {arrow} ({detail})"))  # one line, whatever the names hold

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
