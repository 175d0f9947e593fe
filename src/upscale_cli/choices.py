"""The fixed sets of words that options take: one `Literal` each, and its tuple read from it
(`get_args`), so each set is written once.

They live here, in a module that imports nothing heavy, because the commands declare their
options from them at import time (Typer lists a Literal's values in `--help` and refuses any other
value as a usage error, exit 2) and `upscale --help` must not load torch. The modules that act on a
value (engine, restore, fit_single, train) import the same Literal and check library calls, which
need no command line, against the same tuple. Output formats are the format table's
(`images/formats.py`), which is light too.
"""
from __future__ import annotations

import re
from typing import Literal, get_args

# --alpha: auto = through any-size models (nearest stays nearest), else bicubic
Alpha = Literal["auto", "bicubic", "model"]
ALPHA_MODES: tuple[Alpha, ...] = get_args(Alpha)

# --device: auto picks CUDA, then Apple MPS, then the CPU; cuda:N (DEVICE_NAME) picks one GPU
Device = Literal["auto", "cpu", "cuda", "mps"]
DEVICES: tuple[Device, ...] = get_args(Device)
DEVICE_NAME = re.compile(r"auto|cpu|mps|cuda(:[0-9]{1,3})?")  # the form; whether it is here: select_device
DEVICE_WORDS = "auto, cpu, cuda, cuda:N or mps"  # how messages and help name them

# --runtime: what runs the model on a tile on the CPU: auto (the default) = OpenVINO
# (src/upscale_cli/compiled.py) from a tile shape's second use where it is installed and the model
# converts within 1/255, else PyTorch; torch (never imports OpenVINO); openvino (every shape)
Runtime = Literal["auto", "torch", "openvino"]
RUNTIMES: tuple[Runtime, ...] = get_args(Runtime)
DEFAULT_RUNTIME: Runtime = "auto"  # measured faster, whole command: research/runtime_speed.md

# upscale restore --task
Task = Literal["auto", "jpeg", "denoise", "inpaint"]
TASKS: tuple[Task, ...] = get_args(Task)

# fit-single --encoding: the coordinate MLP's input encoding ("none": a plain ReLU MLP)
Encoding = Literal["siren", "fourier", "none"]
ENCODINGS: tuple[Encoding, ...] = get_args(Encoding)

# upscale train: the architectures it trains, the pixel loss, where the loss counts ("image": every
# pixel; "mask": the pixels the input's mask marks, for a mask-channel inpainting model, whose
# output is used inside the mask only), and the restoration damage mix (the first is the default)
from upscale_cli.models import TRAINABLE_ARCHS, TrainableArch as Arch  # noqa: E402 - the registry owns arch names
Loss = Literal["l1", "mse"]
LOSSES: tuple[Loss, ...] = get_args(Loss)
LossRegion = Literal["image", "mask"]
LOSS_REGIONS: tuple[LossRegion, ...] = get_args(LossRegion)
DamageMix = Literal["exclusive", "independent", "jpeg", "inpaint"]
DAMAGE_MIXES: tuple[DamageMix, ...] = get_args(DamageMix)


def device_name(value: str) -> str:
    """`value` if it names a device (DEVICES or cuda:N), else ValueError naming them all."""
    if not DEVICE_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not one of {DEVICE_WORDS}")
    return value
