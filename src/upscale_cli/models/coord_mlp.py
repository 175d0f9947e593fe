"""Coordinate MLPs f(x, y) -> colour, and the any-size "coord-mlp" upscaler built on them.

Coordinates are pixel centres in a continuous rectangle: the longer side of the fitted
image spans [-1, 1] and the shorter side [-a, a] with a = short / long, so frequencies are
the same along both axes. Pixel i of an n-pixel axis has centre ((2 i + 1) / n - 1) * half,
so any output grid over the same rectangle contains the input grid exactly (no half-pixel
shift): at x3, input pixel i sits on output pixel 3 i + 1.

Encodings:
  fourier  random Fourier features sin/cos(2 pi B v), B ~ N(0, sigma^2), then a ReLU MLP;
           sigma = freq_scale * long_side / 2, i.e. freq_scale is in cycles per input pixel,
           so one default suits every image size.
  siren    sine activations with the SIREN initialisation (Sitzmann et al. 2020), omega_0 = 30.
  none     the plain ReLU MLP on raw coordinates (the original write-up; for comparison).

Palette head (palette_size > 0, for images of a few flat colours: sprites, icons, pixel art):
the last layer gives one logit per colour of the image's own palette (a buffer, RGBA rows when
there is alpha) and the colour is softmax(palette_gain * logits) @ palette while training, and
the palette colour of the largest logit in eval mode (rendering). A sine network's output
ripples everywhere around a hard edge; through the palette, flat areas are one exact colour,
alpha is exactly 0 or 1 where the sprite's is, and edges are crisp contours whose positions
the fit places between the pixels.
Every parameter is initialised from a seeded torch.Generator, so a seed gives one network.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from upscale_cli.models.base import Between, KeywordsOf, ModelInfo, OneOf

ENCODINGS = ("fourier", "siren", "none")
SIREN_OMEGA_0 = 30.0  # SIREN's frequency factor for coordinates in [-1, 1]
OUTPUT_OFFSET = 0.5  # the last layer starts near mid-grey
PALETTE_GAIN = 30.0  # logit scale of the palette head: a 0.1 logit margin is 95% one colour of two
MAX_PALETTE = 256  # colours a palette head can have
SEEDS = Between(-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed takes
_NETWORK_LIMITS = {"encoding": OneOf(ENCODINGS), "hidden": Between(1, 1024), "depth": Between(1, 32),
                   "features": Between(1, 4096), "freq_scale": Between(0.0, 1000.0), "seed": SEEDS}
# Checked before anything is built (models.check_settings): a file saved by fit-single carries
# the fitted network's settings ("mlp") and the fit's (FitConfig fields, through **fit_settings).
SETTING_LIMITS = {
    "mlp": KeywordsOf("upscale_cli.models.coord_mlp:CoordMLP",
                      {**_NETWORK_LIMITS, "channels": Between(1, 4), "long_side": Between(1, 1 << 20),
                       "palette_size": Between(0, MAX_PALETTE), "palette_gain": Between(0.0, 1e4)}),
    "**": KeywordsOf("upscale_cli.fit_single:FitConfig",
                     {**_NETWORK_LIMITS, "steps": Between(1, 1_000_000), "lr": Between(0.0, 10.0),
                      "consistency_scale": Between(0.0, 16.0), "point_weight": Between(0.0, 1e6),
                      "consistency_weight": Between(0.0, 1e6), "target_psnr": Between(0.0, 200.0),
                      "palette_colours": Between(0, MAX_PALETTE)}),
}


def axis_centres(n: int, half_extent: float = 1.0, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Centres of pixels start..stop of an n-pixel axis spanning [-half_extent, half_extent]. (stop-start,)"""
    stop = n if stop is None else stop
    index = torch.arange(start, stop, dtype=torch.float64)
    return (((2.0 * index + 1.0) / n - 1.0) * half_extent).float()


def grid_coordinates(height: int, width: int, extent: tuple[float, float] = (1.0, 1.0),
                     rows: tuple[int, int] | None = None, cols: tuple[int, int] | None = None) -> torch.Tensor:
    """(x, y) centres of a height x width grid over the rectangle of half-sizes extent=(ex, ey).

    rows/cols pick a window [start, stop) of the grid; returns (R * Q, 2), row-major.
    """
    r0, r1 = rows or (0, height)
    q0, q1 = cols or (0, width)
    ys = axis_centres(height, extent[1], r0, r1)
    xs = axis_centres(width, extent[0], q0, q1)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1)


def _uniform(tensor: torch.Tensor, bound: float, generator: torch.Generator) -> None:
    with torch.no_grad():
        tensor.uniform_(-bound, bound, generator=generator)


class SineLayer(nn.Module):
    """sin(omega_0 (W v + b)) with SIREN's initialisation (first layer wider)."""

    def __init__(self, fan_in: int, fan_out: int, first: bool, generator: torch.Generator) -> None:
        super().__init__()
        self.linear = nn.Linear(fan_in, fan_out)
        bound = 1.0 / fan_in if first else math.sqrt(6.0 / fan_in) / SIREN_OMEGA_0
        _uniform(self.linear.weight, bound, generator)
        _uniform(self.linear.bias, 1.0 / math.sqrt(fan_in), generator)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return torch.sin(SIREN_OMEGA_0 * self.linear(v))


class FourierFeatures(nn.Module):
    """(N, 2) -> (N, 2 F): [sin(2 pi v B), cos(2 pi v B)] with a fixed random B (a saved buffer)."""

    def __init__(self, features: int, sigma: float, generator: torch.Generator) -> None:
        super().__init__()
        self.register_buffer("B", torch.randn(2, features, generator=generator) * sigma)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        phase = (2.0 * math.pi) * (v @ self.B)
        return torch.cat([torch.sin(phase), torch.cos(phase)], dim=1)


def _relu_linear(fan_in: int, fan_out: int, generator: torch.Generator) -> nn.Linear:
    layer = nn.Linear(fan_in, fan_out)
    _uniform(layer.weight, math.sqrt(6.0 / fan_in), generator)  # He uniform, for ReLU
    _uniform(layer.bias, 1.0 / math.sqrt(fan_in), generator)
    return layer


class CoordMLP(nn.Module):
    """f(x, y) -> C colours. (N, 2) -> (N, C); the settings (see .settings) rebuild it.

    palette_size > 0 gives the palette head (module docstring); set `.palette` (K, C) before fitting.
    """

    def __init__(self, channels: int = 3, encoding: str = "fourier", hidden: int = 128, depth: int = 3,
                 features: int = 128, freq_scale: float = 0.1, long_side: int = 64,
                 extent: tuple[float, float] | list[float] = (1.0, 1.0), seed: int = 0,
                 palette_size: int = 0, palette_gain: float = PALETTE_GAIN) -> None:
        super().__init__()
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}; choose from {', '.join(ENCODINGS)}")
        self.settings = dict(channels=channels, encoding=encoding, hidden=hidden, depth=depth, features=features,
                             freq_scale=freq_scale, long_side=long_side, extent=[float(e) for e in extent], seed=seed)
        if palette_size:
            self.settings.update(palette_size=palette_size, palette_gain=float(palette_gain))
        self.channels = channels
        self.extent = (float(extent[0]), float(extent[1]))
        self.palette_gain = float(palette_gain)
        generator = torch.Generator().manual_seed(seed)
        self.body = self._body(encoding, hidden, depth, features, freq_scale * long_side / 2.0, generator)
        # (K, C), saved with the weights; None (and not saved) without a palette head
        self.register_buffer("palette", torch.zeros(palette_size, channels) if palette_size else None)
        self.head = nn.Linear(hidden, palette_size or channels)
        _uniform(self.head.weight, math.sqrt(6.0 / hidden) / SIREN_OMEGA_0 if encoding == "siren"
                 else 1.0 / math.sqrt(hidden), generator)
        _uniform(self.head.bias, 1.0 / math.sqrt(hidden), generator)

    @staticmethod
    def _body(encoding: str, hidden: int, depth: int, features: int, sigma: float,
              generator: torch.Generator) -> nn.Sequential:
        if encoding == "siren":
            layers = [SineLayer(2, hidden, True, generator)]
            layers += [SineLayer(hidden, hidden, False, generator) for _ in range(depth - 1)]
            return nn.Sequential(*layers)
        layers: list[nn.Module] = []
        fan_in = 2
        if encoding == "fourier":
            layers.append(FourierFeatures(features, sigma, generator))
            fan_in = 2 * features
        for _ in range(depth):
            layers += [_relu_linear(fan_in, hidden, generator), nn.ReLU()]
            fan_in = hidden
        return nn.Sequential(*layers)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:  # (N, 2) -> (N, C)
        out = self.head(self.body(coords))
        if self.palette is None:
            return out + OUTPUT_OFFSET
        if self.training:  # differentiable: a mixture of the palette's colours
            return torch.softmax(out * self.palette_gain, dim=1) @ self.palette
        return self.palette[out.argmax(dim=1)]  # rendering: one palette colour per point


class CoordMLPUpscaler(nn.Module):
    """Any-size upscaler: forward(x (1, C, H, W), size=(h, w)) fits an MLP to x and renders it.

    Built with `mlp=` settings (a model saved by `fit-single --save-model`), it holds that
    fitted MLP and renders it at the asked size instead, whatever x is.
    """

    def __init__(self, fit_settings: dict, mlp: dict | None = None) -> None:
        super().__init__()
        from upscale_cli.fit_single import FitConfig

        self.config = FitConfig.for_encoding(**fit_settings)
        self.mlp = CoordMLP(**mlp) if mlp is not None else None
        channels = self.mlp.channels if self.mlp is not None else 3
        self.info = ModelInfo(scale=None, in_channels=min(channels, 3), supports_half=False,
                              receptive_field=0, fits_at_runtime=True)  # the engine keeps autograd on

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        from upscale_cli.fit_single import fit, render

        height, width = int(size[0]), int(size[1])
        if self.mlp is not None:
            return render(self.mlp, height, width).to(x.device).expand(x.shape[0], -1, -1, -1)
        outputs = []
        with torch.inference_mode(False), torch.enable_grad():
            for image in x.detach().float().cpu().clone().split(1, dim=0):  # (1, C, H, W) each
                result = fit(image, config=self.config, target_size=(height, width))
                outputs.append(render(result.mlp, height, width))
        return torch.cat(outputs, dim=0).to(device=x.device, dtype=x.dtype)


def build_coord_mlp_upscaler(mlp: dict | None = None, source: dict | None = None, **fit_settings) -> CoordMLPUpscaler:
    """Registry builder "coord-mlp": keyword FitConfig fields; `mlp` = a fitted CoordMLP's settings
    (a file saved by fit-single), `source` = what that file says about its image (unused here)."""
    return CoordMLPUpscaler(fit_settings, mlp)
