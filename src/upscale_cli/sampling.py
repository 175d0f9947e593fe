"""Several answers for one image: samples drawn from a model that models a distribution
(a Sampling descriptor; pixel-recursive), at a temperature, from a seed.

Pure tensor code: sample_converter.py makes it a converter the batch runner drives, which reads,
names and writes the files.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from upscale_cli.errors import UpscaleError, UsageError

# Below 1 is less noisy, 0 (greedy) is flat. Measured with the shipped model on held-out 8x8 inputs
# (research/eval_pixelrec.py): 0.8 leaves visible colour grain (PSNR 21.2 dB, SSIM 0.35); 0.5 keeps
# answers distinct (std 18 levels between them) with less grain (22.0 dB, 0.40).
DEFAULT_TEMPERATURE = 0.5
MAX_SAMPLES = 64  # one batch; more answers: run again with another --seed
MAX_TEMPERATURE = 10.0


@dataclass(frozen=True)
class SampleConfig:
    """How many answers, how adventurous (temperature; 0 = the most likely value at each step),
    and from which seed (the same seed, input and model give the same answers)."""

    samples: int = 1
    temperature: float = DEFAULT_TEMPERATURE
    seed: int = 0
    max_output_pixels: int | None = None  # --max-output-pixels (0 = no limit; None = the engine's default)

    def __post_init__(self) -> None:
        if not 1 <= self.samples <= MAX_SAMPLES:
            raise UsageError(f"--samples must be between 1 and {MAX_SAMPLES}, not {self.samples}")
        if not (math.isfinite(self.temperature) and 0.0 <= self.temperature <= MAX_TEMPERATURE):
            raise UsageError(f"--temperature must be between 0 (greedy) and {MAX_TEMPERATURE:g}, not {self.temperature}")
        if self.max_output_pixels is not None and self.max_output_pixels < 0:
            raise UsageError(f"--max-output-pixels must be 0 (no limit) or a number of pixels, not {self.max_output_pixels}")


class InputTooLargeForSamplingError(UpscaleError):
    """An input larger than the sampling model's largest input side (its size requirements)."""


def check_input_size(model: nn.Module, height: int, width: int) -> None:
    """Refuse an input the model cannot sample (pixel-recursive: at most 16x16)."""
    side = model.info.size.maximum
    if side and max(height, width) > side:
        steps = 3 * height * width * model.info.scale ** 2
        raise InputTooLargeForSamplingError(
            f"{width}x{height} is larger than this model's {side}x{side} input limit (it generates pixel by pixel: "
            f"{steps:,} sequential steps); downscale it first or use -m unet")


def sample_paths(target: Path, samples: int) -> list[Path]:
    """photo_x4.png -> [photo_x4.png] for one answer, [photo_x4_s1.png, photo_x4_s2.png, ...] for several."""
    if samples == 1:
        return [target]
    return [target.with_name(f"{target.stem}_s{k}{target.suffix}") for k in range(1, samples + 1)]


def draw_samples(model: nn.Module, pixels: torch.Tensor, config: SampleConfig,
                 on_row: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """(1, C, H, W) in [0, 1] (C = 1 or 3) -> (samples, C, sH, sW): independent answers drawn in one
    batch. Grey inputs are sampled as three equal planes and given back as their mean."""
    check_input_size(model, *pixels.shape[-2:])
    grey = pixels.shape[1] == 1
    lr = pixels.expand(config.samples, 3, -1, -1).contiguous()  # (N, 3, H, W)
    param = next(model.parameters())
    generator = torch.Generator(param.device).manual_seed(config.seed)
    with torch.no_grad():
        out = model.sample(lr.to(param.device, param.dtype), temperature=config.temperature, generator=generator,
                           on_row=on_row)
    out = out.float().cpu()
    if not bool(torch.isfinite(out).all()):
        raise UpscaleError("the model produced NaN or infinite values; its weights are broken")
    return out.mean(dim=1, keepdim=True) if grey else out
