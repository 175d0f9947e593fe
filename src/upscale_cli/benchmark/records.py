"""What a benchmark run produces: per-image scores, per-set records, failures, skips, comparisons.

ImageScore and BenchmarkRecord are dataclasses whose score fields come from protocol.METRICS,
in its order, between the fields that say where a score belongs and the speed and memory
fields; so a new metric (one METRICS entry) is a field here, a key in results.json and a column
in the CSVs without touching this file. Build them by keyword.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field, make_dataclass

import numpy as np

from upscale_cli.benchmark.protocol import METRICS, BenchmarkConfig

_SCORE_FIELDS = [(m.key, "float | None") for m in METRICS]


def _record_class(name: str, doc: str, before: list[tuple[str, str]], after: list[tuple[str, str]]) -> type:
    cls = make_dataclass(name, [*before, *_SCORE_FIELDS, *after], namespace={"__doc__": doc})
    cls.__module__ = __name__  # where it is defined, for repr and pickling
    return cls


ImageScore = _record_class(
    "ImageScore",
    "One model on one image: every metric, the time (seconds), the output megapixels and the --runtime asked for.",
    [("dataset", "str"), ("scale", "int"), ("model", "str"), ("image", "str")],
    [("seconds", "float"), ("megapixels", "float"), ("peak_mem_mb", "float | None"), ("runtime", "str")],
)
BenchmarkRecord = _record_class(
    "BenchmarkRecord",
    "One model on one dataset at one scale: means of the metrics over the images; seconds is the "
    "median per image after a warm-up, mp_per_s the output megapixels per timed second, "
    "peak_mem_mb the most extra memory one image needed (see runners.MemoryProbe); runtime the "
    "--runtime asked for (what runs network models on the CPU; OpenCV's dnn models and "
    "interpolation run as they are whatever it says).",
    [("dataset", "str"), ("scale", "int"), ("model", "str"), ("degradation", "str"), ("images", "int")],
    [("seconds", "float"), ("mp_per_s", "float"), ("peak_mem_mb", "float | None"), ("device", "str"),
     ("runtime", "str")],
)


@dataclass
class Failure:
    dataset: str
    scale: int | None
    model: str | None
    message: str


@dataclass
class Skip:
    """A model left out, not failed: its weights could not be had (offline, no network), or it
    does not apply to a dataset's inputs (runners.Runner.not_applicable)."""

    scale: int
    model: str
    reason: str
    dataset: str | None = None  # the dataset it does not apply to; None = every dataset (weights)

    def __str__(self) -> str:
        where = " ".join(p for p in (self.dataset, f"x{self.scale}", self.model) if p)
        return f"{where}: {self.reason}"


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


def _mean(values: list) -> float | None:
    """The mean of a metric over a set; None when some image has no value (LPIPS not measured)."""
    return float(np.mean(values)) if all(v is not None for v in values) else None


def aggregate(scores: list[ImageScore], config: BenchmarkConfig, device: str) -> BenchmarkRecord:
    """Per-image scores of one model on one set -> one BenchmarkRecord (means; median time)."""
    first = scores[0]
    timed = sum(s.seconds for s in scores)
    memory = [s.peak_mem_mb for s in scores if s.peak_mem_mb is not None]
    return BenchmarkRecord(
        dataset=first.dataset,
        scale=first.scale,
        model=first.model,
        degradation="+".join(str(d) for d in config.degradations) or "none",
        images=len(scores),
        **{m.key: _mean([getattr(s, m.key) for s in scores]) for m in METRICS},
        seconds=float(statistics.median(s.seconds for s in scores)),
        mp_per_s=sum(s.megapixels for s in scores) / timed if timed > 0 else math.inf,
        peak_mem_mb=max(memory) if memory else None,
        device=device,
        runtime=config.runtime,
    )
