"""The baseline models: interpolation (Pillow-exact) and OpenCV dnn_superres (OpenCV-exact).

The OpenCV tests run on a graph written by conftest.py (everywhere) and on the published ESPCN x2
file (when ../shared is beside the checkout)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from upscale_cli.errors import UnsupportedScaleError, WeightsError
from upscale_cli.models import build_model
from upscale_cli.models.interpolate import build_interpolate
from upscale_cli.models.opencv_sr import build_opencv_sr

from http_server import NEEDS_OPENCV_WEIGHTS, OPENCV_WEIGHTS_DIR
from upscale_cli.models.descriptor import AnySize

PUBLISHED_ESPCN_X2 = OPENCV_WEIGHTS_DIR / "ESPCN_x2.pb"
PIL_FILTERS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}


@pytest.fixture(params=["generated", "published"])
def espcn_x2(request) -> str:
    """An ESPCN x2 graph: the one conftest.py writes, or the published file."""
    if request.param == "generated":
        return str(request.getfixturevalue("opencv_graph"))
    if not PUBLISHED_ESPCN_X2.is_file():
        pytest.skip(NEEDS_OPENCV_WEIGHTS)
    return str(PUBLISHED_ESPCN_X2)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255.0


def _uint8(x: torch.Tensor) -> np.ndarray:
    return (x[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


@pytest.mark.parametrize("method", list(PIL_FILTERS))
@pytest.mark.parametrize("size", [(44, 62), (13, 9)])  # up (x~2.9) and down
def test_interpolate_matches_pillow(method, size):
    # 15x21 (odd sides) so that no nearest-neighbour source position is an exact tie,
    # where Pillow's fixed-point arithmetic picks the lower pixel
    a = _image(15, 21)
    model = build_interpolate(method=method)
    ours = _uint8(model(_tensor(a), size=size)).astype(int)
    pillow = np.asarray(Image.fromarray(a).resize((size[1], size[0]), PIL_FILTERS[method])).astype(int)
    assert ours.shape == pillow.shape
    assert np.abs(ours - pillow).max() <= 1  # within 1/255: Pillow rounds to 8 bits between its passes


def test_interpolate_info_and_registry():
    model = build_model("interpolate", method="bicubic")
    assert isinstance(model.info, AnySize) and not model.info.tileable and not model.info.supports_half
    assert model.info.receptive_field == 0
    with pytest.raises(ValueError):
        build_interpolate(method="sinc")


def test_opencv_sr_equals_dnn_superres_exactly(espcn_x2):
    a = _image(20, 27, seed=1)
    model = build_opencv_sr("espcn", 2, espcn_x2)
    sr = cv2.dnn_superres.DnnSuperResImpl_create()
    sr.readModel(espcn_x2)
    sr.setModel("espcn", 2)
    expected = sr.upsample(np.ascontiguousarray(a[:, :, ::-1]))[:, :, ::-1]
    out = model(_tensor(a))
    assert out.shape == (1, 3, 40, 54) and out.dtype == torch.float32
    assert np.array_equal(_uint8(out), expected)


def test_opencv_sr_greyscale_and_batch(espcn_x2):
    grey = _image(12, 10, seed=2)[:, :, 0]
    model = build_opencv_sr("espcn", 2, espcn_x2)
    out = model(torch.from_numpy(grey)[None, None].float() / 255.0)
    assert out.shape == (1, 1, 24, 20)
    sr = cv2.dnn_superres.DnnSuperResImpl_create()
    sr.readModel(espcn_x2)
    sr.setModel("espcn", 2)
    expected = sr.upsample(np.repeat(grey[:, :, None], 3, axis=2)).astype(np.float32).mean(axis=2) / 255.0
    assert torch.allclose(out[0, 0], torch.from_numpy(expected), atol=1e-6)
    batch = torch.rand(2, 3, 8, 9)
    assert model(batch).shape == (2, 3, 16, 18)


def test_opencv_sr_info_and_errors(tmp_path, espcn_x2):
    model = build_model("opencv-espcn", algo="espcn", scale=2, model_path=espcn_x2)
    assert model.info.scale == 2 and model.info.device_bound == "cpu" and not model.info.supports_half
    assert model.info.receptive_field > 0
    with pytest.raises(UnsupportedScaleError, match="x3"):
        build_opencv_sr("lapsrn", 3, espcn_x2)
    bad = tmp_path / "broken.pb"
    bad.write_bytes(b"not a graph")
    with pytest.raises(WeightsError):
        build_opencv_sr("espcn", 2, str(bad))
