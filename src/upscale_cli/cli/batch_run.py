"""What `upscale` (sampling models too) and `upscale restore` do around their converter, written
once: check the output options and --shard before any model is loaded, plan the jobs and keep this
shard's, then run them through the batch runner (here, or on Ray), report each file, and close with
the notes and the exit code."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from upscale_cli.batch import WriteOptions, check_output_options, parse_shard, plan_jobs, select_shard
from upscale_cli.cli.options import BatchOptions
from upscale_cli.cli.progress import BatchReporter


@dataclass(frozen=True)
class BatchRun:
    """One command's batch: its options, checked, and the write options and shard they give."""

    batch: BatchOptions
    output: str | None
    quiet: bool
    as_json: bool
    write: WriteOptions
    part: tuple[int, int] | None  # --shard K/N

    @classmethod
    def start(cls, batch: BatchOptions, output: str | None, quiet: bool, as_json: bool) -> "BatchRun":
        """The options checked before any work: -o with --json, the write options, --shard."""
        check_output_options(as_json, output)
        write = WriteOptions(format=batch.fmt, quality=batch.quality, max_pixels=batch.max_pixels,
                             png_compression=batch.png_compression, max_frames=batch.max_frames,
                             video=_video_settings(batch))
        part = parse_shard(batch.shard) if batch.shard is not None else None
        return cls(batch, output, quiet, as_json, write, part)

    def sources(self, paths: list[str], recursive: bool) -> list:
        """The inputs the paths name (a folder's videos with --video)."""
        from upscale_cli.batch import expand_inputs

        return expand_inputs(paths, recursive=recursive, videos=self.batch.videos)

    def plan(self, sources: list, tag: str, answers: Callable[[Path], list[Path]] | None = None) -> list:
        """This shard's jobs: every input named, skipped or failed before any work (batch.plan_jobs).
        `answers(target)`: the names of a converter's several outputs (sampling), each checked as an output."""
        return select_shard(plan_jobs(sources, self.output, tag, self.batch.fmt, self.batch.overwrite, written=answers),
                            self.part)

    def run(self, jobs: list, converter, defaults, recipe: Callable[[], object],
            notes: Callable[[], Iterable[str]]) -> None:
        """Run and report the jobs; `recipe` makes what each Ray worker builds (--ray only), `notes`
        gives the converter's notes once it has run. Exit 1 if any file failed."""
        reporter = BatchReporter(len(jobs), quiet=self.quiet, as_json=self.as_json, defaults=defaults,
                                 stdout_busy=self.output == "-")
        ray = self.batch.ray
        results = reporter.run(jobs, converter, self.write, ray=ray, recipe=recipe() if ray is not None else None)
        reporter.finish(results, notes())


def _video_settings(batch: BatchOptions):
    """--video-codec, --crf, --pix-fmt as the video writer's settings (checked there: one line each);
    None (the writer's defaults) when none is given, so a run of images never loads the video code."""
    if batch.video_codec is None and batch.crf is None and batch.pix_fmt is None:
        return None
    from upscale_cli.video.settings import VideoSettings

    return VideoSettings(codec=batch.video_codec, crf=batch.crf, pix_fmt=batch.pix_fmt)
