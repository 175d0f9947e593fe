"""Choose the U-Net's shape by measurement: inference cost on this CPU and validation PSNR per
unit of training time, for a few candidate shapes trained the same way for the same minutes.

    python research/shape_search.py --scale 4 --minutes 8 [--candidates base,wide,deep] [--out runs/shape_search]

For each candidate: parameters; inference time of one 128x128 input at x`scale` on one thread,
as a ratio to the shipped shape (measured interleaved, median of several rounds, so machine load
hits every candidate alike); then a training run of `--minutes` on one thread (same data, seed,
batch, crop and schedule as configs/unet_x<scale>.toml, the one-cycle schedule fitted to the
budget) and its validation PSNR (Y, protocol border) on the held-out BSDS400 images (runs/data/val;
never the benchmark sets) at each checkpoint. Writes results.json and a markdown table to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = {"width": 32, "levels": 2, "blocks": 2, "decoder_blocks": 2, "bottleneck_blocks": 2, "width_mult": 1.5}
CANDIDATES = {
    "base": {},
    "wide": {"width": 44},
    "deep": {"levels": 3, "width_mult": 1.5},
    "blocks3": {"blocks": 3, "decoder_blocks": 3, "bottleneck_blocks": 3},
    "wide-deep": {"width": 40, "levels": 3},
}
TIMING_SIDE = 128  # LR pixels
TIMING_ROUNDS = 7


def settings_for(name: str) -> dict:
    return {**BASE, **CANDIDATES[name]}


def time_candidates(names: list[str], scale: int) -> dict[str, dict]:
    import torch

    from upscale_cli.models import build_model

    torch.set_num_threads(1)
    models = {name: build_model("unet", scale=scale, **settings_for(name)).eval() for name in names}
    x = torch.rand(1, 3, TIMING_SIDE, TIMING_SIDE)
    times: dict[str, list[float]] = {name: [] for name in names}
    with torch.inference_mode():
        for model in models.values():
            model(x)  # warm-up
        for _ in range(TIMING_ROUNDS):
            for name, model in models.items():  # interleaved: load hits every candidate alike
                start = time.perf_counter()
                model(x)
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times[names[0]])
    return {name: {"params": sum(p.numel() for p in models[name].parameters()),
                   "seconds": statistics.median(times[name]), "cost_vs_first": statistics.median(times[name]) / base}
            for name in names}


def train_candidate(name: str, scale: int, minutes: float, out: Path, init: str | None = None) -> list[dict]:
    recipe = tomllib.loads((ROOT / "configs" / f"unet_x{scale}.toml").read_text())
    recipe.update(out=str(out / name), minutes=minutes, settings=settings_for(name), threads=1, every=250)
    if init:  # warm start: every tensor of the file whose name and shape fit (upscale train's --init)
        recipe["init"] = init
    config_path = out / f"{name}.toml"
    config_path.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in recipe.items() if not isinstance(v, dict))
                           + "\n[settings]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in recipe["settings"].items()) + "\n")
    run = out / name
    if not (run / "log.jsonl").exists() or not _finished(run):
        resume = ["--resume", str(run)] if (run / "checkpoint.pt").exists() else ["--config", str(config_path)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, "-m", "upscale_cli", "train", *resume], cwd=ROOT, env=env, check=True)
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]


def _finished(run: Path) -> bool:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    config = json.loads((run / "config.json").read_text())
    return bool(rows) and rows[-1]["elapsed"] >= config["minutes"] * 60 - 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "shape_search")
    parser.add_argument("--timing-only", action="store_true")
    parser.add_argument("--init", help="Warm-start every candidate from this weights file (tensors that fit).")
    args = parser.parse_args()
    names = args.candidates.split(",")
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        parser.error(f"unknown candidates {unknown}; known: {', '.join(CANDIDATES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    results = time_candidates(names, args.scale)
    print(f"{'shape':<10} {'params':>9} {'x' + str(args.scale) + ' 128px s':>10} {'cost':>6}", flush=True)
    for name, row in results.items():
        print(f"{name:<10} {row['params']:>9,} {row['seconds']:>10.3f} {row['cost_vs_first']:>6.2f}", flush=True)
    if not args.timing_only:
        for name in names:
            log = train_candidate(name, args.scale, args.minutes, args.out, args.init)
            results[name]["val_log"] = log
            results[name]["val_psnr"] = log[-1]["val_psnr"]
            print(f"{name}: val PSNR {log[-1]['val_psnr']:.3f} dB after {log[-1]['elapsed'] / 60:.1f} min, "
                  f"{log[-1]['step']} steps", flush=True)
    (args.out / "results.json").write_text(json.dumps({"scale": args.scale, "minutes": args.minutes, "init": args.init,
                                                       "settings": {n: settings_for(n) for n in names},
                                                       "results": results}, indent=2))
    lines = ["| shape | settings | params | inference cost (x base) | val PSNR (dB) |", "|---|---|---|---|---|"]
    for name, row in results.items():
        changed = ", ".join(f"{k}={v}" for k, v in CANDIDATES[name].items()) or "shipped"
        psnr = f"{row['val_psnr']:.3f}" if "val_psnr" in row else "-"
        lines.append(f"| {name} | {changed} | {row['params']:,} | {row['cost_vs_first']:.2f} | {psnr} |")
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
