"""Where a model runs and in what form: the device (`--device`), the dtype `--half` gets on it,
and on the CPU the memory layout and the number of torch threads.

Reduced precision is used only where the device computes it natively and the model supports
it: float16 (or bfloat16) on a GPU, bfloat16 on a CPU with AVX-512 BF16 or AMX (read from the
CPU's flags, never assumed); otherwise float32, and `half_dtype` says why.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING

from upscale_cli.choices import device_name
from upscale_cli.errors import DeviceError

if TYPE_CHECKING:  # torch is imported where a device is made: a run on the CPU may need none of it
    import torch

# What a GPU driver leaves in the file system (NVIDIA, WSL's GPU paravirtualisation, AMD ROCm): where
# none is present, torch.cuda.is_available() is False, and `--device auto` is the CPU.
GPU_DRIVER_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia/version", "/dev/dxg", "/dev/kfd")


def may_have_gpu() -> bool:
    """Whether `--device auto` could find a GPU here, known without importing torch: a GPU driver's
    files, or macOS (Apple MPS)."""
    return sys.platform == "darwin" or any(os.path.exists(path) for path in GPU_DRIVER_FILES)


def surely_cpu(name: str) -> bool:
    """Whether `--device NAME` runs on the CPU, known without importing torch."""
    return name == "cpu" or (name == "auto" and not may_have_gpu())


def select_device(name: str) -> torch.device:
    """'auto' picks CUDA, then Apple MPS, then the CPU; an explicit device must exist."""
    import torch

    try:
        device_name(name)  # the command line has checked it; a library caller may not have
    except ValueError as err:
        raise DeviceError(f"unknown device: {err}") from None
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError("--device cuda: no CUDA GPU is available here")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("--device mps: Apple MPS is not available here")
    return torch.device(name)  # device_name admitted only names torch.device takes


def use_channels_last(info, device: torch.device) -> bool:
    """Channels-last on the CPU for models measured faster with it (oneDNN's preferred layout)."""
    return info.channels_last and device.type == "cpu"


def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX-BF16 in this CPU's flags (Linux /proc/cpuinfo; elsewhere: no)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool({"avx512_bf16", "amx_bf16"} & flags)
    except OSError:
        pass
    return False


def half_dtype(info, device: torch.device) -> tuple[torch.dtype, str]:
    """(dtype for --half, why float32 when it is float32)."""
    import torch

    if device.type in ("cuda", "mps"):
        if info.supports_half:
            return torch.float16, ""
        if device.type == "cuda" and info.supports_bf16 and torch.cuda.is_bf16_supported():
            return torch.bfloat16, ""
        return torch.float32, "the model does not support reduced precision"
    if device.type == "cpu":
        if not info.supports_bf16 or info.device_bound:
            return torch.float32, "the model does not support bfloat16"
        if not cpu_has_native_bf16():
            return torch.float32, "this CPU has no native bfloat16 (AVX-512 BF16 or AMX), where it would be slower"
        return torch.bfloat16, ""
    return torch.float32, f"no reduced precision on {device.type}"


@contextlib.contextmanager
def torch_threads(count: int | None):
    """Torch's CPU ops on `count` threads for a while (None: as they are). A weightless model
    (interpolation) leaves torch only small steps around its NumPy work (channels, the finite
    check, the clamp), and on a busy CPU waiting for torch's thread pool cost more than the steps
    (2,000 files of 64x48, -m nearest: 2.9 s of 8 in those steps on 2 threads, a tenth on one)."""
    import torch

    before = torch.get_num_threads()
    if count is None or count == before:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)

