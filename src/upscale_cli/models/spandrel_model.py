"""The community's models (Real-ESRGAN, SwinIR, HAT, DAT, SPAN, Compact, LaMa ... about 40
architectures) through spandrel, which recognises an architecture from a state dict alone.

`SpandrelModel` wraps spandrel's descriptor as a plain nn.Module whose `info` is our ModelInfo,
so the engine, tiler, restore and benchmark treat it like any of our models. Reading the file
(safely: safetensors or `torch.load(weights_only=True)`) is the loader's job; this module only
turns a state dict into a model.
"""
from __future__ import annotations

import torch
from torch import nn

from upscale_cli.errors import WeightsError
from upscale_cli.models.base import TILING_DISCOURAGED, TILING_INTERNAL, TILING_SUPPORTED, ModelInfo

# Tile context (input pixels on each side) for architectures whose receptive field is not a
# small exact number. Measured with scripts/measure_tile_context.py: the smallest margin at which
# tiled output stays within 1/255 of untiled on 8-bit photos (see the README's community section).
# Architectures not listed get DEFAULT_CONTEXT.
MEASURED_CONTEXT = {
    "ESRGAN": 32,  # RRDBNet: theoretical field of hundreds of pixels, effective far smaller
    "SwinIR": 32,
    "HAT": 32,
    "DAT": 32,
}
# Conv nets whose receptive field is small and exact: tiled output then equals untiled.
EXACT_FIELD = {
    "SPAN": 21,  # a 3x3 head, six blocks of three 3x3 convs, a 3x3 conv and the 3x3 upsampler conv
}
DEFAULT_CONTEXT = 32
_TILING = {"SUPPORTED": TILING_SUPPORTED, "DISCOURAGED": TILING_DISCOURAGED, "INTERNAL": TILING_INTERNAL}


def compact_receptive_field(num_conv: int) -> int:
    """SRVGGNetCompact: a first 3x3 conv, num_conv 3x3 convs, a last 3x3 conv, then pixel shuffle
    and a nearest-upsampled input added: each 3x3 conv widens the field by one pixel."""
    return num_conv + 2


class SpandrelModel(nn.Module):
    """A spandrel descriptor as our model: forward(x) or forward(x, mask) for inpainting models."""

    def __init__(self, descriptor) -> None:
        super().__init__()
        self.descriptor = descriptor
        self.net = descriptor.model  # registered, so .to(), .parameters() and .eval() reach it
        self.architecture = descriptor.architecture.id
        self.info = describe(descriptor)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # (B, C, h, w) -> (B, C', h*s, w*s); spandrel's call pads to the size rule itself if needed
        if self.info.takes_mask:
            if mask is None:
                raise ValueError("this inpainting model needs a mask")
            out = torch.cat([self.descriptor(x[i : i + 1], mask[i : i + 1].to(x)) for i in range(x.shape[0])])
        else:
            out = self.descriptor(x)
        # spandrel runs under inference mode; its tensors refuse the tiler's in-place blending
        return out.clone() if out.is_inference() else out


def describe(descriptor) -> ModelInfo:
    """spandrel's ImageModelDescriptor / MaskedImageModelDescriptor -> our ModelInfo."""
    requirements = descriptor.size_requirements
    arch = descriptor.architecture.id
    if arch == "Compact" and hasattr(descriptor.model, "num_conv"):
        context = compact_receptive_field(int(descriptor.model.num_conv))
    else:
        context = EXACT_FIELD.get(arch) or MEASURED_CONTEXT.get(arch, DEFAULT_CONTEXT)
    return ModelInfo(
        scale=int(descriptor.scale),
        in_channels=int(descriptor.input_channels),
        out_channels=int(descriptor.output_channels),
        supports_half=bool(descriptor.supports_half),
        supports_bf16=bool(descriptor.supports_bfloat16),
        size_multiple=max(1, int(requirements.multiple_of)),
        min_size=int(requirements.minimum),
        square=bool(requirements.square),
        receptive_field=context,
        tiling=_TILING.get(getattr(descriptor.tiling, "name", "SUPPORTED"), TILING_SUPPORTED),
        takes_mask=descriptor.purpose == "Inpainting",
    )


def from_state_dict(state: dict[str, torch.Tensor], label: str) -> SpandrelModel:
    """Detect the architecture of a state dict and build the model (eval mode). WeightsError,
    naming `label`, when spandrel knows no architecture with these tensors."""
    import spandrel

    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        raise WeightsError(f"not a model upscale-cli can run: no known architecture has these tensors "
                           f"(supported: our own exports, OpenCV .pb, and {supported_summary()})",
                           path=label) from None
    except (KeyError, ValueError, RuntimeError, AssertionError, IndexError, TypeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise WeightsError(f"looks like a community model but its tensors do not fit it ({first})",
                           path=label) from None
    if descriptor.purpose not in ("SR", "Restoration", "FaceSR", "Inpainting"):
        raise WeightsError(f"a {descriptor.architecture.id} model for {descriptor.purpose}, not an image "
                           "upscaler or restorer", path=label)
    return SpandrelModel(descriptor).eval()


def supported_architectures() -> list[str]:
    """The architecture families spandrel recognises."""
    import spandrel

    return sorted({support.architecture.id for support in spandrel.MAIN_REGISTRY.architectures()})


def supported_summary() -> str:
    """The architecture families spandrel recognises, for messages."""
    names = supported_architectures()
    return f"{len(names)} community architectures ({', '.join(names)})"
