"""Benchmark reports: the results table (the CLI's and report.md's), results.json, results.csv,
images.csv and report.md. Metric columns come from protocol.METRICS.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from upscale_cli.benchmark.pictures import write_pictures
from upscale_cli.benchmark.protocol import METRICS, BenchmarkConfig
from upscale_cli.benchmark.records import BenchmarkRecord, BenchmarkResult, ImageScore


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    higher_is_better: bool
    digits: int


COLUMNS = (
    *(Column(m.key, m.title, m.higher_is_better, m.digits) for m in METRICS),
    Column("seconds", "s/image", False, 3),
    Column("mp_per_s", "MP/s", True, 2),
    Column("peak_mem_mb", "peak MB", False, 1),
)


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
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _atomic_text(path, buffer.getvalue())


def write_report(result: BenchmarkResult, out_dir: str | Path, config: BenchmarkConfig | None = None) -> list[Path]:
    """Everything --out writes: results.json/.csv, images.csv, report.md, strips and charts."""
    out_dir = Path(out_dir)
    written = write_results(result, out_dir)
    strips, charts = write_pictures(result, out_dir)
    report = out_dir / "report.md"
    _atomic_text(report, render_markdown(result, charts, strips, out_dir, config))
    return [*written, report, *charts, *strips]


# What each --runtime means for the speed figures (the "Speed:" line of report.md)
RUNTIME_WORDS = {
    "torch": "network models ran in PyTorch (--runtime torch)",
    "openvino": "network models ran in OpenVINO (--runtime openvino), timed after an untimed call that converts "
                "each image's tile shapes; a note names any model or shape that ran in PyTorch instead",
    "auto": "network models ran with --runtime auto, timed after the untimed calls that convert each image's "
            "tile shapes: in OpenVINO where the model converts, else in PyTorch",
}


def speed_runtime(result: BenchmarkResult, config: BenchmarkConfig | None) -> str:
    """Which runtime ran the network models, for the report's Speed line: the runtime the records
    name (the one asked for), else the config's; OpenCV's dnn models and interpolation never change."""
    asked = list(dict.fromkeys(r.runtime for r in result.records)) or ([config.runtime] if config is not None else [])
    said = "; ".join(RUNTIME_WORDS.get(r, f"network models ran with --runtime {r}") for r in asked)
    untouched = "OpenCV's dnn models and interpolation are not affected by --runtime."
    return f"{said[:1].upper()}{said[1:]}. {untouched}" if said else untouched


def render_markdown(result, charts, strips, out_dir: Path, config: BenchmarkConfig | None) -> str:
    header, rows = table_rows(result)
    lines = ["# upscale benchmark", ""]
    if config is not None:
        lines.append(f"Datasets: {', '.join(ds.name for ds in config.datasets)}; scales: {', '.join(f'x{s}' for s in config.scales)}; "
                     f"degradations: {' + '.join(str(d) for d in config.degradations) or 'none'}.")
    lines += [
        f"Run time {result.seconds:.1f} s. PSNR/SSIM on Y (BT.601), border = scale; **bold** = best of its dataset and scale.",
        f"Speed: median seconds per image after a warm-up; MP/s = output megapixels per timed second. {speed_runtime(result, config)}",
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
        lines += [f"- {s}" for s in result.skipped]
    if result.failures:
        lines += ["", "## Failures", ""]
        lines += [f"- {' '.join(p for p in (f.dataset, f'x{f.scale}' if f.scale else '', f.model or '') if p)}: {f.message}" for f in result.failures]
    if charts:
        lines += ["", "## PSNR versus speed", ""] + [f"![{p.stem}]({p.relative_to(out_dir).as_posix()})" for p in charts]
    if strips:
        lines += ["", "## Comparisons (zoomed crop where the models disagree most)", ""]
        lines += [f"![{p.stem}]({p.relative_to(out_dir).as_posix()})" for p in strips]
    return "\n".join(lines) + "\n"
