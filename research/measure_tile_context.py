"""How much tile context a model needs: tiled against untiled output, in 8-bit levels, for
several margins (input pixels of context on each side of a cut).

    python research/measure_tile_context.py --model FILE.pth [--image IMG] [--tile 128] [--margins 4 8 16 32]
    python research/measure_tile_context.py --random esrgan|swinir|compact [...]

--random builds the architecture with spandrel's own class and random weights (published trained
files cannot be fetched here); trained weights usually need less context than random ones, whose
every weight is large. The image defaults to a BSDS400 training photo (never a benchmark set).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from upscale_cli.tiling import TilePlan, tiled_forward

TRAIN = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "train" / "BSDS400"


def random_model(kind: str):
    """A spandrel descriptor of a realistic size with random weights."""
    import spandrel
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.SwinIR import SwinIR

    torch.manual_seed(0)
    build = {
        "esrgan": lambda: ESRGAN(num_filters=64, num_blocks=6, scale=4),
        "swinir": lambda: SwinIR(upscale=4, img_size=64, window_size=8, embed_dim=60, depths=[6, 6, 6, 6],
                                 num_heads=[6, 6, 6, 6], mlp_ratio=2.0, upsampler="pixelshuffledirect"),
        "compact": lambda: Compact(num_feat=64, num_conv=32, upscale=4),
    }[kind]
    return spandrel.ModelLoader().load_from_state_dict(build().state_dict()).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path)
    source.add_argument("--random", choices=("esrgan", "swinir", "compact"))
    parser.add_argument("--image", type=Path, default=None)
    parser.add_argument("--crop", type=int, default=192, help="side of the centre crop used (input pixels)")
    parser.add_argument("--tile", type=int, default=96)
    parser.add_argument("--margins", type=int, nargs="+", default=[4, 8, 16, 24, 32])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.model:
        import spandrel

        descriptor = spandrel.ModelLoader().load_from_file(args.model).eval()
    else:
        descriptor = random_model(args.random)
    image_path = args.image or sorted(TRAIN.glob("*.jpg"))[0]
    picture = Image.open(image_path).convert("RGB")
    left, top = (picture.width - args.crop) // 2, (picture.height - args.crop) // 2
    picture = picture.crop((left, top, left + args.crop, top + args.crop))
    x = torch.from_numpy(np.asarray(picture).astype(np.float32) / 255).permute(2, 0, 1)[None].contiguous()
    scale = descriptor.scale
    multiple = max(1, descriptor.size_requirements.multiple_of)

    def run(t):
        with torch.no_grad():
            out = descriptor(t)
        return out.clone() if out.is_inference() else out

    start = time.perf_counter()
    untiled = (tiled_forward(run, x, scale, TilePlan(0, 0, 0, multiple)).clamp(0, 1) * 255).round()
    print(f"{descriptor.architecture.id} x{scale}, {image_path.name} crop {args.crop}, untiled in "
          f"{time.perf_counter() - start:.1f} s; tile {args.tile}")
    print("| margin (input px) | max diff (8-bit levels) | values off by more than 1 | mean abs diff |")
    print("|---|---|---|---|")
    for margin in args.margins:
        overlap = -(-2 * margin // multiple) * multiple
        tile = max(args.tile, 2 * overlap)  # a stride of at least the overlap, as the engine plans
        tile -= tile % multiple
        tiled = (tiled_forward(run, x, scale, TilePlan(tile, overlap, margin, multiple)).clamp(0, 1) * 255).round()
        diff = (tiled - untiled).abs()
        print(f"| {margin} | {int(diff.max())} | {int((diff > 1).sum())} | {float(diff.mean()):.4f} |")


if __name__ == "__main__":
    main()
