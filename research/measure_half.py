"""--half on this CPU: PSNR and speed of float32 against the reduced precision the engine picks
(bfloat16 on CPUs with AVX-512 BF16 or AMX), measured side by side in one run.

    python research/measure_half.py [--model unet] [--sets Set5,Set14] [--repeats 3] [--command-size 2048x1536]

1. Quality: the standard protocol (Y PSNR, border = scale) on the sets, through the engine.
2. Model time: the same LR images, fp32 and --half alternated, best of --repeats.
3. Whole command: `upscale IMG -x 4 -o out.jpg` with and without --half on a photo of
   --command-size (a BSDS400 training photo resized; never a benchmark image), alternated.
Prints the CPU flags that decide it.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from upscale_cli.device import cpu_has_native_bf16
from upscale_cli.engine import UpscaleConfig, Upscaler
from upscale_cli.metrics import psnr_y

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    wanted = [f for f in flags if f.startswith(("avx", "amx"))]
    return f"{model}; {' '.join(wanted)}"


def lr_pairs(set_name: str, scale: int):
    for path in sorted((SHARED / "benchmark" / set_name).iterdir()):
        hr = np.asarray(Image.open(path).convert("RGB"))
        hr = hr[: hr.shape[0] - hr.shape[0] % scale, : hr.shape[1] - hr.shape[1] % scale]
        lr = np.asarray(Image.fromarray(hr).resize((hr.shape[1] // scale, hr.shape[0] // scale), Image.BICUBIC))
        yield torch.from_numpy(lr.copy()).permute(2, 0, 1)[None].float() / 255, hr


def quality_and_model_time(model: str, sets: list[str], scale: int, repeats: int) -> None:
    engines = {half: Upscaler(UpscaleConfig(model=model, scale=scale, half=half, device="cpu", tile=100_000),
                              progress=False) for half in (False, True)}
    for engine in engines.values():
        engine.prepare()
    print(f"--half on this CPU runs {engines[True]._models[scale].head.weight.dtype if hasattr(engines[True]._models[scale], 'head') else '?'}"
          f"; notes: {engines[True].notes or 'none'}")
    print("| set | fp32 PSNR-Y | --half PSNR-Y | difference | fp32 model s | --half model s | ratio |")
    print("|---|---|---|---|---|---|---|")
    for set_name in sets:
        scores, times = {False: [], True: []}, {False: 0.0, True: 0.0}
        for x, hr in lr_pairs(set_name, scale):
            for half, engine in engines.items():
                engine.upscale_tensor(x)  # warm-up for this size
            best = {False: float("inf"), True: float("inf")}
            for _ in range(repeats):
                for half, engine in engines.items():  # alternated, so load changes hit both
                    start = time.perf_counter()
                    out = engine.upscale_tensor(x)
                    best[half] = min(best[half], time.perf_counter() - start)
                    sr = out[0].permute(1, 2, 0).mul(255).round().byte().numpy()
            for half, engine in engines.items():
                sr = engine.upscale_tensor(x)[0].permute(1, 2, 0).mul(255).round().byte().numpy()
                scores[half].append(psnr_y(sr, hr, border=scale))
                times[half] += best[half]
        a, b = float(np.mean(scores[False])), float(np.mean(scores[True]))
        print(f"| {set_name} x{scale} | {a:.3f} | {b:.3f} | {b - a:+.3f} | {times[False]:.2f} | {times[True]:.2f} | "
              f"{times[True] / times[False]:.2f} |")


def whole_command(model: str, size: str, repeats: int) -> None:
    width, height = (int(v) for v in size.split("x"))
    source = sorted((SHARED / "train" / "BSDS400").glob("*.jpg"))[0]
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "photo.png"
        Image.open(source).convert("RGB").resize((width, height), Image.BICUBIC).save(image)
        best = {False: float("inf"), True: float("inf")}
        for _ in range(repeats):
            for half in (False, True):
                cmd = [sys.executable, "-m", "upscale_cli", str(image), "-x", "4", "-m", model, "-q", "--overwrite",
                       "-o", str(Path(tmp) / "out.jpg"), *(["--half"] if half else [])]
                start = time.perf_counter()
                subprocess.run(cmd, check=True)
                best[half] = min(best[half], time.perf_counter() - start)
    print(f"whole command {size} -> x4 JPEG: fp32 {best[False]:.1f} s, --half {best[True]:.1f} s, "
          f"ratio {best[True] / best[False]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="unet")
    parser.add_argument("--sets", default="Set5,Set14")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--command-size", default="2048x1536")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_flags()}; native bf16: {cpu_has_native_bf16()}; {args.threads} threads")
    quality_and_model_time(args.model, args.sets.split(","), args.scale, args.repeats)
    if args.command_size != "0":
        whole_command(args.model, args.command_size, args.repeats)


if __name__ == "__main__":
    main()
