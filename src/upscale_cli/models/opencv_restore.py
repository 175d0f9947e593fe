"""The restoration baselines a user already has in OpenCV, behind the plain model interface.

- opencv-nlmeans: non-local means denoising (cv2.fastNlMeansDenoisingColored; greyscale
  images through cv2.fastNlMeansDenoising). `h` is the filter strength in 8-bit levels
  (about sigma for Gaussian noise of standard deviation sigma); `h_color` defaults to h.
- opencv-inpaint: Telea (or Navier-Stokes) inpainting; it takes the mask itself
  (a Masked descriptor: forward(x, mask=(B, 1, H, W), 1 = fill)) and changes masked pixels only.

Both are x1 models (FixedScale(scale=1), Masked) bound to the CPU: OpenCV works on 8-bit images, so
forward converts each (C, H, W) float image to uint8, calls OpenCV and converts back.
`size`, when the engine passes it (it runs weightless catalogue models through its
any-size path), must be the input's own size.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from upscale_cli.errors import UsageError
from upscale_cli.models.base import Between, OneOf
from upscale_cli.models.descriptor import FixedScale, Masked

UINT8_MAX = 255.0
NLMEANS_TEMPLATE = 7  # pixels: OpenCV's recommended template window
NLMEANS_SEARCH = 21  # pixels: OpenCV's recommended search window
INPAINT_METHODS = ("telea", "ns")
MAX_STRENGTH = 255.0  # 8-bit levels: nlmeans h beyond the whole range only blurs more slowly
MAX_INPAINT_RADIUS = 64  # pixels
# Checked before anything is built (models.check_settings): settings also come from weights files.
OPENCV_BYTES_PER_INPUT_PIXEL = 64  # bytes per input pixel, one float32 forward (research/memory_per_pixel.md)
SETTING_LIMITS = {
    "h": Between(0.0, MAX_STRENGTH), "h_color": Between(0.0, MAX_STRENGTH), "scale": OneOf((1,), UsageError),
    "method": OneOf(INPAINT_METHODS), "radius": Between(1, MAX_INPAINT_RADIUS),
}


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) float in [0, 1] -> (H, W, C) uint8 (C = 1 or 3, RGB order kept)."""
    a = image.detach().float().cpu().clamp(0, 1).mul(UINT8_MAX).round().byte().permute(1, 2, 0).numpy()
    return np.ascontiguousarray(a)


def _from_uint8(array: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """(H, W[, C]) uint8 -> (C, H, W) float in [0, 1] on like's device and dtype."""
    if array.ndim == 2:
        array = array[:, :, None]
    x = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float().div_(UINT8_MAX)
    return x.to(device=like.device, dtype=like.dtype)


def _check_size(x: torch.Tensor, size: tuple[int, int] | None) -> None:
    if size is not None and tuple(size) != tuple(x.shape[-2:]):
        raise UsageError("restoration models keep the image size; use `upscale restore`, or upscale afterwards")


class OpenCVNLMeans(nn.Module):
    """Non-local means denoising; the colour version works in CIELAB (OpenCV's own conversion)."""

    def __init__(self, h: float = 10.0, h_color: float | None = None) -> None:
        super().__init__()
        self.h = float(h)
        self.h_color = float(h if h_color is None else h_color)
        self.info = FixedScale(scale=1, in_channels=3, supports_half=False, device_bound="cpu",
                               receptive_field=(NLMEANS_SEARCH + NLMEANS_TEMPLATE) // 2,
                               bytes_per_input_pixel=OPENCV_BYTES_PER_INPUT_PIXEL)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:  # (B, C, H, W)
        import cv2

        _check_size(x, size)
        out = []
        for image in x:
            a = _to_uint8(image)
            if a.shape[2] == 3:
                bgr = np.ascontiguousarray(a[:, :, ::-1])
                den = cv2.fastNlMeansDenoisingColored(bgr, None, self.h, self.h_color, NLMEANS_TEMPLATE,
                                                      NLMEANS_SEARCH)[:, :, ::-1]
            else:
                den = cv2.fastNlMeansDenoising(a[:, :, 0], None, self.h, NLMEANS_TEMPLATE, NLMEANS_SEARCH)
            out.append(_from_uint8(den, x))
        return torch.stack(out)


class OpenCVInpaint(nn.Module):
    """Telea (fast marching) or Navier-Stokes inpainting of the masked pixels."""


    def __init__(self, method: str = "telea", radius: int = 3) -> None:
        super().__init__()
        if method not in INPAINT_METHODS:
            raise UsageError(f"opencv-inpaint method must be one of {', '.join(INPAINT_METHODS)}, not {method!r}")
        self.method, self.radius = method, int(radius)
        # not tileable: a hole must see all of its border at once
        # Masked: restore.py hands it the mask instead of pre-filling holes
        self.info = Masked(in_channels=3, supports_half=False, receptive_field=self.radius, tiling="internal",
                           device_bound="cpu", bytes_per_input_pixel=OPENCV_BYTES_PER_INPUT_PIXEL)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                size: tuple[int, int] | None = None) -> torch.Tensor:  # (B, C, H, W), mask (B, 1, H, W)
        import cv2

        _check_size(x, size)
        if mask is None:
            raise UsageError("opencv-inpaint needs a mask of the pixels to fill (--mask, white = fill)")
        flag = cv2.INPAINT_TELEA if self.method == "telea" else cv2.INPAINT_NS
        out = []
        for image, hole in zip(x, mask.expand(x.shape[0], -1, -1, -1)):
            m = (hole[0] > 0.5).to(torch.uint8).mul(255).cpu().numpy()
            a = _to_uint8(image)
            if not m.any():
                out.append(image)
                continue
            if a.shape[2] == 3:
                filled = cv2.inpaint(np.ascontiguousarray(a[:, :, ::-1]), m, self.radius, flag)[:, :, ::-1]
            else:
                filled = cv2.inpaint(a, m, self.radius, flag)
            # keep the unmasked pixels exactly (no 8-bit round trip for 16-bit inputs)
            out.append(torch.where(hole > 0.5, _from_uint8(filled, image), image))
        return torch.stack(out)


def build_nlmeans(h: float = 10.0, h_color: float | None = None, scale: int = 1) -> OpenCVNLMeans:
    """opencv-nlmeans: h = filter strength in 8-bit levels (higher removes more noise and detail)."""
    if int(scale) != 1:
        raise UsageError("opencv-nlmeans is a x1 (restoration) model")
    if not h > 0:
        raise UsageError(f"opencv-nlmeans h must be > 0, not {h}")
    return OpenCVNLMeans(h, h_color)


def build_inpaint(method: str = "telea", radius: int = 3, scale: int = 1) -> OpenCVInpaint:
    """opencv-inpaint: method telea (default) or ns; radius = neighbourhood in pixels."""
    if int(scale) != 1:
        raise UsageError("opencv-inpaint is a x1 (restoration) model")
    return OpenCVInpaint(method, radius)
