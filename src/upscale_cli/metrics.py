"""Image quality metrics under the standard SR evaluation protocol (see shared/README.md).

Inputs are uint8 numpy images (H, W, 3) RGB (or (H, W) / (H, W, 1) grey), the SR output
already rounded to 8 bits. PSNR and SSIM are measured on the BT.601 luma channel Y in
[16, 235], with `border` pixels cropped from every side (border = scale for SR).
SSIM follows Wang et al. 2004 and the MATLAB `ssim_index`: an 11x11 Gaussian window with
sigma 1.5, K1 = 0.01, K2 = 0.03, data range 255, 'valid' filtering (no padding), mean of
the SSIM map. Pure numpy: the Gaussian filter is a separable 'valid' convolution.
The same luma and PSNR on torch tensors (`rgb_to_y_tensor`, `psnr_y_tensor`) serve training's
validation; torch is imported only when they are called.
LPIPS is optional: only when the `lpips` package and its weights are already installed.
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np

DATA_RANGE = 255.0  # 8-bit images
SSIM_WINDOW = 11  # pixels
SSIM_SIGMA = 1.5  # pixels
SSIM_K1, SSIM_K2 = 0.01, 0.03
# ITU-R BT.601 luma for R, G, B in [0, 255] -> Y in [16, 235]
Y_OFFSET = 16.0
Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1) or (H, W, 3) -> (H, W, 3) float64 in [0, 255]."""
    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3):
        raise ValueError(f"expected an (H, W), (H, W, 1) or (H, W, 3) image, got shape {a.shape}")
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> (H, W) float64 BT.601 luma in [16, 235] (not rounded)."""
    return Y_OFFSET + _as_rgb(image) @ Y_WEIGHTS


def crop_border(image: np.ndarray, border: int) -> np.ndarray:
    """Drop `border` pixels from every side of an (H, W, ...) array."""
    if border <= 0:
        return image
    if image.shape[0] <= 2 * border or image.shape[1] <= 2 * border:
        raise ValueError(f"image {image.shape[1]}x{image.shape[0]} too small for a {border}-pixel border crop")
    return image[border:-border, border:-border]


def _check_pair(sr: np.ndarray, hr: np.ndarray) -> None:
    if sr.shape[:2] != hr.shape[:2]:
        raise ValueError(f"images differ in size: {sr.shape[1]}x{sr.shape[0]} vs {hr.shape[1]}x{hr.shape[0]}")


def psnr_from_mse(mse: float, data_range: float = DATA_RANGE) -> float:
    """PSNR in dB of a mean squared error (inf when it is 0)."""
    return math.inf if mse == 0.0 else 10.0 * math.log10(data_range**2 / mse)


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = DATA_RANGE) -> float:
    """PSNR in dB of two same-shaped arrays (inf when identical)."""
    return psnr_from_mse(float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)), data_range)


def psnr_y(sr: np.ndarray, hr: np.ndarray, border: int = 0) -> float:
    """PSNR on the Y channel with `border` pixels cropped."""
    _check_pair(sr, hr)
    return psnr(crop_border(rgb_to_y(sr), border), crop_border(rgb_to_y(hr), border))


def psnr_rgb(sr: np.ndarray, hr: np.ndarray, border: int = 0) -> float:
    """PSNR over the R, G and B channels together with `border` pixels cropped."""
    _check_pair(sr, hr)
    return psnr(crop_border(_as_rgb(sr), border), crop_border(_as_rgb(hr), border))


# --- the same on tensors (training's validation) ---------------------------------------


def quantize8(x):
    """A float tensor in [0, 1] rounded to the 256 levels of an 8-bit image (still in [0, 1])."""
    return x.clamp(0.0, 1.0).mul(255.0).round().div(255.0)


def rgb_to_y_tensor(x):
    """(B, 3, H, W) RGB in [0, 1] -> (B, 1, H, W) BT.601 luma in [0, 255] (16..235)."""
    import torch

    w = torch.tensor(Y_WEIGHTS.tolist(), dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return Y_OFFSET + (x * DATA_RANGE * w).sum(dim=1, keepdim=True)


def psnr_y_tensor(sr, hr, border: int) -> float:
    """Protocol PSNR of one pair (1, 3, H, W) in [0, 1]: both rounded to 8 bits, Y channel,
    `border` pixels cropped from each side."""
    y_sr, y_hr = rgb_to_y_tensor(quantize8(sr).double()), rgb_to_y_tensor(quantize8(hr).double())
    if border:
        y_sr, y_hr = y_sr[..., border:-border, border:-border], y_hr[..., border:-border, border:-border]
    return psnr_from_mse(float(((y_sr - y_hr) ** 2).mean()))


@lru_cache(maxsize=4)
def gaussian_kernel(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian; its outer product is MATLAB's fspecial('gaussian', size, sigma)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    k = np.exp(-(x**2) / (2.0 * sigma**2))
    return k / k.sum()


def _filter_valid(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of (H, W) with kernel x kernel: (H-k+1, W-k+1)."""
    n = kernel.size
    h, w = image.shape
    rows = sum(kernel[i] * image[i : h - n + 1 + i, :] for i in range(n))
    return sum(kernel[j] * rows[:, j : w - n + 1 + j] for j in range(n))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = DATA_RANGE) -> float:
    """Mean SSIM of two (H, W) float images (Wang et al. 2004, Gaussian window, 'valid')."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if min(a.shape) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {a.shape[1]}x{a.shape[0]}")
    k = gaussian_kernel()
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu_a, mu_b = _filter_valid(a, k), _filter_valid(b, k)
    var_a = _filter_valid(a * a, k) - mu_a**2
    var_b = _filter_valid(b * b, k) - mu_b**2
    cov = _filter_valid(a * b, k) - mu_a * mu_b
    num = (2.0 * mu_a * mu_b + c1) * (2.0 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def ssim_y(sr: np.ndarray, hr: np.ndarray, border: int = 0) -> float:
    """SSIM on the Y channel with `border` pixels cropped."""
    _check_pair(sr, hr)
    return ssim(crop_border(rgb_to_y(sr), border), crop_border(rgb_to_y(hr), border))


# --- LPIPS (optional) -------------------------------------------------------------------

ALEXNET_CHECKPOINT = "alexnet-owt-7be5be79.pth"  # what lpips' AlexNet backbone loads via torchvision


def lpips_unavailable_reason() -> str | None:
    """None when LPIPS can run offline; else why not (one line for the report)."""
    try:
        import lpips  # noqa: F401
    except ImportError:
        return "LPIPS not measured: the `lpips` package is not installed"
    import torch

    checkpoint = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_CHECKPOINT
    if not checkpoint.is_file():
        return f"LPIPS not measured: AlexNet weights not cached ({checkpoint})"
    return None


@lru_cache(maxsize=1)
def _lpips_model():
    import lpips

    return lpips.LPIPS(net="alex", verbose=False).eval()


def lpips_distance(sr: np.ndarray, hr: np.ndarray, border: int = 0) -> float | None:
    """LPIPS (AlexNet) between two RGB uint8 images, or None when unavailable. Lower is better."""
    if lpips_unavailable_reason() is not None:
        return None
    import torch

    _check_pair(sr, hr)

    def to_tensor(image: np.ndarray) -> torch.Tensor:  # (1, 3, H, W) in [-1, 1]
        a = crop_border(_as_rgb(image), border)
        return torch.from_numpy(a).permute(2, 0, 1)[None].float() / 127.5 - 1.0

    with torch.no_grad():
        return float(_lpips_model()(to_tensor(sr), to_tensor(hr)).item())
