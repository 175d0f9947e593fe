"""The community's models (Real-ESRGAN, SwinIR, HAT, DAT, SPAN, Compact, LaMa ... about 40
architectures) through spandrel, which recognises an architecture from a state dict alone.

`SpandrelModel` wraps spandrel's descriptor as a plain nn.Module whose `info` is our descriptor,
so the engine, tiler, restore and benchmark treat it like any of our models. Reading the file
(safely: safetensors or `torch.load(weights_only=True)`) is the loader's job; this module only
turns a state dict into a model.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from upscale_cli.errors import WeightsError
from upscale_cli.weights_guard import ACCEPTED_FLOAT_TEXT
from upscale_cli.models.descriptor import DEFAULT_BYTES_PER_INPUT_PIXEL, FixedScale, Masked, SizeRequirements

# Tile context (input pixels on each side) for architectures whose receptive field is not a
# small exact number. Measured with research/measure_tile_context.py: the smallest margin at which
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
# Peak memory of one float32 forward per input pixel (bytes), by spandrel architecture id, measured
# with research/measure_memory.py (research/memory_per_pixel.md: the largest of an id's models, with 25%
# headroom); others get the default.
BYTES_PER_INPUT_PIXEL: dict[str, int] = {
    "ESRGAN": 15_040, "Compact": 640, "SwinIR": 16_256, "HAT": 47_040, "DAT": 14_848, "OmniSR": 5_760,
    "SPAN": 4_672, "RealCUGAN": 9_408, "PLKSR": 1_984, "SAFMN": 1_280, "RCAN": 12_224, "DRCT": 29_440,
    "ATD": 15_680, "Swin2SR": 13_696, "RGT": 18_944, "CRAFT": 6_272, "DITN": 5_376, "SeemoRe": 2_624,
    "MoSR": 3_072, "DCTLSA": 11_904, "FDAT": 9_088, "MoESR": 5_568, "SwiftSRGAN": 15_424, "SCUNet": 3_840,
    "DRUNet": 1_984, "NAFNet": 1_600, "DnCNN": 832,
}

# Conv families that run faster with channels-last tensors on the CPU, measured with
# research/measure_channels_last.py (float32, 2 threads, AVX2, at 128-160 px inputs; outputs within
# 0.005/255): PLKSR 0.68x the time, SPAN 0.78x, ESRGAN 0.81x, RealCUGAN 0.85x, Compact 0.86x. The
# attention families were no faster (OmniSR 0.99x, SwinIR 0.96x, DAT 1.01x) and stay contiguous.
CHANNELS_LAST = frozenset({"PLKSR", "SPAN", "ESRGAN", "RealCUGAN", "Compact"})


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
        if isinstance(self.info, Masked):
            if mask is None:
                raise ValueError("this inpainting model needs a mask")
            out = torch.cat([self.descriptor(x[i : i + 1], mask[i : i + 1].to(x)) for i in range(x.shape[0])])
        else:
            out = self.descriptor(x)
        # spandrel runs under inference mode; its tensors refuse the tiler's in-place blending
        return out.clone() if out.is_inference() else out


def describe(descriptor) -> FixedScale:
    """spandrel's ImageModelDescriptor / MaskedImageModelDescriptor -> our descriptor (Masked for
    inpainting models); spandrel's tiling mode (supported / discouraged / internal) is kept."""
    requirements = descriptor.size_requirements
    arch = descriptor.architecture.id
    if arch == "Compact" and hasattr(descriptor.model, "num_conv"):
        context = compact_receptive_field(int(descriptor.model.num_conv))
    else:
        context = EXACT_FIELD.get(arch) or MEASURED_CONTEXT.get(arch, DEFAULT_CONTEXT)
    kind = Masked if descriptor.purpose == "Inpainting" else FixedScale
    return kind(
        scale=int(descriptor.scale),
        in_channels=int(descriptor.input_channels),
        out_channels=int(descriptor.output_channels),
        supports_half=bool(descriptor.supports_half),
        supports_bf16=bool(descriptor.supports_bfloat16),
        size=SizeRequirements(minimum=int(requirements.minimum), multiple_of=max(1, int(requirements.multiple_of)),
                              square=bool(requirements.square)),
        receptive_field=context,
        tiling=getattr(descriptor.tiling, "name", "SUPPORTED").lower(),
        bytes_per_input_pixel=BYTES_PER_INPUT_PIXEL.get(arch, DEFAULT_BYTES_PER_INPUT_PIXEL),
        channels_last=arch in CHANNELS_LAST,
    )


def from_state_dict(state: dict[str, torch.Tensor], label: str) -> SpandrelModel:
    """Detect the architecture of a state dict and build the model (eval mode). WeightsError,
    naming `label`, when spandrel knows no architecture with these tensors, when they describe
    a degenerate model (no channels), or when a weight is not floating point.

    The loader has already checked the tensors' names, float dtypes and values (loader.read_weights).
    """
    import spandrel

    _check_not_empty(state, label)
    try:
        with warnings.catch_warnings():  # spandrel's and torch's remarks while building would break the one line
            warnings.simplefilter("ignore")
            descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        raise WeightsError(f"not a model upscale-cli can run: no known architecture has these tensors "
                           f"(supported: our own exports, OpenCV .pb, and {supported_summary()})",
                           path=label) from None
    except Exception as err:  # spandrel's detectors do arithmetic on the file's shapes: any error is the file's
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise WeightsError(f"looks like a community model but its tensors do not fit it "
                           f"({type(err).__name__}: {first[:120]})", path=label) from None
    if descriptor.purpose not in ("SR", "Restoration", "FaceSR", "Inpainting"):
        raise WeightsError(f"a {descriptor.architecture.id} model for {descriptor.purpose}, not an image "
                           "upscaler or restorer", path=label)
    _check_descriptor(descriptor, label)
    _check_integer_tensors(state, descriptor.model, label)
    return SpandrelModel(descriptor).eval()


def _check_not_empty(state: dict[str, torch.Tensor], label: str) -> None:
    """No community architecture has a tensor with a zero-length side (a conv with no channels):
    spandrel would divide by it or build a model that outputs nothing."""
    for name, tensor in state.items():
        if tensor.numel() == 0:
            raise WeightsError(f"tensor {name[:60]!r} has shape {tuple(tensor.shape)}, which holds nothing; "
                               "not a usable model", path=label)


def _check_descriptor(descriptor, label: str) -> None:
    """A scale and channel counts of at least 1: the engine plans with them."""
    sizes = {"scale": descriptor.scale, "input channels": descriptor.input_channels,
             "output channels": descriptor.output_channels}
    for what, value in sizes.items():
        if not isinstance(value, int) or value < 1:
            raise WeightsError(f"its tensors describe a {descriptor.architecture.id} model with {what} {value}; "
                               "not a usable model", path=label)


def _check_integer_tensors(state: dict[str, torch.Tensor], model: nn.Module, label: str) -> None:
    """An integer or bool tensor may only be one of the model's own integer buffers (SwinIR's
    relative_position_index, BatchNorm's num_batches_tracked); as a weight it would have been cast
    to float without a word, running a model that is not the file's."""
    buffers = {name.rsplit(".", 1)[-1] for name, value in model.state_dict().items() if not value.is_floating_point()}
    for name, tensor in state.items():
        if not tensor.is_floating_point() and name.rsplit(".", 1)[-1] not in buffers:
            raise WeightsError(f"tensor {name[:60]!r} is {str(tensor.dtype).removeprefix('torch.')}; weights must be "
                               f"{ACCEPTED_FLOAT_TEXT} (convert the file); it was not loaded", path=label)


def supported_architectures() -> list[str]:
    """The architecture families spandrel recognises."""
    import spandrel

    return sorted({support.architecture.id for support in spandrel.MAIN_REGISTRY.architectures()})


def supported_summary() -> str:
    """The architecture families spandrel recognises, for messages."""
    names = supported_architectures()
    return f"{len(names)} community architectures ({', '.join(names)})"
