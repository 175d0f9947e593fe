"""The benchmark protocol (shared/README.md): what a model is given and how its output is scored.

The HR image is mod-cropped to a multiple of the scale, the LR input is Pillow's antialiased
bicubic downscale of it (or a given LR image for `HR:LR` datasets), optional degradations
(blur, noise, JPEG; fixed seeds) are applied to the LR, and the output, rounded to 8 bits, is
scored by every metric of METRICS (metrics.py: the Y channel, `scale` border pixels cropped).
At x1 the LR is the (degraded) HR itself: a restoration benchmark.

METRICS is the one list of scores: the per-image and per-set records take their fields from it
(records.py), the table and report their columns (report.py). A new metric is one entry here.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from upscale_cli import metrics
from upscale_cli.benchmark.datasets import DatasetSpec
from upscale_cli.choices import RUNTIMES, Runtime
from upscale_cli.errors import DatasetError, UsageError

DEGRADATION_KINDS = ("blur", "noise", "jpeg")
# The benchmark's --runtime default is PyTorch, not `upscale`'s auto: every image of Set5/Set14
# has a size of its own, so auto (OpenVINO from a shape's second use) would run nearly all of them
# in PyTorch anyway, and one runtime keeps the speed figures comparable with earlier reports.
BENCHMARK_RUNTIME: Runtime = "torch"


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
class BenchmarkConfig:
    datasets: tuple[DatasetSpec, ...]
    scales: tuple[int, ...] = (4,)
    models: tuple[str, ...] = ()  # empty = the default selection (see runners.select_models)
    all_models: bool = False
    degradations: tuple[Degradation, ...] = ()  # applied to the LR in this order
    device: str = "auto"
    seed: int = 0
    lpips: bool = True  # measure LPIPS when the package and its weights are installed
    comparisons: bool = False  # keep zoomed crops for comparison strips
    progress_downloads: bool = False
    ensemble: bool = False  # also run each network model with --ensemble (a row named MODEL+ensemble)
    runtime: Runtime = BENCHMARK_RUNTIME  # what runs the network models on the CPU (engine's --runtime)

    def __post_init__(self) -> None:
        if not self.datasets:
            raise UsageError("no dataset given: name folders of HR images, HR_DIR:LR_DIR pairs or --set NAME")
        if not self.scales or any(int(s) != s or s < 1 for s in self.scales):
            raise UsageError("scales must be whole numbers >= 1 (-x 2 -x 4)")
        if self.runtime not in RUNTIMES:
            raise UsageError(f"--runtime {self.runtime!r}: use one of {', '.join(RUNTIMES)}")


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


# ------------------------------------------------------------------------------ metrics


@dataclass(frozen=True)
class Metric:
    """One score of an SR output against its HR: a field of every record and a column of the table."""

    key: str  # the field of ImageScore and BenchmarkRecord, the key in results.json and the CSVs
    title: str  # the table's column heading
    higher_is_better: bool
    digits: int  # decimals shown (and compared when marking the best)
    score: Callable[[np.ndarray, np.ndarray, int], float | None]  # (SR uint8, HR uint8, border)
    optional: bool = False  # measured only when asked for (BenchmarkConfig.lpips) and available


METRICS = (
    Metric("psnr", "PSNR-Y dB", True, 2, metrics.psnr_y),
    Metric("ssim", "SSIM-Y", True, 4, metrics.ssim_y),
    Metric("psnr_rgb", "PSNR-RGB dB", True, 2, metrics.psnr_rgb),
    Metric("lpips", "LPIPS", False, 4, metrics.lpips_distance, optional=True),
)


def score_image(sr: np.ndarray, hr: np.ndarray, border: int, optional: bool) -> dict[str, float | None]:
    """Every metric of one output ({key: value}); optional ones are None unless `optional`."""
    return {m.key: m.score(sr, hr, border) if optional or not m.optional else None for m in METRICS}


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
    from upscale_cli.images.arrays import pil_bicubic_downscale

    if scale == 1:
        return hr.copy()
    return pil_bicubic_downscale(hr, (hr.shape[1] // scale, hr.shape[0] // scale))


def degrade(image: np.ndarray, steps: Iterable[Degradation], seed: int) -> np.ndarray:
    """Apply the degradations in order to an (H, W, 3) uint8 RGB image (deterministic per seed).

    JPEG is train/degrade.py's (the same pixels: tests/test_benchmark.py compares them). Blur and
    noise stay here: train/degrade.py's float blur differs by one level on up to a fifth of the
    pixels (OpenCV's fixed-point uint8 filter here), and its noise draws from torch's generator,
    not NumPy's, so switching would change the published degraded figures."""
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
            out = _jpeg(out, int(step.amount))
    return np.ascontiguousarray(out)


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """(H, W, 3) uint8 through train/degrade.py's JPEG round trip."""
    from upscale_cli.images.arrays import tensor_to_uint8, uint8_to_tensor
    from upscale_cli.train.degrade import jpeg

    return tensor_to_uint8(jpeg(uint8_to_tensor(image), quality))


def image_seed(base: int, dataset: str, image: str, scale: int) -> int:
    """The degradation seed of one image: the run's seed plus a hash of where the image is."""
    return base + zlib.crc32(f"{dataset}/{image}/x{scale}".encode())


def load_sample(ds: DatasetSpec, hr_path: Path, lr_path: Path | None, scale: int, config: BenchmarkConfig) -> Sample:
    """HR (+ given or made LR), degraded; raises DatasetError/ImageReadError for this image only."""
    from upscale_cli.images.arrays import load_rgb_uint8

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
    lr = degrade(lr, config.degradations, image_seed(config.seed, ds.name, hr_path.name, scale))
    return Sample(hr_path.stem, np.ascontiguousarray(hr), lr)
