"""Benchmark: models x datasets x scales -> PSNR/SSIM/speed/memory records, reports and pictures.

Protocol (shared/README.md): the HR image is mod-cropped to a multiple of the scale, the LR
input is Pillow's antialiased bicubic downscale of it (or a given LR image for `HR:LR`
datasets), optional degradations (blur, noise, JPEG; fixed seeds) are applied to the LR,
every model runs through the engine, and its output is rounded to 8 bits and scored on
the Y channel with `scale` border pixels cropped (metrics.py). At x1 the LR is the
(degraded) HR itself: a restoration benchmark.

Speed: each model runs once untimed on a set's first image (warm-up), then every image is
timed; `seconds` is the median per image, `mp_per_s` the output megapixels over the timed
seconds of the whole set. Memory: `peak_mem_mb` is the most extra memory one image needed:
on CUDA the peak of `torch.cuda.max_memory_allocated` above what was allocated before the
call; on the CPU the resident-set high-water mark (VmHWM, reset before each call through
/proc/self/clear_refs) above the resident set before the call, so heap that an earlier call
freed but kept resident is not counted again. Where VmHWM cannot be reset it is the growth
of the process's peak RSS (ru_maxrss), which stays 0 once an earlier call went higher.

Standard sets: `--set NAME` (or a bare DATASET named Set5, Set14 or BSD68) is the folder NAME
(any case) inside the data folder: the --data-dir given, else $UPSCALE_BENCHMARK_DIR, else the
first shared/datasets/benchmark above the current folder or the package. The sets are not
shipped with the package.

Models whose weights cannot be had (not cached while offline, or the download fails) are
skipped, each with one line saying why (BenchmarkResult.skipped), not counted as failures.

Library code: no printing; progress and errors go to the callbacks of `run_benchmark`.
"""
from __future__ import annotations

import csv
import json
import math
import os
import statistics
import time
import zlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from upscale_cli import metrics
from upscale_cli.errors import (DatasetError, DownloadError, OfflineError, UnsupportedScaleError, UpscaleError,
                                 UsageError)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
NAMED_SETS = ("Set5", "Set14", "BSD68")
BENCHMARK_DIR_ENV = "UPSCALE_BENCHMARK_DIR"
BENCHMARK_SUBDIR = Path("shared") / "datasets" / "benchmark"
BASELINE_MODEL = "bicubic"
RESTORE_BASELINE = "bicubic"  # at x1 an identity resize: the score of the degraded input itself
NOT_BY_DEFAULT = ("opencv-inpaint",)  # fills the pixels of a --mask, which a benchmark has not got
BIG_DOWNLOAD_BYTES = 20_000_000  # default runs skip uncached weights larger than this (EDSR: 38 MB)
DEGRADATION_KINDS = ("blur", "noise", "jpeg")
CROP_PIXELS = 64  # HR pixels per side of the comparison crop
TILE_PIXELS = 192  # the crop is zoomed (nearest) to about this many pixels per side
MB = 1024 * 1024
KB = 1024

ProgressCallback = Callable[[int, int, str], None]  # (done, total, what is running)
ErrorCallback = Callable[[str], None]


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Degradation:
    """One degradation of the LR input: blur (Gaussian sigma, px), noise (Gaussian sigma on 0-255),
    jpeg (quality 1-100)."""

    kind: str
    amount: float

    def __str__(self) -> str:
        return f"{self.kind}:{self.amount:g}"


@dataclass(frozen=True)
class DatasetSpec:
    """A folder of HR images, optionally with a folder of given LR images (matched by name)."""

    name: str
    hr_dir: Path
    lr_dir: Path | None = None


@dataclass(frozen=True)
class BenchmarkConfig:
    datasets: tuple[DatasetSpec, ...]
    scales: tuple[int, ...] = (4,)
    models: tuple[str, ...] = ()  # empty = the default selection (see select_models)
    all_models: bool = False
    degradations: tuple[Degradation, ...] = ()  # applied to the LR in this order
    device: str = "auto"
    seed: int = 0
    lpips: bool = True  # measure LPIPS when the package and its weights are installed
    comparisons: bool = False  # keep zoomed crops for comparison strips
    progress_downloads: bool = False

    def __post_init__(self) -> None:
        if not self.datasets:
            raise UsageError("no dataset given: name folders of HR images, HR_DIR:LR_DIR pairs or --set NAME")
        if not self.scales or any(int(s) != s or s < 1 for s in self.scales):
            raise UsageError("scales must be whole numbers >= 1 (-x 2 -x 4)")


# ------------------------------------------------------------------------------ results


@dataclass
class ImageScore:
    dataset: str
    scale: int
    model: str
    image: str
    psnr: float
    ssim: float
    psnr_rgb: float
    lpips: float | None
    seconds: float
    megapixels: float  # output
    peak_mem_mb: float | None


@dataclass
class BenchmarkRecord:
    """One model on one dataset at one scale (means over the images)."""

    dataset: str
    scale: int
    model: str
    degradation: str
    images: int
    psnr: float
    ssim: float
    psnr_rgb: float
    lpips: float | None
    seconds: float  # median per image, after a warm-up
    mp_per_s: float  # output megapixels per timed second
    peak_mem_mb: float | None  # see the module docstring
    device: str


@dataclass
class Failure:
    dataset: str
    scale: int | None
    model: str | None
    message: str


@dataclass
class Skip:
    """A model left out because its weights could not be had (offline, no network)."""

    scale: int
    model: str
    reason: str


@dataclass
class Comparison:
    """Zoomed crops of one image (where the models disagree most): LR, each model, HR."""

    dataset: str
    scale: int
    image: str
    box: tuple[int, int, int, int]  # HR pixels: top, left, height, width
    tiles: list[tuple[str, np.ndarray]]  # (label, (h, w, 3) uint8)


@dataclass
class BenchmarkResult:
    records: list[BenchmarkRecord] = field(default_factory=list)
    images: list[ImageScore] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the whole run

    @property
    def ok(self) -> bool:
        return not self.failures


# ------------------------------------------------------------------------ parsing input


def parse_degradation(text: str) -> Degradation:
    """'jpeg:20', 'noise:25' or 'blur:1.5' -> Degradation."""
    kind, sep, value = text.strip().lower().partition(":")
    try:
        amount = float(value)
    except ValueError:
        amount = math.nan
    if kind not in DEGRADATION_KINDS or not sep or not math.isfinite(amount):
        raise UsageError(f"--degrade {text!r}: use blur:SIGMA, noise:SIGMA or jpeg:QUALITY")
    if kind == "jpeg" and not 1 <= amount <= 100:
        raise UsageError(f"--degrade {text!r}: JPEG quality must be 1-100")
    if amount < 0:
        raise UsageError(f"--degrade {text!r}: the amount cannot be negative")
    return Degradation(kind, amount)


def _search_roots() -> Iterator[Path]:
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        yield from (start, *start.parents)


def find_benchmark_dir(data_dir: str | Path | None = None) -> Path | None:
    """The data folder: data_dir (--data-dir), else $UPSCALE_BENCHMARK_DIR, else the first
    shared/datasets/benchmark above the cwd or the package; None when there is none."""
    if data_dir is not None and str(data_dir).strip():
        return Path(data_dir).expanduser()
    override = os.environ.get(BENCHMARK_DIR_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    for root in _search_roots():
        candidate = root / BENCHMARK_SUBDIR
        if candidate.is_dir():
            return candidate
    return None


def _data_dir_source(data_dir: str | Path | None) -> str:
    """How the data folder was chosen, for messages."""
    if data_dir is not None and str(data_dir).strip():
        return "--data-dir"
    return BENCHMARK_DIR_ENV if os.environ.get(BENCHMARK_DIR_ENV, "").strip() else "the shared/datasets/benchmark folder"


def check_data_dir(data_dir: str | Path | None) -> None:
    """A --data-dir (or $UPSCALE_BENCHMARK_DIR) that is not a folder is a usage error, said once."""
    base = find_benchmark_dir(data_dir)
    if base is not None and not base.is_dir():
        what = "is not a folder" if base.exists() else "does not exist"
        raise UsageError(f"{_data_dir_source(data_dir)} {base} {what}; it should be the folder holding the set "
                         f"folders ({', '.join(NAMED_SETS)})")


def named_set(name: str, data_dir: str | Path | None = None) -> DatasetSpec:
    """Set5, Set14 or BSD68 (any case): that folder inside the data folder (see find_benchmark_dir)."""
    base = find_benchmark_dir(data_dir)
    if base is None:
        raise DatasetError(f"--set {name}: no data folder; the sets are not shipped: pass --data-dir DIR (or set "
                           f"{BENCHMARK_DIR_ENV}) to a folder holding {', '.join(f'{n}/' for n in NAMED_SETS)}")
    check_data_dir(data_dir)
    folders = sorted(p for p in base.iterdir() if p.is_dir())
    matches = [p for p in folders if p.name.lower() == name.lower()]
    if matches:
        return DatasetSpec(matches[0].name, matches[0])
    source = _data_dir_source(data_dir)
    if not folders and any(p.suffix.lower() in IMAGE_SUFFIXES for p in base.iterdir()):
        raise DatasetError(f"--set {name}: {source} {base} holds images, not set folders; to measure those images, "
                           f"name the folder itself: upscale benchmark {base}")
    have = f" (it has: {', '.join(p.name for p in folders)})" if folders else " (it has no folders)"
    raise DatasetError(f"--set {name}: no folder {name} in {base}, the data folder from {source}{have}")


def parse_dataset(text: str, data_dir: str | Path | None = None) -> DatasetSpec:
    """'HR_DIR', 'HR_DIR:LR_DIR', or the name of a standard set when no such folder exists."""
    path = Path(text).expanduser()
    if path.is_dir():
        return DatasetSpec(path.name or str(path), path)
    hr, sep, lr = text.rpartition(":")
    if sep and hr and lr and not (len(hr) == 1 and hr.isalpha()):  # not a Windows drive letter
        hr_path, lr_path = Path(hr).expanduser(), Path(lr).expanduser()
        return DatasetSpec(hr_path.name or hr, hr_path, lr_path)
    if text.lower() in (s.lower() for s in NAMED_SETS):
        return named_set(text, data_dir)
    return DatasetSpec(path.name or text, path)  # fails later with a clear per-dataset error


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError("not a folder", path=folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)})", path=folder)
    return files


def _match_lr(hr: Path, lr_files: dict[str, Path], scale: int) -> Path | None:
    """The LR file for an HR file: same stem, or the stem plus a scale tag (baby_LRx2, baby_x2, babyx2)."""
    stem = hr.stem.lower()
    for candidate in (stem, f"{stem}_lrx{scale}", f"{stem}_x{scale}", f"{stem}x{scale}", f"{stem}_lr"):
        if candidate in lr_files:
            return lr_files[candidate]
    return None


# -------------------------------------------------------------------------- the samples


@dataclass
class Sample:
    name: str
    hr: np.ndarray  # (H, W, 3) uint8, mod-cropped
    lr: np.ndarray  # (H/s, W/s, 3) uint8, degraded


def mod_crop(image: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right so both sides are multiples of the scale."""
    h, w = image.shape[0] - image.shape[0] % scale, image.shape[1] - image.shape[1] % scale
    return image[:h, :w]


def make_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """The protocol's LR: Pillow antialiased bicubic downscale of a mod-cropped HR (x1: a copy)."""
    from upscale_cli.images import pil_bicubic_downscale

    if scale == 1:
        return hr.copy()
    return pil_bicubic_downscale(hr, (hr.shape[1] // scale, hr.shape[0] // scale))


def degrade(image: np.ndarray, steps: Iterable[Degradation], seed: int) -> np.ndarray:
    """Apply the degradations in order to an (H, W, 3) uint8 RGB image (deterministic per seed)."""
    import cv2

    rng = np.random.default_rng(seed)
    out = image
    for step in steps:
        if step.kind == "blur" and step.amount > 0:
            radius = max(1, math.ceil(3 * step.amount))  # +-3 sigma holds 99.7% of the kernel
            out = cv2.GaussianBlur(out, (2 * radius + 1, 2 * radius + 1), step.amount, borderType=cv2.BORDER_REFLECT_101)
        elif step.kind == "noise" and step.amount > 0:
            noisy = out.astype(np.float32) + rng.normal(0.0, step.amount, out.shape).astype(np.float32)
            out = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        elif step.kind == "jpeg":
            ok, data = cv2.imencode(".jpg", np.ascontiguousarray(out[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(step.amount)])
            out = cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1].copy()
    return np.ascontiguousarray(out)


def _image_seed(base: int, dataset: str, image: str, scale: int) -> int:
    return base + zlib.crc32(f"{dataset}/{image}/x{scale}".encode())


def load_sample(ds: DatasetSpec, hr_path: Path, lr_path: Path | None, scale: int, config: BenchmarkConfig) -> Sample:
    """HR (+ given or made LR), degraded; raises DatasetError/ImageReadError for this image only."""
    from upscale_cli.images import load_rgb_uint8

    hr = load_rgb_uint8(hr_path)
    if lr_path is None:
        hr = mod_crop(hr, scale)
        lr = make_lr(hr, scale)
    else:
        lr = load_rgb_uint8(lr_path)
        want = (lr.shape[0] * scale, lr.shape[1] * scale)
        # A given HR may be a few pixels over LR * scale (not mod-cropped); more is a mismatch.
        if not (want[0] <= hr.shape[0] < want[0] + scale and want[1] <= hr.shape[1] < want[1] + scale):
            raise DatasetError(
                f"LR {lr.shape[1]}x{lr.shape[0]} x{scale} does not match HR {hr.shape[1]}x{hr.shape[0]}", path=lr_path
            )
        hr = hr[: want[0], : want[1]]
    if min(hr.shape[:2]) <= 2 * scale + metrics.SSIM_WINDOW:
        raise DatasetError(f"image {hr.shape[1]}x{hr.shape[0]} is too small to score at x{scale}", path=hr_path)
    lr = degrade(lr, config.degradations, _image_seed(config.seed, ds.name, hr_path.name, scale))
    return Sample(hr_path.stem, np.ascontiguousarray(hr), lr)


# ------------------------------------------------------------------------------- models


def _weights_available(spec, scale: int) -> bool:
    """Packaged, cached, or small enough to fetch by default (big uncached files are opt-in)."""
    from upscale_cli import download

    file = spec.files[scale]
    return file.packaged or download.is_cached(file) or file.size <= BIG_DOWNLOAD_BYTES


def _default_pick(spec, scale: int) -> bool:
    if spec.name == BASELINE_MODEL:
        return True
    if spec.name in NOT_BY_DEFAULT:
        return False
    if spec.arch.startswith("opencv-") and scale in spec.files:
        return _weights_available(spec, scale)
    if spec.task == "restore" and not spec.files:  # weight-free restorers (OpenCV denoisers)
        return True
    # our shipped models: every file of the entry is inside the package
    return bool(spec.files) and scale in spec.files and all(f.packaged for f in spec.files.values())


def _task_fits(spec, scale: int) -> bool:
    return spec.task == ("restore" if scale == 1 else "sr") or spec.name == BASELINE_MODEL


def select_models(scale: int, explicit: tuple[str, ...] = (), all_models: bool = False) -> list[str]:
    """Model names for one scale: the explicit ones (checked later), --all, or the default set:
    bicubic, every OpenCV model with this scale (big uncached downloads excepted) and our shipped models."""
    from upscale_cli.catalog import load_catalog

    if explicit and not all_models:
        return list(dict.fromkeys(explicit))
    catalog = load_catalog()
    picked = [
        spec.name
        for spec in catalog.values()
        if _task_fits(spec, scale) and (not spec.files or scale in spec.files) and (all_models or _default_pick(spec, scale))
    ]
    if BASELINE_MODEL in picked:  # the baseline first: the table reads from it
        picked.remove(BASELINE_MODEL)
        picked.insert(0, BASELINE_MODEL)
    return list(dict.fromkeys([*picked, *explicit]))


@dataclass
class Runner:
    """One model at one scale, through the engine."""

    name: str
    upscaler: object
    device: str

    def __call__(self, x):  # (1, C, h, w) -> (1, C, H, W)
        return self.upscaler.upscale_tensor(x)


def build_runner(name: str, scale: int, device: str, progress: bool = False) -> Runner:
    """The engine's Upscaler for a model at a scale, loaded (and downloaded) now.

    A model with native scales must have this one: the benchmark measures models, not the
    engine's x4-then-resize plans. UpscaleError when the model cannot be built."""
    from upscale_cli.engine import UpscaleConfig, Upscaler

    upscaler = Upscaler(UpscaleConfig(model=name, scale=float(scale), device=device, tile=0), progress=progress)
    native = upscaler.native_scales()
    if native and scale not in native:
        have = ", ".join(f"x{s}" for s in native)
        raise UnsupportedScaleError(f"model {name!r} has no x{scale} (it has {have})")
    upscaler.prepare()
    return Runner(name, upscaler, _effective_device(upscaler, scale))


def _effective_device(upscaler, scale: int) -> str:
    """Where the model really runs: OpenCV models stay on the CPU whatever was asked for."""
    try:
        bound = upscaler.model(scale if upscaler.native_scales() else None).info.device_bound
    except Exception:  # noqa: BLE001 - informational only
        bound = None
    return str(bound or upscaler.device)


# ------------------------------------------------------------------------------ timing


class MemoryProbe:
    """Extra memory of one call (MiB): CUDA allocator peak, or CPU resident high-water mark."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self._base = 0.0

    @staticmethod
    def _status_kb(key: str) -> float | None:
        try:
            with open("/proc/self/status", encoding="ascii") as handle:
                for line in handle:
                    if line.startswith(key + ":"):
                        return float(line.split()[1])
        except OSError:
            return None
        return None

    @staticmethod
    def _release_free_heap() -> None:
        """Give freed heap back to the OS (glibc malloc_trim) so the call's own allocations show in RSS."""
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc: RSS may undercount reused heap
            pass

    @staticmethod
    def _reset_hwm() -> bool:
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
                handle.write("5")  # 5 = reset the peak RSS to the current RSS (Linux >= 4.0)
            return True
        except OSError:
            return False

    @staticmethod
    def _maxrss_kb() -> float | None:
        try:
            import resource
        except ImportError:  # Windows
            return None
        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux

    def start(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = float(torch.cuda.memory_allocated())
            return
        self._release_free_heap()
        self._hwm = self._reset_hwm()
        self._base = (self._status_kb("VmRSS") if self._hwm else self._maxrss_kb()) or 0.0

    def stop(self) -> float | None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            return max(0.0, torch.cuda.max_memory_allocated() - self._base) / MB
        peak = self._status_kb("VmHWM") if self._hwm else self._maxrss_kb()
        return None if peak is None else max(0.0, peak - self._base) / KB


def _to_tensor(image: np.ndarray):
    from upscale_cli.images import uint8_to_tensor

    return uint8_to_tensor(image)  # (1, 3, H, W) float32 in [0, 1]


def _to_uint8(x) -> np.ndarray:
    """(1, C, H, W) float -> (H, W, 3) uint8: the protocol rounds the SR output to 8 bits."""
    from upscale_cli.images import tensor_to_uint8

    a = tensor_to_uint8(x)
    return np.ascontiguousarray(np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a)


def timed_run(runner: Runner, lr: np.ndarray) -> tuple[np.ndarray, float, float | None]:
    """(SR uint8, seconds, extra memory MiB) for one image."""
    import torch

    x = _to_tensor(lr)
    probe = MemoryProbe(runner.device)
    probe.start()
    start = time.perf_counter()
    y = runner(x)  # the engine picks no_grad (or grad, for models that fit at run time)
    if runner.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    memory = probe.stop()
    return _to_uint8(y), seconds, memory


# ------------------------------------------------------------------------------ the run


class _Tracker:
    """Progress units (one per model per image) and failures, reported through the callbacks."""

    def __init__(self, total: int, result: BenchmarkResult, on_progress, on_error) -> None:
        self.done, self.total, self.result = 0, total, result
        self.on_progress, self.on_error = on_progress, on_error

    def advance(self, units: int, text: str) -> None:
        self.done = min(self.total, self.done + units)
        if self.on_progress:
            self.on_progress(self.done, self.total, text)

    def skip(self, scale: int, model: str, err: BaseException) -> None:
        self.result.skipped.append(Skip(scale, model, _describe(err)))

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
    on_error: Callable[[str], None] | None = None,
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
            sets[ds] = _image_files(ds.hr_dir)
            if ds.lr_dir is not None:
                _image_files(ds.lr_dir)
        except UpscaleError as err:
            tracker.fail(ds.name, None, None, err)
            sets.pop(ds, None)
    return sets


def _build_runners(names: list[str], scale: int, config: BenchmarkConfig, tracker: _Tracker) -> list[Runner]:
    runners = []
    for name in names:
        try:
            runners.append(build_runner(name, scale, config.device, config.progress_downloads))
        except (OfflineError, DownloadError) as err:  # weights that cannot be had here: skipped, said why
            tracker.skip(scale, name, err)
        except Exception as err:  # any other model that cannot be built is one failure line
            tracker.fail("", scale, name, err)
    return runners


def _run_set(ds, scale, hr_files, runners, config, use_lpips, result, tracker) -> None:
    """One dataset at one scale: warm-up, then every image through every model."""
    scores: dict[str, list[ImageScore]] = {r.name: [] for r in runners}
    live = list(runners)
    warmed = False
    lr_index = {p.stem.lower(): p for p in _image_files(ds.lr_dir)} if ds.lr_dir is not None else None
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
            score, sr = _score_one(runner, sample, ds.name, scale, use_lpips, tracker)
            if score is not None:
                scores[runner.name].append(score)
                outputs[runner.name] = sr
            tracker.advance(1, f"{label} {runner.name}")
        tracker.advance(len(runners) - len(live), label)
        if config.comparisons and outputs:
            result.comparisons.append(make_comparison(ds.name, scale, sample, outputs, scores))
    for runner in runners:
        if scores[runner.name]:
            result.images.extend(scores[runner.name])
            result.records.append(aggregate(scores[runner.name], config, runner.device))


def _sample_for(ds: DatasetSpec, hr_path: Path, scale: int, config: BenchmarkConfig, lr_index) -> Sample:
    lr_path = None
    if lr_index is not None:
        lr_path = _match_lr(hr_path, lr_index, scale)
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


def _score_one(runner: Runner, sample: Sample, dataset: str, scale: int, use_lpips: bool, tracker: _Tracker):
    try:
        sr, seconds, memory = timed_run(runner, sample.lr)
        if sr.shape != sample.hr.shape:
            raise UpscaleError(f"output {sr.shape[1]}x{sr.shape[0]} is not the HR size {sample.hr.shape[1]}x{sample.hr.shape[0]}")
    except Exception as err:
        tracker.fail(dataset, scale, runner.name, f"{sample.name}: {_describe(err)}")
        return None, None
    border = scale
    score = ImageScore(
        dataset=dataset,
        scale=scale,
        model=runner.name,
        image=sample.name,
        psnr=metrics.psnr_y(sr, sample.hr, border),
        ssim=metrics.ssim_y(sr, sample.hr, border),
        psnr_rgb=metrics.psnr_rgb(sr, sample.hr, border),
        lpips=metrics.lpips_distance(sr, sample.hr, border) if use_lpips else None,
        seconds=seconds,
        megapixels=sr.shape[0] * sr.shape[1] / 1e6,
        peak_mem_mb=memory,
    )
    return score, sr


def aggregate(scores: list[ImageScore], config: BenchmarkConfig, device: str) -> BenchmarkRecord:
    """Per-image scores of one model on one set -> one record (means; median time)."""
    first = scores[0]
    timed = sum(s.seconds for s in scores)
    lpips_values = [s.lpips for s in scores if s.lpips is not None]
    memory = [s.peak_mem_mb for s in scores if s.peak_mem_mb is not None]
    return BenchmarkRecord(
        dataset=first.dataset,
        scale=first.scale,
        model=first.model,
        degradation="+".join(str(d) for d in config.degradations) or "none",
        images=len(scores),
        psnr=float(np.mean([s.psnr for s in scores])),
        ssim=float(np.mean([s.ssim for s in scores])),
        psnr_rgb=float(np.mean([s.psnr_rgb for s in scores])),
        lpips=float(np.mean(lpips_values)) if len(lpips_values) == len(scores) else None,
        seconds=float(statistics.median(s.seconds for s in scores)),
        mp_per_s=sum(s.megapixels for s in scores) / timed if timed > 0 else math.inf,
        peak_mem_mb=max(memory) if memory else None,
        device=device,
    )


# ------------------------------------------------------------------------- comparisons


def disagreement_box(outputs: list[np.ndarray], hr: np.ndarray, crop: int, border: int = 0) -> tuple[int, int]:
    """Top-left (y, x) of the crop x crop window where the models' outputs differ most
    (per-pixel spread of Y across models; with one model, its error against HR),
    preferring windows clear of the `border` that the metrics ignore."""
    ys = np.stack([metrics.rgb_to_y(o).astype(np.float32) for o in outputs])
    spread = ys.std(axis=0) if len(outputs) > 1 else np.abs(ys[0] - metrics.rgb_to_y(hr).astype(np.float32))
    if min(spread.shape) - 2 * border >= crop:
        spread[:border], spread[spread.shape[0] - border :] = 0.0, 0.0
        spread[:, :border], spread[:, spread.shape[1] - border :] = 0.0, 0.0
    integral = np.pad(spread.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = integral[crop:, crop:] - integral[:-crop, crop:] - integral[crop:, :-crop] + integral[:-crop, :-crop]
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(y), int(x)


def _zoom(image: np.ndarray, factor: int) -> np.ndarray:
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def make_comparison(dataset: str, scale: int, sample: Sample, outputs: dict[str, np.ndarray], scores) -> Comparison:
    """Zoomed crops: LR (nearest-upscaled), each model (with its PSNR on this image), HR."""
    h, w = sample.hr.shape[:2]
    crop = min(CROP_PIXELS, h, w)
    y, x = disagreement_box(list(outputs.values()), sample.hr, crop, border=scale)
    zoom = max(1, TILE_PIXELS // crop)
    lr_up = _zoom(sample.lr, scale)[:h, :w]  # nearest: shows the LR pixels as they are

    def tile(image: np.ndarray) -> np.ndarray:
        return _zoom(image[y : y + crop, x : x + crop], zoom)

    tiles = [(f"LR x{scale} (nearest)", tile(lr_up))]
    for name, image in outputs.items():
        tiles.append((f"{name} {scores[name][-1].psnr:.2f} dB", tile(image)))
    tiles.append(("HR", tile(sample.hr)))
    return Comparison(dataset, scale, sample.name, (y, x, crop, crop), tiles)


# ----------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    higher_is_better: bool
    digits: int


COLUMNS = (
    Column("psnr", "PSNR-Y dB", True, 2),
    Column("ssim", "SSIM-Y", True, 4),
    Column("psnr_rgb", "PSNR-RGB dB", True, 2),
    Column("lpips", "LPIPS", False, 4),
    Column("seconds", "s/image", False, 3),
    Column("mp_per_s", "MP/s", True, 2),
    Column("peak_mem_mb", "peak MB", False, 1),
)
KEY_COLUMNS = ("dataset", "scale", "model")


def shown_columns(records: list[BenchmarkRecord]) -> list[Column]:
    """The metric columns that have a value somewhere (LPIPS only when it was measured)."""
    return [c for c in COLUMNS if any(getattr(r, c.key) is not None for r in records)]


def best_cells(records: list[BenchmarkRecord]) -> set[tuple[int, str]]:
    """(record index, column key) of the best value of each column within each
    dataset/scale/degradation group of two or more models."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault((r.dataset, r.scale, r.degradation), []).append(i)
    best = set()
    for members in groups.values():
        if len(members) < 2:
            continue
        for column in COLUMNS:
            values = [(getattr(records[i], column.key), i) for i in members]
            values = [(v, i) for v, i in values if v is not None and not math.isnan(v)]
            if len(values) < 2:
                continue
            pick = max if column.higher_is_better else min
            target = pick(v for v, _ in values)
            best.update((i, column.key) for v, i in values if round(v, column.digits) == round(target, column.digits))
    return best


def format_value(column: Column, value: float | None) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.{column.digits}f}"


def table_rows(result: BenchmarkResult) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    """Header and rows of (text, is_best) cells: what the CLI and report.md print."""
    columns = shown_columns(result.records)
    best = best_cells(result.records)
    degraded = any(r.degradation != "none" for r in result.records)
    header = ["dataset", "scale", "model", *(["degradation"] if degraded else []), *(c.title for c in columns)]
    rows = []
    for i, r in enumerate(result.records):
        cells = [(r.dataset, False), (f"x{r.scale}", False), (r.model, False)]
        if degraded:
            cells.append((r.degradation, False))
        cells += [(format_value(c, getattr(r, c.key)), (i, c.key) in best) for c in columns]
        rows.append(cells)
    return header, rows


def _json_value(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_results(result: BenchmarkResult, out_dir: Path) -> list[Path]:
    """results.json, results.csv and images.csv (per image) in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    records = [{k: _json_value(v) for k, v in asdict(r).items()} for r in result.records]
    written = [out_dir / "results.json", out_dir / "results.csv", out_dir / "images.csv"]
    _atomic_text(written[0], json.dumps(records, indent=2) + "\n")
    _write_csv(written[1], [f.name for f in fields(BenchmarkRecord)], records)
    per_image = [{k: _json_value(v) for k, v in asdict(s).items()} for s in result.images]
    _write_csv(written[2], [f.name for f in fields(ImageScore)], per_image)
    return written


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_csv(path: Path, names: list[str], rows: list[dict]) -> None:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _atomic_text(path, buffer.getvalue())


def _write_png(image: np.ndarray, path: Path) -> None:
    """(H, W, 3) uint8 -> PNG through images.py (atomic)."""
    from upscale_cli import images

    images.write_image(images.DecodedImage(pixels=images.uint8_to_tensor(image), source_format="PNG"), path)


def write_pictures(result: BenchmarkResult, out_dir: Path) -> tuple[list[Path], list[Path]]:
    """Comparison strips (comparisons/<set>_x<s>_<image>.png) and PSNR-vs-speed charts (chart_x<s>.png)."""
    from upscale_cli import report_charts

    strips = []
    if result.comparisons:
        (out_dir / "comparisons").mkdir(parents=True, exist_ok=True)
    for c in result.comparisons:
        path = out_dir / "comparisons" / f"{c.dataset}_x{c.scale}_{c.image}.png"
        _write_png(report_charts.draw_strip(c.tiles, title=f"{c.dataset} {c.image} x{c.scale}, crop at y={c.box[0]} x={c.box[1]}"), path)
        strips.append(path)
    charts = []
    for scale in sorted({r.scale for r in result.records}):
        points = [
            report_charts.ChartPoint(r.model, r.dataset, r.mp_per_s, r.psnr)
            for r in result.records
            if r.scale == scale and math.isfinite(r.psnr) and math.isfinite(r.mp_per_s) and r.mp_per_s > 0
        ]
        if points:
            path = out_dir / f"chart_x{scale}.png"
            _write_png(report_charts.draw_speed_chart(points, title=f"PSNR-Y vs speed, x{scale}"), path)
            charts.append(path)
    return strips, charts


def write_report(result: BenchmarkResult, out_dir: str | Path, config: BenchmarkConfig | None = None) -> list[Path]:
    """Everything --out writes: results.json/.csv, images.csv, report.md, strips and charts."""
    out_dir = Path(out_dir)
    written = write_results(result, out_dir)
    strips, charts = write_pictures(result, out_dir)
    report = out_dir / "report.md"
    _atomic_text(report, render_markdown(result, charts, strips, out_dir, config))
    return [*written, report, *charts, *strips]


def render_markdown(result, charts, strips, out_dir: Path, config: BenchmarkConfig | None) -> str:
    header, rows = table_rows(result)
    lines = ["# upscale benchmark", ""]
    if config is not None:
        lines.append(f"Datasets: {', '.join(ds.name for ds in config.datasets)}; scales: {', '.join(f'x{s}' for s in config.scales)}; "
                     f"degradations: {' + '.join(str(d) for d in config.degradations) or 'none'}.")
    lines += [
        f"Run time {result.seconds:.1f} s. PSNR/SSIM on Y (BT.601), border = scale; **bold** = best of its dataset and scale.",
        "Speed: median seconds per image after a warm-up; MP/s = output megapixels per timed second.",
        "peak MB: extra memory one image needed (CUDA: allocator peak; CPU: resident-set high-water mark above the resident set before the call).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(f"**{t}**" if b else t for t, b in row) + " |" for row in rows]
    for note in result.notes:
        lines += ["", f"Note: {note}"]
    if result.skipped:
        lines += ["", "## Skipped", ""]
        lines += [f"- x{s.scale} {s.model}: {s.reason}" for s in result.skipped]
    if result.failures:
        lines += ["", "## Failures", ""]
        lines += [f"- {' '.join(p for p in (f.dataset, f'x{f.scale}' if f.scale else '', f.model or '') if p)}: {f.message}" for f in result.failures]
    if charts:
        lines += ["", "## PSNR versus speed", ""] + [f"![{p.stem}]({p.relative_to(out_dir).as_posix()})" for p in charts]
    if strips:
        lines += ["", "## Comparisons (zoomed crop where the models disagree most)", ""]
        lines += [f"![{p.stem}]({p.relative_to(out_dir).as_posix()})" for p in strips]
    return "\n".join(lines) + "\n"
