"""Validation of the pixel-loss SR recipe: LR made as in training (or the protocol's bicubic), the
protocol's PSNR (Y, border = scale) on mod-cropped HR images, and the bicubic baseline."""
from __future__ import annotations

import torch
from torch import nn

from upscale_cli.train import data as train_data
from upscale_cli.train import degrade
from upscale_cli.metrics import psnr_from_mse, psnr_y_tensor as psnr_y
from upscale_cli.tiling import pad_for_model
from upscale_cli.train.losses import pixel_loss

def forward_padded(model: nn.Module, lr: torch.Tensor) -> torch.Tensor:
    """Run a fixed-scale model on (1, C, h, w), padded to its size requirements as the engine pads
    (tiling's reflect-then-replicate padding) and cropped back."""
    h, w = lr.shape[-2:]
    scale = model.info.scale
    return model(pad_for_model(lr, model.info.size))[..., : h * scale, : w * scale]


def make_lr(hr: torch.Tensor, scale: int, random: bool, generator: torch.Generator,
            damage_mix: str = "exclusive") -> torch.Tensor:
    """HR batch -> LR input: the protocol's bicubic, or (--degrade) the random SR mix; at scale 1
    (restoration) with --degrade, per-crop restoration damage (JPEG, noise, blur, holes, text)."""
    if random and scale == 1:
        return degrade.restoration_degrade(hr, generator, damage_mix)
    if random:
        return degrade.random_degrade(hr, scale, generator)
    return degrade.bicubic_degrade(hr, scale)


VAL_SEED = 1234  # validation degradations are drawn from a fixed seed: comparable across checkpoints


@torch.no_grad()
def validate(model: nn.Module, images: list[torch.Tensor], scale: int, device: torch.device,
             random_degrade: bool = False, damage_mix: str = "exclusive",
             in_mask: bool = False) -> tuple[float, torch.Tensor | None]:
    """Mean protocol PSNR (Y, border = scale) on mod-cropped HR images; also the first output.
    `in_mask` (an inpainting model): RGB PSNR over the pixels the input's mask channel marks."""
    was_training = model.training
    model.eval()
    scores, first = [], None
    for index, image in enumerate(images):
        hr = train_data.mod_crop(image.float().div(255.0)[None], scale)  # (1, 3, H, W)
        lr = make_lr(hr, scale, random_degrade, torch.Generator().manual_seed(VAL_SEED + index), damage_mix)
        sr = forward_padded(model, lr.to(device)).clamp(0, 1).cpu()
        if in_mask:  # an image the mix left undamaged has nothing to score inside its (empty) mask
            mask = lr[:, -1:]
            if bool(mask.any()):
                scores.append(masked_psnr(sr, hr, mask))
        else:
            scores.append(psnr_y(sr, hr, border=scale))
        first = sr.cpu() if first is None else first
    model.train(was_training)
    return (sum(scores) / len(scores) if scores else float("nan")), first


def masked_psnr(sr: torch.Tensor, hr: torch.Tensor, mask: torch.Tensor) -> float:
    """RGB PSNR (dB, peak 1) over the pixels where mask (1, 1, H, W) is 1 (one at least)."""
    return psnr_from_mse(float(pixel_loss(sr, hr, "mse", mask)), data_range=1.0)


def bicubic_psnr(images: list[torch.Tensor], scale: int) -> float:
    """The bicubic baseline on the validation images (what the model has to beat)."""
    from upscale_cli.resize import resize

    scores = []
    for image in images:
        hr = train_data.mod_crop(image.float().div(255.0)[None], scale)
        up = resize(degrade.bicubic_degrade(hr, scale), tuple(hr.shape[-2:]), "bicubic")
        scores.append(psnr_y(up, hr, border=scale))
    return sum(scores) / len(scores)

