"""Training pixelrec (models/pixelrec.py) in the common loop: its data, loss, optimiser and validation.

Data: 32x32 images that keep structure, not just texture. Half of each batch comes from the HR
folders: a whole image or a large square crop (half its short side or more), area-downscaled to
32x32; the other half are generated glyphs (digits and letters in the machine's TrueType fonts,
or Pillow's own font, in random colours, sizes and places: close to the house numbers and licence
plates of the write-up). LR is the protocol's antialiased bicubic x4 downscale, 8-bit.
Validation: each held-out photo whole and VAL_CROPS large crops of it, plus VAL_GLYPHS glyph
images drawn from their own seed (never from the training draw).

Loss: cross-entropy of the fused logits plus the auxiliary cross-entropy of the conditioning
logits alone; RMSProp (decay 0.95, momentum 0.9, eps 1e-8). Validation reports the negative
log-likelihood in bits per sub-pixel (fused, and conditioning alone) and PSNR/SSIM of the greedy
answer and of one sample at temperature VAL_TEMPERATURE.

`recipe(config, device)` is the loop's TrainingRecipe (train/recipes.py) for pixelrec: these
functions behind the protocol's methods.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from upscale_cli.train import data as train_data
from upscale_cli.train.config import EventFn, TrainConfig
from upscale_cli.train.degrade import bicubic_degrade, quantize
from upscale_cli.train.recipes import SkipFn, Validation

HR_SIDE = 32  # output side the prior is trained at
GLYPH_FRACTION = 0.5  # share of each batch that is generated glyphs
MIN_CROP_FRACTION = 0.5  # photo crops are at least this fraction of the image's short side
GLYPH_RENDER = 4  # glyphs are drawn at 4x and area-downscaled (antialiased edges)
GLYPH_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "/System/Library/Fonts", "C:/Windows/Fonts")
MIN_GLYPH_CONTRAST = 0.3  # mean RGB distance between text and background colours
VAL_CROPS = 1  # during training; research/eval_pixelrec.py scores more
VAL_GLYPHS = 12
VAL_SEED = 4321
VAL_TEMPERATURE = 0.8
PSNR_CAP = 60.0  # dB: a flat image answered exactly scores this, not infinity (which would swamp the mean)
# RMSProp of the write-up (decay 0.95, momentum 0.9, eps 1e-8); lr 4e-4 is the one-cycle peak
RMSPROP = {"alpha": 0.95, "momentum": 0.9, "eps": 1e-8}
DEFAULTS = {"lr": 4e-4, "batch": 32, "crop": HR_SIDE // 4, "weight_decay": 0.0, "warmup": 0.02, "every": 250}


@dataclass
class TinyImages:
    """The training source: decoded HR photos (uint8 (3, H, W)) and the fonts for glyphs."""

    photos: train_data.ImageCache
    fonts: tuple[str, ...]


# ---------------------------------------------------------------- the recipe
class PixelRecRecipe:
    """pixelrec's TrainingRecipe: tiny photos and glyphs, the two cross-entropies, RMSProp, NLL
    validation. The model keeps its own memory layout."""

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        self.config, self.device = config, device
        self.source = TinyImages(train_data.ImageCache([], []), ())
        self.val_hr = torch.empty(0, 3, HR_SIDE, HR_SIDE)

    def setup(self, model: nn.Module, emit: EventFn) -> tuple[nn.Module, torch.optim.Optimizer]:
        return model, make_optimizer(model, self.config)

    def load_data(self, on_skip: SkipFn) -> tuple[int, int]:
        self.source, self.val_hr = load_data(self.config, on_skip)
        return len(self.source.photos.images), len(self.val_hr)

    def baseline(self) -> float | None:
        return None  # no bicubic line: the figures are the NLL and the greedy / sampled scores

    def batch(self, progress: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        lr, hr = make_batch(self.source, self.config, gen)
        return lr.to(self.device, non_blocking=True), hr.to(self.device, non_blocking=True)

    def loss(self, net: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return loss(net, inputs, target)

    def validate(self, model: nn.Module) -> Validation:
        figures = validate(model, self.val_hr, self.device)
        psnr, sample = figures.pop("psnr"), figures.pop("sample")
        message = (f"validation NLL {figures['nll_bits']:.3f} bits/sub-pixel (conditioning alone "
                   f"{figures['nll_cond_bits']:.3f}), greedy")
        return Validation(psnr, sample, figures, message)


def recipe(config: TrainConfig, device: torch.device) -> PixelRecRecipe:
    """The loop's recipe for pixelrec (models/pixelrec.py names this module as its TRAINING)."""
    return PixelRecRecipe(config, device)


# ---------------------------------------------------------------- data
@lru_cache(maxsize=1)
def find_fonts() -> tuple[str, ...]:
    """TrueType/OpenType fonts on this machine, sorted (empty: Pillow's built-in font is used)."""
    found = []
    for folder in FONT_DIRS:
        if Path(folder).is_dir():
            found += [str(p) for p in Path(folder).rglob("*") if p.suffix.lower() in (".ttf", ".otf")]
    return tuple(sorted(found))


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen))


def _randint(gen: torch.Generator, low: int, high: int) -> int:
    """An integer in [low, high]."""
    return int(torch.randint(low, high + 1, (), generator=gen))


def _font(fonts: tuple[str, ...], index: int, size: int):
    from PIL import ImageFont

    if not fonts:
        return ImageFont.load_default(size=size) if hasattr(ImageFont, "load_default") else ImageFont.load_default()
    try:
        return ImageFont.truetype(fonts[index % len(fonts)], size)
    except OSError:  # a font file Pillow cannot read
        return ImageFont.load_default()


def render_glyphs(gen: torch.Generator, fonts: tuple[str, ...], side: int = HR_SIDE) -> torch.Tensor:
    """One image of 1 to 3 random digits/letters: (3, side, side) float in [0, 1], 8-bit levels."""
    from PIL import Image, ImageDraw

    big = side * GLYPH_RENDER
    background = torch.rand(3, generator=gen)
    colour = torch.rand(3, generator=gen)
    while float((colour - background).abs().mean()) < MIN_GLYPH_CONTRAST:
        colour = torch.rand(3, generator=gen)
    text = "".join(GLYPH_CHARS[_randint(gen, 0, len(GLYPH_CHARS) - 1)] for _ in range(_randint(gen, 1, 3)))
    font = _font(fonts, _randint(gen, 0, max(0, len(fonts) - 1)), int(big * _uniform(gen, 0.3, 0.9)))
    canvas = Image.new("RGB", (big, big), tuple(int(v * 255) for v in background))
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = _uniform(gen, -0.15, 1.15) * (big - (right - left)) - left
    y = _uniform(gen, -0.15, 1.15) * (big - (bottom - top)) - top
    draw.text((x, y), text, fill=tuple(int(v * 255) for v in colour), font=font)
    array = torch.from_numpy(np.asarray(canvas, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255.0)
    return quantize(F.avg_pool2d(array[None], GLYPH_RENDER)[0])


def photo_tiny(image: torch.Tensor, gen: torch.Generator | None, side: int = HR_SIDE) -> torch.Tensor:
    """A whole image (gen None: its centre square) or a random large square crop, flipped at
    random, area-downscaled to (3, side, side) in [0, 1], 8-bit levels."""
    h, w = image.shape[-2:]
    short = min(h, w)
    if gen is None:
        size, top, left = short, (h - short) // 2, (w - short) // 2
    else:
        size = _randint(gen, max(side, int(short * MIN_CROP_FRACTION)), short)
        top, left = _randint(gen, 0, h - size), _randint(gen, 0, w - size)
    crop = image[:, top:top + size, left:left + size].float().div(255.0)
    if gen is not None and _randint(gen, 0, 1):
        crop = crop.flip(-1)
    return quantize(F.adaptive_avg_pool2d(crop[None], side)[0])


def load_data(config, on_skip) -> tuple[TinyImages, torch.Tensor]:
    """The training source and the validation HR images (N, 3, 32, 32)."""
    photos = train_data.load_image_cache(config.data, min_size=HR_SIDE, on_skip=on_skip)
    source = TinyImages(photos, find_fonts())
    return source, validation_images(config.val, source.fonts, on_skip)


def validation_images(folders, fonts: tuple[str, ...], on_skip=None) -> torch.Tensor:
    """Held-out photos (whole, and VAL_CROPS crops each) and VAL_GLYPHS glyph images: (N, 3, 32, 32)."""
    gen = torch.Generator().manual_seed(VAL_SEED)
    images = []
    if folders:
        for photo in train_data.load_image_cache(folders, min_size=HR_SIDE, on_skip=on_skip).images:
            images.append(photo_tiny(photo, None))
            images += [photo_tiny(photo, gen) for _ in range(VAL_CROPS)]
    images += [render_glyphs(gen, fonts) for _ in range(VAL_GLYPHS)]
    return torch.stack(images)


def make_batch(source: TinyImages, config, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(LR (B, 3, 8, 8), HR (B, 3, 32, 32)): photos and glyphs, LR by the protocol's bicubic."""
    glyphs = int(round(config.batch * GLYPH_FRACTION))
    count = len(source.photos.images)
    hr = [photo_tiny(source.photos.images[_randint(gen, 0, count - 1)], gen) for _ in range(config.batch - glyphs)]
    hr += [render_glyphs(gen, source.fonts) for _ in range(glyphs)]
    hr = torch.stack(hr)
    return bicubic_degrade(hr, HR_SIDE // config.crop), hr


# ---------------------------------------------------------------- loss, optimiser
def loss(net: nn.Module, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (nats per sub-pixel) of the fused logits + the conditioning logits alone."""
    from upscale_cli.models.pixelrec import nll_bits

    fused, cond = net(lr, hr)
    return (nll_bits(fused.float(), hr) + nll_bits(cond.float(), hr)) * math.log(2)


def make_optimizer(model: nn.Module, config) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, **RMSPROP)


# ---------------------------------------------------------------- validation
@torch.no_grad()
def validate(model: nn.Module, hr: torch.Tensor, device: torch.device) -> dict:
    """NLL (bits/sub-pixel) and greedy / sampled PSNR and SSIM on the validation images; 'sample'
    is a strip of the first few greedy answers."""
    was_training = model.training
    model.eval()
    hr = hr.to(device)
    lr = bicubic_degrade(hr, model.info.scale)
    fused, cond = model(lr, hr)
    greedy = model.sample(lr, temperature=0.0)
    drawn = model.sample(lr, temperature=VAL_TEMPERATURE, generator=torch.Generator(device).manual_seed(VAL_SEED))
    model.train(was_training)
    from upscale_cli.models.pixelrec import nll_bits

    psnr0, ssim0 = image_scores(greedy.cpu(), hr.cpu())
    psnr8, ssim8 = image_scores(drawn.cpu(), hr.cpu())
    strip = torch.cat(list(torch.cat([greedy[:8], hr[:8]], dim=2).cpu()), dim=2)[None]  # answers over truth
    return {"psnr": psnr0, "nll_bits": float(nll_bits(fused, hr)), "nll_cond_bits": float(nll_bits(cond, hr)),
            "ssim": ssim0, "psnr_t08": psnr8, "ssim_t08": ssim8, "sample": strip}


def image_scores(sr: torch.Tensor, hr: torch.Tensor, border: int = 4) -> tuple[float, float]:
    """Mean protocol PSNR and SSIM (Y, 8-bit, `border` cropped) over a batch (N, 3, H, W)."""
    from upscale_cli.metrics import psnr_y, ssim_y

    def planes(x: torch.Tensor) -> np.ndarray:
        return x.clamp(0, 1).mul(255).round().permute(1, 2, 0).numpy().astype(np.float64)

    pairs = [(planes(a), planes(b)) for a, b in zip(sr, hr)]
    return (sum(min(PSNR_CAP, psnr_y(a, b, border)) for a, b in pairs) / len(pairs),
            sum(ssim_y(a, b, border) for a, b in pairs) / len(pairs))
