"""Evaluate SR weights with the standard protocol (shared/README.md), independent of the benchmark package
(src/upscale_cli/benchmark/).

    python scripts/eval_sr.py WEIGHTS_OR_RUN_DIR [--sets Set5,Set14,BSD68] [--root ../shared/datasets/benchmark]

HR mod-cropped to the scale; LR = Pillow BICUBIC downscale; SR rounded to uint8; PSNR/SSIM on
BT.601 Y with `scale` border pixels cropped; dataset figure = mean over images. A run
directory is evaluated with its checkpoint's EMA weights.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from upscale_cli.metrics import psnr_y, ssim_y

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "benchmark"


def load(source: str) -> torch.nn.Module:
    path = Path(source)
    if path.is_dir() or path.suffix == ".pt":
        from upscale_cli.models import build_model
        from upscale_cli.train.checkpoint import load_checkpoint
        from upscale_cli.train.config import TrainConfig

        ckpt = load_checkpoint(path)
        model = build_model(ckpt["config"]["arch"], **TrainConfig.from_dict(ckpt["config"]).model_settings)
        model.load_state_dict(ckpt["ema"] or ckpt["model"])
        return model.eval()
    from upscale_cli.loader import load_model

    return load_model(str(path))


@torch.no_grad()
def evaluate(model: torch.nn.Module, folder: Path) -> tuple[float, float, float, int]:
    from upscale_cli.train.validation import forward_padded

    scale = model.info.scale
    scores, start = [], time.perf_counter()
    for path in sorted(folder.iterdir()):
        hr = np.asarray(Image.open(path).convert("RGB"))
        hr = hr[: hr.shape[0] - hr.shape[0] % scale, : hr.shape[1] - hr.shape[1] % scale]
        lr = np.asarray(Image.fromarray(hr).resize((hr.shape[1] // scale, hr.shape[0] // scale), Image.BICUBIC))
        x = torch.from_numpy(lr.copy()).permute(2, 0, 1)[None].float() / 255.0
        sr = forward_padded(model, x).clamp(0, 1)[0].permute(1, 2, 0).mul(255).round().byte().numpy()
        scores.append((psnr_y(sr, hr, border=scale), ssim_y(sr, hr, border=scale)))
    seconds = time.perf_counter() - start
    return float(np.mean([s[0] for s in scores])), float(np.mean([s[1] for s in scores])), seconds, len(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="+")
    parser.add_argument("--sets", default="Set5,Set14,BSD68")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="one JSON line per result")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for source in args.weights:
        model = load(source)
        for name in args.sets.split(","):
            p, s, sec, n = evaluate(model, args.root / name)
            row = {"weights": source, "set": name, "scale": model.info.scale, "psnr": round(p, 4), "ssim": round(s, 5),
                   "seconds": round(sec, 2), "images": n}
            print(json.dumps(row) if args.json else
                  f"{name:6s} x{model.info.scale}  PSNR {p:6.2f} dB  SSIM {s:.4f}  ({n} images, {sec:.1f}s)  {source}",
                  flush=True)


if __name__ == "__main__":
    main()
