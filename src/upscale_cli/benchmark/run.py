"""One benchmark run: every model on every dataset at every scale, failures collected, never raised.

Per set and scale: the models are built once (runners.py) with the run's --runtime, each runs
once untimed on the set's first image (warm-up), then every image goes through every model and is
scored (protocol.py); a model the runtime compiles runs each image untimed first (its conversion
is not timed: runners.Runner.untimed_calls);
per-image scores become one record per model (records.aggregate). Models whose weights cannot be
had (not cached while offline, or the download fails) are skipped, each with one line saying why
(BenchmarkResult.skipped), not counted as failures; so is a model that does not apply to a
dataset's inputs at a scale (pixel-recursive's 16x16 limit: runners.Runner.not_applicable), or
that has no such native scale (upsampler at x3), for that dataset and scale, whether it is in the
default set or named with -m.

Library code: no printing; progress and errors go to the callbacks of `run_benchmark`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from upscale_cli import metrics
from upscale_cli.benchmark.datasets import DatasetSpec, image_files, lr_size, match_lr
from upscale_cli.benchmark.pictures import make_comparison
from upscale_cli.benchmark.protocol import BenchmarkConfig, Sample, load_sample, score_image
from upscale_cli.benchmark.records import BenchmarkResult, Failure, ImageScore, Skip, aggregate
from upscale_cli.benchmark.runners import Runner, build_runner, select_models, timed_run, with_ensembles
from upscale_cli.choices import Runtime
from upscale_cli.errors import DatasetError, DownloadError, OfflineError, UnsupportedScaleError, UpscaleError

ProgressCallback = Callable[[int, int, str], None]  # (done, total, what is running)
ErrorCallback = Callable[[str], None]


class _Tracker:
    """Progress units (one per model per image) and failures, reported through the callbacks."""

    def __init__(self, total: int, result: BenchmarkResult, on_progress, on_error) -> None:
        self.done, self.total, self.result = 0, total, result
        self.on_progress, self.on_error = on_progress, on_error

    def advance(self, units: int, text: str) -> None:
        self.done = min(self.total, self.done + units)
        if self.on_progress:
            self.on_progress(self.done, self.total, text)

    def skip(self, scale: int, model: str, err: BaseException | str, dataset: str | None = None) -> None:
        reason = err if isinstance(err, str) else _describe(err)
        self.result.skipped.append(Skip(scale, model, reason, dataset))

    def fail(self, dataset: str, scale: int | None, model: str | None, err: BaseException | str) -> None:
        message = err if isinstance(err, str) else _describe(err)
        where = " ".join(p for p in (dataset, f"x{scale}" if scale else "", model or "") if p)
        self.result.failures.append(Failure(dataset, scale, model, message))
        if self.on_error:
            self.on_error(f"{where}: {message}")


def _describe(err: BaseException) -> str:
    if isinstance(err, UpscaleError):
        return str(err)
    first = (str(err).strip().splitlines() or [""])[-1]
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def run_benchmark(
    config: BenchmarkConfig,
    on_progress: ProgressCallback | None = None,
    on_error: ErrorCallback | None = None,
) -> BenchmarkResult:
    """Every model on every dataset at every scale. Failures are collected, never raised."""
    result = BenchmarkResult()
    started = time.perf_counter()
    use_lpips = config.lpips and metrics.lpips_unavailable_reason() is None
    if config.lpips and not use_lpips:
        result.notes.append(metrics.lpips_unavailable_reason())
    tracker = _Tracker(0, result, on_progress, on_error)
    sets = _list_datasets(config, tracker)
    plan = [(scale, select_models(scale, config.models, config.all_models)) for scale in config.scales]
    if config.ensemble:
        plan = [(scale, with_ensembles(names)) for scale, names in plan]
    tracker.total = sum(len(files) * len(models) for _, models in plan for files in sets.values())
    for scale, names in plan:
        runners = _build_runners(names, scale, config, tracker)
        for ds in config.datasets:
            if ds in sets:
                missing = len(names) - len(runners)
                tracker.advance(missing * len(sets[ds]), f"{ds.name} x{scale}")
                _run_set(ds, scale, sets[ds], runners, config, use_lpips, result, tracker)
    result.records.sort(key=lambda r: (_order(config.datasets, r.dataset), r.scale))
    result.seconds = time.perf_counter() - started
    return result


def _order(datasets: tuple[DatasetSpec, ...], name: str) -> int:
    return next((i for i, ds in enumerate(datasets) if ds.name == name), len(datasets))


def _list_datasets(config: BenchmarkConfig, tracker: _Tracker) -> dict[DatasetSpec, list[Path]]:
    sets = {}
    for ds in config.datasets:
        try:
            sets[ds] = image_files(ds.hr_dir)
            if ds.lr_dir is not None:
                image_files(ds.lr_dir)
        except UpscaleError as err:
            tracker.fail(ds.name, None, None, err)
            sets.pop(ds, None)
    return sets


def _build_runners(names: list[str], scale: int, config: BenchmarkConfig, tracker: _Tracker) -> list[Runner]:
    runners = []
    for name in names:
        try:
            runners.append(build_runner(name, scale, config.device, config.progress_downloads, config.runtime))
        except (OfflineError, DownloadError) as err:  # weights that cannot be had here: skipped, said why
            tracker.skip(scale, name, err)
        except UnsupportedScaleError as err:  # no such native scale (upsampler at x3): not applicable
            tracker.skip(scale, name, f"not applicable: {err}")
        except Exception as err:  # any other model that cannot be built is one failure line
            tracker.fail("", scale, name, err)
    return runners


def _run_set(ds, scale, hr_files, runners, config, use_lpips, result, tracker) -> None:
    """One dataset at one scale: warm-up, then every image through every model."""
    lr_index = {p.stem.lower(): p for p in image_files(ds.lr_dir)} if ds.lr_dir is not None else None
    runners = _applicable(runners, ds, scale, hr_files, lr_index, tracker)
    scores: dict[str, list[ImageScore]] = {r.name: [] for r in runners}
    live = list(runners)
    warmed = False
    for hr_path in hr_files:
        label = f"{ds.name} x{scale} {hr_path.name}"
        try:
            sample = _sample_for(ds, hr_path, scale, config, lr_index)
        except Exception as err:
            tracker.fail(ds.name, scale, None, err)
            tracker.advance(len(runners), label)
            continue
        if not warmed:
            live = _warm_up(live, sample, ds, scale, tracker)
            warmed = True
        outputs = {}
        for runner in live:
            score, sr = _score_one(runner, sample, ds.name, scale, use_lpips, tracker, config.runtime)
            if score is not None:
                scores[runner.name].append(score)
                outputs[runner.name] = sr
            tracker.advance(1, f"{label} {runner.name}")
        tracker.advance(len(runners) - len(live), label)
        if config.comparisons and outputs:
            result.comparisons.append(make_comparison(ds.name, scale, sample, outputs, scores))
    for runner in runners:
        _keep_runtime_notes(runner, result)
        if scores[runner.name]:
            result.images.extend(scores[runner.name])
            result.records.append(aggregate(scores[runner.name], config, runner.device))


def _keep_runtime_notes(runner: Runner, result: BenchmarkResult) -> None:
    """The engine's --runtime notes on a network (OpenVINO not installed, a shape that ran in PyTorch
    instead), each once with its model: the records name the runtime asked for, these say where it
    did not run. The report says once that OpenCV's models and interpolation are not affected."""
    if not runner.network:
        return
    for note in runner.upscaler.notes:
        line = f"{runner.name}: {note}"
        if note.startswith("--runtime") and line not in result.notes:
            result.notes.append(line)


def _applicable(runners: list[Runner], ds: DatasetSpec, scale: int, hr_files: list[Path], lr_index,
                tracker: _Tracker) -> list[Runner]:
    """The runners whose size requirement admits every LR input of the set; the others are
    skipped for this set and scale with one line saying why (not failures)."""
    if not any(r.max_input_side or r.needs_mask for r in runners):
        return runners
    inputs = []
    for hr in hr_files:
        lr = match_lr(hr, lr_index, scale) if lr_index is not None else None
        size = None if lr_index is not None and lr is None else lr_size(hr, scale, lr)
        if size is not None:  # unreadable or unmatched images fail on their own when loaded
            inputs.append((hr.name, size))
    kept = []
    for runner in runners:
        reason = runner.not_applicable(inputs)
        if reason is None:
            kept.append(runner)
            continue
        tracker.skip(scale, runner.name, reason, ds.name)
        tracker.advance(len(hr_files), f"{ds.name} x{scale} {runner.name}")
    return kept


def _sample_for(ds: DatasetSpec, hr_path: Path, scale: int, config: BenchmarkConfig, lr_index) -> Sample:
    lr_path = None
    if lr_index is not None:
        lr_path = match_lr(hr_path, lr_index, scale)
        if lr_path is None:
            raise DatasetError(f"no LR image for it in {ds.lr_dir}", path=hr_path)
    return load_sample(ds, hr_path, lr_path, scale, config)


def _warm_up(runners: list[Runner], sample: Sample, ds: DatasetSpec, scale: int, tracker: _Tracker) -> list[Runner]:
    """Run each model once untimed (lazy init, allocator, caches); drop those that fail."""
    live = []
    for runner in runners:
        try:
            timed_run(runner, sample.lr)
            live.append(runner)
        except Exception as err:
            tracker.fail(ds.name, scale, runner.name, err)
    return live


def _score_one(runner: Runner, sample: Sample, dataset: str, scale: int, use_lpips: bool, tracker: _Tracker,
               runtime: Runtime):
    try:
        sr, seconds, memory = _compiled_timed_run(runner, sample.lr)
        if sr.shape != sample.hr.shape:
            raise UpscaleError(f"output {sr.shape[1]}x{sr.shape[0]} is not the HR size {sample.hr.shape[1]}x{sample.hr.shape[0]}")
    except Exception as err:
        tracker.fail(dataset, scale, runner.name, f"{sample.name}: {_describe(err)}")
        return None, None
    score = ImageScore(
        dataset=dataset,
        scale=scale,
        model=runner.name,
        image=sample.name,
        **score_image(sr, sample.hr, border=scale, optional=use_lpips),
        seconds=seconds,
        megapixels=sr.shape[0] * sr.shape[1] / 1e6,
        peak_mem_mb=memory,
        runtime=runtime,
    )
    return score, sr


def _compiled_timed_run(runner: Runner, lr):
    """timed_run, after the untimed calls a compiled runtime needs: every image has a size of its
    own, and converting its tile shapes takes seconds (openvino on a shape's first call, auto on its
    second), which is the runtime's set-up, not the model's speed. A timed call that still
    converted (a tile plan that changed between calls) is timed again, now compiled."""
    if not runner.untimed_calls:
        return timed_run(runner, lr)
    from upscale_cli.compiled import CompiledRunner

    for _ in range(runner.untimed_calls):
        timed_run(runner, lr)
    before = CompiledRunner.conversions
    out = timed_run(runner, lr)
    return out if CompiledRunner.conversions == before else timed_run(runner, lr)
