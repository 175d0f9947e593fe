"""Run a planned batch on a Ray cluster: `upscale in/ -o out/ --ray auto|ADDRESS`, and the same
`--ray` of `upscale restore`, `upscale fit-single` and sampling models, each through its recipe
(UpscaleRecipe, RestoreRecipe, FitRecipe, SampleRecipe): the settings its workers build the
command's converter from.

The caller plans every job as a local run would (names, skips, collisions, --shard) and keeps
the console: progress, output lines and --json rows come back to it in input order. Workers are
Ray actors, one model each (one per GPU of the cluster, else one per CPU slot); each reads its
files and writes its outputs itself (so the paths must be the same on every node: a shared
folder), with the same per-file isolation and atomic writes as a local run (pipeline.run_jobs).
A worker that dies fails its files, each on its own line. Ray is an optional extra
(`pip install upscale-cli[ray]`); it is imported only here, only when --ray is given.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Protocol

from upscale_cli.batch import Job, WriteOptions
from upscale_cli.errors import UpscaleError, UsageError
from upscale_cli.report import ReportRow, RowDefaults

if TYPE_CHECKING:  # settings only: the engine, restore and fit-single load on the workers, when a recipe runs
    from upscale_cli.scale_plan import UpscaleConfig
    from upscale_cli.fit_single.converter import SizeRequest
    from upscale_cli.fit_single.fitting import FitConfig
    from upscale_cli.restore import RestoreConfig
    from upscale_cli.sampling import SampleConfig

CHUNK = 8  # jobs per call to a worker: few round trips for small files, still even for large ones
AUTO = "auto"


def connect(address: str):
    """The ray module, connected: `auto` joins the cluster this machine is part of (RAY_ADDRESS or a
    local `ray start`), else starts a local instance; anything else is a cluster address."""
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray: pip install 'upscale-cli[ray]' (or pip install ray)") from None
    if ray.is_initialized():
        return ray
    # Workers must import upscale_cli as this process does (an editable checkout, PYTHONPATH).
    # ${PYTHONPATH} keeps what a node sets itself (Ray expands it there).
    runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join([*_import_paths(), "${PYTHONPATH}"])}}
    options = dict(runtime_env=runtime_env, log_to_driver=False, include_dashboard=False)
    try:
        if address == AUTO:
            try:
                ray.init(address="auto", **options)
            except ConnectionError:
                ray.init(**options)
        else:
            ray.init(address=address, **options)
    except Exception as err:  # Ray raises many kinds for a bad address
        raise UpscaleError(f"--ray {address}: cannot connect to the Ray cluster ({type(err).__name__}: {err})") from None
    return ray


def _import_paths() -> list[str]:
    """The folder holding this upscale_cli package, then this process's PYTHONPATH."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return [here, *[p for p in extra if p != here]]


class ConverterRecipe(Protocol):
    """What each worker builds once, its converter (pipeline.run_converted's), from plain settings:
    a recipe is pickled to the workers, never a loaded model. One per command that runs on Ray."""

    def __call__(self) -> object: ...


@dataclass(frozen=True)
class UpscaleRecipe:
    """`upscale --ray`: the Upscaler of `config` (restoring first with `restore`, for --restore)."""

    config: UpscaleConfig
    restore: RestoreConfig | None = None

    def __call__(self):
        from upscale_cli.engine import Upscaler

        upscaler = Upscaler(self.config, progress=False)
        upscaler.prepare()
        if self.restore is None:
            return upscaler
        from upscale_cli.restore import RestoreThenUpscale, batch_restore

        return RestoreThenUpscale(batch_restore(self.restore, progress=False), upscaler)


@dataclass(frozen=True)
class RestoreRecipe:
    """`upscale restore --ray`: batch_restore of `config`; the --mask file (an absolute path) is read
    on each worker, as its inputs are (same paths on every node), rather than sent as pixels."""

    config: RestoreConfig
    mask: str | None = None

    def __call__(self):
        from upscale_cli.restore import batch_restore, read_mask

        return batch_restore(self.config, None if self.mask is None else read_mask(self.mask), progress=False)


@dataclass(frozen=True)
class FitRecipe:
    """`upscale fit-single --ray`: a FitConverter of `config` at `request`'s size, with no progress
    of its own (the caller's lines come from the rows); `save_model` is written by the worker."""

    config: FitConfig
    request: SizeRequest
    save_model: Path | None = None

    def __call__(self):
        from upscale_cli.fit_single.converter import FitConverter

        return FitConverter(self.config, self.request, self.save_model)


@dataclass(frozen=True)
class SampleRecipe:
    """A sampling model's --ray (-m pixel-recursive): the model loaded on each worker, drawing with
    `config` (its seed chosen once, by the caller), so the answers are a local run's."""

    model: str
    config: SampleConfig
    device: str = "auto"

    def __call__(self):
        from upscale_cli.sample_converter import SampleConverter, load_sampler

        return SampleConverter(load_sampler(self.model, self.device, progress=False), self.config)


class _Worker:
    """One model, built once on its node; runs chunks of jobs through pipeline.run_converted there."""

    def __init__(self, make_converter: ConverterRecipe, defaults: RowDefaults, options: WriteOptions,
                 cwd: str) -> None:
        # the caller's relative paths (inputs, -o, --mask, --save-model) name the same files here: a
        # Ray worker starts elsewhere. A node without that folder still runs absolute paths; a
        # relative one then fails its file in one line (no such file).
        with contextlib.suppress(OSError):
            os.chdir(cwd)
        self.converter = make_converter()
        self.defaults = defaults
        self.options = options

    def run(self, jobs: list[Job]) -> list[list[ReportRow]]:
        """Each job's rows (one, or one per answer written), in order."""
        from upscale_cli.pipeline import run_converted

        rows: list[list[ReportRow]] = [[] for _ in jobs]
        for index, row in run_converted(jobs, self.converter, self.options, self.defaults, _no_stdin, _no_stdout):
            rows[index].append(row)
        return rows


def _no_stdin() -> bytes:
    raise UsageError("--ray cannot read stdin (-); give files or folders")


def _no_stdout(data: bytes) -> None:
    raise UsageError("--ray cannot write to stdout (-o -)")


def worker_shape(ray) -> tuple[int, dict]:
    """(how many workers, each one's resources): one per GPU when the cluster has GPUs, else one
    per CPU slot."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return gpus, {"num_gpus": 1, "num_cpus": 1}
    return max(1, int(resources.get("CPU", 1))), {"num_cpus": 1}


def run_on_ray(address: str, jobs: list[Job], make_converter: ConverterRecipe, defaults: RowDefaults,
               options: WriteOptions) -> Iterator[tuple[int, ReportRow]]:
    """Yield (index, ReportRow) in input order, as `pipeline.run_converted` does locally.
    Jobs planning already decided (skips, planned failures) never leave this process."""
    from upscale_cli.pipeline import planned_row

    if any(job.source.path is None or job.output is None for job in jobs if not job.planned):
        raise UsageError("--ray takes files and folders, not stdin or stdout (-)")
    runnable = [i for i, job in enumerate(jobs) if not job.planned]
    if not runnable:  # a rerun with everything done: no cluster needed
        for index, job in enumerate(jobs):
            yield index, planned_row(job, defaults)
        return
    ray = connect(address)
    chunks = [runnable[i : i + CHUNK] for i in range(0, len(runnable), CHUNK)]
    chunk_of = {index: position // CHUNK for position, index in enumerate(runnable)}
    count, resources = worker_shape(ray)
    count = max(1, min(count, len(chunks)))
    worker = ray.remote(**resources)(_Worker)
    actors = [worker.remote(make_converter, defaults, options, os.getcwd()) for _ in range(count)]
    pending = {}  # chunk number -> its ObjectRef
    done: dict[int, list[ReportRow]] = {}  # a job's rows: one, or one per answer written
    next_chunk = 0
    try:
        for index, job in enumerate(jobs):
            if job.planned:
                yield index, planned_row(job, defaults)
                continue
            while index not in done:
                while next_chunk < len(chunks) and len(pending) < 2 * count:  # two chunks queued per worker
                    pending[next_chunk] = actors[next_chunk % count].run.remote([jobs[i] for i in chunks[next_chunk]])
                    next_chunk += 1
                _collect(ray, chunk_of[index], pending, chunks, jobs, done, defaults)
            for row in done.pop(index):
                yield index, row
    finally:
        for actor in actors:
            ray.kill(actor)


def _collect(ray, chunk_no: int, pending: dict, chunks: list, jobs: list[Job], done: dict,
             defaults: RowDefaults) -> None:
    """Wait for one chunk; a worker that died fails each of its files in one line."""
    from upscale_cli.pipeline import failed_row

    ref = pending.pop(chunk_no)
    try:
        results = ray.get(ref)
    except Exception as err:  # RayActorError, WorkerCrashedError, ...
        reason = f"the Ray worker failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        results = [[failed_row(jobs[i], defaults, f"{jobs[i].source.label}: {reason}")] for i in chunks[chunk_no]]
    for i, item in zip(chunks[chunk_no], results):
        done[i] = item
