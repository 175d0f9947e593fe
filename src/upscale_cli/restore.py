"""Same-size restoration: JPEG artifacts, noise, holes and overlaid text, repaired at x1.

Restoration models are ordinary x1 models (a descriptor of scale 1); the `Restorer` runs them through
the engine's `Upscaler` (device, dtype, tiling, out-of-memory retries) at the input's own size, and
adds what is special about restoration: masks and strength.

How a mask (1 = fill, 0 = keep; (1, 1, H, W)) reaches a model:
- A model that takes a mask itself (a `Masked` descriptor) is called as `model(prefilled x,
  mask=mask)` through the engine (`Upscaler.run_with_mask`: tiled like any model, the mask cut into
  the same tiles; one tile for a model that cannot be tiled): opencv-inpaint, which ignores the
  masked pixels, and unet-inpaint, which takes the mask as an input channel of its own
  (configs/unet_inpaint.toml trains one on pre-filled holes and text, its loss inside the mask only).
- Every other model never sees the mask: `prefill` first replaces the masked pixels by a
  smooth harmonic fill from the pixels around them (coarse-to-fine Jacobi iterations of
  Laplace's equation), so the model starts from a plausible image rather than from
  whatever the holes held; the model then restores the whole image, and its output is
  used inside the mask. Outside the mask the restored image is used too, except for
  task "inpaint" and a model that takes the mask, which change masked pixels only.
- `strength` (0..1) blends the input and the restored image outside the mask; masked
  pixels are always filled completely (half a hole is no use). With strength 0 and no
  mask the input is returned untouched and no model runs.

Tasks: "jpeg" and "denoise" run the model over the whole image; a model that only inpaints
refuses them. Without -m each task runs its default model (TASK_MODELS): unet-restore (one blind
model; the best we measured on noise, also under JPEG), unet-jpeg for "jpeg" (the JPEG-artifact
specialist), INPAINT_MODEL (unet-inpaint) for "inpaint" (changes the masked pixels only; needs a mask).
"auto" (the default) with no -m first looks at each image (`assess`): the JPEG quality read from
its quantisation tables and a noise level estimated from its pixels (`estimate_noise_sigma`), and
routes (`route`): noise -> unet-restore; JPEG below AUTO_CLEAN_JPEG_QUALITY -> unet-jpeg;
otherwise "clean": left as it is (restoring a good photo only makes it worse). With a mask (and
no -m), the masked pixels are then filled by INPAINT_MODEL. What was found and what ran goes on
each file's line and --json row (`BatchRestore.found_for`).

Library code: tensors in, tensors out; never prints.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from upscale_cli.alpha import fill_transparent
from upscale_cli.choices import DEFAULT_RUNTIME, TASKS, Runtime, Task
from upscale_cli.errors import UsageError
from upscale_cli.models.descriptor import Masked, native_scale

DEFAULT_MODEL = "unet-restore"
# What fills a mask when no -m is given: the mask-channel U-Net (configs/unet_inpaint.toml: fine-tuned
# from unet-restore with its loss inside the masks only), on the pre-filled image, inside the mask
# only. Figures in the model card; unet-restore on the pre-filled image (what filled masks before)
# added nothing over the harmonic prefill alone.
INPAINT_MODEL = "unet-inpaint"
# task -> its default model when none is named (else DEFAULT_MODEL)
TASK_MODELS = {"jpeg": "unet-jpeg", "inpaint": INPAINT_MODEL}
# --task auto's routing, measured on the training photos and the 10 held-out BSDS400 images (never
# a benchmark set; RGB PSNR; `python research/eval_restore.py --set heldout`, figures in the model card):
# - noise: the training photos themselves (T91 + BSDS400, 481 decent photos, some with film grain)
#   read a median 1.0 and 95% of them below 3.9; sigma-5 noise added to them read at least 4.0
#   (held-out: clean at most 1.5, sigma 5 at least 4.8). From AUTO_NOISE_SIGMA on, unet-restore
#   runs: on noise, and on noise under JPEG wherever enough of it survives to be seen (sigma 25
#   under q50 reads 4.5-8.6: unet-restore 27.93 dB, unet-jpeg 25.76, input 24.18). Where JPEG ate
#   most of the noise (sigma 10 under q50 reads ~1.1) the JPEG specialist is the better model
#   anyway (31.74 vs unet-restore 31.54, input 30.11). Lighter noise (sigma 3 and less) is left:
#   it cannot be told from the grain and texture of a good photo.
# - JPEG below quality 85 -> unet-jpeg (q80: 35.54 -> 36.27 dB, q82: 36.28 -> 36.86); from q85 on
#   unet-jpeg harms (q85: 37.34 -> 36.86) and unet-restore gains a trace at most (+0.11; q88 -0.32;
#   q95: 53.49 -> 48.35): left as is.
AUTO_NOISE_SIGMA = 4.0  # 8-bit levels: an estimate at or above it counts as noise
# ... but on an otherwise clean image (not a JPEG below q85) its correction is scaled from 0 at
# AUTO_NOISE_SIGMA to 1 here: 99% of the training photos read below 7.2, sigma-10 noise above 8.9.
AUTO_NOISE_SIGMA_FULL = 8.0
AUTO_CLEAN_JPEG_QUALITY = 85  # a JPEG at this quality or better (and not noisy) counts as clean
ESTIMATE_FLAT_FRACTION = 0.1  # the noise estimate reads the flattest 10% of pixels (lowest gradient)
ESTIMATE_MAX_SAMPLES = 1_000_000  # pixels per channel: more are sampled (fixed seed)
MASK_THRESHOLD = 0.5  # a mask pixel brighter than half white is filled
COARSEST_SIDE = 16  # pixels: the harmonic fill's coarsest pyramid level
JACOBI_ITERATIONS = 40  # per pyramid level: enough to settle what the coarser level started
_NEIGHBOURS = torch.tensor([[0.0, 0.25, 0.0], [0.25, 0.0, 0.25], [0.0, 0.25, 0.0]])  # mean of 4 neighbours
# Immerkaer's noise mask, a difference of two Laplacians: it cancels images that are locally planes
# or quadrics, and its absolute response to white noise of sigma has mean 6 sigma sqrt(2 / pi)
_IMMERKAER = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


@dataclass(frozen=True)
class RestoreConfig:
    """What to run: model (None: the task's default), task (auto, jpeg, denoise, inpaint),
    strength 0..1, and the engine settings."""

    model: str | None = None
    task: Task = "auto"
    strength: float = 1.0
    device: str = "auto"
    half: bool = False
    tile: int = 0
    tile_overlap: int | None = None
    runtime: Runtime = DEFAULT_RUNTIME  # engine.UpscaleConfig.runtime

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


# ----------------------------------------------------------------------------- assessment


def _per_channel_conv(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    return F.conv2d(x, kernel.to(x).view(1, 1, 3, 3).expand(c, 1, 3, 3), groups=c)  # valid: (B, C, H-2, W-2)


def estimate_noise_sigma(x: torch.Tensor, exclude: torch.Tensor | None = None) -> float:
    """(1, C, H, W) in [0, 1] (+ optional (1, 1, H, W) mask of pixels to ignore) -> the standard
    deviation of white noise in it, in 8-bit levels.

    Immerkaer's method (1996) on flat pixels only, after Tai and Yang (2008): the mean absolute
    response to the difference-of-Laplacians mask over the ESTIMATE_FLAT_FRACTION of pixels with
    the smallest Sobel gradient (edges and texture would read as noise), times sqrt(pi/2) / 6, per
    channel; the median of the channels. Measured on held-out BSDS400: 0.2-1.5 on clean photos,
    within ~10% of sigma from 5 to 25 (a little under); clipping makes sigma 50 read ~43."""
    x = x.float() * 255.0
    if min(x.shape[-2:]) < 3:
        return 0.0
    residual = _per_channel_conv(x, _IMMERKAER).abs()
    gradient = _per_channel_conv(x, _SOBEL_X).abs() + _per_channel_conv(x, _SOBEL_X.t().contiguous()).abs()
    keep = torch.ones(residual.shape[-2:], dtype=torch.bool)
    if exclude is not None:  # a masked pixel, or one beside it, says nothing about the noise
        keep = F.max_pool2d((exclude > 0).float(), 3, stride=1, padding=1)[0, 0, 1:-1, 1:-1] <= 0
    generator = torch.Generator().manual_seed(0)
    sigmas = []
    for r, g in zip(residual[0], gradient[0]):  # (H-2, W-2) each
        r, g = r[keep], g[keep]
        if r.numel() == 0:
            return 0.0
        if r.numel() > ESTIMATE_MAX_SAMPLES:
            pick = torch.randperm(r.numel(), generator=generator)[:ESTIMATE_MAX_SAMPLES]
            r, g = r[pick], g[pick]
        flat = g <= torch.quantile(g, ESTIMATE_FLAT_FRACTION)
        sigmas.append(float(r[flat].mean()) * math.sqrt(math.pi / 2.0) / 6.0)
    return float(torch.tensor(sigmas).median())


@dataclass(frozen=True)
class Assessment:
    """What `--task auto` found in one image: its JPEG quality (None: not a JPEG), the estimated
    noise sigma (8-bit levels), and the damage that follows: clean, jpeg, noise or jpeg+noise."""

    jpeg_quality: int | None
    noise_sigma: float
    damage: str
    scale: float = 1.0  # how much of the correction to apply (times --strength): below 1 for light noise

    def describe(self) -> str:
        """e.g. 'JPEG q50, noise sigma 1.3' or 'noise sigma 9.8'."""
        found = [f"JPEG q{self.jpeg_quality}"] if self.jpeg_quality is not None else []
        return ", ".join(found + [f"noise sigma {self.noise_sigma:.1f}"])

    def record(self) -> dict:
        """The --json fields."""
        return {"damage": self.damage, "jpeg_quality": self.jpeg_quality, "noise_sigma": round(self.noise_sigma, 2),
                "scale": round(self.scale, 2)}


def assess(x: torch.Tensor, jpeg_quality: int | None, exclude: torch.Tensor | None = None) -> Assessment:
    """(1, C, H, W) in [0, 1] + the JPEG quality read from its file (None: not a JPEG) -> Assessment."""
    sigma = estimate_noise_sigma(x, exclude)
    noisy = sigma >= AUTO_NOISE_SIGMA
    heavy_jpeg = jpeg_quality is not None and jpeg_quality < AUTO_CLEAN_JPEG_QUALITY
    if noisy:
        damage = "noise" if jpeg_quality is None else "jpeg+noise"
    else:
        damage = "jpeg" if heavy_jpeg else "clean"
    # where the alternative is to leave the image as it is, light "noise" may be a good photo's grain:
    # the correction grows from 0 at AUTO_NOISE_SIGMA to all of it at AUTO_NOISE_SIGMA_FULL
    ramp = (sigma - AUTO_NOISE_SIGMA) / (AUTO_NOISE_SIGMA_FULL - AUTO_NOISE_SIGMA)
    scale = 1.0 if heavy_jpeg or not noisy else min(1.0, max(0.0, ramp))
    return Assessment(jpeg_quality, sigma, damage, scale)


def route(assessment: Assessment) -> str | None:
    """The model --task auto runs on an assessed image (None: clean, left as it is)."""
    if assessment.damage in ("noise", "jpeg+noise"):
        return DEFAULT_MODEL
    return TASK_MODELS["jpeg"] if assessment.damage == "jpeg" else None


# ----------------------------------------------------------------------------- running


def check_mask_size(x: torch.Tensor, mask: torch.Tensor) -> None:
    if tuple(mask.shape[-2:]) != tuple(x.shape[-2:]):
        raise UsageError(f"the mask is {mask.shape[-1]}x{mask.shape[-2]} but the image is "
                         f"{x.shape[-1]}x{x.shape[-2]}; they must be the same size")


def takes_mask(model) -> bool:
    """Models that want the mask themselves (forward(x, mask=...)) have a Masked descriptor."""
    return isinstance(model.info, Masked)


class Restorer:
    """One restoration model on image tensors, with masks and strength (see the module docstring)."""

    def __init__(self, config: RestoreConfig, progress: bool = True) -> None:
        from upscale_cli.engine import UpscaleConfig, Upscaler

        self.config = config
        self.model_name = config.model or TASK_MODELS.get(config.task, DEFAULT_MODEL)
        self.upscaler = Upscaler(UpscaleConfig(model=self.model_name, scale=1.0, device=config.device,
                                               half=config.half, tile=config.tile,
                                               tile_overlap=config.tile_overlap, runtime=config.runtime),
                                  progress=progress)
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
        if native_scale(model.info) != 1:
            raise UsageError(f"model {self.model_name!r} is not a restoration (x1) model; see `upscale models`")
        return model

    @property
    def needs_mask(self) -> bool:
        """Task inpaint, or a model that takes the mask (trained inside masks only): it needs a
        mask, and the pixels outside the mask stay the input's."""
        return self.config.task == "inpaint" or takes_mask(self.model())

    def restore_tensor(self, x: torch.Tensor, mask: torch.Tensor | None = None, on_tile=None,
                       scale: float = 1.0) -> torch.Tensor:
        """(1, C, H, W) in [0, 1] (+ optional (1, 1, H, W) mask, 1 = fill) -> (1, C, H, W) restored;
        `scale` (0..1) multiplies --strength (--task auto's confidence that the noise it read is damage)."""
        strength = self.config.strength * scale
        if mask is not None:
            check_mask_size(x, mask)
            mask = (mask > 0).to(torch.float32)
            if not bool(mask.any()):
                mask = None
        elif self.needs_mask:
            raise UsageError(f"--task inpaint and model {self.model_name!r} need --mask (white = fill)")
        if mask is None and (strength == 0.0 or self.config.task == "inpaint"):
            return x  # nothing to fill and nothing asked of the model
        restored = self._run_model(x, mask, on_tile)
        return composite(x, restored, mask, strength, self.needs_mask).clamp_(0.0, 1.0)

    def _run_model(self, x: torch.Tensor, mask: torch.Tensor | None, on_tile) -> torch.Tensor:
        model = self.model()
        source = x if mask is None else prefill(x, mask)
        if takes_mask(model):
            return self.upscaler.run_with_mask(source, torch.zeros_like(x[:, :1]) if mask is None else mask, on_tile)
        return self.upscaler.upscale_tensor(source, on_tile, size=tuple(x.shape[-2:]))

    def restore_image(self, image, mask: torch.Tensor | None = None, on_tile=None, scale: float = 1.0):
        """DecodedImage -> DecodedImage of the same size; alpha kept as it is (only colour is damaged).
        The image's NumPy arrays are taken as tensors (no copy) and the result given back as one."""
        from upscale_cli.images.arrays import tensor_to_array

        given = pixels = torch.from_numpy(image.pixels)
        alpha = None if image.alpha is None else torch.from_numpy(image.alpha)
        if alpha is not None:
            pixels = fill_transparent(pixels, alpha)  # hidden colour must not bleed into visible pixels
        out = self.restore_tensor(pixels, mask, on_tile, scale)
        if out is pixels:
            return image
        if alpha is not None:
            out = torch.where(alpha > 0, out, given)
        return image.replace(pixels=tensor_to_array(out))


def read_mask(path) -> torch.Tensor:
    """A mask image file -> (1, 1, H, W) 0/1 (white and opaque = fill)."""
    from upscale_cli.images.read import read_image

    decoded = read_image(path)
    alpha = None if decoded.alpha is None else torch.from_numpy(decoded.alpha)
    return mask_from_tensor(torch.from_numpy(decoded.pixels), alpha)


class BatchRestore:
    """Restoration as the batch runner's converter (upscale_image), one mask for every image.

    `restorer`: the model -m names (or --task jpeg/denoise/inpaint's default) for every image; None
    for --task auto without -m, which assesses each image and runs `routes[route(assessment)]`
    (nothing on a clean one). `inpaint`: with a mask and no -m, INPAINT_MODEL then fills the masked
    pixels of what the first step gave."""

    def __init__(self, restorer: Restorer | None, mask: torch.Tensor | None = None,
                 routes: dict[str, Restorer] | None = None, inpaint: Restorer | None = None) -> None:
        self.restorer, self.mask, self.routes, self.inpaint = restorer, mask, routes or {}, inpaint
        self._assessed: tuple[object, Assessment] | None = None  # (image, assessment): the file at hand
        self._fixed: Assessment | None = None  # every image's (the frames of one input: for_frames)

    @property
    def name(self) -> str:
        """The model the whole batch runs, or "auto" when it is chosen per image."""
        return self.restorer.model_name if self.restorer is not None else "auto"

    @property
    def restorers(self) -> list[Restorer]:
        return [r for r in (self.restorer, *self.routes.values(), self.inpaint) if r is not None]

    def assess(self, image) -> Assessment | None:
        """What --task auto finds in one decoded image (None when a model is named)."""
        if self.restorer is not None:
            return None
        if self._fixed is not None:
            return self._fixed
        if self._assessed is None or self._assessed[0] is not image:
            if self.mask is not None:
                check_mask_size(image.pixels, self.mask)
            self._assessed = (image, assess(torch.from_numpy(image.pixels), image.jpeg_quality, self.mask))
        return self._assessed[1]

    def pick(self, image) -> Restorer | None:
        """The restorer for one decoded image before any inpainting (None: clean, left as is)."""
        assessment = self.assess(image)
        if assessment is None:
            return self.restorer
        model = route(assessment)
        return None if model is None else self.routes[model]

    def model_for(self, image) -> str:
        """The model(s) that restore this image, e.g. "unet-jpeg+unet-restore"; "none" when left as is."""
        first = self.pick(image)
        ran = [r.model_name for r in (first, self.inpaint if self.mask is not None else None) if r is not None]
        return "+".join(ran) or "none"

    def found_for(self, image) -> dict | None:
        """--task auto: what it found in this image and what it ran, for the file's line and --json."""
        assessment = self.assess(image)
        if assessment is None:
            return None
        first = self.pick(image)
        if first is None:
            said = f"clean: left as is ({assessment.describe()})"
        else:
            said = f"{assessment.describe()}: {first.model_name}"
            if assessment.scale < 1.0:
                said += f" at {assessment.scale:.2f} of its correction"
        if self.inpaint is not None and self.mask is not None:
            said += f"; mask filled by {self.inpaint.model_name}"
        return {**assessment.record(), "summary": said}

    def for_frames(self, first) -> "BatchRestore":
        """The converter for every frame of one animation or video: --task auto assesses its first
        frame once and restores every frame alike (assessed one by one, the model and strength could
        change from frame to frame, and the picture flicker)."""
        assessment = self.assess(first)
        if assessment is None:
            return self
        fixed = BatchRestore(self.restorer, self.mask, self.routes, self.inpaint)
        fixed._fixed = assessment
        return fixed

    def upscale_image(self, image, on_tile=None):
        first = self.pick(image)
        if first is not None:
            assessment = self.assess(image)
            image = first.restore_image(image, self.mask, on_tile, 1.0 if assessment is None else assessment.scale)
        if self.inpaint is not None and self.mask is not None:
            image = self.inpaint.restore_image(image, self.mask, on_tile)
        return image


def batch_restore(config: RestoreConfig, mask: torch.Tensor | None = None, progress: bool = True) -> BatchRestore:
    """The converter `upscale restore` (and `upscale --restore`) runs, its models loaded now so a
    missing one fails once before the batch: the named (or the task's) model, or for --task auto
    without -m the routed models; with a mask and no -m, INPAINT_MODEL for the masked pixels."""
    def loaded(**changes) -> Restorer:
        restorer = Restorer(dataclasses.replace(config, **changes), progress=progress)
        restorer.prepare()
        return restorer

    if config.model is not None or config.task != "auto":
        restorer = loaded()
        routes = {}
    else:
        restorer = None
        routes = {name: loaded(model=name, task="denoise" if name == DEFAULT_MODEL else "jpeg")
                  for name in (DEFAULT_MODEL, TASK_MODELS["jpeg"])}
    fills = mask is not None and config.model is None and config.task != "inpaint"
    inpaint = loaded(model=INPAINT_MODEL, task="inpaint") if fills else None
    return BatchRestore(restorer, mask, routes, inpaint)


class RestoreThenUpscale:
    """`upscale photo.jpg -x 4 --restore`: restore at the input size, then upscale."""

    def __init__(self, restore: BatchRestore, upscaler) -> None:
        self.restore, self.upscaler = restore, upscaler

    def model_for(self, image) -> str:
        restored = self.restore.model_for(image)
        return self.upscaler.config.model if restored == "none" else f"{restored}+{self.upscaler.config.model}"

    def found_for(self, image) -> dict | None:
        return self.restore.found_for(image)

    def passes_for(self, height: int, width: int) -> tuple[int, ...]:
        return self.upscaler.passes_for(height, width)

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        return self.upscaler.target_size(height, width)

    def for_frames(self, first) -> "RestoreThenUpscale":
        """Every frame of one input restored alike (BatchRestore.for_frames), then upscaled."""
        return RestoreThenUpscale(self.restore.for_frames(first), self.upscaler)

    def upscale_image(self, image, on_tile=None):
        return self.upscaler.upscale_image(self.restore.upscale_image(image, on_tile), on_tile)
