"""OpenCV dnn_superres models (ESPCN, FSRCNN, LapSRN, EDSR) behind the plain model interface.

The network runs inside OpenCV's DNN module on 8-bit BGR images, so forward converts each
(C, H, W) float image to uint8 BGR, calls `DnnSuperResImpl.upsample` and converts back;
the result is then exactly what OpenCV itself gives for the same 8-bit image. The only
I/O is `readModel` of the path the builder is given (the loader fetches the file).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from upscale_cli.errors import UnsupportedScaleError, WeightsError
from upscale_cli.models.base import FilePath, OneOf
from upscale_cli.models.descriptor import FixedScale

# Native scales of the published models (LapSRN is a x2 pyramid: 2, 4, 8).
ALGO_SCALES: dict[str, tuple[int, ...]] = {
    "espcn": (2, 3, 4),
    "fsrcnn": (2, 3, 4),
    "lapsrn": (2, 4, 8),
    "edsr": (2, 3, 4),
}
# Input pixels of context per side, from each network's stack of convolutions
# (ESPCN 5-3-3; FSRCNN 5-1-3x4-1 + 9x9 deconv; LapSRN 10 3x3 convs per x2 level;
# EDSR 32 residual blocks of two 3x3 convs). The tiler takes its overlap from this.
RECEPTIVE_FIELD: dict[str, int] = {"espcn": 4, "fsrcnn": 8, "lapsrn": 12, "edsr": 68}
UINT8_MAX = 255.0
# OpenCV 5 removed the TensorFlow importer that reads the published dnn_superres .pb graphs.
FIRST_OPENCV_WITHOUT_TF = 5
# model_path is a file OpenCV parses: models.check_settings never takes it from a weights file.
# Peak activation per input pixel, over scale^2 (bytes): measured (research/memory_per_pixel.md: espcn and
# fsrcnn at x4, lapsrn at x2/x4/x8) with 25% headroom; edsr (its 38 MB graph was not measured) from its
# layer shapes: 256-channel float maps at the output resolution while it upsamples.
BYTES_PER_PIXEL_OVER_SCALE2: dict[str, int] = {"espcn": 48, "fsrcnn": 87, "lapsrn": 450, "edsr": 2048}
SETTING_LIMITS = {
    "algo": OneOf(tuple(ALGO_SCALES)),
    "scale": OneOf(tuple(sorted({s for scales in ALGO_SCALES.values() for s in scales})), UnsupportedScaleError),
    "model_path": FilePath(),
}


def opencv_major(version: str) -> int:
    """4 for "4.13.0", 5 for "5.1.0-dev"; 0 for a version string without a leading number."""
    match = re.match(r"\s*(\d+)", version)
    return int(match.group(1)) if match else 0


def _to_bgr_uint8(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) float in [0, 1], C = 1 or 3 -> (H, W, 3) uint8 BGR (grey replicated)."""
    a = image.detach().float().cpu().numpy().transpose(1, 2, 0)  # (H, W, C) RGB
    a = np.clip(np.rint(a * UINT8_MAX), 0, UINT8_MAX).astype(np.uint8)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a[:, :, ::-1])


def _from_bgr_uint8(bgr: np.ndarray, channels: int) -> torch.Tensor:
    """(H, W, 3) uint8 BGR -> (channels, H, W) float RGB in [0, 1]; grey = mean of the three."""
    x = torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1].transpose(2, 0, 1))).float().div_(UINT8_MAX)
    return x.mean(dim=0, keepdim=True) if channels == 1 else x


class OpenCVSuperRes(nn.Module):
    """A dnn_superres network at one scale; runs on the CPU whatever device was asked for."""

    def __init__(self, algo: str, scale: int, model_path: str) -> None:
        super().__init__()
        import cv2

        algo = algo.lower().removeprefix("opencv-")
        if algo not in ALGO_SCALES:
            raise ValueError(f"unknown dnn_superres algorithm {algo!r}; choose from {', '.join(ALGO_SCALES)}")
        if int(scale) not in ALGO_SCALES[algo]:
            raise UnsupportedScaleError(
                f"opencv-{algo} has no x{scale} model; scales: {', '.join(f'x{s}' for s in ALGO_SCALES[algo])}"
            )
        self.algo, self.scale, self.model_path = algo, int(scale), str(model_path)
        if opencv_major(cv2.__version__) >= FIRST_OPENCV_WITHOUT_TF:
            raise WeightsError(
                f"OpenCV {cv2.__version__} cannot read dnn_superres models (TensorFlow .pb graphs; OpenCV 5 dropped "
                "that importer): pip install 'opencv-contrib-python-headless>=4.8,<5'",
                path=model_path,
            )
        self._sr = cv2.dnn_superres.DnnSuperResImpl_create()
        try:
            self._sr.readModel(self.model_path)
        except cv2.error as err:
            raise WeightsError(f"OpenCV cannot read the model: {str(err).strip().splitlines()[-1]}", path=model_path) from None
        self._sr.setModel(algo, self.scale)
        self.info = FixedScale(scale=self.scale, device_bound="cpu", supports_half=False,
                               receptive_field=RECEPTIVE_FIELD[algo],
                               bytes_per_input_pixel=BYTES_PER_PIXEL_OVER_SCALE2[algo] * self.scale**2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H*s, W*s)
        outs = [_from_bgr_uint8(self._sr.upsample(_to_bgr_uint8(image)), x.shape[1]) for image in x]
        return torch.stack(outs).to(device=x.device, dtype=x.dtype)

    def extra_repr(self) -> str:
        return f"algo={self.algo!r}, scale={self.scale}"


def algo_and_scale_of(filename: str) -> tuple[str, int] | None:
    """("espcn", 2) for "ESPCN_x2.pb": the published files' naming (FSRCNN-small_x3.pb is an fsrcnn
    graph); None for a name that does not say both, or names an algorithm or scale OpenCV lacks."""
    match = _FILE_NAME.fullmatch(filename)
    if not match:
        return None
    algo, scale = match["algo"].lower(), int(match["scale"])
    return (algo, scale) if scale in ALGO_SCALES.get(algo, ()) else None


_FILE_NAME = re.compile(r"(?P<algo>[A-Za-z]+)(?:-small)?_x(?P<scale>\d)\.pb", re.IGNORECASE)


def build_opencv_sr(algo: str, scale: int, model_path: str) -> OpenCVSuperRes:
    """Builder for arch "opencv-<algo>": the dnn_superres model file at `model_path`."""
    return OpenCVSuperRes(algo=algo, scale=scale, model_path=model_path)


GRAPH_SUFFIX = ".pb"  # an OpenCV dnn_superres graph, read by OpenCV itself
ARCH_PREFIX = "opencv-"  # the registry's arch ids: "opencv-" + the algorithm


def graph_model(path: str, scale: int | None = None, arch: str | None = None, **settings) -> OpenCVSuperRes:
    """An OpenCV graph file as a model: a catalogue entry's (its arch names the algorithm, `scale` the
    file's) or a user's own file, whose published name says both. WeightsError for a name that does not."""
    from upscale_cli.models import build_model

    if arch is None:
        found = algo_and_scale_of(Path(path).name)
        if found is None:
            raise WeightsError("an OpenCV .pb model must keep its published name, ALGORITHM_xSCALE.pb "
                               "(ESPCN_x2.pb, FSRCNN-small_x3.pb, LapSRN_x8.pb), which says what it is", path=path)
        algo, scale = found
        arch = ARCH_PREFIX + algo
    algo = arch.removeprefix(ARCH_PREFIX)
    return build_model(arch, algo=algo, scale=scale, model_path=str(path), **settings).eval()
