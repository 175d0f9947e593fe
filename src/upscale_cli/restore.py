"""Same-size restoration: JPEG artifacts, noise, holes and overlaid text, repaired at x1.

Restoration models are ordinary x1 models (ModelInfo(scale=1)); the `Restorer` runs them
through the engine's `Upscaler` (device, dtype, tiling, out-of-memory retries) at the
input's own size, and adds what is special about restoration: masks and strength.

How a mask (1 = fill, 0 = keep; (1, 1, H, W)) reaches a model:
- A model that takes a mask itself says so in its info (`takes_mask=True`) and is
  called as `model(x, mask=mask)` on the whole image (opencv-inpaint). It must leave
  the unmasked pixels alone.
- Every other model never sees the mask: `prefill` first replaces the masked pixels by a
  smooth harmonic fill from the pixels around them (coarse-to-fine Jacobi iterations of
  Laplace's equation), so the model starts from a plausible image rather than from
  whatever the holes held; the model then restores the whole image, and its output is
  used inside the mask. Outside the mask the restored image is used too, except for
  task "inpaint", which changes masked pixels only.
- `strength` (0..1) blends the input and the restored image outside the mask; masked
  pixels are always filled completely (half a hole is no use). With strength 0 and no
  mask the input is returned untouched and no model runs.

Tasks: "auto", "jpeg" and "denoise" run the model over the whole image; a model that only
inpaints refuses them. Without -m each task runs its default model (TASK_MODELS): unet-restore,
one blind model for every damage, except "jpeg", which runs the JPEG-artifact specialist
unet-jpeg (the blind model spreads its small capacity over every damage and gains little on
JPEG). "auto" with no -m and no mask also sends each JPEG file whose estimated quality is at
most AUTO_JPEG_MAX_QUALITY to unet-jpeg (`BatchRestore`). "inpaint" changes the masked
pixels only and needs a mask.

Library code: tensors in, tensors out; never prints.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from upscale_cli.alpha import fill_transparent
from upscale_cli.errors import UsageError

DEFAULT_MODEL = "unet-restore"
TASK_MODELS = {"jpeg": "unet-jpeg"}  # task -> its default model when none is named (else DEFAULT_MODEL)
# --task auto sends JPEG inputs at or below this estimated quality to unet-jpeg. Measured on the 10
# held-out BSDS400 images (RGB PSNR): unet-jpeg beats unet-restore up to q80 (36.27 vs 36.16 dB)
# and loses from q90 on (37.83 vs 38.75).
AUTO_JPEG_MAX_QUALITY = 80
TASKS = ("auto", "jpeg", "denoise", "inpaint")
MASK_THRESHOLD = 0.5  # a mask pixel brighter than half white is filled
COARSEST_SIDE = 16  # pixels: the harmonic fill's coarsest pyramid level
JACOBI_ITERATIONS = 40  # per pyramid level: enough to settle what the coarser level started
_NEIGHBOURS = torch.tensor([[0.0, 0.25, 0.0], [0.25, 0.0, 0.25], [0.0, 0.25, 0.0]])  # mean of 4 neighbours


@dataclass(frozen=True)
class RestoreConfig:
    """What to run: model (None: the task's default), task (auto, jpeg, denoise, inpaint),
    strength 0..1, and the engine settings."""

    model: str | None = None
    task: str = "auto"
    strength: float = 1.0
    device: str = "auto"
    half: bool = False
    tile: int = 0
    tile_overlap: int | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise UsageError(f"--task must be one of {', '.join(TASKS)}, not {self.task!r}")
        if not 0.0 <= self.strength <= 1.0:
            raise UsageError(f"--strength must be between 0 and 1, not {self.strength}")


# ----------------------------------------------------------------------------- masks


def mask_from_tensor(pixels: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:
    """A decoded mask image ((1, C, H, W) in [0, 1]) -> (1, 1, H, W) of 0/1: white (and opaque) = fill."""
    grey = pixels.mean(dim=1, keepdim=True)
    if alpha is not None:
        grey = grey * alpha
    return (grey > MASK_THRESHOLD).to(torch.float32)


def _jacobi(x: torch.Tensor, mask: torch.Tensor, iterations: int) -> torch.Tensor:
    """Relax the masked pixels towards the mean of their 4 neighbours (Laplace's equation)."""
    c = x.shape[1]
    kernel = _NEIGHBOURS.to(x).view(1, 1, 3, 3).expand(c, 1, 3, 3)
    hole = mask > 0
    for _ in range(iterations):
        mean = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=c)
        x = torch.where(hole, mean, x)
    return x


def prefill(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W), mask (B, 1, H, W) 1 = unknown -> masked pixels replaced by a harmonic fill.

    Coarse to fine: the known pixels are averaged down a pyramid, the fill at each level starts
    from the level below (push-pull) and is relaxed by Jacobi iterations; unknown pixels with no
    known pixel at all (an all-white mask) come out mid-grey."""
    known = (mask <= 0).to(x.dtype)
    if bool(known.all()):
        return x
    if not bool(known.any()):
        return torch.full_like(x, 0.5)
    start = fill_transparent(x, known)  # push-pull: every hole gets its nearest colours
    if min(x.shape[-2:]) > 2 * COARSEST_SIDE:
        weight = F.avg_pool2d(known, 2, ceil_mode=True)
        coarse_x = F.avg_pool2d(x * known, 2, ceil_mode=True) / weight.clamp_min(1e-6)
        coarse = prefill(coarse_x, (weight <= 0).to(x.dtype))
        up = F.interpolate(coarse, scale_factor=2, mode="bilinear", align_corners=False)
        start = torch.where(known > 0, x, up[..., : x.shape[-2], : x.shape[-1]])
    return _jacobi(start, 1.0 - known, JACOBI_ITERATIONS)


def composite(original: torch.Tensor, restored: torch.Tensor, mask: torch.Tensor | None,
              strength: float, inpaint_only: bool) -> torch.Tensor:
    """Restored pixels inside the mask; outside it, the input blended towards the restored image
    by `strength` (or the input itself for an inpaint-only task)."""
    outside = original if inpaint_only else original + strength * (restored - original)
    if mask is None:
        return outside
    return torch.where(mask > 0, restored, outside)


# ----------------------------------------------------------------------------- running


def takes_mask(model) -> bool:
    """Models that want the mask themselves (forward(x, mask=...)) say so in their info."""
    return bool(model.info.takes_mask)


class Restorer:
    """One restoration model on image tensors, with masks and strength (see the module docstring)."""

    def __init__(self, config: RestoreConfig, progress: bool = True) -> None:
        from upscale_cli.engine import UpscaleConfig, Upscaler

        self.config = config
        self.model_name = config.model or TASK_MODELS.get(config.task, DEFAULT_MODEL)
        self.upscaler = Upscaler(UpscaleConfig(model=self.model_name, scale=1.0, device=config.device,
                                               half=config.half, tile=config.tile,
                                               tile_overlap=config.tile_overlap), progress=progress)
        if self.upscaler.spec.scales and 1 not in self.upscaler.spec.scales:  # fail before any download
            raise UsageError(f"model {self.model_name!r} is not a restoration (x1) model; see `upscale models`")
        self.notes = self.upscaler.notes

    def prepare(self) -> None:
        """Load (and download) the model now, so a missing one fails once before the batch."""
        model = self.model()
        if takes_mask(model) and self.config.task not in ("auto", "inpaint"):
            raise UsageError(f"model {self.model_name!r} only inpaints; use --task inpaint (or auto) with --mask")

    def model(self):
        """The loaded x1 model (a model of any other scale is refused: it would not restore)."""
        model = self.upscaler.model(1 if self.upscaler.native_scales() else None)
        if model.info.scale != 1:
            raise UsageError(f"model {self.model_name!r} is not a restoration (x1) model; see `upscale models`")
        return model

    @property
    def needs_mask(self) -> bool:
        return self.config.task == "inpaint" or takes_mask(self.model())

    def restore_tensor(self, x: torch.Tensor, mask: torch.Tensor | None = None, on_tile=None) -> torch.Tensor:
        """(1, C, H, W) in [0, 1] (+ optional (1, 1, H, W) mask, 1 = fill) -> (1, C, H, W) restored."""
        if mask is not None:
            if tuple(mask.shape[-2:]) != tuple(x.shape[-2:]):
                raise UsageError(f"the mask is {mask.shape[-1]}x{mask.shape[-2]} but the image is "
                                 f"{x.shape[-1]}x{x.shape[-2]}; they must be the same size")
            mask = (mask > 0).to(torch.float32)
            if not bool(mask.any()):
                mask = None
        elif self.needs_mask:
            raise UsageError(f"--task inpaint and model {self.model_name!r} need --mask (white = fill)")
        if mask is None and (self.config.strength == 0.0 or self.config.task == "inpaint"):
            return x  # nothing to fill and nothing asked of the model
        restored = self._run_model(x, mask, on_tile)
        return composite(x, restored, mask, self.config.strength, self.config.task == "inpaint").clamp_(0.0, 1.0)

    def _run_model(self, x: torch.Tensor, mask: torch.Tensor | None, on_tile) -> torch.Tensor:
        model = self.model()
        if takes_mask(model):
            param = next(iter(model.parameters()), None)
            device = param.device if param is not None else torch.device("cpu")
            empty = torch.zeros_like(x[:, :1]) if mask is None else mask
            with torch.no_grad():
                out = model(x.to(device), mask=empty.to(device))
            if on_tile is not None:
                on_tile(1, 1)
            return out.float().cpu()
        source = x if mask is None else prefill(x, mask)
        return self.upscaler.upscale_tensor(source, on_tile, size=tuple(x.shape[-2:]))

    def restore_image(self, image, mask: torch.Tensor | None = None, on_tile=None):
        """DecodedImage -> DecodedImage of the same size; alpha kept as it is (only colour is damaged)."""
        pixels = image.pixels
        if image.alpha is not None:
            pixels = fill_transparent(pixels, image.alpha)  # hidden colour must not bleed into visible pixels
        out = self.restore_tensor(pixels, mask, on_tile)
        if out is pixels:
            return image
        if image.alpha is not None:
            out = torch.where(image.alpha > 0, out, image.pixels)
        return image.replace(pixels=out)


def read_mask(path) -> torch.Tensor:
    """A mask image file -> (1, 1, H, W) 0/1 (white and opaque = fill)."""
    from upscale_cli.images import read_image

    decoded = read_image(path)
    return mask_from_tensor(decoded.pixels, decoded.alpha)


class BatchRestore:
    """Restoration as the batch runner's converter (upscale_image): one restorer and one mask for
    every image. With a `jpeg` restorer (what `--task auto` adds when no model is named and no
    mask is given), JPEG inputs at or below AUTO_JPEG_MAX_QUALITY go to it instead."""

    def __init__(self, restorer: Restorer, mask: torch.Tensor | None = None, jpeg: Restorer | None = None) -> None:
        self.restorer, self.mask, self.jpeg = restorer, mask, jpeg

    def pick(self, image) -> Restorer:
        """The restorer for one decoded image."""
        quality = image.jpeg_quality
        heavy_jpeg = quality is not None and quality <= AUTO_JPEG_MAX_QUALITY
        return self.jpeg if self.jpeg is not None and self.mask is None and heavy_jpeg else self.restorer

    def model_for(self, image) -> str:
        """The model name that restores this image (for the per-file report)."""
        return self.pick(image).model_name

    def upscale_image(self, image, on_tile=None):
        return self.pick(image).restore_image(image, self.mask, on_tile)


def batch_restore(config: RestoreConfig, mask: torch.Tensor | None = None, progress: bool = True) -> BatchRestore:
    """The converter `upscale restore` (and `upscale --restore`) runs: the configured restorer,
    loaded now so a missing model fails once before the batch, plus the JPEG specialist for
    `--task auto` with no model named and no mask."""
    restorer = Restorer(config, progress=progress)
    restorer.prepare()
    routed = config.model is None and config.task == "auto" and mask is None
    jpeg = Restorer(dataclasses.replace(config, task="jpeg"), progress=progress) if routed else None
    return BatchRestore(restorer, mask, jpeg)


class RestoreThenUpscale:
    """`upscale photo.jpg -x 4 --restore`: restore at the input size, then upscale."""

    def __init__(self, restore: BatchRestore, upscaler) -> None:
        self.restore, self.upscaler = restore, upscaler

    def model_for(self, image) -> str:
        return f"{self.restore.model_for(image)}+{self.upscaler.config.model}"

    def passes_for(self, height: int, width: int) -> tuple[int, ...]:
        return self.upscaler.passes_for(height, width)

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        return self.upscaler.target_size(height, width)

    def upscale_image(self, image, on_tile=None):
        return self.upscaler.upscale_image(self.restore.upscale_image(image, on_tile), on_tile)
