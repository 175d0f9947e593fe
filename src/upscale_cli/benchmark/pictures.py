"""Benchmark pictures: zoomed comparison crops where the models disagree most, the strips made
of them, and the PSNR-versus-speed charts (drawn by report_charts.py, written through images/).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from upscale_cli import metrics
from upscale_cli.benchmark.protocol import Sample
from upscale_cli.benchmark.records import BenchmarkResult, Comparison

CROP_PIXELS = 64  # HR pixels per side of the comparison crop
TILE_PIXELS = 192  # the crop is zoomed (nearest) to about this many pixels per side


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


def _write_png(image: np.ndarray, path: Path) -> None:
    """(H, W, 3) uint8 -> PNG through images.write (atomic)."""
    from upscale_cli.images import DecodedImage
    from upscale_cli.images.arrays import uint8_to_array
    from upscale_cli.images.write import write_image

    write_image(DecodedImage(pixels=uint8_to_array(image), source_format="PNG"), path)


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
