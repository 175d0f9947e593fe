"""What a training run is: TrainConfig (everything a run needs, stored in its checkpoint), the
events the loop reports (TrainEvent), and the architectures trained their own way (ARCH_TRAINING)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Callable

from torch import nn

from upscale_cli.errors import UnsupportedScaleError, UsageError
from upscale_cli.train import degrade

# Architectures trained with their own data, loss, optimiser and validation: arch -> a module with
# DEFAULTS (TrainConfig values that differ), load_data, make_batch, loss, make_optimizer, validate.
# Every other architecture is the pixel-loss SR recipe below.
ARCH_TRAINING = {"pixelrec": "upscale_cli.train.pixelrec"}


def arch_training(arch: str):
    """The module that trains `arch` its own way, or None for the pixel-loss recipe."""
    from importlib import import_module

    return import_module(ARCH_TRAINING[arch]) if arch in ARCH_TRAINING else None


def arch_defaults(arch: str) -> dict:
    """TrainConfig values an architecture's recipe changes (pixelrec: RMSProp's lr, batch 32 ...)."""
    hooks = arch_training(arch)
    return dict(hooks.DEFAULTS) if hooks else {}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs; stored in the checkpoint so `--resume` needs only the run dir."""

    data: tuple[str, ...]
    out: str
    arch: str = "unet"
    scale: int = 4
    settings: dict = field(default_factory=dict)  # builder settings besides scale (width, levels ...)
    val: tuple[str, ...] = ()
    steps: int = 10_000
    minutes: float | None = None  # time budget; the schedule follows whichever ends first
    batch: int = 16
    crop: int = 48  # LR crop side (the HR crop is crop * scale)
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: float = 0.05  # fraction of the run
    loss: str = "l1"
    loss_region: str = "image"  # "mask": the loss (and validation PSNR) inside the input's mask channel only
    feature_weight: float = 0.0  # VGG-16 feature loss weight (0 = off)
    gram_weight: float = 0.0  # gram-matrix loss weight (0 = off)
    vgg_weights: str | None = None
    ema: float = 0.999  # 0 = no EMA
    clip: float = 1.0  # gradient-norm clip (0 = off)
    progressive: bool = False
    degrade: bool = False
    damage_mix: str = "exclusive"  # restoration (scale 1) with degrade: degrade.DAMAGE_MIXES
    amp: bool = True  # mixed precision, CUDA only
    cpu_bf16: bool = False  # bfloat16 mixed precision on a CPU with native bf16 (AVX-512 BF16 or AMX)
    device: str = "auto"
    every: int = 500  # steps between validation, checkpoint and sample
    seed: int = 0
    init: str | None = None  # initialise from a checkpoint or weights file (matching tensors only)
    threads: int | None = None

    @classmethod
    def from_dict(cls, raw: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        raw = {k: v for k, v in raw.items() if k in known}
        for key in ("data", "val"):
            raw[key] = tuple(raw.get(key, ()))
        return cls(**raw)

    @property
    def model_settings(self) -> dict:
        return {**self.settings, "scale": self.scale}


# "image": the pixel loss over every pixel; "mask": over the pixels the input's mask marks (a
# mask-channel inpainting model, whose output is used inside the mask only)
LOSS_REGIONS = ("image", "mask")


@dataclass
class TrainEvent:
    """What the loop reports: kind is start, warning, step, val, checkpoint or done."""

    kind: str
    step: int = 0
    steps: int = 0
    progress: float = 0.0
    loss: float | None = None
    psnr: float | None = None
    lr: float | None = None
    it_s: float | None = None
    eta_s: float | None = None
    message: str = ""
    path: str | None = None


EventFn = Callable[[TrainEvent], None]


def check_config(config: TrainConfig) -> None:
    if config.steps < 1 or config.batch < 1 or config.crop < 4 or config.every < 1:
        raise UsageError("steps, batch and every must be >= 1 and crop >= 4")
    if config.loss not in ("l1", "mse"):
        raise UsageError(f"unknown loss {config.loss!r}; choose l1 or mse")
    if config.loss_region not in LOSS_REGIONS:
        raise UsageError(f"unknown loss region {config.loss_region!r}; choose from {', '.join(LOSS_REGIONS)}")
    if config.loss_region == "mask" and not (config.degrade and config.scale == 1 and config.damage_mix == "inpaint"):
        raise UsageError("--loss-region mask needs the inpainting recipe's masks: --scale 1 --degrade --damage-mix inpaint")
    if not 0.0 <= config.ema < 1.0:
        raise UsageError("ema must be in [0, 1)")
    if not config.data:
        raise UsageError("give at least one folder of HR training images")
    if config.damage_mix not in degrade.DAMAGE_MIXES:
        raise UsageError(f"unknown damage mix {config.damage_mix!r}; choose from {', '.join(degrade.DAMAGE_MIXES)}")


def build_model_for(config: TrainConfig) -> nn.Module:
    from upscale_cli.models import build_model

    try:
        return build_model(config.arch, **config.model_settings)
    except UnsupportedScaleError as err:
        raise UnsupportedScaleError(f"cannot train {config.arch} at x{config.scale}: {err}") from None
    except TypeError as err:
        raise UsageError(f"bad settings for {config.arch}: {err}") from None

