"""Seconds per model call on the CPU: PyTorch eager, PyTorch channels-last, OpenVINO, ONNX Runtime.

    python research/measure_runtime.py                 # all three models, best of 5, alternated
    python research/measure_runtime.py --models unet --rounds 3
    python research/measure_runtime.py --models shipped community --no-onnx --rounds 3

The models are loaded the way the engine loads them (engine.Upscaler(...).model(scale)): every shipped
model (SHIPPED: unet x2/x3/x4, upsampler x2/x4/x8, the restoration unets; 256x256, upsampler x8 at
128x128), the shared Compact file (realesr-general-x4v3) at 256x256, and spandrel's ESRGAN (Real-ESRGAN
x4plus), SwinIR-light x4 and DAT-light x4 with random weights in their published configurations at 64x64. Every runtime gets the same input
tensor and the threads the process has (os.sched_getaffinity). OpenVINO converts the torch module
directly (ov.convert_model with example_input) and compiles for "CPU" with an explicit f32 precision
hint; ONNX Runtime runs torch.onnx.export's graph. The rounds alternate the runtimes (a busy machine
hits all alike); each cell is the best of the rounds, and the largest absolute difference from eager
is printed with it (in 8-bit steps: 1/255 = 1). `uptime` and the CPU's vector flags head the table.
"""
from __future__ import annotations

import argparse
import copy
import os
import subprocess
import tempfile
import time
from pathlib import Path

import torch

COMPACT = Path(__file__).resolve().parents[2] / "shared" / "weights" / "community" / "realesr-general-x4v3.pth"
THREADS = len(os.sched_getaffinity(0))
ONNX = True  # --no-onnx leaves ONNX Runtime out


SHIPPED = {  # name: (catalogue model, native scale, input side)
    "unet": ("unet", 4, 256), "unet-x2": ("unet", 2, 256), "unet-x3": ("unet", 3, 256),
    "upsampler-x2": ("upsampler", 2, 256), "upsampler-x4": ("upsampler", 4, 256), "upsampler-x8": ("upsampler", 8, 128),
    "unet-jpeg": ("unet-jpeg", 1, 256), "unet-restore": ("unet-restore", 1, 256),
}
COMMUNITY = ("compact", "esrgan", "swinir", "dat")


def _published(name: str) -> tuple[Path, int]:
    """A spandrel family with random weights in its published configuration, saved as published."""
    torch.manual_seed(0)
    folder = Path(tempfile.mkdtemp())
    if name == "esrgan":  # Real-ESRGAN x4plus: RRDBNet, 23 blocks, 64 features
        from spandrel.architectures.ESRGAN import ESRGAN

        net, side = ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4), 64
    elif name == "swinir":  # SwinIR-light x4 (the lightweight classical model)
        from spandrel.architectures.SwinIR import SwinIR

        net, side = SwinIR(upscale=4, in_chans=3, img_size=64, window_size=8, img_range=1.0, depths=[6, 6, 6, 6],
                           embed_dim=60, num_heads=[6, 6, 6, 6], mlp_ratio=2, upsampler="pixelshuffledirect",
                           resi_connection="1conv"), 64
    else:  # DAT-light x4
        from spandrel.architectures.DAT import DAT

        net, side = DAT(upscale=4, in_chans=3, img_size=64, img_range=1.0, depth=[18], embed_dim=60, num_heads=[6],
                        expansion_factor=2, resi_connection="3conv", split_size=[8, 32],
                        upsampler="pixelshuffledirect"), 64
    path = folder / f"{name}_x4.pth"
    torch.save({"params": net.state_dict()}, path)
    return path, side


def load(name: str):
    """(module, input) for a shipped model (SHIPPED) or a community family (COMMUNITY), loaded as the
    engine loads it."""
    from upscale_cli.engine import UpscaleConfig, Upscaler

    torch.manual_seed(0)
    if name in SHIPPED:
        model_name, scale, side = SHIPPED[name]
        model = Upscaler(UpscaleConfig(model=model_name, device="cpu"), progress=False).model(scale)
    else:
        path, side = (COMPACT, 256) if name == "compact" else _published(name)
        model = Upscaler(UpscaleConfig(model=str(path), device="cpu"), progress=False).model(None)
    x = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(1))
    return model.float().eval(), x


def runners(model, x):
    """name -> (callable on x giving a float32 tensor, seconds to build it)."""
    out = {}
    torch.set_num_threads(THREADS)
    eager = copy.deepcopy(model).to(memory_format=torch.contiguous_format)  # Module.to works in place: copies
    out["torch eager"] = (lambda t: eager(t.contiguous()), 0.0)
    cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    out["torch channels-last"] = (lambda t: cl(t.contiguous(memory_format=torch.channels_last)), 0.0)

    import openvino as ov

    start = time.perf_counter()
    core = ov.Core()
    with torch.inference_mode(False), torch.no_grad():
        ov_model = ov.convert_model(eager, example_input=x)
    compiled = core.compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                    "INFERENCE_NUM_THREADS": THREADS,
                                                    "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    out["OpenVINO"] = (lambda t: torch.from_numpy(request.infer([t.numpy()])[0].copy()), time.perf_counter() - start)

    if not ONNX:
        return out
    try:
        import onnxruntime as ort

        start = time.perf_counter()
        path = Path(tempfile.mkdtemp()) / "model.onnx"
        with torch.no_grad():
            torch.onnx.export(eager, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=False,
                              opset_version=17)
        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        out["ONNX Runtime"] = (lambda t: torch.from_numpy(session.run(None, {"x": t.numpy()})[0]),
                               time.perf_counter() - start)
    except Exception as err:  # a model ONNX export refuses: said in the table
        print(f"ONNX Runtime: {type(err).__name__}: {str(err)[:200]}")
    return out


def measure(name: str, rounds: int) -> list[str]:
    model, x = load(name)
    with torch.inference_mode():
        reference = copy.deepcopy(model).to(memory_format=torch.contiguous_format)(x).float()
    runs = runners(model, x)
    best = {k: float("inf") for k in runs}
    diff = {}
    for _ in range(rounds):
        for key, (fn, _build) in runs.items():
            with torch.inference_mode():
                start = time.perf_counter()
                y = fn(x)
                best[key] = min(best[key], time.perf_counter() - start)
            diff[key] = float((y.float() - reference).abs().max()) * 255
    return [f"| {name} {tuple(x.shape[-2:])} | " + " | ".join(
        f"{k}: {best[k]:.3f} s (max diff {diff[k]:.4f}/255, built in {runs[k][1]:.1f} s)" for k in runs) + " |"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["unet", "compact", "dat"],
                        choices=[*SHIPPED, *COMMUNITY, "shipped", "community"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-onnx", action="store_true", help="leave ONNX Runtime out (it is not a dependency)")
    args = parser.parse_args()
    global ONNX
    ONNX = not args.no_onnx
    args.models = [m for name in args.models for m in (SHIPPED if name == "shipped" else COMMUNITY
                                                       if name == "community" else (name,))]
    flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print("threads:", THREADS, "| flags:", " ".join(f for f in flags if f.startswith(("avx", "amx", "fma"))))
    for name in args.models:
        print("\n".join(measure(name, args.rounds)), flush=True)
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
