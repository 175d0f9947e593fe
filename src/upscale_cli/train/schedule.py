"""The learning rate (one-cycle), the crop size (progressive resizing) and the EMA of the weights,
as functions of the run's progress in [0, 1]."""
from __future__ import annotations

import math

import torch
from torch import nn

from upscale_cli.train.config import TrainConfig

WARMUP_START_DIV = 25.0  # one-cycle: start at lr/25


FINAL_DIV = 1000.0  # one-cycle: end at lr/1000


PROGRESSIVE_START = 0.5  # progressive resizing: crops start at half size ...


PROGRESSIVE_UNTIL = 0.6  # ... and reach full size at 60% of the run


def lr_at(progress: float, config: TrainConfig) -> float:
    """One-cycle learning rate at a run progress in [0, 1]."""
    peak, start, end = config.lr, config.lr / WARMUP_START_DIV, config.lr / FINAL_DIV
    if config.warmup > 0 and progress < config.warmup:
        t = progress / config.warmup
        return start + (peak - start) * (1 - math.cos(math.pi * t)) / 2
    t = min(1.0, (progress - config.warmup) / max(1e-9, 1.0 - config.warmup))
    return end + (peak - end) * (1 + math.cos(math.pi * t)) / 2


def crop_at(progress: float, config: TrainConfig, multiple: int) -> int:
    """LR crop side; with progressive resizing it grows from half size to full."""
    if not config.progressive:
        return config.crop
    t = min(1.0, progress / PROGRESSIVE_UNTIL)
    side = config.crop * (PROGRESSIVE_START + (1 - PROGRESSIVE_START) * t)
    return max(multiple, int(side) // multiple * multiple)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """EMA of the weights with the usual warm-up (short runs still average sensibly)."""
    d = min(decay, (1 + step) / (10 + step))
    for e, p in zip(ema.state_dict().values(), model.state_dict().values()):
        if e.dtype.is_floating_point:
            e.lerp_(p.detach(), 1 - d)
        else:
            e.copy_(p)

