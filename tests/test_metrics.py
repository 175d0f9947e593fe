"""metrics.py: Y conversion, PSNR, SSIM (checked against an independent cv2 implementation), borders."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from upscale_cli import metrics


def _smooth_image(seed: int, h: int = 48, w: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _ssim_cv2_reference(a: np.ndarray, b: np.ndarray) -> float:
    """The widely used filter2D formulation (as in BasicSR's calculate_ssim), 'valid' by cropping."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    k = cv2.getGaussianKernel(11, 1.5)
    window = k @ k.T
    f = lambda x: cv2.filter2D(x, -1, window)[5:-5, 5:-5]  # noqa: E731
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = f(a), f(b)
    var_a, var_b, cov = f(a * a) - mu_a**2, f(b * b) - mu_b**2, f(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def test_rgb_to_y_range_and_weights():
    black, white = np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 3), 255, np.uint8)
    assert np.allclose(metrics.rgb_to_y(black), 16.0)
    assert np.allclose(metrics.rgb_to_y(white), 235.0)
    red = np.zeros((1, 1, 3), np.uint8)
    red[..., 0] = 255
    assert metrics.rgb_to_y(red)[0, 0] == pytest.approx(16 + 65.481)
    grey = np.full((3, 3), 100, np.uint8)  # 2-D grey is treated as R = G = B
    assert np.allclose(metrics.rgb_to_y(grey), metrics.rgb_to_y(np.stack([grey] * 3, axis=2)))


def test_psnr_known_values_and_identity():
    a = np.zeros((8, 8, 3), np.uint8)
    assert metrics.psnr_rgb(a, a) == math.inf
    assert metrics.psnr_rgb(a, a + 1) == pytest.approx(10 * math.log10(255**2 / 1.0))
    # Y difference of a uniform +10 on all channels is 10 * 219/255
    assert metrics.psnr_y(a, a + 10) == pytest.approx(10 * math.log10(255**2 / (10 * 219 / 255) ** 2))


def test_border_is_ignored():
    hr = _smooth_image(0)
    sr = hr.copy()
    sr[:3], sr[:, -3:] = 0, 255  # damage only a 3-pixel frame
    assert metrics.psnr_y(sr, hr, border=3) == math.inf
    assert metrics.ssim_y(sr, hr, border=3) == pytest.approx(1.0)
    assert metrics.psnr_y(sr, hr, border=2) < 40


def test_ssim_matches_independent_implementation():
    hr = _smooth_image(1)
    noisy = np.clip(hr.astype(int) + np.random.default_rng(2).integers(-20, 21, hr.shape), 0, 255).astype(np.uint8)
    ya, yb = metrics.rgb_to_y(noisy)[4:-4, 4:-4], metrics.rgb_to_y(hr)[4:-4, 4:-4]
    assert metrics.ssim_y(noisy, hr, border=4) == pytest.approx(_ssim_cv2_reference(ya, yb), abs=1e-10)
    assert 0.0 < metrics.ssim_y(noisy, hr, border=4) < 1.0
    assert metrics.ssim_y(hr, hr) == pytest.approx(1.0)


def test_ssim_of_flat_images_has_closed_form():
    a, b = np.full((20, 20), 100.0), np.full((20, 20), 120.0)
    c1 = (0.01 * 255) ** 2
    assert metrics.ssim(a, b) == pytest.approx((2 * 100 * 120 + c1) / (100**2 + 120**2 + c1))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="differ in size"):
        metrics.psnr_y(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8))
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim_y(np.zeros((10, 30, 3), np.uint8), np.zeros((10, 30, 3), np.uint8))
    with pytest.raises(ValueError, match="too small"):
        metrics.psnr_y(np.zeros((6, 6, 3), np.uint8), np.zeros((6, 6, 3), np.uint8), border=3)


def test_lpips_is_optional(monkeypatch):
    monkeypatch.setattr(metrics, "lpips_unavailable_reason", lambda: "LPIPS not measured: not installed")
    a = _smooth_image(3)
    assert metrics.lpips_distance(a, a) is None


def test_tensor_psnr_is_the_numpy_protocol():
    """Training validation's PSNR (tensors in [0, 1]) is the benchmark's (uint8 arrays): one luma, one PSNR."""
    import torch

    from upscale_cli.train import validation

    rng = np.random.default_rng(5)
    hr = rng.integers(0, 256, (20, 18, 3), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-20, 21, hr.shape), 0, 255).astype(np.uint8)
    as_tensor = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].double() / 255.0  # noqa: E731
    assert metrics.psnr_y_tensor(as_tensor(sr), as_tensor(hr), 3) == pytest.approx(metrics.psnr_y(sr, hr, 3), abs=1e-9)
    y = metrics.rgb_to_y_tensor(as_tensor(hr))[0, 0].numpy()
    assert np.allclose(y, metrics.rgb_to_y(hr), atol=1e-9)
    assert validation.psnr_y is metrics.psnr_y_tensor
    assert metrics.psnr_y_tensor(as_tensor(hr), as_tensor(hr), 2) == math.inf
