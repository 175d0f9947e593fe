"""The explicit registry of architectures: arch id -> builder. No folder scanning.

A builder takes keyword settings (as stored in a weights file's metadata or a catalogue
entry's options) and returns an nn.Module with an `info: ModelInfo` attribute.
Builders are named by import path so that importing the registry stays cheap.
"""
from __future__ import annotations

from importlib import import_module
from typing import Callable

from upscale_cli.errors import ModelNotFoundError
from upscale_cli.models.base import ModelInfo

ARCHITECTURES: dict[str, str] = {
    "interpolate": "upscale_cli.models.interpolate:build_interpolate",
    "pixel-art": "upscale_cli.models.pixel_art:build_pixel_art",
    "opencv-espcn": "upscale_cli.models.opencv_sr:build_opencv_sr",
    "opencv-fsrcnn": "upscale_cli.models.opencv_sr:build_opencv_sr",
    "opencv-lapsrn": "upscale_cli.models.opencv_sr:build_opencv_sr",
    "opencv-edsr": "upscale_cli.models.opencv_sr:build_opencv_sr",
    "unet": "upscale_cli.models.unet:build_unet",
    "upsampler": "upscale_cli.models.upsampler:build_upsampler",
    "coord-mlp": "upscale_cli.models.coord_mlp:build_coord_mlp_upscaler",
    "opencv-nlmeans": "upscale_cli.models.opencv_restore:build_nlmeans",
    "opencv-inpaint": "upscale_cli.models.opencv_restore:build_inpaint",
}


def get_builder(arch: str) -> Callable:
    """The builder function for an architecture id."""
    try:
        module_name, func_name = ARCHITECTURES[arch].split(":")
    except KeyError:
        raise ModelNotFoundError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}") from None
    return getattr(import_module(module_name), func_name)


def build_model(arch: str, **settings):
    """Build an (untrained) model of an architecture."""
    return get_builder(arch)(**settings)


__all__ = ["ARCHITECTURES", "ModelInfo", "build_model", "get_builder"]
