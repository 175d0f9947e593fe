"""Measure tiled inference on a big image: wall time and peak RSS of a x4 run on a 4000x3000 input (CPU).

    python research/measure_tiling.py [--width 4000 --height 3000 --tile 256 --features 8 --threads 0]

The model is a small random conv net (three 3x3 convs, then PixelShuffle x4), so the figures measure
the tiler (grid, blending, one float32 accumulator) rather than a real model's compute.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time

import torch
from torch import nn

from upscale_cli.tiling import TilePlan, output_bytes, overlap_for, tiled_forward

RECEPTIVE_FIELD = 3  # three 3x3 convs
SCALE = 4


def peak_rss_mib() -> float:
    """Peak resident set size of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def small_x4_model(features: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, features, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(features, features, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(features, 3 * SCALE * SCALE, 3, padding=1),
        nn.PixelShuffle(SCALE),
    ).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = small_x4_model(args.features)
    torch.manual_seed(1)
    x = torch.rand(1, 3, args.height, args.width)  # (1, 3, H, W)
    overlap = overlap_for(RECEPTIVE_FIELD)
    rss_before = peak_rss_mib()
    tiles = []
    start = time.perf_counter()
    plan = TilePlan(args.tile, overlap, RECEPTIVE_FIELD)
    out = tiled_forward(model, x, SCALE, plan, on_tile=lambda done, total: tiles.append(total))
    seconds = time.perf_counter() - start

    print(f"input {args.width}x{args.height}, x{SCALE}, tile {args.tile}, overlap {overlap}, {tiles[-1]} tiles, "
          f"{torch.get_num_threads()} threads")
    print(f"output {tuple(out.shape)} {out.dtype}: {output_bytes(args.height, args.width, 3, SCALE) / 2**30:.2f} GiB")
    print(f"wall time {seconds:.1f} s")
    print(f"peak RSS {peak_rss_mib():.0f} MiB (before the run: {rss_before:.0f} MiB)")


if __name__ == "__main__":
    main()
