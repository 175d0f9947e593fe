"""Time `upscale` with unet x4 against OpenCV LapSRN x4 on ten 256x256 images (the issue's speed bar).

    python scripts/speed_unet_vs_lapsrn.py IMAGE_FOLDER [--model unet] [--lapsrn ../shared/weights/opencv/LapSRN_x4.pb]

Ten 256x256 crops are cut from the first ten images of the folder (use training images, not a
benchmark set). Reported: the whole `upscale` command (start-up, decode, model, PNG encode),
our model alone, and LapSRN's `upsample` alone (model loaded beforehand), all on this CPU.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

SIDE = 256  # pixels
COUNT = 10
DEFAULT_LAPSRN = Path(__file__).resolve().parents[1].parent / "shared" / "weights" / "opencv" / "LapSRN_x4.pb"


def make_inputs(folder: Path, out: Path) -> list[Path]:
    paths = []
    for i, path in enumerate(sorted(p for p in folder.iterdir() if p.is_file())[:COUNT]):
        target = out / f"img{i:02d}.png"
        Image.open(path).convert("RGB").crop((0, 0, SIDE, SIDE)).save(target)
        paths.append(target)
    return paths


def time_lapsrn(paths: list[Path], weights: Path) -> float:
    sr = cv2.dnn_superres.DnnSuperResImpl_create()
    sr.readModel(str(weights))
    sr.setModel("lapsrn", 4)
    images = [cv2.imread(str(p)) for p in paths]
    start = time.perf_counter()
    for image in images:
        sr.upsample(image)
    return time.perf_counter() - start


def time_model(paths: list[Path], model_name: str) -> float:
    from upscale_cli.loader import load_model

    model = load_model(model_name, 4)
    xs = [torch.from_numpy(np.asarray(Image.open(p)).copy()).permute(2, 0, 1)[None].float() / 255 for p in paths]
    with torch.no_grad():
        start = time.perf_counter()
        for x in xs:
            model(x)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--model", default="unet")
    parser.add_argument("--lapsrn", type=Path, default=DEFAULT_LAPSRN)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        paths = make_inputs(args.folder, tmp / "in")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "upscale_cli", str(tmp / "in"), "-m", args.model, "-x", "4",
                        "-o", str(tmp / "out") + "/", "-q"], check=True)
        cli = time.perf_counter() - start
        model_only = time_model(paths, args.model)
        lapsrn = time_lapsrn(paths, args.lapsrn)
    print(f"{len(paths)} images {SIDE}x{SIDE} -> x4 on {torch.get_num_threads()} threads")
    print(f"upscale -m {args.model} -x 4 (whole command): {cli:.2f}s")
    print(f"{args.model} x4 model only:                  {model_only:.2f}s")
    print(f"OpenCV LapSRN x4 upsample only:          {lapsrn:.2f}s")


if __name__ == "__main__":
    main()
