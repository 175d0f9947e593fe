"""Benchmark: models x datasets x scales -> PSNR/SSIM/speed/memory records, reports and pictures.

One module per concern, this file names what the CLI, the scripts and the tests use:
  datasets.py  HR folders, HR:LR pairs and the standard sets (--set, --data-dir)
  protocol.py  the settings, the LR (mod-crop, bicubic, degradations) and METRICS, the one list of scores
  runners.py   which models by default, each one through the engine, one timed call and its memory
  records.py   per-image scores, per-set records (fields from METRICS), failures, skips
  run.py       run_benchmark: the loop, the warm-up, failures collected and never raised
  pictures.py  comparison crops and strips, PSNR-versus-speed charts
  report.py    the table, results.json/.csv, images.csv, report.md
A new metric is one entry of protocol.METRICS (and its function in metrics.py).
"""
from __future__ import annotations

from upscale_cli.benchmark import datasets, pictures, protocol, records, report, run, runners
from upscale_cli.benchmark.datasets import (BENCHMARK_DIR_ENV, NAMED_SETS, DatasetSpec, check_data_dir,
                                            find_benchmark_dir, image_files, named_set, parse_dataset)
from upscale_cli.benchmark.pictures import disagreement_box, make_comparison, write_pictures
from upscale_cli.benchmark.protocol import (METRICS, BenchmarkConfig, Degradation, Metric, Sample, degrade,
                                            image_seed, load_sample, make_lr, mod_crop, parse_degradation)
from upscale_cli.benchmark.records import (BenchmarkRecord, BenchmarkResult, Comparison, Failure, ImageScore, Skip,
                                           aggregate)
from upscale_cli.benchmark.report import COLUMNS, best_cells, table_rows, write_report, write_results
from upscale_cli.benchmark.run import run_benchmark
from upscale_cli.benchmark.runners import BASELINE_MODEL, MemoryProbe, Runner, build_runner, select_models, timed_run

__all__ = [
    "BASELINE_MODEL", "BENCHMARK_DIR_ENV", "COLUMNS", "METRICS", "NAMED_SETS", "BenchmarkConfig", "BenchmarkRecord",
    "BenchmarkResult", "Comparison", "DatasetSpec", "Degradation", "Failure", "ImageScore", "MemoryProbe", "Metric",
    "Runner", "Sample", "Skip", "aggregate", "best_cells", "build_runner", "check_data_dir", "degrade",
    "disagreement_box", "find_benchmark_dir", "image_files", "image_seed", "load_sample", "make_comparison", "make_lr",
    "mod_crop", "named_set", "parse_dataset", "parse_degradation", "run_benchmark", "select_models", "table_rows",
    "timed_run", "write_pictures", "write_report", "write_results",
]
