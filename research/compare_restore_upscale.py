"""Restore-then-upscale or one x4 model trained on degraded inputs: which is better on damaged photos?

    python research/compare_restore_upscale.py --degraded-x4 runs/unet_x4_degraded [--folder runs/data/val]

The restore issue asks whether `upscale photo.jpg -x 4 --restore` (unet-restore at the input
size, then unet x4) beats a x4 unet fine-tuned with `upscale train --degrade` (see
configs/unet_x4_degraded.toml). Each HR image is mod-cropped, downscaled x4 with the
protocol's antialiased bicubic, then damaged exactly as `upscale benchmark --degrade` damages
(benchmark.degrade, seeded per image). Scores: Y PSNR/SSIM with a 4-pixel border (the SR
protocol) and RGB PSNR, mean over the images. Pipelines run through the engine, as the CLI does.

Decide on held-out training-set images (runs/data/val: BSDS400 images never trained on),
never on a benchmark set; a benchmark set may be scored afterwards for the record.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from upscale_cli import benchmark, metrics
from upscale_cli.engine import UpscaleConfig, Upscaler
from upscale_cli.images.arrays import load_rgb_uint8, tensor_to_uint8, uint8_to_tensor
from upscale_cli.restore import RestoreConfig, Restorer

SCALE = 4
DAMAGES = {"clean": (), "jpeg:30": ("jpeg:30",), "jpeg:50": ("jpeg:50",), "noise:10": ("noise:10",),
           "noise:5+jpeg:50": ("noise:5", "jpeg:50")}


def pipelines(degraded_x4: str) -> dict:
    """Name -> function (1, 3, h, w) LR tensor -> (1, 3, 4h, 4w)."""
    plain = Upscaler(UpscaleConfig(model="unet", scale=SCALE, device="cpu"), progress=False)
    trained = Upscaler(UpscaleConfig(model=degraded_x4, scale=SCALE, device="cpu"), progress=False)
    bicubic = Upscaler(UpscaleConfig(model="bicubic", scale=SCALE, device="cpu"), progress=False)
    restorer = Restorer(RestoreConfig(device="cpu"), progress=False)
    return {
        "bicubic": bicubic.upscale_tensor,
        "unet x4": plain.upscale_tensor,
        "restore, then unet x4 (--restore)": lambda x: plain.upscale_tensor(restorer.restore_tensor(x)),
        "unet x4 trained on degraded LR": trained.upscale_tensor,
    }


def evaluate(folder: Path, degraded_x4: str, limit: int) -> dict:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".bmp"))[:limit]
    runs = pipelines(degraded_x4)
    table: dict = {}
    for damage, steps in DAMAGES.items():
        parsed = [benchmark.parse_degradation(s) for s in steps]
        for name, run in runs.items():
            scores, start = [], time.perf_counter()
            for index, path in enumerate(files):
                hr = benchmark.mod_crop(load_rgb_uint8(path), SCALE)
                lr = benchmark.degrade(benchmark.make_lr(hr, SCALE), parsed, seed=1000 + index)
                with torch.no_grad():
                    sr = tensor_to_uint8(run(uint8_to_tensor(lr)))
                scores.append((metrics.psnr_y(sr, hr, SCALE), metrics.ssim_y(sr, hr, SCALE),
                               metrics.psnr_rgb(sr, hr, SCALE)))
            mean = np.mean(scores, axis=0)
            table[(damage, name)] = (*mean, (time.perf_counter() - start) / len(files))
            print(f"| {damage} | {name} | {mean[0]:.2f} | {mean[1]:.4f} | {mean[2]:.2f} | "
                  f"{table[(damage, name)][3]:.2f} |", flush=True)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--degraded-x4", required=True, help="weights file or run folder of the degraded-input x4 unet")
    parser.add_argument("--folder", type=Path, default=Path("runs/data/val"))
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"x{SCALE} on the first {args.images} images of {args.folder}; Y PSNR/SSIM (border {SCALE}), RGB PSNR")
    print("| LR damage | pipeline | Y PSNR | Y SSIM | RGB PSNR | s/image |\n|---|---|---|---|---|---|")
    evaluate(args.folder, args.degraded_x4, args.images)


if __name__ == "__main__":
    main()
