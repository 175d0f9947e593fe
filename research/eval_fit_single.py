"""Set5 (or any folder) evaluation of fit-single against bicubic, with the standard SR protocol.

Protocol (shared/README.md): HR mod-cropped to a multiple of the scale, LR = Pillow bicubic
downscale, SR output rounded to uint8, PSNR/SSIM on Y (BT.601, [16, 235]) with `scale`
border pixels cropped, mean over the images. The fit runs through the registry module, as
`upscale in/ -m fit-single -x 4` does: build_model("coord-mlp", **settings)(lr, size=hr size).

    python research/eval_fit_single.py                      # every encoding, with and without consistency
    python research/eval_fit_single.py --encoding siren --consistency on

Evaluation only: defaults were chosen on synthetic and T91 images, never on these.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from upscale_cli.images.arrays import load_rgb_uint8, pil_bicubic_downscale, tensor_to_uint8, uint8_to_tensor
from upscale_cli.metrics import psnr_y, ssim_y
from upscale_cli.models import build_model

DEFAULT_DATASET = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "benchmark" / "Set5"


def load_pairs(folder: Path, scale: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, HR mod-cropped, LR) uint8 RGB for each PNG of the folder."""
    pairs = []
    for path in sorted(folder.glob("*.png")):
        hr = load_rgb_uint8(path)
        h, w = hr.shape[0] - hr.shape[0] % scale, hr.shape[1] - hr.shape[1] % scale
        hr = np.ascontiguousarray(hr[:h, :w])
        pairs.append((path.stem, hr, pil_bicubic_downscale(hr, (w // scale, h // scale))))
    return pairs


def evaluate(pairs, scale: int, settings: dict | None) -> dict:
    """Mean Y-PSNR/SSIM of one method (settings None = bicubic) and the seconds it took."""
    psnrs, ssims, start = [], [], time.perf_counter()
    for _, hr, lr in pairs:
        if settings is None:
            sr = pil_bicubic_downscale(lr, (hr.shape[1], hr.shape[0]))  # Pillow bicubic works both ways
        else:
            model = build_model("coord-mlp", **settings)
            out = model(uint8_to_tensor(lr), size=hr.shape[:2])
            sr = tensor_to_uint8(out.clamp(0.0, 1.0))
        psnrs.append(psnr_y(sr, hr, scale))
        ssims.append(ssim_y(sr, hr, scale))
    return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "seconds": time.perf_counter() - start,
            "per_image": [round(p, 2) for p in psnrs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--encoding", choices=("fourier", "siren", "none", "all"), default="all")
    parser.add_argument("--consistency", choices=("on", "off", "both"), default="both")
    parser.add_argument("--steps", type=int, default=None, help="override the default steps")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as fit-single itself runs
    pairs = load_pairs(args.dataset.resolve(), args.scale)
    names = ", ".join(name for name, _, _ in pairs)
    print(f"{args.dataset.name} x{args.scale} ({names})")
    print("| method | consistency | PSNR (dB) | SSIM | seconds | per image |\n|---|---|---|---|---|---|")
    base = evaluate(pairs, args.scale, None)
    print(f"| bicubic | - | {base['psnr']:.2f} | {base['ssim']:.4f} | {base['seconds']:.1f} | {base['per_image']} |", flush=True)
    encodings = ("siren", "fourier", "none") if args.encoding == "all" else (args.encoding,)
    modes = {"on": (True,), "off": (False,), "both": (True, False)}[args.consistency]
    for encoding in encodings:
        for consistency in modes:
            settings = {"encoding": encoding, "consistency": consistency}
            if args.steps:
                settings["steps"] = args.steps
            row = evaluate(pairs, args.scale, settings)
            print(f"| fit-single {encoding} | {'on' if consistency else 'off'} | {row['psnr']:.2f} | "
                  f"{row['ssim']:.4f} | {row['seconds']:.1f} | {row['per_image']} |", flush=True)


if __name__ == "__main__":
    main()
