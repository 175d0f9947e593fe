"""Issue-2 bars through the real engine and a real model: tiled vs untiled difference on a
1024x768 image, and wall time / peak RSS of a x4 run on a large input on the CPU.

    python research/measure_engine.py diff [-m unet] [-x 4]
    python research/measure_engine.py memory [-m unet] [--size 4000x3000] [--out big.png]
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch


def smooth_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A photo-like test input: low-frequency colour fields plus a few hard edges."""
    rng = np.random.default_rng(seed)
    small = torch.from_numpy(rng.random((1, 3, height // 32 + 2, width // 32 + 2)).astype(np.float32))
    x = torch.nn.functional.interpolate(small, size=(height, width), mode="bicubic", align_corners=False)
    x[..., height // 3 : height // 2, width // 4 : width // 2] = 0.9
    return x.clamp(0, 1)


def measure_diff(model: str, scale: int) -> None:
    from upscale_cli.engine import UpscaleConfig, Upscaler

    x = smooth_image(768, 1024)
    whole = Upscaler(UpscaleConfig(model=model, scale=scale, tile=2048), progress=False).upscale_tensor(x)
    tiled = Upscaler(UpscaleConfig(model=model, scale=scale, tile=128), progress=False).upscale_tensor(x)
    diff = (whole - tiled).abs().max().item()
    eight_bit = ((whole * 255).round() - (tiled * 255).round()).abs().max().item()
    print(f"{model} x{scale} 1024x768 tile 128 vs untiled: max abs diff {diff:.2e} (float), {eight_bit:.0f}/255 (8-bit)")


def measure_memory(model: str, scale: int, size: str, out: str | None) -> None:
    from upscale_cli.engine import UpscaleConfig, Upscaler
    from upscale_cli.images import DecodedImage
    from upscale_cli.images.write import write_image

    width, height = map(int, size.split("x"))
    x = smooth_image(height, width)
    start = time.perf_counter()
    result = Upscaler(UpscaleConfig(model=model, scale=scale, device="cpu"), progress=False).upscale_tensor(x)
    if out:
        write_image(DecodedImage(pixels=result, source_format="PNG"), out)
    seconds = time.perf_counter() - start
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{model} x{scale} {size} on the CPU: {seconds:.1f} s, peak RSS {peak_gib:.2f} GiB, output {tuple(result.shape)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["diff", "memory"])
    parser.add_argument("-m", "--model", default="unet")
    parser.add_argument("-x", "--scale", type=int, default=4)
    parser.add_argument("--size", default="4000x3000")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.what == "diff":
        measure_diff(args.model, args.scale)
    else:
        measure_memory(args.model, args.scale, args.size, args.out)
