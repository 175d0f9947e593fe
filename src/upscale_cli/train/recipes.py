"""What the training loop asks of a kind of training (`TrainingRecipe`), the pixel-loss recipe
that trains our SR and restoration models, and `recipe_for`, which picks a run's recipe once.

The loop (train/loop.py) owns what every run shares: the model, its EMA and optimiser steps, mixed
precision, the one-cycle schedule, resume, checkpoints and events. A recipe owns what differs: the
model's memory layout and optimiser, the data, the batch, the loss and the validation. The loop
calls `setup` once, `load_data` once, `baseline` once (a new run), then `batch` and `loss` every
step and `validate` at every checkpoint, the same way for every recipe.

An architecture trained its own way names a module (TRAINING in its model module) whose
`recipe(config, device)` builds its recipe (pixelrec: train/pixelrec.py); every other architecture
trains with `PixelLossRecipe`. (Not to be confused with a TOML recipe, a file of settings.)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import torch
from torch import nn

from upscale_cli.train import data as train_data
from upscale_cli.train.config import EventFn, TrainConfig, TrainEvent, arch_training
from upscale_cli.train.losses import PerceptualLoss, load_vgg16_features, pixel_loss
from upscale_cli.train.schedule import crop_at, lr_at
from upscale_cli.train.validation import bicubic_psnr, make_lr, validate

MAX_VAL_IMAGES = 16  # validation images the pixel-loss recipe scores at each checkpoint

SkipFn = Callable[[Path, str], None]  # (path, why): an image the data loader leaves out


@dataclass(frozen=True)
class Validation:
    """One validation: its PSNR (log.jsonl's val_psnr; None without validation images), an image
    saved as the step's sample, the recipe's own figures (more log.jsonl fields, in this order)
    and the words the "val" event carries."""

    psnr: float | None
    sample: torch.Tensor | None = None
    figures: dict[str, float] = field(default_factory=dict)
    message: str = ""


@runtime_checkable
class TrainingRecipe(Protocol):
    """What the loop needs from a kind of training. Randomness comes only from the generator the
    loop passes (a resumed run draws the same batches) and the model's own initialisation."""

    def setup(self, model: nn.Module, emit: EventFn) -> tuple[nn.Module, torch.optim.Optimizer]:
        """The built (and --init initialised) model as it trains, and its optimiser; the recipe
        makes its own loss modules here and may warn through `emit`."""

    def load_data(self, on_skip: SkipFn) -> tuple[int, int]:
        """Decode the training and validation data: (training images, validation images)."""

    def baseline(self) -> float | None:
        """The PSNR to beat, reported before a new run's first step; None: nothing to report."""

    def batch(self, progress: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One step's (input, target) on the device, drawn with `gen`, at a run progress in [0, 1]."""

    def loss(self, net: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The step's scalar loss (the loop runs it under autocast and steps on its gradients)."""

    def validate(self, model: nn.Module) -> Validation:
        """Score the model (its EMA where the run keeps one) on the validation data."""


RecipeFactory = Callable[[TrainConfig, torch.device], TrainingRecipe]


def recipe_for(config: TrainConfig, device: torch.device) -> TrainingRecipe:
    """The run's recipe, from its architecture: the module its model module names (TRAINING)
    builds its own; every other architecture trains with the pixel-loss recipe."""
    module = arch_training(config.arch)
    return module.recipe(config, device) if module else PixelLossRecipe(config, device)


class PixelLossRecipe:
    """SR and restoration (unet, upsampler ...): random HR crops, LR made on the fly (the
    protocol's bicubic, or --degrade's random damage), the pixel loss plus the optional VGG-16
    feature and gram losses, AdamW, protocol PSNR on up to MAX_VAL_IMAGES validation images."""

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        self.config, self.device = config, device
        self.multiple = 1  # the model's size multiple: crops and validation images are cut to it
        self.perceptual: PerceptualLoss | None = None
        self.cache = train_data.ImageCache([], [])
        self.val_images: list[torch.Tensor] = []

    def setup(self, model: nn.Module, emit: EventFn) -> tuple[nn.Module, torch.optim.Optimizer]:
        self.multiple = model.info.size.multiple_of
        # NHWC, the layout oneDNN and cuDNN convolve fastest (4-11% more steps a second on an AVX2 CPU)
        model = model.to(memory_format=torch.channels_last)
        self.perceptual = _perceptual_loss(self.config, self.device, emit)
        return model, adamw(model, self.config)

    def load_data(self, on_skip: SkipFn) -> tuple[int, int]:
        config, scale = self.config, self.config.scale
        self.cache = train_data.load_image_cache(config.data, min_size=config.crop * scale, on_skip=on_skip)
        if config.val:
            images = train_data.load_image_cache(config.val, min_size=scale * self.multiple, on_skip=on_skip).images
            self.val_images = images[:MAX_VAL_IMAGES]
        return len(self.cache.images), len(self.val_images)

    def baseline(self) -> float | None:
        """The bicubic PSNR (none against --degrade's random damage: not what the model is scored on)."""
        if not self.val_images or self.config.degrade:
            return None
        return bicubic_psnr(self.val_images, self.config.scale)

    def batch(self, progress: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Random HR crops, LR made on the fly (the protocol's bicubic on the training device:
        two small matrix products, which on a GPU would otherwise wait for the CPU)."""
        config, scale, device = self.config, self.config.scale, self.device
        side = crop_at(progress, config, self.multiple)
        hr = train_data.random_crops(self.cache, config.batch, side * scale, gen,
                                     device=None if config.degrade else device)
        lr = make_lr(hr, scale, config.degrade, gen, config.damage_mix)
        hr, lr = hr.to(device, non_blocking=True), lr.to(device, non_blocking=True)
        return lr.contiguous(memory_format=torch.channels_last), hr

    def loss(self, net: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        sr = net(inputs)
        mask = inputs[:, -1:] if self.config.loss_region == "mask" else None  # the input's last channel
        loss = pixel_loss(sr.float(), target, self.config.loss, mask)
        if self.perceptual is not None:
            loss = loss + self.perceptual(sr.float(), target)
        return loss

    def validate(self, model: nn.Module) -> Validation:
        config = self.config
        if not self.val_images:
            return Validation(None)
        psnr, sample = validate(model, self.val_images, config.scale, self.device, config.degrade,
                                config.damage_mix, config.loss_region == "mask")
        return Validation(psnr, sample)


def adamw(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norm parameters."""
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr_at(0.0, config), betas=(0.9, 0.99))


def _perceptual_loss(config: TrainConfig, device: torch.device, emit: EventFn) -> PerceptualLoss | None:
    if not (config.feature_weight or config.gram_weight):
        return None
    vgg = load_vgg16_features(config.vgg_weights)
    if vgg is None:
        emit(TrainEvent("warning", message="no VGG-16 weights (give --vgg-weights FILE or install torchvision with "
                                           "its cached ImageNet weights): training with the pixel loss only"))
        return None
    return PerceptualLoss(vgg, config.feature_weight, config.gram_weight).to(device)
