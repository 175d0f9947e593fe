"""Measure `upscale restore` against the issue's bars and the OpenCV baselines; print a table.

    python scripts/eval_restore.py [--model unet-restore|FILE.safetensors] [--images 10] [--json out.json]

Data: the first N images of BSD68 sorted by name (evaluation only: never train or tune on it),
as 8-bit RGB. Three damages, each drawn from a fixed seed:
  jpeg    Pillow JPEG at quality 20 (4:2:0), decoded back;
  noise   Gaussian noise of sigma 25 (8-bit levels), clipped and rounded to 8 bits;
  holes   random blobs covering about 10% of the pixels (train.degrade.random_blob_mask, blob sigma
          6 px), set to black in the input and given as the mask. Scored inside the mask only.
Metric: RGB PSNR (all pixels, no border; holes: masked pixels only), mean over the images.
Rows: the damaged input, our model through restore.Restorer (exactly what the CLI runs; for
JPEG also the specialist unet-jpeg, which `--task jpeg` runs and which `--task auto`, the
default, runs on JPEG files of quality 80 or less: so on q20 files it is `upscale restore`'s row),
opencv-nlmeans at each h of a sweep (noise, jpeg), opencv-inpaint (Telea) and the harmonic
prefill alone (holes).
"""
from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from upscale_cli import restore
from upscale_cli.train import degrade
from upscale_cli.images import load_rgb_uint8, tensor_to_uint8, uint8_to_tensor

BSD68 = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "benchmark" / "BSD68"
JPEG_QUALITY = 20
NOISE_SIGMA = 25.0  # 8-bit levels
HOLE_COVERAGE = 0.10
BLOB_SIGMA = 6.0  # pixels
SEED = 2026
NLMEANS_H = (6, 9, 11, 12, 13, 14, 15, 16, 17, 18, 21, 24)  # noise sweep (h = h_color)
NLMEANS_H_JPEG = (3, 6, 9)  # nlmeans only hurts JPEG beyond these
BARS = {"jpeg": 1.0, "noise": 1.5, "holes": 0.0}  # dB the model must gain over the reference row


def jpeg_damage(hr: np.ndarray, index: int) -> tuple[np.ndarray, None]:
    buffer = io.BytesIO()
    Image.fromarray(hr).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")), None


def noise_damage(hr: np.ndarray, index: int) -> tuple[np.ndarray, None]:
    rng = np.random.default_rng(SEED + index)
    noisy = hr.astype(np.float64) + rng.normal(0.0, NOISE_SIGMA, hr.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8), None


def holes_damage(hr: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
    gen = torch.Generator().manual_seed(SEED + index)
    mask = degrade.random_blob_mask(hr.shape[0], hr.shape[1], HOLE_COVERAGE, gen, BLOB_SIGMA)[0, 0].numpy() > 0
    damaged = hr.copy()
    damaged[mask] = 0
    return damaged, mask


DAMAGES = {"jpeg": jpeg_damage, "noise": noise_damage, "holes": holes_damage}


def score(out: np.ndarray, hr: np.ndarray, mask: np.ndarray | None) -> float:
    diff = out.astype(np.float64) - hr.astype(np.float64)
    mse = float(np.mean(diff[mask] ** 2 if mask is not None else diff**2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def run_restorer(restorer: restore.Restorer, damaged: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    m = None if mask is None else torch.from_numpy(mask.astype(np.float32))[None, None]
    return tensor_to_uint8(restorer.restore_tensor(uint8_to_tensor(damaged), m))


def prefill_only(damaged: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    return tensor_to_uint8(restore.prefill(uint8_to_tensor(damaged), m))


def methods_for(damage: str, model: str, jpeg_model: str | None) -> dict:
    """Row name -> function(damaged, mask) -> restored uint8, for one damage."""
    ours = restore.Restorer(restore.RestoreConfig(model=model, device="cpu"), progress=False)
    rows = {"input (damaged)": lambda d, m: d, f"ours: {model}": lambda d, m: run_restorer(ours, d, m)}
    if damage == "jpeg":  # what `upscale restore --task jpeg` runs (its default model, or --jpeg-model)
        special = restore.Restorer(restore.RestoreConfig(model=jpeg_model, task="jpeg", device="cpu"), progress=False)
        if special.model_name != model:
            rows[f"ours: {special.model_name} (--task jpeg; auto on .jpg)"] = lambda d, m: run_restorer(special, d, m)
    if damage in ("jpeg", "noise"):
        for h in NLMEANS_H if damage == "noise" else NLMEANS_H_JPEG:
            from upscale_cli.models.opencv_restore import build_nlmeans

            nlm = build_nlmeans(h=float(h))
            rows[f"opencv-nlmeans h={h}"] = lambda d, m, nlm=nlm: tensor_to_uint8(nlm(uint8_to_tensor(d)))
    else:
        telea = restore.Restorer(restore.RestoreConfig(model="opencv-inpaint", device="cpu"), progress=False)
        rows["opencv-inpaint (Telea)"] = lambda d, m: run_restorer(telea, d, m)
        rows["harmonic prefill alone"] = prefill_only
    return rows


def evaluate(model: str, count: int, damages: tuple[str, ...] = tuple(DAMAGES), jpeg_model: str | None = None) -> dict:
    """{damage: {row: mean PSNR}} over the first `count` BSD68 images."""
    files = sorted(p for p in BSD68.iterdir() if p.suffix.lower() in (".png", ".jpg", ".bmp"))[:count]
    images = [load_rgb_uint8(p) for p in files]
    results = {}
    for damage in damages:
        make = DAMAGES[damage]
        rows = methods_for(damage, model, jpeg_model)
        scores = {name: [] for name in rows}
        seconds = {name: 0.0 for name in rows}
        for index, hr in enumerate(images):
            damaged, mask = make(hr, index)
            for name, fn in rows.items():
                start = time.perf_counter()
                scores[name].append(score(fn(damaged, mask), hr, mask))
                seconds[name] += time.perf_counter() - start
        results[damage] = {name: (float(np.mean(v)), seconds[name] / len(images)) for name, v in scores.items()}
    return results


def reference(damage: str, rows: dict) -> tuple[str, float]:
    """The row each bar compares with: the input (jpeg), the best nlmeans h (noise), Telea (holes)."""
    if damage == "jpeg":
        return "input (damaged)", rows["input (damaged)"][0]
    if damage == "noise":
        name = max((n for n in rows if n.startswith("opencv-nlmeans")), key=lambda n: rows[n][0])
        return name, rows[name][0]
    return "opencv-inpaint (Telea)", rows["opencv-inpaint (Telea)"][0]


def print_table(results: dict, model: str, count: int) -> None:
    print(f"RGB PSNR (dB), first {count} BSD68 images; holes: inside the mask only")
    print(f"| damage | method | PSNR | s/image |\n|---|---|---|---|")
    for damage, rows in results.items():
        for name, (value, secs) in rows.items():
            print(f"| {damage} | {name} | {value:.2f} | {secs:.2f} |")
    print()
    for damage, rows in results.items():
        ref_name, ref = reference(damage, rows)
        for name in (n for n in rows if n.startswith("ours: ")):
            ours = rows[name][0]
            verdict = "PASS" if ours - ref >= BARS[damage] and ours > ref else "FAIL"
            print(f"bar {damage}: {name} {ours:.2f} - {ref_name} {ref:.2f} = {ours - ref:+.2f} dB "
                  f"(needs {'>' if BARS[damage] == 0 else '>='} {BARS[damage]:+.1f}) {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=restore.DEFAULT_MODEL, help="catalogue name or weights file")
    parser.add_argument("--jpeg-model", default=None,
                        help="the model `--task jpeg` runs (default: the task's default, unet-jpeg)")
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--damage", action="append", choices=tuple(DAMAGES), help="only these (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import cv2

    cv2.setNumThreads(args.threads)
    results = evaluate(args.model, args.images, tuple(args.damage or DAMAGES), args.jpeg_model)
    print_table(results, args.model, args.images)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
