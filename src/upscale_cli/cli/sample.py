"""`upscale tiny.png -m pixel-recursive --samples 4 --temperature 0.8 --seed 1`: several answers per input.

Reached from the default command when the model samples (pixel-recursive) or --samples,
--temperature or --seed is given. Each input's line goes to stderr; with --json, stdout has one
report.ReportRow per answer written (a skipped or failed input: one row). Outputs are planned like every upscale (batch.plan_jobs: never
an input, existing ones skipped unless --overwrite), then named photo_x4_s1.png ... for several
answers. All answers of a file are drawn before the first is written, and each file is written
atomically, so a refused or interrupted file leaves no output behind.
"""
from __future__ import annotations

import os
import time

from upscale_cli.cli.options import BatchOptions
from upscale_cli.errors import UpscaleError, UsageError, printable_path
from upscale_cli.report import ReportRow, RowDefaults

SAMPLING_SCALE = 4
SAMPLING_THREADS = 1


def wants_sampling(model: str, samples: int | None, temperature: float | None, seed: int | None) -> bool:
    """Whether the default command hands over to this one: a sampling option, or a sampling model."""
    if samples is not None or temperature is not None or seed is not None:
        return True
    return _model_samples(model)


def _model_samples(model: str) -> bool:
    """From the catalogue entry's architecture, or a weights file's metadata, without building it."""
    from upscale_cli.catalog import resolve
    from upscale_cli.models import sampling_arch

    try:
        spec = resolve(model)
    except UpscaleError:
        return False  # the normal path says what is wrong with the name
    if spec.local_path is None:
        return sampling_arch(spec.arch)
    if spec.local_path.suffix.lower() != ".safetensors":
        return False
    try:
        from safetensors import safe_open

        with safe_open(str(spec.local_path), framework="pt") as handle:
            arch = (handle.metadata() or {}).get("arch")
    except Exception:  # not readable as safetensors: the normal path reports it in one line
        return False
    return isinstance(arch, str) and sampling_arch(arch)


def sample_command(paths: list[str], model: str, scale: float | None, output: str | None, recursive: bool,
                   batch: BatchOptions, quiet: bool, samples: int | None, temperature: float | None,
                   seed: int | None, others: dict, as_json: bool) -> None:
    """`others`: the default command's options that sampling does not take (refused when given)."""
    from upscale_cli.batch import check_output_options, expand_inputs, plan_jobs
    from upscale_cli.cli.progress import BatchReporter
    from upscale_cli.sampling import DEFAULT_TEMPERATURE, SampleConfig, sample_paths

    given = [name for name, value in others.items() if value not in (None, False, 0)]
    if given:
        raise UsageError(f"{', '.join(given)} cannot be used with a sampling model ({model}); "
                         "it generates whole images pixel by pixel, one file at a time")
    if scale is not None and scale != SAMPLING_SCALE:
        raise UsageError(f"{model} samples x{SAMPLING_SCALE} answers only; leave out -x or give -x {SAMPLING_SCALE}")
    if output == "-":
        raise UsageError("sampling writes files; -o - (stdout) is not supported with it")
    check_output_options(as_json, output)
    config = SampleConfig(samples=1 if samples is None else samples, seed=seed if seed is not None else int.from_bytes(os.urandom(4), "big"),
                          temperature=DEFAULT_TEMPERATURE if temperature is None else temperature)
    net = _load_sampling_model(model, batch.device)
    sources = expand_inputs(paths, recursive=recursive)
    if any(source.path is None for source in sources):
        raise UsageError("sampling reads image files; - (stdin) is not supported with it")
    # every answer's own name is checked against every input, other answers and existing files
    jobs = plan_jobs(sources, output, f"x{SAMPLING_SCALE}", batch.fmt, batch.overwrite,
                     written=lambda target: sample_paths(target, config.samples))
    reporter = BatchReporter(len(jobs), quiet=quiet, as_json=as_json, defaults=RowDefaults(model=model))
    reporter.finish([row for job in jobs for row in _run_job(job, net, config, batch, reporter)], [])


def _load_sampling_model(model: str, device: str):
    from upscale_cli.engine import select_device
    from upscale_cli.loader import load_model

    net = load_model(model, SAMPLING_SCALE, progress=True)
    from upscale_cli.models.descriptor import Sampling

    if not isinstance(net.info, Sampling):
        raise UsageError(f"--samples, --temperature and --seed need a model that samples (pixel-recursive); "
                         f"{model} gives one answer")
    import torch

    # Thousands of steps on a few dozen pixels each: threads cost more than they give. Measured on a
    # busy 2-core machine, four 8x8 -> 32x32 answers: 4.5 s on one thread, 183 s on two.
    torch.set_num_threads(SAMPLING_THREADS)
    return net.to(select_device(device))


def _run_job(job, net, config, batch: BatchOptions, reporter) -> list[ReportRow]:
    """Sample and write one file's answers, each reported (a JSON row each with --json) and the
    file's line on stderr (an error line always); its report rows: one per answer written, or the
    one row of a skipped or failed input, said as every batch command says it (progress.BatchReporter)."""
    label = job.source.label
    row = ReportRow.start(label, reporter.defaults)
    if job.planned:
        return [reporter.report(row.end(job.planned.status, 0.0, error=job.planned.message))]
    started = time.perf_counter()
    try:
        written, size = _sample_file(job, net, config, batch, reporter.use_bar)
    except UpscaleError as err:
        return [reporter.report(row.end("failed", time.perf_counter() - started, error=f"{label}: {err}"))]
    seconds = time.perf_counter() - started
    if not (reporter.quiet or reporter.as_json):
        names = ", ".join(str(p) for p in written)
        reporter.echo(printable_path(f"{label} -> {names} ({seconds:.1f} s, temperature {config.temperature:g}, "
                                     f"seed {config.seed})"))
    return [reporter.report(_answer_row(label, reporter.defaults, path, k, len(written), size, seconds, config),
                            plain_line=False) for k, path in enumerate(written, 1)]


def _answer_row(label: str, defaults: RowDefaults, path, k: int, count: int, size: tuple[int, int, int, int],
                seconds: float, config) -> ReportRow:
    """The row of one answer file: answers of a file are drawn together, so each has an equal share of the time."""
    row = ReportRow.start(label, defaults)
    in_height, in_width, height, width = size
    row.scale, row.size, row.passes = round(width / in_width, 4), [width, height], [SAMPLING_SCALE]
    row.notes = [f"answer {k} of {count}: temperature {config.temperature:g}, seed {config.seed}"]
    return row.end("ok", seconds / count, output=str(path))


def _sample_file(job, net, config, batch: BatchOptions, show_rows: bool):
    from upscale_cli.images.formats import DEFAULT_MAX_PIXELS
    from upscale_cli.images.read import read_image
    from upscale_cli.images.atomic import make_folder
    from upscale_cli.images.write import write_image
    from upscale_cli.resize import resize
    from upscale_cli.sampling import check_input_size, draw_samples, sample_paths

    image = read_image(job.source.path, DEFAULT_MAX_PIXELS if batch.max_pixels is None else batch.max_pixels)
    check_input_size(net, image.height, image.width)
    targets = sample_paths(job.output, config.samples)  # checked by plan_jobs: never an input, none exists
    with _row_progress(show_rows, config.samples) as on_row:
        answers = draw_samples(net, image.pixels, config, on_row)  # (N, C, 4H, 4W)
    size = tuple(answers.shape[-2:])
    alpha = resize(image.alpha, size, "bicubic") if image.alpha is not None else None
    make_folder(job.output.parent)  # -o a new folder, as every upscale makes it
    for k, target in enumerate(targets):
        write_image(image.replace(pixels=answers[k:k + 1].contiguous(), alpha=alpha), target, job.format or batch.fmt,
                    quality=batch.quality, png_compression=batch.png_compression)
    return targets, (image.height, image.width, *size)


class _row_progress:
    """A rich bar over the rows being generated where the batch shows a bar (a terminal, not --quiet
    or --json); else nothing."""

    def __init__(self, show: bool, samples: int) -> None:
        self.show = show
        self.samples = samples
        self.bar = None

    def __enter__(self):
        if not self.show:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn(f"sampling {self.samples} x rows"), BarColumn(),
                            TextColumn("{task.completed}/{task.total}"), TimeRemainingColumn(),
                            console=Console(stderr=True), transient=True)
        self.bar.start()
        task = self.bar.add_task("rows", total=None)
        return lambda done, total: self.bar.update(task, completed=done, total=total)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
