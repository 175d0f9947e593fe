"""Time `upscale` with a model at x4 against OpenCV LapSRN x4 on ten 256x256 images (the speed bar).

    python research/speed_unet_vs_lapsrn.py IMAGE_FOLDER [--model unet] [--rounds 3] [--lapsrn ../shared/weights/opencv/LapSRN_x4.pb]

Ten 256x256 crops are cut from the first ten images of the folder (use training images, not a
benchmark set). Both sides run as whole processes on the same files, alternated round by round
(so machine load hits both alike), each reading the PNGs, upscaling x4 and writing PNGs:
`upscale -m MODEL -x 4` against a Python process that loads LapSRN in OpenCV's dnn_superres and
calls `upsample` per image. Also reported: our model alone and LapSRN's `upsample` alone (models
loaded beforehand), and the CPU flags that matter for the speed. --model takes a catalogue name or
a weights file (e.g. a random-init model of a candidate shape: only speed is measured).
"""
from __future__ import annotations

import argparse
import statistics
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


LAPSRN_PROCESS = """
import sys, cv2
sr = cv2.dnn_superres.DnnSuperResImpl_create()
sr.readModel(sys.argv[1])
sr.setModel("lapsrn", 4)
for src in sys.argv[3:]:
    cv2.imwrite(sys.argv[2] + "/" + src.rsplit("/", 1)[-1], sr.upsample(cv2.imread(src)))
"""


def cpu_flags() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return " ".join(f for f in wanted if f in flags) or "none of avx2/avx512/amx"


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--model", default="unet")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lapsrn", type=Path, default=DEFAULT_LAPSRN)
    args = parser.parse_args()
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        paths = make_inputs(args.folder, tmp / "in")
        for round_index in range(args.rounds):
            out_ours, out_theirs = tmp / f"ours{round_index}", tmp / f"lapsrn{round_index}"
            out_theirs.mkdir()
            run_ours = [sys.executable, "-m", "upscale_cli", str(tmp / "in"), "-m", args.model, "-x", "4",
                        "-o", str(out_ours) + "/", "-q"]
            run_theirs = [sys.executable, "-c", LAPSRN_PROCESS, str(args.lapsrn), str(out_theirs), *map(str, paths)]
            if round_index % 2:  # alternate which goes first
                theirs.append(timed(run_theirs))
                ours.append(timed(run_ours))
            else:
                ours.append(timed(run_ours))
                theirs.append(timed(run_theirs))
        model_only = time_model(paths, args.model)
        lapsrn = time_lapsrn(paths, args.lapsrn)
    cmd, lap = statistics.median(ours), statistics.median(theirs)
    print(f"{len(paths)} images {SIDE}x{SIDE} -> x4; {torch.get_num_threads()} threads; CPU flags: {cpu_flags()}")
    print(f"upscale -m {args.model} -x 4 (whole process), median of {args.rounds}: {cmd:.2f}s  {[round(t, 2) for t in ours]}")
    print(f"OpenCV LapSRN x4 (whole process), median of {args.rounds}:      {lap:.2f}s  {[round(t, 2) for t in theirs]}")
    print(f"ratio ours / LapSRN (whole processes): {cmd / lap:.2f}")
    print(f"{args.model} x4 model only: {model_only:.2f}s; LapSRN upsample only: {lapsrn:.2f}s")


if __name__ == "__main__":
    main()
