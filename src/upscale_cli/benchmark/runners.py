"""Running models for the benchmark: which models by default, each one built through the engine,
whether it applies to a dataset, and one timed call with its memory.

Applies: a model whose size requirement (its descriptor's size.maximum: pixel-recursive takes at most
16x16) rules out a dataset's LR inputs, or that fills the pixels of a mask (a Masked descriptor:
inpainting), is not applicable to that dataset at that scale. It is
left out of that dataset's results with one "skipped ... not applicable" line (read from the
model's descriptor, never its name), whether it came from the default set or was named with -m;
it is not a failure.

Speed: each model runs once untimed on a set's first image (warm-up, in run.py), then every
image is timed. With a runtime that compiles (--runtime openvino or auto, compiled.py) a network
model first runs each image untimed as often as the runtime needs to convert its tile shapes
(Runner.untimed_calls: openvino converts on a shape's first call, auto on its second), so a timed
call runs the compiled model and never includes a conversion (seconds per shape). OpenCV's dnn
models and interpolation are not run by --runtime: they take no untimed calls.

Memory (MemoryProbe): the most extra memory one image needed: on CUDA the peak of
`torch.cuda.max_memory_allocated` above what was allocated before the call; on the CPU the
resident-set high-water mark (VmHWM, reset before each call through /proc/self/clear_refs) above
the resident set before the call, so heap that an earlier call freed but kept resident is not
counted again. Where VmHWM cannot be reset it is the growth of the process's peak RSS
(ru_maxrss), which stays 0 once an earlier call went higher.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from upscale_cli.choices import Runtime
from upscale_cli.errors import UnsupportedScaleError
from upscale_cli.models.descriptor import Masked

BASELINE_MODEL = "bicubic"  # first in every table; at x1 an identity resize: the score of the degraded input
BIG_DOWNLOAD_BYTES = 20_000_000  # default runs skip uncached weights larger than this (EDSR: 38 MB)
MB = 1024 * 1024
KB = 1024


def _weights_available(spec, scale: int) -> bool:
    """Packaged, cached, or small enough to fetch by default (big uncached files are opt-in)."""
    from upscale_cli.weights_cache import is_cached

    file = spec.files[scale]
    return file.packaged or is_cached(file) or file.size <= BIG_DOWNLOAD_BYTES


def _default_pick(spec, scale: int) -> bool:
    if spec.name == BASELINE_MODEL:
        return True
    if spec.reference and scale in spec.files:  # the published baselines (OpenCV's), when they can be had
        return _weights_available(spec, scale)
    if spec.task == "restore" and not spec.files:  # weight-free restorers (OpenCV denoisers)
        return True
    # our shipped models: every file of the entry is inside the package
    return bool(spec.files) and scale in spec.files and all(f.packaged for f in spec.files.values())


def _task_fits(spec, scale: int) -> bool:
    return spec.task == ("restore" if scale == 1 else "sr") or spec.name == BASELINE_MODEL


def select_models(scale: int, explicit: tuple[str, ...] = (), all_models: bool = False) -> list[str]:
    """Model names for one scale: the explicit ones (checked later), --all, or the default set:
    bicubic, every OpenCV model with this scale (big uncached downloads excepted) and our shipped models."""
    from upscale_cli.catalog import load_catalog

    if explicit and not all_models:
        return list(dict.fromkeys(explicit))
    catalog = load_catalog()
    picked = [
        spec.name
        for spec in catalog.values()
        if _task_fits(spec, scale) and (not spec.files or scale in spec.files) and (all_models or _default_pick(spec, scale))
    ]
    if BASELINE_MODEL in picked:  # the baseline first: the table reads from it
        picked.remove(BASELINE_MODEL)
        picked.insert(0, BASELINE_MODEL)
    return list(dict.fromkeys([*picked, *explicit]))


ENSEMBLE_SUFFIX = "+ensemble"  # a benchmark row of a model run as `upscale --ensemble`


def with_ensembles(names: list[str]) -> list[str]:
    """Each name followed by its +ensemble row when it is a network at native scales (an
    interpolation is the same under flips and rotations: nothing to average)."""
    from upscale_cli.catalog import resolve

    out = []
    for name in names:
        out.append(name)
        try:
            spec = resolve(name)
        except Exception:  # noqa: BLE001 - an unknown name fails once, as itself, when its runner is built
            continue
        if spec.scales or spec.local_path is not None:
            out.append(name + ENSEMBLE_SUFFIX)
    return out


@dataclass
class Runner:
    """One model at one scale, through the engine."""

    name: str
    upscaler: object
    device: str
    max_input_side: int = 0  # the model's largest input side (descriptor size.maximum; 0 = any)
    needs_mask: bool = False  # a Masked descriptor: it fills the pixels of a mask, which a benchmark has not got
    network: bool = False  # a PyTorch network with weights, which --runtime runs (not OpenCV's, not an interpolation)
    untimed_calls: int = 0  # calls of each image before its timed one: the compiled runtime's conversions

    def __call__(self, x):  # (1, C, h, w) -> (1, C, H, W)
        return self.upscaler.upscale_tensor(x)

    def not_applicable(self, inputs: list[tuple[str, tuple[int, int]]]) -> str | None:
        """Why this model cannot take these (name, (h, w)) inputs, or None when it takes them all."""
        if self.needs_mask:
            return "not applicable: it fills the pixels a mask marks (`upscale restore --mask`), and a benchmark has none"
        side = self.max_input_side
        over = [(max(hw), name, hw) for name, hw in inputs if side and max(hw) > side]
        if not over:
            return None
        _, name, (height, width) = max(over, key=lambda o: o[0])  # the first of the largest
        return (f"not applicable: it takes inputs up to {side}x{side} and {len(over)} of {len(inputs)} LR "
                f"inputs are larger (the largest: {name}, {width}x{height})")


def build_runner(name: str, scale: int, device: str, progress: bool = False, runtime: Runtime = "torch") -> Runner:
    """The engine's Upscaler for a model at a scale, loaded (and downloaded) now; `runtime` is the
    engine's --runtime (what runs a network model on the CPU).

    A model with native scales must have this one: the benchmark measures models, not the
    engine's x4-then-resize plans. UpscaleError when the model cannot be built."""
    from upscale_cli.engine import UpscaleConfig, Upscaler

    model = name.removesuffix(ENSEMBLE_SUFFIX)
    upscaler = Upscaler(UpscaleConfig(model=model, scale=float(scale), device=device, tile=0,
                                      ensemble=model != name, runtime=runtime), progress=progress)
    native = upscaler.native_scales()
    if native and scale not in native:
        have = ", ".join(f"x{s}" for s in native)
        raise UnsupportedScaleError(f"model {model!r} has no x{scale} (it has {have})")
    info = _model_info(upscaler, scale)
    needs_mask = isinstance(info, Masked)
    if not needs_mask:
        upscaler.prepare()
    # OpenCV's dnn models are device-bound; an interpolation has no weights: --runtime runs neither
    network = info is not None and not info.device_bound and bool(upscaler.spec.files or upscaler.spec.local_path)
    return Runner(name, upscaler, str(info.device_bound or upscaler.device) if info else str(upscaler.device),
                  info.size.maximum if info else 0, needs_mask, network,
                  _untimed_calls(upscaler, runtime) if network else 0)


def _untimed_calls(upscaler, runtime: Runtime) -> int:
    """How many times an image must run before its timed call so that the network's timed call runs
    the compiled model: 0 where the runtime converts nothing (torch; a GPU; OpenVINO not installed),
    else as many calls as a shape takes to be converted (compiled.py: openvino on its first call,
    auto on its second)."""
    if runtime == "torch" or upscaler.device.type != "cpu":
        return 0
    from upscale_cli import compiled

    if not compiled.available():
        return 0
    return compiled.AUTO_MIN_CALLS if runtime == "auto" else 1


def _model_info(upscaler, scale: int):
    """The model's descriptor: where it really runs (OpenCV models stay on the CPU
    whatever was asked for) and what sizes it takes; None when it cannot be had here."""
    try:
        return upscaler.model(scale if upscaler.native_scales() else None).info
    except Exception:  # noqa: BLE001 - informational only; running the model reports what is wrong
        return None


class MemoryProbe:
    """Extra memory of one call (MiB): CUDA allocator peak, or CPU resident high-water mark."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self._base = 0.0

    @staticmethod
    def _status_kb(key: str) -> float | None:
        try:
            with open("/proc/self/status", encoding="ascii") as handle:
                for line in handle:
                    if line.startswith(key + ":"):
                        return float(line.split()[1])
        except OSError:
            return None
        return None

    @staticmethod
    def _release_free_heap() -> None:
        """Give freed heap back to the OS (glibc malloc_trim) so the call's own allocations show in RSS."""
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc: RSS may undercount reused heap
            pass

    @staticmethod
    def _reset_hwm() -> bool:
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
                handle.write("5")  # 5 = reset the peak RSS to the current RSS (Linux >= 4.0)
            return True
        except OSError:
            return False

    @staticmethod
    def _maxrss_kb() -> float | None:
        try:
            import resource
        except ImportError:  # Windows
            return None
        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux

    def start(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = float(torch.cuda.memory_allocated())
            return
        self._release_free_heap()
        self._hwm = self._reset_hwm()
        self._base = (self._status_kb("VmRSS") if self._hwm else self._maxrss_kb()) or 0.0

    def stop(self) -> float | None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            return max(0.0, torch.cuda.max_memory_allocated() - self._base) / MB
        peak = self._status_kb("VmHWM") if self._hwm else self._maxrss_kb()
        return None if peak is None else max(0.0, peak - self._base) / KB


def _to_tensor(image: np.ndarray):
    from upscale_cli.images.arrays import uint8_to_tensor

    return uint8_to_tensor(image)  # (1, 3, H, W) float32 in [0, 1]


def _to_uint8(x) -> np.ndarray:
    """(1, C, H, W) float -> (H, W, 3) uint8: the protocol rounds the SR output to 8 bits."""
    from upscale_cli.images.arrays import tensor_to_uint8

    a = tensor_to_uint8(x)
    return np.ascontiguousarray(np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a)


def timed_run(runner: Runner, lr: np.ndarray) -> tuple[np.ndarray, float, float | None]:
    """(SR uint8, seconds, extra memory MiB) for one image."""
    import torch

    x = _to_tensor(lr)
    probe = MemoryProbe(runner.device)
    probe.start()
    start = time.perf_counter()
    y = runner(x)  # the engine picks no_grad (or grad, for models that fit at run time)
    if runner.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    memory = probe.stop()
    return _to_uint8(y), seconds, memory
