"""The benchmark package (src/upscale_cli/benchmark/) and `upscale benchmark`: the protocol,
failures that do not stop the run, reports, and the reproduction of shared/reference/sr_reference.md (bicubic and OpenCV rows)."""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from upscale_cli import benchmark as bm
from upscale_cli import metrics
from upscale_cli.errors import DatasetError, UsageError

BENCHMARK_DIR = bm.find_benchmark_dir()
SHARED = BENCHMARK_DIR.parents[1] if BENCHMARK_DIR is not None else None
OPENCV_WEIGHTS = SHARED / "weights" / "opencv" if SHARED is not None else None
REFERENCE = SHARED / "reference" / "sr_reference.md" if SHARED is not None else None
PSNR_TOLERANCE = 0.05  # dB
SSIM_TOLERANCE = 0.002
REFERENCE_MODELS = {"bicubic": "bicubic", "espcn": "opencv-espcn", "fsrcnn": "opencv-fsrcnn", "lapsrn": "opencv-lapsrn"}
# The BSD68 OpenCV rows (LapSRN alone is ~25 s of 2-core CPU) run when this is set:
# UPSCALE_FULL_REFERENCE=1 pytest tests/test_benchmark.py -k reference
FULL_REFERENCE = os.environ.get("UPSCALE_FULL_REFERENCE", "") not in ("", "0")

HAS_OPENCV_WEIGHTS = OPENCV_WEIGHTS is not None and (OPENCV_WEIGHTS / "ESPCN_x2.pb").is_file()
needs_shared_weights = pytest.mark.skipif(
    not HAS_OPENCV_WEIGHTS,
    reason="needs shared/weights/opencv beside the benchmark data (the published OpenCV .pb files) - "
    "place shared/ beside the checkout or set UPSCALE_BENCHMARK_DIR to its datasets/benchmark",
)
needs_shared_reference = pytest.mark.skipif(
    not (HAS_OPENCV_WEIGHTS and REFERENCE.is_file()),
    reason="needs ../shared/datasets/benchmark (the SR test sets), ../shared/reference/sr_reference.md and "
    "../shared/weights/opencv - set UPSCALE_BENCHMARK_DIR or place shared/ beside the checkout",
)


@pytest.fixture
def offline_weights(monkeypatch, tmp_path):
    """OpenCV weights come from the shared folder mirror into a private cache: no network."""
    if OPENCV_WEIGHTS is not None:
        monkeypatch.setenv("UPSCALE_WEIGHTS_MIRROR", str(OPENCV_WEIGHTS))
    monkeypatch.setenv("UPSCALE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("UPSCALE_OFFLINE", "1")


def _smooth(seed: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (max(2, h // 3), max(2, w // 3), 3), dtype=np.uint8))
    return np.asarray(small.resize((w, h), Image.BICUBIC))


def _hr_folder(path: Path, count: int = 2, size=(50, 42)) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(_smooth(i, *size)).save(path / f"img{i}.png")
    return path


# ------------------------------------------------------------------------------ parsing


def test_parse_degradation():
    assert bm.parse_degradation("jpeg:20") == bm.Degradation("jpeg", 20.0)
    assert str(bm.parse_degradation("Blur:1.5")) == "blur:1.5"
    for bad in ("jpeg", "jpeg:0", "noise:-1", "sharpen:2", "blur:x"):
        with pytest.raises(UsageError):
            bm.parse_degradation(bad)


def test_degrade_is_deterministic_and_does_what_it_says():
    image = _smooth(0, 64, 64)
    noisy = bm.degrade(image, [bm.Degradation("noise", 25)], seed=7)
    assert np.array_equal(noisy, bm.degrade(image, [bm.Degradation("noise", 25)], seed=7))
    assert not np.array_equal(noisy, bm.degrade(image, [bm.Degradation("noise", 25)], seed=8))
    assert 15 < np.std(noisy.astype(float) - image) < 30
    blurred = bm.degrade(image, [bm.Degradation("blur", 1.5)], seed=0)
    assert np.abs(np.diff(blurred.astype(float), axis=1)).mean() < np.abs(np.diff(image.astype(float), axis=1)).mean()
    jpeg = bm.degrade(image, [bm.Degradation("jpeg", 10)], seed=0)
    assert jpeg.shape == image.shape and jpeg.dtype == np.uint8 and not np.array_equal(jpeg, image)
    assert np.array_equal(bm.degrade(image, [], seed=0), image)


def _cv2_jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """The benchmark's own JPEG round trip before it used train/degrade.py's (the reference)."""
    import cv2

    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1].copy()


def test_jpeg_damage_is_train_degrades_and_gives_the_same_pixels():
    """The benchmark's JPEG is train/degrade.py's; its degraded figures must not move (odd sizes, every quality band)."""
    for seed, (h, w) in enumerate([(64, 64), (61, 70), (33, 17)]):
        image = _smooth(seed, h, w)
        for quality in (1, 10, 30, 75, 95, 100):
            ours = bm.degrade(image, [bm.Degradation("jpeg", quality)], seed=seed)
            assert ours.dtype == np.uint8 and np.array_equal(ours, _cv2_jpeg(image, quality)), (h, w, quality)
    steps = [bm.Degradation("blur", 1.0), bm.Degradation("noise", 10), bm.Degradation("jpeg", 40)]
    blurred_noisy = bm.degrade(_smooth(1, 48, 40), steps[:2], seed=4)
    assert np.array_equal(bm.degrade(_smooth(1, 48, 40), steps, seed=4), _cv2_jpeg(blurred_noisy, 40))


def test_named_sets_and_dataset_arguments(monkeypatch, tmp_path):
    (tmp_path / "Set5").mkdir()
    monkeypatch.setenv(bm.BENCHMARK_DIR_ENV, str(tmp_path))
    assert bm.find_benchmark_dir() == tmp_path
    assert bm.named_set("set5") == bm.DatasetSpec("Set5", tmp_path / "Set5")
    assert bm.parse_dataset("Set5").hr_dir == tmp_path / "Set5"
    with pytest.raises(DatasetError, match="Set14"):
        bm.named_set("Set14")
    pair = bm.parse_dataset(f"{tmp_path / 'hr'}:{tmp_path / 'lr'}")
    assert (pair.hr_dir, pair.lr_dir) == (tmp_path / "hr", tmp_path / "lr")
    assert bm.parse_dataset(str(tmp_path / "Set5")).lr_dir is None


def test_data_dir_comes_before_the_environment_and_bad_values_say_what_is_wrong(monkeypatch, tmp_path):
    data, env = tmp_path / "data", tmp_path / "env"
    (data / "Set5").mkdir(parents=True)
    (env / "Set5").mkdir(parents=True)
    monkeypatch.setenv(bm.BENCHMARK_DIR_ENV, str(env))
    assert bm.named_set("set5", data) == bm.DatasetSpec("Set5", data / "Set5")  # --data-dir wins
    assert bm.named_set("Set5").hr_dir == env / "Set5" and bm.parse_dataset("Set5", data).hr_dir == data / "Set5"
    with pytest.raises(DatasetError, match="does not exist"):
        bm.named_set("Set5", tmp_path / "nowhere")
    with pytest.raises(DatasetError, match=r"no folder Set14 in .*--data-dir \(it has: Set5\)"):
        bm.named_set("Set14", data)
    images = _hr_folder(tmp_path / "mine", count=1)
    with pytest.raises(DatasetError, match="holds images, not set folders.*upscale benchmark"):
        bm.named_set("Set5", images)
    monkeypatch.delenv(bm.BENCHMARK_DIR_ENV)
    monkeypatch.setattr(bm.datasets, "_search_roots", lambda: iter(()))  # a fresh clone: no shared/ folder
    with pytest.raises(DatasetError, match=f"not shipped.*--data-dir.*{bm.BENCHMARK_DIR_ENV}"):
        bm.named_set("Set5")


@pytest.fixture
def cold_offline_cache(monkeypatch, tmp_path):
    """No weights cached, no network, no mirror: what a fresh clone on an offline machine has."""
    monkeypatch.setenv("UPSCALE_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("UPSCALE_OFFLINE", "1")
    monkeypatch.delenv("UPSCALE_WEIGHTS_MIRROR", raising=False)
    monkeypatch.delenv(bm.BENCHMARK_DIR_ENV, raising=False)


def _cli(*args):
    from typer.testing import CliRunner

    from upscale_cli.cli import app

    return CliRunner().invoke(app, ["benchmark", *map(str, args)])


def test_cli_offline_fresh_clone_skips_models_it_cannot_have(tmp_path, cold_offline_cache):
    data = tmp_path / "sets"
    _hr_folder(data / "Set5", count=2, size=(40, 40))
    result = _cli("--data-dir", data, "--set", "Set5", "-x", 2)  # the default models
    assert result.exit_code == 0, result.output
    assert re.search(r"Set5\s+x2\s+bicubic\s+\d+\.\d+", result.output)
    skipped = [line for line in result.output.splitlines() if line.startswith("skipped ")]
    assert skipped and all("not cached and UPSCALE_OFFLINE is set" in line for line in skipped)
    assert len(skipped) == len({line.split(":")[0] for line in skipped})  # one line per model
    assert any("opencv-espcn" in line for line in skipped) and "error" not in result.output
    alone = _cli("--data-dir", data, "--set", "Set5", "-x", 2, "-m", "opencv-espcn")
    assert alone.exit_code == 1 and "no results" in alone.output and "skipped x2 opencv-espcn" in alone.output


def test_cli_data_dir_errors_and_help(tmp_path, cold_offline_cache):
    result = _cli("--data-dir", tmp_path / "nowhere", "--set", "Set5", "-x", 2)
    assert result.exit_code == DatasetError.exit_code == 1  # as `upscale train` and a missing DATASET
    assert result.output.strip().splitlines() == [f"error: --data-dir {tmp_path / 'nowhere'} does not exist; "
                                                  "it should be the folder holding the set folders (Set5, Set14, BSD68)"]
    help_text = " ".join(_cli("--help").output.split())
    assert "--data-dir" in help_text and bm.BENCHMARK_DIR_ENV in help_text and "not shipped" in help_text


def test_default_models_follow_the_scale():
    x3 = bm.select_models(3)
    assert x3[0] == "bicubic" and "opencv-espcn" in x3 and "opencv-lapsrn" not in x3
    assert "opencv-lapsrn" in bm.select_models(4)
    assert "opencv-edsr" not in bm.select_models(2) or "opencv-edsr" in bm.select_models(2, all_models=True)
    assert bm.select_models(2, ("bicubic", "bicubic", "x")) == ["bicubic", "x"]


# --------------------------------------------------------------------------------- runs


def test_protocol_on_synthetic_images(tmp_path):
    hr_dir = _hr_folder(tmp_path / "hr", size=(51, 43))  # not multiples of 2: mod-crop
    config = bm.BenchmarkConfig(datasets=(bm.DatasetSpec("syn", hr_dir),), scales=(2,), models=("bicubic", "nearest"))
    result = bm.run_benchmark(config)
    assert result.ok, result.failures
    by_model = {r.model: r for r in result.records}
    assert set(by_model) == {"bicubic", "nearest"} and by_model["bicubic"].images == 2
    # the same numbers by hand: mod-crop, Pillow bicubic down and up, Y PSNR with border 2
    hr = np.asarray(Image.open(hr_dir / "img0.png").convert("RGB"))[:50, :42]
    lr = Image.fromarray(hr).resize((21, 25), Image.BICUBIC)
    sr = np.asarray(lr.resize((42, 50), Image.BICUBIC))
    score = next(s for s in result.images if s.model == "bicubic" and s.image == "img0")
    assert score.psnr == pytest.approx(metrics.psnr_y(sr, hr, 2), abs=0.05)
    assert score.ssim == pytest.approx(metrics.ssim_y(sr, hr, 2), abs=0.002)
    assert by_model["bicubic"].psnr > by_model["nearest"].psnr
    record = by_model["bicubic"]
    assert record.seconds > 0 and record.mp_per_s > 0 and record.degradation == "none"
    assert record.peak_mem_mb is None or record.peak_mem_mb >= 0


def test_restoration_at_x1_scores_the_degraded_input(tmp_path):
    hr_dir = _hr_folder(tmp_path / "hr", count=1, size=(40, 40))
    config = bm.BenchmarkConfig(datasets=(bm.DatasetSpec("syn", hr_dir),), scales=(1,), models=("bicubic",),
                                degradations=(bm.Degradation("noise", 20),), seed=3)
    result = bm.run_benchmark(config)
    assert result.ok, result.failures
    hr = np.asarray(Image.open(hr_dir / "img0.png").convert("RGB"))
    noisy = bm.degrade(hr, config.degradations, bm.image_seed(3, "syn", "img0.png", 1))
    assert result.records[0].psnr == pytest.approx(metrics.psnr_y(noisy, hr, 1), abs=1e-6)
    assert result.records[0].degradation == "noise:20"


def test_given_lr_pairs(tmp_path):
    hr_dir = _hr_folder(tmp_path / "hr", size=(48, 40))
    lr_dir = tmp_path / "lr"
    lr_dir.mkdir()
    for p in sorted(hr_dir.iterdir()):
        Image.open(p).resize((20, 24), Image.BICUBIC).save(lr_dir / f"{p.stem}_x2.png")
    made = bm.run_benchmark(bm.BenchmarkConfig(datasets=(bm.DatasetSpec("a", hr_dir),), scales=(2,), models=("bicubic",)))
    given = bm.run_benchmark(bm.BenchmarkConfig(datasets=(bm.DatasetSpec("b", hr_dir, lr_dir),), scales=(2,), models=("bicubic",)))
    assert given.ok and made.ok
    assert given.records[0].psnr == pytest.approx(made.records[0].psnr, abs=1e-9)


def test_failures_are_reported_and_the_run_goes_on(tmp_path, offline_weights):
    good = _hr_folder(tmp_path / "good")
    empty = tmp_path / "empty"
    empty.mkdir()
    lr_bad = tmp_path / "lr_bad"
    lr_bad.mkdir()
    for p in sorted(good.iterdir()):
        Image.open(p).resize((10, 10)).save(lr_bad / p.name)  # 10x10 x2 is not 50x42
    datasets = (bm.DatasetSpec("good", good), bm.DatasetSpec("empty", empty), bm.DatasetSpec("pairs", good, lr_bad))
    errors = []
    config = bm.BenchmarkConfig(datasets=datasets, scales=(3,), models=("bicubic", "no-such-model", "opencv-lapsrn"))
    result = bm.run_benchmark(config, on_error=errors.append)
    assert [(r.dataset, r.model) for r in result.records] == [("good", "bicubic")]
    text = "\n".join(errors)
    assert "empty" in text and "no images" in text
    assert "no-such-model" in text and "unknown model" in text
    assert "does not match" in text
    assert len(result.failures) == len(errors) == 4  # empty, unknown, two mismatched LRs
    assert [(s.model, s.reason) for s in result.skipped] == [  # a model without x3 is not applicable, not failed
        ("opencv-lapsrn", "not applicable: model 'opencv-lapsrn' has no x3 (it has x2, x4, x8)")]
    assert not result.ok


def test_best_cells_marks_each_group():
    def rec(model, psnr, seconds, dataset="a"):
        return bm.BenchmarkRecord(dataset=dataset, scale=2, model=model, degradation="none", images=1, psnr=psnr,
                                  ssim=0.9, psnr_rgb=psnr, lpips=None, seconds=seconds, mp_per_s=1 / seconds,
                                  peak_mem_mb=None, device="cpu", runtime="torch")

    records = [rec("m1", 30.0, 0.5), rec("m2", 31.0, 1.0), rec("m1", 20.0, 0.1, "b")]
    best = bm.best_cells(records)
    assert (1, "psnr") in best and (0, "seconds") in best and (0, "mp_per_s") in best
    assert (0, "psnr") not in best and not any(i == 2 for i, _ in best)  # a group of one has no best
    header, rows = bm.table_rows(bm.BenchmarkResult(records=records))
    assert "LPIPS" not in header and "peak MB" not in header and rows[1][3] == ("31.00", True)


@needs_shared_weights
def test_cli_writes_table_and_report(tmp_path, offline_weights):
    from typer.testing import CliRunner

    from upscale_cli.cli import app

    hr = _hr_folder(tmp_path / "hr", count=2, size=(64, 56))
    out = tmp_path / "report"
    args = ["benchmark", str(hr), "-x", "2", "-m", "bicubic", "-m", "opencv-espcn", "-m", "nope", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output  # "nope" failed; the rest ran
    assert "error:" in result.output and "nope" in result.output
    assert re.search(r"hr\s+x2\s+opencv-espcn\s+\d+\.\d+", result.output)
    assert "*" in result.output  # the best values are marked
    records = json.loads((out / "results.json").read_text())
    assert {r["model"] for r in records} == {"bicubic", "opencv-espcn"}
    for key in ("dataset", "scale", "model", "psnr", "ssim", "psnr_rgb", "seconds", "mp_per_s", "peak_mem_mb"):
        assert key in records[0]
    assert (out / "results.csv").read_text().startswith("dataset,scale,model")
    report = (out / "report.md").read_text()
    assert "opencv-espcn" in report and "nope" in report and "chart_x2.png" in report
    with Image.open(out / "chart_x2.png") as chart:
        assert chart.size[0] > 300
    strips = sorted((out / "comparisons").iterdir())
    assert [p.name for p in strips] == ["hr_x2_img0.png", "hr_x2_img1.png"]
    with Image.open(strips[0]) as strip:
        assert strip.size[0] > 4 * strip.size[1] / 2  # LR, two models and HR side by side


# ------------------------------------------------------------- the reference figures


def reference_rows() -> list[tuple[str, int, str, float, float]]:
    """(set, scale, method, PSNR, SSIM) from the reference table."""
    rows = []
    for line in REFERENCE.read_text().splitlines():
        m = re.match(r"\|\s*(\w+)\s*\|\s*x(\d+)\s*\|\s*(\w+)\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|", line)
        if m:
            rows.append((m[1], int(m[2]), m[3], float(m[4]), float(m[5])))
    return rows


def _reference_cases() -> list[tuple[str, int]]:
    if REFERENCE is None or not REFERENCE.is_file():
        return []
    return sorted({(s, x) for s, x, *_ in reference_rows()}, key=lambda c: (bm.NAMED_SETS.index(c[0]), c[1]))


@needs_shared_reference
@pytest.mark.slow
@pytest.mark.parametrize("set_name,scale", _reference_cases())
def test_reproduces_reference(set_name, scale, offline_weights):
    rows = [r for r in reference_rows() if r[0] == set_name and r[1] == scale]
    if set_name == "BSD68" and not FULL_REFERENCE:  # keep CI short: BSD68 bicubic only by default
        rows = [r for r in rows if r[2] == "bicubic"]
    models = tuple(REFERENCE_MODELS[r[2]] for r in rows)
    config = bm.BenchmarkConfig(datasets=(bm.named_set(set_name),), scales=(scale,), models=models, lpips=False)
    result = bm.run_benchmark(config)
    assert result.ok, result.failures
    ours = {r.model: r for r in result.records}
    for _, _, method, psnr, ssim in rows:
        record = ours[REFERENCE_MODELS[method]]
        assert record.images == len(bm.image_files(bm.named_set(set_name).hr_dir))
        assert abs(record.psnr - psnr) <= PSNR_TOLERANCE, (method, record.psnr, psnr)
        assert abs(record.ssim - ssim) <= SSIM_TOLERANCE, (method, record.ssim, ssim)
        assert math.isfinite(record.seconds)


# ------------------------------------------------------------------------------ pictures


def _widest_gap(band: np.ndarray) -> int:
    """Widest run of blank columns between the first and the last inked column of a text band."""
    inked = (band.min(axis=2) < 160).any(axis=0)
    columns = np.flatnonzero(inked)
    runs, run = [], 0
    for ink in inked[columns[0] : columns[-1] + 1]:
        run = 0 if ink else run + 1
        runs.append(run)
    return max(runs)


def test_strip_text_keeps_its_spaces_and_wraps_long_labels():
    from upscale_cli import report_charts

    tile = np.full((40, 120, 3), 255, np.uint8)
    strip = report_charts.draw_strip([("crop at", tile)], title="")
    assert _widest_gap(strip) >= 4  # the tile is blank: only the label inks; "cropat" had a 2 px gap
    long = report_charts.draw_strip([("my-own-model.safetensors 31.27 dB", tile)])
    one_line = report_charts.draw_strip([("unet 31.27 dB", tile)])
    assert long.shape[0] > one_line.shape[0]  # the name and the figure on two lines, not cut


def test_chart_labels_overlap_nothing():
    from upscale_cli import report_charts as rc

    # the x4 cluster of a real run: bicubic and four OpenCV models within 2x in speed and 0.3 dB
    centres = [(650.0, 174.0), (662.0, 175.0), (703.0, 172.0), (720.0, 181.0), (616.0, 462.0), (624.0, 469.0)]
    widths = [52, 90, 84, 130, 90, 84]
    bounds = (34.0, 52.0, 826.0, 528.0)
    boxes = rc.place_labels(centres, widths, 14, bounds)
    dots = [(x - rc.POINT_RADIUS, y - rc.POINT_RADIUS, x + rc.POINT_RADIUS, y + rc.POINT_RADIUS) for x, y in centres]
    for i, box in enumerate(boxes):
        assert bounds[0] <= box[0] and box[2] <= bounds[2] and bounds[1] <= box[1] and box[3] <= bounds[3]
        assert not any(rc._overlaps(box, other) for other in boxes[:i] + boxes[i + 1 :] + dots)
    chart = rc.draw_speed_chart([rc.ChartPoint(f"model-{i}", "Set5", 1 + i, 30 + i / 10) for i in range(6)], "PSNR-Y vs speed, x4")
    assert chart.shape == (*rc.CHART_SIZE[::-1], 3)


# ------------------------------------------- #30 item 12: models that do not apply, missing data folders


def test_default_set_at_x4_leaves_out_what_does_not_apply_and_exits_0(tmp_path, cold_offline_cache):
    data = tmp_path / "sets"
    _hr_folder(data / "Set5", count=2, size=(72, 80))  # LR at x4: 18x20, over pixel-recursive's 16x16
    result = _cli("--data-dir", data, "--set", "Set5", "-x", 4, "--no-lpips")
    assert result.exit_code == 0, result.output
    assert "error" not in result.output and "0 failed" in result.output
    assert re.search(r"Set5\s+x4\s+bicubic\s+\d+\.\d+", result.output)
    lines = [line for line in result.output.splitlines() if "pixel-recursive" in line]
    assert lines == ["skipped Set5 x4 pixel-recursive: not applicable: it takes inputs up to 16x16 and 2 of 2 LR "
                     "inputs are larger (the largest: img0.png, 20x18)"]


def test_a_named_model_that_does_not_apply_is_skipped_the_same_way(tmp_path, cold_offline_cache):
    hr = _hr_folder(tmp_path / "hr", count=2, size=(72, 80))
    result = _cli(hr, "-x", 4, "-m", "pixel-recursive", "-m", "bicubic", "--no-lpips", "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    assert "skipped hr x4 pixel-recursive: not applicable" in result.output and "error" not in result.output
    assert "- hr x4 pixel-recursive: not applicable" in (tmp_path / "report" / "report.md").read_text()
    records = json.loads((tmp_path / "report" / "results.json").read_text())
    assert [r["model"] for r in records] == ["bicubic"]
    alone = _cli(hr, "-x", 4, "-m", "pixel-recursive", "--no-lpips")  # nothing measured: exit 1, but no failure
    assert alone.exit_code == 1 and "0 failed, 1 skipped" in alone.output and "error" not in alone.output


def test_models_that_fill_a_mask_are_skipped_at_x1_not_failed(tmp_path):
    """`benchmark -x 1` used to fail unet-inpaint, which is in the default x1 set ('fills the pixels a
    mask marks'), and exit 1; a Masked descriptor now means not applicable, as a size limit does."""
    hr = _hr_folder(tmp_path / "hr", count=1, size=(40, 48))
    assert {"unet-inpaint", "opencv-inpaint"} <= set(bm.select_models(1))
    args = ["-m", "unet-inpaint", "-m", "opencv-inpaint", "-m", "opencv-nlmeans"]
    result = _cli(hr, "-x", 1, *args, "--degrade", "noise:10", "--no-lpips")
    assert result.exit_code == 0, result.output
    for name in ("unet-inpaint", "opencv-inpaint"):
        assert f"skipped hr x1 {name}: not applicable: it fills the pixels a mask marks" in result.output
    assert "0 failed, 2 skipped" in result.output and "error" not in result.output
    assert {"unet-inpaint", "opencv-inpaint"} <= set(bm.select_models(1))  # in the default set, and skipped


def test_applicability_is_read_from_the_models_size_requirement(tmp_path):
    runner = bm.build_runner("pixel-recursive", 4, "cpu")
    assert runner.max_input_side == 16  # from its descriptor (its size requirements' maximum)
    assert runner.not_applicable([("a.png", (16, 16)), ("b.png", (3, 16))]) is None
    reason = runner.not_applicable([("a.png", (16, 16)), ("wide.png", (5, 17)), ("big.png", (40, 30))])
    assert reason.startswith("not applicable: it takes inputs up to 16x16") and "2 of 3" in reason
    assert "big.png, 30x40" in reason
    assert bm.build_runner("bicubic", 4, "cpu").not_applicable([("big.png", (4000, 4000))]) is None
    mixed = _hr_folder(tmp_path / "mixed", count=1, size=(72, 80))
    Image.fromarray(_smooth(5, 40, 40)).save(mixed / "small.png")  # LR 10x10 fits, but img0's does not
    config = bm.BenchmarkConfig(datasets=(bm.DatasetSpec("mixed", mixed),), scales=(4,),
                                models=("bicubic", "pixel-recursive"), lpips=False)
    result = bm.run_benchmark(config)
    assert result.ok and [r.model for r in result.records] == ["bicubic"]
    assert [(s.dataset, s.model) for s in result.skipped] == [("mixed", "pixel-recursive")]
    assert "1 of 2 LR inputs" in result.skipped[0].reason


def test_a_missing_data_folder_exits_with_the_dataset_error_code_everywhere(tmp_path, monkeypatch, cold_offline_cache):
    from typer.testing import CliRunner

    from upscale_cli.cli import app

    missing = tmp_path / "missing"
    runs = {
        "benchmark --data-dir": _cli("--data-dir", missing, "--set", "Set5", "-x", 2),
        "benchmark DATASET": _cli(missing, "-x", 2, "-m", "bicubic"),
        "train": CliRunner().invoke(app, ["train", str(missing), "--steps", "1", "--out", str(tmp_path / "run")]),
    }
    monkeypatch.setenv(bm.BENCHMARK_DIR_ENV, str(missing))
    runs["benchmark $UPSCALE_BENCHMARK_DIR"] = _cli("--set", "Set5", "-x", 2)
    codes = {what: result.exit_code for what, result in runs.items()}
    assert set(codes.values()) == {DatasetError.exit_code}, codes
    for what, result in runs.items():
        assert "Traceback" not in result.output and str(missing) in result.output, (what, result.output)
        assert isinstance(result.exception, SystemExit), (what, result.exception)


def test_restore_evaluation_script_reports_a_missing_set_as_a_dataset_error(tmp_path, monkeypatch, capsys):
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "research" / "eval_restore.py"
    spec = importlib.util.spec_from_file_location("eval_restore", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(module.SETS, "heldout", tmp_path / "missing")
    assert module.main(["--set", "heldout", "--images", "1", "--damage", "clean"]) == DatasetError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "missing" in err[0]


def test_a_model_without_the_scale_is_skipped_not_failed(tmp_path):
    """`benchmark -x 3 -m upsampler` failed it ('has no x3') and exited 1: a model without that native
    scale is not applicable there, as a mask or a size limit makes it; the others still run."""
    hr = _hr_folder(tmp_path / "hr", count=1, size=(48, 48))
    result = _cli(hr, "-x", 3, "-m", "upsampler", "-m", "bicubic", "--no-lpips")
    assert result.exit_code == 0, result.output
    assert "skipped x3 upsampler: not applicable: model 'upsampler' has no x3 (it has x2, x4, x8)" in result.output
    assert "0 failed, 1 skipped" in result.output and "error" not in result.output
