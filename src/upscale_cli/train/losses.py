"""Training losses: pixel (L1 / MSE), VGG-16 feature and gram-matrix losses. Validation's
Y-channel PSNR is the protocol's own, on tensors (metrics.psnr_y_tensor, re-exported here as
`psnr_y` for the training loop).

The VGG-16 network is built here layer by layer (torchvision's `features` layout), so its
weights can come from a plain state-dict file (`--vgg-weights`) without torchvision; when
torchvision is installed and has the ImageNet weights in its cache, those are used.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from upscale_cli.errors import TrainingError

# torchvision's VGG-16 `features`: numbers are conv widths, "M" a 2x2 max pool
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
VGG_FEATURE_LAYERS = (3, 8, 15, 22)  # relu1_2, relu2_2, relu3_3, relu4_3 (indices in `features`)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_VGG_KEY = re.compile(r"(?:features\.)?((\d+)\.(?:weight|bias))")  # a `features` tensor's name: (N.weight, N)


def pixel_loss(sr: torch.Tensor, hr: torch.Tensor, kind: str = "l1", mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute (l1) or squared (mse) error; with a mask (B, 1, H, W), the mean over the
    pixels it marks (1) and the channels only (0, with a grad, when it marks none)."""
    if kind == "l1":
        error = (sr - hr).abs()
    elif kind == "mse":
        error = (sr - hr).square()
    else:
        raise TrainingError(f"unknown pixel loss {kind!r}; choose l1 or mse")
    if mask is None:
        return error.mean()
    weight = mask.expand_as(error)
    return (error * weight).sum() / weight.sum().clamp_min(1.0)


def build_vgg16_features(upto: int = max(VGG_FEATURE_LAYERS)) -> nn.Sequential:
    """VGG-16 `features` up to layer `upto` (inclusive), torchvision's module indices."""
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG16_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU(inplace=False)]
            channels = int(item)
        if len(layers) > upto:
            break
    return nn.Sequential(*layers[: upto + 1])


def load_vgg16_features(weights: str | Path | None) -> nn.Sequential | None:
    """VGG-16 features with ImageNet weights from a file (a state dict with `features.N.*` or
    `N.*` keys, .pth or .safetensors), else from torchvision's cache; None when neither has them."""
    net = build_vgg16_features()
    state = _vgg_state_from_file(Path(weights)) if weights else _vgg_state_from_torchvision()
    if state is None:
        return None
    # torchvision's names: features.N.weight / .bias (or N.weight); the classifier's are not needed
    state = {match[1]: value for key, value in state.items()
             if (match := _VGG_KEY.fullmatch(str(key))) and int(match[2]) < len(net)}
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as err:
        raise TrainingError(f"VGG-16 weights do not fit (vgg_weights): {str(err).strip().splitlines()[0]}",
                            path=weights) from None
    return net.eval().requires_grad_(False)


def _vgg_state_from_file(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors or .pth file, read by the loader every weights file goes
    through: a pickle of objects is refused in one line, never unpickled."""
    from upscale_cli.errors import WeightsError
    from upscale_cli.loader import read_weights

    if not path.is_file():
        raise TrainingError("no such file (vgg_weights)", path=path)
    try:
        state, _ = read_weights(path)
    except WeightsError as err:
        raise TrainingError(f"{err.message} (vgg_weights)", path=path) from None
    return state


def _vgg_state_from_torchvision() -> dict[str, torch.Tensor] | None:
    """ImageNet VGG-16 weights only when torchvision is installed and already has them cached
    (training must not start a 500 MB download behind the user's back)."""
    try:
        from torchvision.models import VGG16_Weights
    except ImportError:
        return None
    url = VGG16_Weights.IMAGENET1K_V1.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if not cached.is_file():
        return None
    return torch.load(str(cached), map_location="cpu", weights_only=True)


def gram_matrix(feat: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C) normalised by C*H*W."""
    b, c, h, w = feat.shape
    f = feat.reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


class PerceptualLoss(nn.Module):
    """VGG-16 feature (L1 between relu activations) and gram-matrix (style) losses."""

    def __init__(self, vgg: nn.Sequential, feature_weight: float, gram_weight: float) -> None:
        super().__init__()
        self.vgg = vgg
        self.feature_weight, self.gram_weight = feature_weight, gram_weight
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats, x = [], (x - self.mean) / self.std
        for index, layer in enumerate(self.vgg):
            x = layer(x)
            if index in VGG_FEATURE_LAYERS:
                feats.append(x)
        return feats

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        loss = sr.new_zeros(())
        with torch.no_grad():
            target = self._features(hr)
        for f_sr, f_hr in zip(self._features(sr), target):
            if self.feature_weight:
                loss = loss + self.feature_weight * F.l1_loss(f_sr, f_hr)
            if self.gram_weight:
                loss = loss + self.gram_weight * F.l1_loss(gram_matrix(f_sr), gram_matrix(f_hr))
        return loss
