"""Upscaler = model + device + dtype + tiling + scale plan.

The engine knows models only through their descriptor `info` (models/descriptor.py): the
variant says how a model is called (FixedScale, Masked, Sampling, AnySize, Fitting); it never
asks which architecture it runs. A scale the model lacks is planned as native passes (x8 = x4 then
x2, or x2 three times for a x2-only model) followed by one high-quality resize to the
exact target size.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch
from torch import nn

from upscale_cli import ensemble, tiling
from upscale_cli.alpha import fill_transparent
from upscale_cli.catalog import resolve
from upscale_cli.device import half_dtype, select_device, torch_threads, use_channels_last
from upscale_cli.errors import ModelOutputError, OutOfMemoryError, UsageError
from upscale_cli.loader import load_spec
from upscale_cli.models.descriptor import AnySize, Fitting, Masked, ModelDescriptor, native_scale
from upscale_cli.resize import resize
from upscale_cli.scale_plan import (  # noqa: F401 - the planning half of the engine, re-exported for its callers
    DEFAULT_MAX_OUTPUT_PIXELS, DEFAULT_MODEL, MAX_PASSES, UpscaleConfig, check_output_size, format_pixel_pair,
    format_pixels, plan_passes, target_size,
)

FINAL_RESIZE = "bicubic"  # antialiased when shrinking after an overshooting pass
# bfloat16 convolutions on the CPU (torch 2.14 / oneDNN) gave NaN, depending on the values, for a
# stride-2 conv on a 2-pixel-wide map: a unet input 4 pixels wide (a 1-pixel strip padded to the
# size rule). With --half on the CPU, inputs are padded to at least this side (as untiled runs are).
BF16_CPU_MIN_SIDE = 8
TileCallback = Callable[[int, int], None]


class Upscaler:
    """Runs one catalogue model (at whichever native scales the plan needs) on image tensors."""

    def __init__(self, config: UpscaleConfig, progress: bool = True) -> None:
        self.config = config
        self.spec = resolve(config.model)
        self.device = select_device(config.device)
        self._progress = progress
        self._models: dict[int | None, nn.Module] = {}
        self._runners: dict[int | None, Callable] = {}  # the model's call on a tile (compiled.runner_for)
        self.notes: list[str] = []  # things the user may want to know (e.g. --half ignored)

    # -- models ---------------------------------------------------------------
    def model(self, native_scale: int | None) -> nn.Module:
        """The model for one native scale, loaded once and moved to its device and dtype."""
        if native_scale not in self._models:
            self._note_licence(native_scale)
            model = load_spec(self.spec, native_scale, progress=self._progress)  # resolved once, in __init__
            device = torch.device(model.info.device_bound) if model.info.device_bound else self.device
            model = model.to(device=device, dtype=self._dtype(model, device))
            if use_channels_last(model.info, device):
                model = model.to(memory_format=torch.channels_last)
            self._models[native_scale] = model
        return self._models[native_scale]

    def _note_licence(self, native_scale: int | None) -> None:
        """Say it when a model under a non-commercial licence is about to be downloaded."""
        from upscale_cli.openmodeldb import is_non_commercial

        file = self.spec.files.get(native_scale) if native_scale is not None else None
        if file is None or file.packaged or not is_non_commercial(self.spec.license):
            return
        from upscale_cli.weights_cache import is_cached

        if not is_cached(file):
            self.notes.append(f"{self.spec.name} is licensed {self.spec.license}: not for commercial use")

    def _dtype(self, model: nn.Module, device: torch.device) -> torch.dtype:
        """float32, or with --half the fastest reduced precision that this device computes
        natively and the model supports: float16 on a GPU, bfloat16 on a CPU with AVX-512 BF16 or
        AMX (detected, never assumed); otherwise float32, said once."""
        if not self.config.half:
            return torch.float32
        dtype, why = half_dtype(model.info, device)
        if dtype == torch.float32:
            note = f"--half: {why}; running float32"
            if note not in self.notes:
                self.notes.append(note)
        return dtype

    @property
    def default_scale(self) -> float:
        """The scale without -x: the model's largest native scale (a weights file's own), else 4."""
        scales = self.native_scales()
        return float(max(scales)) if scales else 4.0

    def native_scales(self) -> tuple[int, ...]:
        """Native scales of the model; for a user's own weights file, the file's scale."""
        if self.spec.scales:
            return self.spec.scales
        if self.spec.local_path is not None:
            scale = native_scale(self.model(None).info)
            return (scale,) if scale else ()
        return ()

    def prepare(self) -> None:
        """Load (and download) what a scale-based run will need now, so that a missing model
        fails once, before the batch, rather than once per file."""
        if self.config.width or self.config.height:
            return
        scales = self.native_scales()
        factor = self.config.scale if self.config.scale is not None else self.default_scale
        for native in plan_passes(scales, factor) if scales else (None,):
            self._refuse_without_mask(self.model(native))

    def _refuse_without_mask(self, model: nn.Module) -> None:
        """A model that fills masked pixels (a Masked descriptor) has nothing to do without a mask."""
        if isinstance(model.info, Masked):
            raise UsageError(f"{self.spec.name} fills the pixels a mask marks: run it with "
                             f"`upscale restore IMAGE --mask MASK.png -m {self.config.model}`")

    # -- sizes ----------------------------------------------------------------
    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """The output size, refused before any work when it is over --max-output-pixels."""
        size = target_size(height, width, self.config, self.default_scale)
        check_output_size(size, self.config.max_output_pixels)
        return size

    def passes_for(self, height: int, width: int, size: tuple[int, int] | None = None) -> tuple[int, ...]:
        """The native passes an image of this size runs through to `size` (default: the target
        size); for an any-size model, the passes it runs inside (`passes(height, width, size)`:
        pixel-art's Scale2x/Scale3x chain), else () (interpolation goes straight to the size)."""
        out_height, out_width = size or self.target_size(height, width)
        scales = self.native_scales()
        if scales:
            return plan_passes(scales, max(out_height / height, out_width / width))
        own = getattr(self.model(None), "passes", None)
        return tuple(own(height, width, (out_height, out_width))) if callable(own) else ()

    # -- running --------------------------------------------------------------
    def upscale_tensor(self, x: torch.Tensor, on_tile: TileCallback | None = None,
                       size: tuple[int, int] | None = None) -> torch.Tensor:
        """(1, C, H, W) in [0, 1] -> (1, C, H', W') at the target size (or `size`), on the CPU, float32."""
        height, width = size or self.target_size(*x.shape[-2:])
        if not self.native_scales():  # any-size models (interpolation, fit-single) go straight to the target
            return self._run_any_size(x, (height, width))
        out = x
        for native in self.passes_for(*x.shape[-2:], size=(height, width)):
            out = self._run_pass(out, native, on_tile)
        if tuple(out.shape[-2:]) != (height, width):
            out = resize(out, (height, width), FINAL_RESIZE)
        return out.clamp_(0.0, 1.0)

    def _run_any_size(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        model = self.model(None)
        if self.config.ensemble:
            note = f"--ensemble: {self.spec.name} has no native scale (not a trained network at a fixed scale); ran once"
            if note not in self.notes:
                self.notes.append(note)
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else self.device
        light = param is None and device.type == "cpu"  # interpolation: NumPy does the work
        with torch.set_grad_enabled(isinstance(model.info, Fitting)), torch_threads(1 if light else None):
            out = _with_channels(model, x.to(device), lambda t: model(t, size=size))
            return _check_finite(out.float().cpu()).clamp_(0.0, 1.0)

    def run_with_mask(self, x: torch.Tensor, mask: torch.Tensor, on_tile: TileCallback | None = None) -> torch.Tensor:
        """A model that takes a mask (Masked; x1) on (1, C, H, W) and its (1, 1, H, W)
        mask (1 = fill): tiled, retried on out of memory and in the model's dtype like any pass, the
        mask cut into the same tiles as the image. (1, C, H, W) float32 on the CPU."""
        return self._run_pass(x, 1 if self.native_scales() else None, on_tile, mask)

    def _run_pass(self, x: torch.Tensor, native: int | None, on_tile: TileCallback | None,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
        model = self.model(native)
        if mask is None:
            self._refuse_without_mask(model)
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device(model.info.device_bound or self.device)
        dtype = param.dtype if param is not None else torch.float32

        layout = torch.channels_last if use_channels_last(model.info, device) else torch.contiguous_format
        info = model.info
        if dtype == torch.bfloat16 and device.type == "cpu" and info.size.minimum < BF16_CPU_MIN_SIDE:
            info = replace(info, size=info.size.at_least(BF16_CPU_MIN_SIDE))

        forward = self._runner(native, model, device, dtype) if mask is None else model

        def run_tile(t: torch.Tensor) -> torch.Tensor:
            if mask is None:
                return _check_finite(_with_channels(model, t.to(dtype).contiguous(memory_format=layout), forward).float())
            colour, plane = t[:, :-1].to(dtype).contiguous(memory_format=layout), t[:, -1:].to(dtype)
            return _check_finite(_with_channels(model, colour, lambda c: model(c, mask=plane)).float())

        scale = native or native_scale(info) or 1
        if mask is not None:  # one more plane: tiling, padding and the views cut it with the image
            x = torch.cat([x, mask.to(x.dtype)], dim=1)
        with torch.no_grad():
            if not self.config.ensemble:
                return self._tile_with_retries(run_tile, x.to(device), scale, info, on_tile)

            def run_view(view: torch.Tensor, k: int) -> torch.Tensor:
                def on_view_tile(done: int, total: int) -> None:  # progress over all 8 views
                    on_tile(k * total + done, ensemble.VIEWS * total)

                return self._tile_with_retries(run_tile, view, scale, info, on_tile and on_view_tile)

            return ensemble.self_ensemble(run_view, x.to(device))

    def _runner(self, native: int | None, model: nn.Module, device: torch.device, dtype: torch.dtype) -> Callable:
        """The model's call on one tile: compiled (compiled.py) where --runtime allows it, else the
        model. Made once per model, so its compiled shapes last the whole batch."""
        if native not in self._runners:
            if self.config.runtime == "torch":  # never imports OpenVINO (nor compiled.py's checks)
                self._runners[native] = model
            else:
                from upscale_cli.compiled import runner_for

                self._runners[native] = runner_for(model, self.config.runtime, device, dtype, self.notes)
        return self._runners[native]

    def _tile_plan(self, x: torch.Tensor, native: int, info: ModelDescriptor, tile: int) -> tiling.TilePlan:
        """tiling.plan_tiling for this pass, from the model's descriptor and the user's options."""
        plan = tiling.plan_tiling(*x.shape[-2:], x.shape[1], native, info, device=x.device, tile=tile,
                                  overlap=self.config.tile_overlap)
        if plan.note and plan.note not in self.notes:
            self.notes.append(plan.note)
        return plan

    def _tile_with_retries(self, fn, x, scale, info, on_tile) -> torch.Tensor:
        """Out of memory asks the planner for half the tile, until it cannot go smaller; then it is
        the user's problem, said clearly."""
        plan = self._tile_plan(x, scale, info, self.config.tile)
        while True:
            try:
                return tiling.tiled_forward(fn, x, scale, plan, on_tile=on_tile).cpu()
            except (torch.OutOfMemoryError, RuntimeError, MemoryError) as err:
                if not tiling.is_out_of_memory(err):
                    raise
                _free_device_memory(x.device)
                current = plan.tile or max(x.shape[-2:])
                smaller = self._tile_plan(x, scale, info, max(1, current // 2)) if info.tileable else plan
                if not smaller.tile or smaller.tile >= current:
                    raise OutOfMemoryError(
                        f"out of memory even with {current}px tiles on {x.device}; try --device cpu or a smaller image"
                    ) from None
                plan = smaller
                note = f"out of memory: retried with --tile {plan.tile}"
                if note not in self.notes:
                    self.notes.append(note)

    def upscale_image(self, image, on_tile: TileCallback | None = None):
        """DecodedImage -> DecodedImage at the target size; alpha upscaled too, colour kept from bleeding.

        A model that takes RGBA (pixel-art, some community models) gets colour and alpha together.
        Otherwise alpha follows --alpha: `auto` runs it through any-size models (interpolation:
        nearest keeps hard alpha edges) and resizes it bicubic for the others; `model` runs it
        through the model too; `bicubic` always resizes it.
        """
        from upscale_cli.images.arrays import tensor_to_array

        size = self.target_size(image.height, image.width)
        if image.alpha is not None and self._info().in_channels == 4:
            return self._upscale_rgba(image, size, on_tile)
        pixels = torch.from_numpy(image.pixels)  # the image's NumPy arrays as tensors: no copy
        given_alpha = None if image.alpha is None else torch.from_numpy(image.alpha)
        if given_alpha is not None:
            pixels = fill_transparent(pixels, given_alpha)
        out = self.upscale_tensor(pixels, on_tile, size=size)
        alpha = None
        if given_alpha is not None:
            if self._alpha_through_model():
                alpha = self.upscale_tensor(given_alpha, on_tile, size=size)
            else:
                alpha = resize(given_alpha, size, "bicubic")
        return image.replace(pixels=tensor_to_array(out), alpha=None if alpha is None else tensor_to_array(alpha))

    def _info(self):
        """The description of the model this run uses (its first native scale)."""
        scales = self.native_scales()
        return self.model(max(scales) if scales else None).info

    def _alpha_through_model(self) -> bool:
        if self.config.alpha == "auto":
            return isinstance(self._info(), AnySize)
        return self.config.alpha == "model"

    def _upscale_rgba(self, image, size: tuple[int, int], on_tile: TileCallback | None):
        """Colour and alpha through an RGBA model in one go (grey colour as three equal planes)."""
        from upscale_cli.images.arrays import tensor_to_array

        grey = image.pixels.shape[1] == 1
        given = torch.from_numpy(image.pixels)
        colour = given.expand(-1, 3, -1, -1) if grey else given
        out = self.upscale_tensor(torch.cat([colour, torch.from_numpy(image.alpha)], dim=1), on_tile, size=size)
        pixels = out[:, :3].mean(dim=1, keepdim=True) if grey else out[:, :3]
        return image.replace(pixels=tensor_to_array(pixels), alpha=tensor_to_array(out[:, 3:4]))


def _check_finite(out: torch.Tensor) -> torch.Tensor:
    """A model whose output is NaN or infinite (broken weights, fp16 overflow) must not write an image."""
    if not bool(torch.isfinite(out.sum())):  # NaN and inf survive a sum; no full-size mask allocated
        raise ModelOutputError("the model produced NaN or infinite values; its weights are broken or it "
                               "overflowed (without --half, or another model, it may work)")
    return out


def _with_channels(model: nn.Module, x: torch.Tensor, call) -> torch.Tensor:
    """Feed the image's planes in the layout the model takes, and give back the image's layout:
    grey (or a lone alpha plane) to an RGB model as three equal channels (their mean back); RGB
    to a grey model plane by plane; RGB to an RGBA model with opaque alpha (dropped again)."""
    have, wanted = x.shape[1], model.info.in_channels
    if have == wanted:
        y = call(x)
    elif wanted == 1:
        return torch.cat([_with_channels(model, x[:, c : c + 1], call) for c in range(have)], dim=1)
    elif have == 1:  # wanted is 3 (or 2), or 4: three equal planes, plus opaque alpha
        y = call(x.expand(-1, wanted, -1, -1).contiguous() if wanted < 4 else _opaque(x.expand(-1, 3, -1, -1)))
    elif have == 3 and wanted == 4:
        y = call(_opaque(x))
    else:
        raise UsageError(f"the model takes {wanted} channels, the image has {have}")
    if y.shape[1] == have:
        return y
    if have == 1:
        return y[:, :3].mean(dim=1, keepdim=True)
    return y[:, :have] if y.shape[1] > have else y.expand(-1, have, -1, -1)


def _opaque(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 4, H, W) with alpha 1."""
    return torch.cat([x, torch.ones_like(x[:, :1])], dim=1)


def _free_device_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
