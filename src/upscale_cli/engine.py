"""Upscaler = model + device + dtype + tiling + scale plan.

The engine knows models only through their descriptor `info` (models/descriptor.py): the
variant says how a model is called (FixedScale, Masked, Sampling, AnySize, Fitting); it never
asks which architecture it runs. A scale the model lacks is planned as native passes (x8 = x4 then
x2, or x2 three times for a x2-only model) followed by one high-quality resize to the
exact target size.

Arrays in, arrays out: an image's pixels are NumPy arrays (images/). A pass whose model runs on
arrays without PyTorch (`array_model`: a weightless model's own NumPy call, such as interpolation,
or the compiled runtime's cached model with its recorded descriptor, compiled.py) runs on them on
the CPU, tiled by the same tiler; any other pass runs in PyTorch on the chosen device, imported
only then. So a run of an interpolation model, or of a model whose compiled shapes are all cached,
never imports torch (about 3 s of every run's start-up on a 2-core machine).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable

import numpy as np

from upscale_cli import tiling
from upscale_cli.alpha import fill_transparent
from upscale_cli.catalog import resolve
from upscale_cli.device import surely_cpu
from upscale_cli.errors import ModelOutputError, OutOfMemoryError, UsageError
from upscale_cli.models.descriptor import AnySize, Fitting, Masked, ModelDescriptor, native_scale
from upscale_cli.resize import resize
from upscale_cli.scale_plan import (  # noqa: F401 - the planning half of the engine, re-exported for its callers
    DEFAULT_MAX_OUTPUT_PIXELS, DEFAULT_MODEL, MAX_PASSES, UpscaleConfig, check_output_size, format_pixel_pair,
    format_pixels, plan_passes, target_size,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

FINAL_RESIZE = "bicubic"  # antialiased when shrinking after an overshooting pass
# bfloat16 convolutions on the CPU (torch 2.14 / oneDNN) gave NaN, depending on the values, for a
# stride-2 conv on a 2-pixel-wide map: a unet input 4 pixels wide (a 1-pixel strip padded to the
# size rule). With --half on the CPU, inputs are padded to at least this side (as untiled runs are).
BF16_CPU_MIN_SIDE = 8
TileCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class ArrayModel:
    """A model's call on float32 NumPy arrays (B, C, h, w), with no PyTorch, and its descriptor.
    A FixedScale model's call is call(x); an AnySize one's call(x, size=(height, width))."""

    info: ModelDescriptor
    call: Callable


class Upscaler:
    """Runs one catalogue model (at whichever native scales the plan needs) on images' arrays."""

    def __init__(self, config: UpscaleConfig, progress: bool = True) -> None:
        self.config = config
        self.spec = resolve(config.model)
        self._device = None  # chosen when PyTorch first runs something (select_device imports it)
        self._progress = progress
        self._models: dict[int | None, nn.Module] = {}
        self._array_models: dict[int | None, ArrayModel | None] = {}
        self._runners: dict[int | None, Callable] = {}  # the model's call on a tile (compiled.runner_for)
        self.notes: list[str] = []  # things the user may want to know (e.g. --half ignored)

    @property
    def device(self) -> torch.device:
        """The torch device of --device (imports torch)."""
        if self._device is None:
            from upscale_cli.device import select_device

            self._device = select_device(self.config.device)
        return self._device

    # -- models ---------------------------------------------------------------
    def model(self, native_scale: int | None) -> nn.Module:
        """The PyTorch model for one native scale, loaded once and moved to its device and dtype."""
        if native_scale not in self._models:
            import torch

            from upscale_cli.device import use_channels_last
            from upscale_cli.loader import load_spec

            self._note_licence(native_scale)
            model = load_spec(self.spec, native_scale, progress=self._progress)  # resolved once, in __init__
            device = torch.device(model.info.device_bound) if model.info.device_bound else self.device
            model = model.to(device=device, dtype=self._dtype(model, device))
            if use_channels_last(model.info, device):
                model = model.to(memory_format=torch.channels_last)
            self._models[native_scale] = model
        return self._models[native_scale]

    def array_model(self, native_scale: int | None) -> ArrayModel | None:
        """The model for one native scale as a call on NumPy arrays with no PyTorch, where there is
        one: on the CPU, in float32, without --ensemble, a weightless model's own (interpolation),
        or with --runtime auto/openvino a model whose descriptor the compiled cache recorded."""
        if native_scale not in self._array_models:
            self._array_models[native_scale] = self._find_array_model(native_scale)
        return self._array_models[native_scale]

    def _find_array_model(self, native: int | None) -> ArrayModel | None:
        config, spec = self.config, self.spec
        if config.half or config.ensemble or not surely_cpu(config.device):
            return None
        if not spec.files and spec.local_path is None:
            from upscale_cli.models import array_model

            own = array_model(spec.arch, spec.options)
            return None if own is None else ArrayModel(own.info, own)
        if config.runtime == "torch":
            return None
        from upscale_cli import compiled

        if not compiled.available():
            return None
        source = compiled.source_identity(spec, native)
        info = compiled.load_descriptor(source)
        if info is None or info.device_bound:
            return None
        runner = compiled.CompiledRunner(lambda: self.model(native), config.runtime, self.notes, source)
        self._runners[native] = runner
        return ArrayModel(compiled.planning_info(info), runner.run_array)

    def info(self, native_scale: int | None) -> ModelDescriptor:
        """The descriptor of the model for one native scale (its array model's, else PyTorch's)."""
        array = self.array_model(native_scale)
        return array.info if array is not None else self.model(native_scale).info

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
        import torch

        from upscale_cli.device import half_dtype

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
            scale = native_scale(self.info(None))
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
            self._refuse_without_mask(self.info(native))

    def _refuse_without_mask(self, info: ModelDescriptor) -> None:
        """A model that fills masked pixels (a Masked descriptor) has nothing to do without a mask."""
        if isinstance(info, Masked):
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
        array = self.array_model(None)
        own = getattr(array.call if array is not None else self.model(None), "passes", None)
        return tuple(own(height, width, (out_height, out_width))) if callable(own) else ()

    # -- running --------------------------------------------------------------
    def upscale_tensor(self, x, on_tile: TileCallback | None = None, size: tuple[int, int] | None = None):
        """(B, C, H, W) in [0, 1] -> (B, C, H', W') at the target size (or `size`), float32 on the
        CPU: a NumPy array for a NumPy array, a tensor for a tensor."""
        height, width = size or self.target_size(*x.shape[-2:])
        if not self.native_scales():  # any-size models (interpolation, fit-single) go straight to the target
            out = self._run_any_size(x, (height, width))
        else:
            out = x
            for native in self.passes_for(*x.shape[-2:], size=(height, width)):
                out = self._run_pass(out, native, on_tile)
            if tuple(out.shape[-2:]) != (height, width):
                out = resize(out, (height, width), FINAL_RESIZE)
            out = _clamp(out)
        return _as_array(out) if isinstance(x, np.ndarray) else _as_tensor(out)

    def _run_any_size(self, x, size: tuple[int, int]):
        array = self.array_model(None)
        if array is not None:
            out = _with_channels(array.info.in_channels, _as_array(x), lambda t: array.call(t, size=size))
            return _clamp(_check_finite(out.astype(np.float32, copy=False)))
        import torch

        from upscale_cli.device import torch_threads

        model = self.model(None)
        if self.config.ensemble:
            note = f"--ensemble: {self.spec.name} has no native scale (not a trained network at a fixed scale); ran once"
            if note not in self.notes:
                self.notes.append(note)
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else self.device
        light = param is None and device.type == "cpu"  # interpolation: NumPy does the work
        with torch.set_grad_enabled(isinstance(model.info, Fitting)), torch_threads(1 if light else None):
            out = _with_channels(model.info.in_channels, _as_tensor(x).to(device), lambda t: model(t, size=size))
            return _check_finite(out.float().cpu()).clamp_(0.0, 1.0)

    def run_with_mask(self, x: torch.Tensor, mask: torch.Tensor, on_tile: TileCallback | None = None) -> torch.Tensor:
        """A model that takes a mask (Masked; x1) on (1, C, H, W) and its (1, 1, H, W)
        mask (1 = fill): tiled, retried on out of memory and in the model's dtype like any pass, the
        mask cut into the same tiles as the image. (1, C, H, W) float32 on the CPU."""
        return self._run_torch_pass(_as_tensor(x), 1 if self.native_scales() else None, on_tile, _as_tensor(mask))

    def _run_pass(self, x, native: int | None, on_tile: TileCallback | None):
        """One native pass: on NumPy arrays where the model has an array call, else in PyTorch."""
        array = self.array_model(native)
        if array is None:
            return self._run_torch_pass(_as_tensor(x), native, on_tile)
        self._refuse_without_mask(array.info)
        scale = native or native_scale(array.info) or 1

        def run_tile(t: np.ndarray) -> np.ndarray:
            return _check_finite(_with_channels(array.info.in_channels, t, array.call))

        return self._tile_with_retries(run_tile, _as_array(x), scale, array.info, on_tile)

    def _run_torch_pass(self, x: torch.Tensor, native: int | None, on_tile: TileCallback | None,
                        mask: torch.Tensor | None = None) -> torch.Tensor:
        import torch

        from upscale_cli import ensemble
        from upscale_cli.device import use_channels_last

        model = self.model(native)
        if mask is None:
            self._refuse_without_mask(model.info)
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device(model.info.device_bound or self.device)
        dtype = param.dtype if param is not None else torch.float32

        layout = torch.channels_last if use_channels_last(model.info, device) else torch.contiguous_format
        info = model.info
        if dtype == torch.bfloat16 and device.type == "cpu" and info.size.minimum < BF16_CPU_MIN_SIDE:
            info = replace(info, size=info.size.at_least(BF16_CPU_MIN_SIDE))

        forward = self._runner(native, model, device, dtype) if mask is None else model
        if forward is not model:  # a compiled runner: its tiles are planned by its own memory
            from upscale_cli import compiled

            info = compiled.planning_info(info)

        def run_tile(t: torch.Tensor) -> torch.Tensor:
            if mask is None:
                colour = t.to(dtype).contiguous(memory_format=layout)
                return _check_finite(_with_channels(info.in_channels, colour, forward).float())
            colour, plane = t[:, :-1].to(dtype).contiguous(memory_format=layout), t[:, -1:].to(dtype)
            return _check_finite(_with_channels(info.in_channels, colour, lambda c: model(c, mask=plane)).float())

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
                from upscale_cli import compiled

                source = compiled.source_identity(self.spec, native)
                self._runners[native] = compiled.runner_for(model, self.config.runtime, device, dtype, self.notes,
                                                            source)
        return self._runners[native]

    def _tile_plan(self, x, native: int, info: ModelDescriptor, tile: int) -> tiling.TilePlan:
        """tiling.plan_tiling for this pass, from the model's descriptor and the user's options."""
        plan = tiling.plan_tiling(*x.shape[-2:], x.shape[1], native, info, device=_device_of(x), tile=tile,
                                  overlap=self.config.tile_overlap)
        if plan.note and plan.note not in self.notes:
            self.notes.append(plan.note)
        return plan

    def _tile_with_retries(self, fn, x, scale, info, on_tile):
        """Out of memory asks the planner for half the tile, until it cannot go smaller; then it is
        the user's problem, said clearly."""
        plan = self._tile_plan(x, scale, info, self.config.tile)
        while True:
            try:
                return _on_cpu(tiling.tiled_forward(fn, x, scale, plan, on_tile=on_tile))
            except (RuntimeError, MemoryError) as err:  # torch.OutOfMemoryError is a RuntimeError
                if not tiling.is_out_of_memory(err):
                    raise
                _free_device_memory(x)
                current = plan.tile or max(x.shape[-2:])
                smaller = self._tile_plan(x, scale, info, max(1, current // 2)) if info.tileable else plan
                if not smaller.tile or smaller.tile >= current:
                    raise OutOfMemoryError(
                        f"out of memory even with {current}px tiles on {_device_of(x)}; try --device cpu or a smaller image"
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
        size = self.target_size(image.height, image.width)
        if image.alpha is not None and self._info().in_channels == 4:
            return self._upscale_rgba(image, size, on_tile)
        pixels = image.pixels
        if image.alpha is not None:
            pixels = fill_transparent(pixels, image.alpha)
        out = self.upscale_tensor(pixels, on_tile, size=size)
        alpha = None
        if image.alpha is not None:
            if self._alpha_through_model():
                alpha = self.upscale_tensor(image.alpha, on_tile, size=size)
            else:
                alpha = resize(image.alpha, size, "bicubic")
        return image.replace(pixels=out, alpha=alpha)

    def _info(self):
        """The description of the model this run uses (its first native scale)."""
        scales = self.native_scales()
        return self.info(max(scales) if scales else None)

    def _alpha_through_model(self) -> bool:
        if self.config.alpha == "auto":
            return isinstance(self._info(), AnySize)
        return self.config.alpha == "model"

    def _upscale_rgba(self, image, size: tuple[int, int], on_tile: TileCallback | None):
        """Colour and alpha through an RGBA model in one go (grey colour as three equal planes)."""
        grey = image.pixels.shape[1] == 1
        colour = _expand(image.pixels, 3) if grey else image.pixels
        out = self.upscale_tensor(np.concatenate([colour, image.alpha], axis=1), on_tile, size=size)
        pixels = _mean_planes(out[:, :3]) if grey else out[:, :3]
        return image.replace(pixels=np.ascontiguousarray(pixels), alpha=np.ascontiguousarray(out[:, 3:4]))


# -- the same few steps on NumPy arrays and torch tensors ------------------------------------------


def _as_array(x) -> np.ndarray:
    """A float32 NumPy array of x (no copy for a CPU float32 tensor)."""
    if isinstance(x, np.ndarray):
        return x
    import torch

    return x.detach().to(device="cpu", dtype=torch.float32).numpy()


def _as_tensor(x) -> torch.Tensor:
    """A tensor of x (no copy for a NumPy array)."""
    if not isinstance(x, np.ndarray):
        return x
    import torch

    return torch.from_numpy(np.ascontiguousarray(x))


def _device_of(x) -> str | torch.device:
    return "cpu" if isinstance(x, np.ndarray) else x.device


def _on_cpu(x):
    return x if isinstance(x, np.ndarray) else x.cpu()


def _clamp(x):
    """x clipped to [0, 1], in place."""
    if isinstance(x, np.ndarray):
        return np.clip(x, 0.0, 1.0, out=x)
    return x.clamp_(0.0, 1.0)


def _cat(parts: list):
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts, axis=1)
    import torch

    return torch.cat(parts, dim=1)


def _expand(x, channels: int):
    """(B, 1, H, W) -> (B, channels, H, W), equal planes (a copy: the model may write into its input)."""
    if isinstance(x, np.ndarray):
        return np.ascontiguousarray(np.broadcast_to(x, (x.shape[0], channels, *x.shape[2:])))
    return x.expand(-1, channels, -1, -1).contiguous()


def _mean_planes(y):
    """(B, C, H, W) -> (B, 1, H, W), the planes' mean."""
    if isinstance(y, np.ndarray):
        return y.mean(axis=1, keepdims=True, dtype=np.float32)
    return y.mean(dim=1, keepdim=True)


def _opaque(x):
    """(B, 3, H, W) -> (B, 4, H, W) with alpha 1."""
    if isinstance(x, np.ndarray):
        return np.concatenate([x, np.ones_like(x[:, :1])], axis=1)
    import torch

    return torch.cat([x, torch.ones_like(x[:, :1])], dim=1)


def _check_finite(out):
    """A model whose output is NaN or infinite (broken weights, fp16 overflow) must not write an image."""
    if not math.isfinite(float(out.sum())):  # NaN and inf survive a sum; no full-size mask allocated
        raise ModelOutputError("the model produced NaN or infinite values; its weights are broken or it "
                               "overflowed (without --half, or another model, it may work)")
    return out


def _with_channels(wanted: int, x, call):
    """Feed the image's planes in the layout the model takes (`wanted` channels), and give back the
    image's layout: grey (or a lone alpha plane) to an RGB model as three equal channels (their mean
    back); RGB to a grey model plane by plane; RGB to an RGBA model with opaque alpha (dropped again)."""
    have = x.shape[1]
    if have == wanted:
        y = call(x)
    elif wanted == 1:
        return _cat([_with_channels(wanted, x[:, c : c + 1], call) for c in range(have)])
    elif have == 1:  # wanted is 3 (or 2), or 4: three equal planes, plus opaque alpha
        y = call(_expand(x, wanted) if wanted < 4 else _opaque(_expand(x, 3)))
    elif have == 3 and wanted == 4:
        y = call(_opaque(x))
    else:
        raise UsageError(f"the model takes {wanted} channels, the image has {have}")
    if y.shape[1] == have:
        return y
    if have == 1:
        return _mean_planes(y[:, :3])
    if y.shape[1] > have:
        return y[:, :have]
    return np.broadcast_to(y, (y.shape[0], have, *y.shape[2:])) if isinstance(y, np.ndarray) else y.expand(-1, have, -1, -1)


def _free_device_memory(x) -> None:
    if not isinstance(x, np.ndarray) and x.device.type == "cuda":
        import torch

        torch.cuda.empty_cache()
