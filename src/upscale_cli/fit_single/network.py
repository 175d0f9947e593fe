"""The coordinate network of fit-single, and rendering it at any size.

The network (CoordMLP; the "coord-mlp" architecture in models/coord_mlp.py wraps it, fitting.py's
fit and this module's render, which is why the network lives here, below both):
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

`render` evaluates a network on any grid over its rectangle, in chunks of rows so an 8192 px
output needs only a few chunks of memory.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from upscale_cli.choices import ENCODINGS
from upscale_cli.errors import UsageError

RENDER_CHUNK = 65_536  # output pixels per MLP call when rendering (fewer for wide networks: render_chunk)
RENDER_CHUNK_BYTES = 64 * 2**20  # layer outputs alive during one rendering call, at most (bytes)
RENDER_LIVE_LAYERS = 3  # hidden-layer outputs alive at once (a layer's input, its linear output, its activation)
SIREN_OMEGA_0 = 30.0  # SIREN's frequency factor for coordinates in [-1, 1]
OUTPUT_OFFSET = 0.5  # the last layer starts near mid-grey
PALETTE_GAIN = 30.0  # logit scale of the palette head: a 0.1 logit margin is 95% one colour of two
MAX_PALETTE = 256  # colours a palette head can have


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


def image_extent(height: int, width: int) -> tuple[float, float]:
    """Half-sizes (x, y) of the rectangle: the longer side spans [-1, 1]."""
    long_side = max(height, width)
    return width / long_side, height / long_side


def render_chunk(mlp: CoordMLP) -> int:
    """Pixels per MLP call when rendering: RENDER_CHUNK, fewer for wide networks, so that the
    layer outputs of one call stay within RENDER_CHUNK_BYTES."""
    settings = mlp.settings
    features = settings["features"] if settings["encoding"] == "fourier" else 0
    per_pixel = 4 * (RENDER_LIVE_LAYERS * settings["hidden"] + 3 * 2 * features)  # float32 bytes
    return max(1, min(RENDER_CHUNK, RENDER_CHUNK_BYTES // per_pixel))


def render(mlp: CoordMLP, height: int, width: int, chunk: int | None = None,
           rows: tuple[int, int] | None = None, cols: tuple[int, int] | None = None) -> torch.Tensor:
    """The MLP on a height x width grid over its rectangle -> (1, C, R, Q), unclamped.

    Whole rows at a time, about `chunk` pixels per call (default render_chunk(mlp)), each
    written into the one output tensor; rows/cols pick a window of the grid.
    """
    if height < 1 or width < 1:
        raise UsageError(f"cannot render a {width}x{height} image")
    r0, r1 = rows or (0, height)
    q0, q1 = cols or (0, width)
    rows_per_chunk = max(1, (chunk or render_chunk(mlp)) // max(1, q1 - q0))
    device = next(mlp.parameters()).device
    out = torch.empty(1, mlp.channels, r1 - r0, q1 - q0)  # (1, C, R, Q): filled in place, no second copy
    with torch.no_grad():
        for start in range(r0, r1, rows_per_chunk):
            stop = min(r1, start + rows_per_chunk)
            coords = grid_coordinates(height, width, mlp.extent, (start, stop), (q0, q1)).to(device)
            out[0, :, start - r0:stop - r0] = mlp(coords).T.reshape(mlp.channels, stop - start, q1 - q0).cpu()
    return out


def render_image(mlp: CoordMLP, height: int, width: int, colour_channels: int,
                 chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Render and split: (colour (1, c, h, w), alpha (1, 1, h, w) or None), clamped to [0, 1]."""
    out = render(mlp, height, width, chunk).clamp_(0.0, 1.0)
    if out.shape[1] == colour_channels:
        return out, None
    return out[:, :colour_channels], out[:, colour_channels:colour_channels + 1]
