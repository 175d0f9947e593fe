"""Seconds per model call on the CPU: PyTorch eager, PyTorch channels-last, OpenVINO, ONNX Runtime.

    python research/measure_runtime.py                 # all three models, best of 5, alternated
    python research/measure_runtime.py --models unet --rounds 3

The models are loaded the way the engine loads them (engine.Upscaler(...).model(scale)): our `unet`
x4 at 256x256, the shared Compact file (realesr-general-x4v3) at 256x256, and a spandrel DAT-light x4
(random weights, the published DAT-light configuration) at 64x64. Every runtime gets the same input
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


def load(name: str):
    """(module, input) for one of unet / compact / dat, loaded as the engine loads it."""
    from upscale_cli.engine import UpscaleConfig, Upscaler

    torch.manual_seed(0)
    if name == "unet":
        model, side = Upscaler(UpscaleConfig(model="unet", device="cpu"), progress=False).model(4), 256
    elif name == "compact":
        model, side = Upscaler(UpscaleConfig(model=str(COMPACT), device="cpu"), progress=False).model(None), 256
    else:
        from spandrel.architectures.DAT import DAT

        net = DAT(upscale=4, in_chans=3, img_size=64, img_range=1.0, depth=[18], embed_dim=60, num_heads=[6],
                  expansion_factor=2, resi_connection="3conv", split_size=[8, 32], upsampler="pixelshuffledirect")
        folder = Path(tempfile.mkdtemp())
        torch.save({"params": net.state_dict()}, folder / "DAT_light_x4.pth")
        model, side = Upscaler(UpscaleConfig(model=str(folder / "DAT_light_x4.pth"), device="cpu"),
                               progress=False).model(None), 64
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
    parser.add_argument("--models", nargs="+", default=["unet", "compact", "dat"])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print("threads:", THREADS, "| flags:", " ".join(f for f in flags if f.startswith(("avx", "amx", "fma"))))
    for name in args.models:
        print("\n".join(measure(name, args.rounds)), flush=True)
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
