"""Fit a coordinate MLP to the pixels of one image, and render it at any size.

No dataset: `fit` trains f(x, y) -> colour (CoordMLP, see "The network" below) on one image's pixels,
`render` evaluates it on any grid over the same rectangle, in chunks of rows so an 8192 px
output needs only a few chunks of memory.

The loss has two terms:
  point        the MLP at the input's pixel centres equals the input pixels
               (a random batch of POINT_BATCH pixels per step when the image is larger).
  consistency  (when a target size is given and config.consistency) the output rendered at
               the target size, downscaled with the Pillow-exact antialiased bicubic kernel
               of upscale_cli.resize, equals the input: the result is an image whose
               downscale is the input, not just any smooth surface through its pixels.
Rendering the whole target every step would cost (target pixels) per step, so the term works
on a consistency grid of at most `consistency_scale` (default 1.5) times the input per axis,
over the same rectangle: the antialiased bicubic downscale is the same continuous kernel (2
input pixels of support) whatever the grid, and the MLP is continuous, so a coarser grid
constrains the downscale of the x4 output almost as well (measured on T91 crops with a x2
grid: the x4 output's resize() matches the input to 40 dB and more) at a fraction of the cost
(x1.5 vs x2 costs 0.05 dB on T91 and saves a fifth of the fit time). Each step takes a window
of whole input pixels (the whole image when its grid window has at most CONSISTENCY_POINTS
pixels, else a random window), renders just the grid pixels the kernel reads for it (the
window plus a 2-pixel margin, clipped at the image edges) and downscales them with the kernel's own weight matrices: each window
pixel gets exactly the value resize(render(grid), input size) gives it, including Pillow's
clipping to [0, 1] between the width and the height pass (its gradient passes straight through).

Images of at most `palette_colours` (default 32) distinct colours, alpha included (sprites,
icons, pixel art), are fitted through a palette head (see "The network" below): the network picks
among the image's own colours, so flat areas render as one exact colour, alpha as exactly the
sprite's, and edges as crisp contours. Without it a sine network ripples around every hard
edge: swirls in flat areas and alpha speckles where the background should be 0, measured on
generated 64x64 sprites. Two things change with the palette, because the render switches
colour anywhere between the points the loss sees: the point term samples each pixel at a
random spot within POINT_JITTER of its centre (a sprite's pixel is a flat square of its colour,
not a point sample), and the consistency grid moves by a random sub-cell offset every step, so
the whole continuous rendering is held to the downscale, not one fixed grid of it.

A hard edge cannot downscale exactly back: Pillow's bicubic kernel has negative lobes, so the
only images whose downscale is a 0-to-1 step overshoot [0, 1] beside it, and the written image
is clipped there. On hard-edged sprites the render downscaled back is about 30 dB from the
input (nearest-neighbour: 31 dB; the best any clipped image reaches, by direct optimisation:
34 dB); on photos it matches closely (35-37 dB on 96x96 T91 crops at x4).

Defaults (chosen on synthetic sprites and T91 crops, never on the benchmark sets): SIREN, 3 x 64,
300 steps of Adam at 2e-3 with a cosine decay, point and consistency terms weighted 1:1. SIREN
fits hard-edged sprites (35 dB at the pixels; the Fourier ReLU MLP reaches 30 dB) and beat
bicubic on T91 crops at x4 by 0.6 dB (Fourier features: 0.3 dB); see FitConfig.for_encoding.

The network (CoordMLP; the "coord-mlp" architecture in models/coord_mlp.py wraps it and this
module's fit and render, which is why the network lives here, below both):
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

import dataclasses
import json
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from upscale_cli import metrics
from upscale_cli.errors import ImageTooLargeError, UsageError, WeightsError
from upscale_cli.resize import _axis_taps

ARCH = "coord-mlp"
MAX_FIT_PIXELS = 1_048_576  # 1 megapixel: beyond this a one-image fit takes too long on a CPU
CONSISTENCY_POINTS = 20_000  # grid pixels rendered per step, at most: whole images up to ~90 x 90 at x1.5
KERNEL_MARGIN = 2  # input pixels of context the x-s bicubic downscale reads on each side
POINT_BATCH = 8192  # input pixels per step for the point term
DEFAULT_SCALE = 4.0  # output scale when no size is given
RENDER_CHUNK = 65_536  # output pixels per MLP call when rendering
FINAL_LR_FRACTION = 0.05  # cosine schedule ends at lr * this
FIT_THREADS = 1  # intra-op threads while fitting (see _threads)
PSNR_EVERY = 10  # steps between live PSNR updates (and --target-psnr checks)
PALETTE_COLOURS = 32  # images with at most this many distinct colours get the palette head
POINT_JITTER = 0.25  # input pixels: palette fits sample each pixel this far around its centre
MIN_MSE = 1e-12  # a perfect fit reads 120 dB, not inf
ENCODINGS = ("fourier", "siren", "none")
SIREN_OMEGA_0 = 30.0  # SIREN's frequency factor for coordinates in [-1, 1]
OUTPUT_OFFSET = 0.5  # the last layer starts near mid-grey
PALETTE_GAIN = 30.0  # logit scale of the palette head: a 0.1 logit margin is 95% one colour of two
MAX_PALETTE = 256  # colours a palette head can have


# ---- the network -----------------------------------------------------------------------------

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


@dataclass(frozen=True)
class FitConfig:
    """Settings of one fit. The defaults are chosen on synthetic and T91 images (see the report)."""

    encoding: str = "siren"
    hidden: int = 64  # units per hidden layer
    depth: int = 3  # hidden layers
    features: int = 64  # Fourier features (sin and cos each)
    freq_scale: float = 0.1  # std of the Fourier frequencies, in cycles per input pixel
    steps: int = 300
    lr: float = 2e-3
    seed: int = 0
    consistency: bool = True  # used only when fit() is given a target size
    consistency_scale: float = 1.5  # the consistency grid is at most this many times the input
    point_weight: float = 1.0  # with consistency on; the point term alone otherwise
    consistency_weight: float = 1.0
    target_psnr: float | None = None  # stop once the fit reproduces the input this well (dB)
    palette_colours: int = PALETTE_COLOURS  # palette head for images of at most this many colours; 0 = never

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise UsageError(f"unknown encoding {self.encoding!r}; choose from {', '.join(ENCODINGS)}")
        for name in ("hidden", "depth", "features", "steps"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name} must be at least 1")
        if not self.lr > 0 or not self.freq_scale > 0:
            raise UsageError("--lr and --freq-scale must be positive")
        if not 0 <= self.palette_colours <= MAX_PALETTE:
            raise UsageError(f"--palette-colours must be 0 to {MAX_PALETTE}")

    @classmethod
    def for_encoding(cls, encoding: str = "siren", **changes) -> "FitConfig":
        """The defaults tuned for an encoding, then the changes."""
        return cls(**{"encoding": encoding, **ENCODING_DEFAULTS.get(encoding, {}), **changes})


# The field defaults are SIREN's; the ReLU networks want a larger rate and a lighter point term.
ENCODING_DEFAULTS: dict[str, dict] = {"siren": {}, "fourier": {"lr": 1e-2, "point_weight": 0.1},
                                      "none": {"lr": 5e-3, "point_weight": 0.1}}


@dataclass(frozen=True)
class FitStats:
    steps: int
    seconds: float
    psnr: float  # dB: the fitted MLP at the input's pixel centres (clamped) vs the input
    stopped_early: bool  # reached config.target_psnr


@dataclass
class FitResult:
    mlp: CoordMLP
    stats: FitStats


StepCallback = Callable[[int, int, float], None]  # (step, total steps, live pixel-centre PSNR dB)


def psnr_from_mse(mse: float) -> float:
    """PSNR (dB) of values in [0, 1], metrics.py's, capped at 120 dB so the live figure stays finite."""
    return metrics.psnr_from_mse(max(mse, MIN_MSE), data_range=1.0)


def check_fit_size(height: int, width: int) -> None:
    """Refuse images a one-image fit cannot handle in sensible time."""
    if height * width > MAX_FIT_PIXELS:
        side = int(math.sqrt(MAX_FIT_PIXELS * width / height))
        raise ImageTooLargeError(
            f"too large to fit ({width} x {height}); downscale it first (e.g. to {side} px wide) or use -m unet"
        )


def output_size(height: int, width: int, size: int | None = None, out_width: int | None = None,
                out_height: int | None = None, scale: float | None = None) -> tuple[int, int]:
    """(h, w) to render: --size (longer side, aspect kept), --width/--height, or -x scale (default 4)."""
    if size is not None and (out_width is not None or out_height is not None or scale is not None) or \
            scale is not None and (out_width is not None or out_height is not None):
        raise UsageError("give one of --size, --width/--height or -x")
    for name, value in (("--size", size), ("--width", out_width), ("--height", out_height), ("-x", scale)):
        if value is not None and not value > 0:
            raise UsageError(f"{name} must be positive: cannot render a zero-size image")
    if size is not None:
        long_side = max(height, width)
        target = (round(height * size / long_side), round(width * size / long_side))
    elif out_width is not None or out_height is not None:
        target = (out_height or round(height * out_width / width), out_width or round(width * out_height / height))
    else:
        factor = DEFAULT_SCALE if scale is None else scale
        target = (round(height * factor), round(width * factor))
    if min(target) < 1:
        raise UsageError(f"the target size {target[1]}x{target[0]} is empty")
    return max(1, target[0]), max(1, target[1])


def image_extent(height: int, width: int) -> tuple[float, float]:
    """Half-sizes (x, y) of the rectangle: the longer side spans [-1, 1]."""
    long_side = max(height, width)
    return width / long_side, height / long_side


def build_mlp(channels: int, height: int, width: int, config: FitConfig,
              palette: torch.Tensor | None = None) -> CoordMLP:
    """The network for a fit; with a palette (K, C) it gets the palette head holding those colours."""
    mlp = CoordMLP(channels=channels, encoding=config.encoding, hidden=config.hidden, depth=config.depth,
                   features=config.features, freq_scale=config.freq_scale, long_side=max(height, width),
                   extent=image_extent(height, width), seed=config.seed,
                   palette_size=0 if palette is None else palette.shape[0])
    if palette is not None:
        mlp.palette.copy_(palette)
    return mlp


def image_palette(pixels: torch.Tensor, max_colours: int) -> torch.Tensor | None:
    """The distinct colours (K, C) of (1, C, H, W) pixels when there are at most max_colours, else None."""
    if max_colours < 1:
        return None
    colours = torch.unique(pixels[0].reshape(pixels.shape[1], -1).T, dim=0)
    return colours if colours.shape[0] <= max_colours else None


# ---- rendering -------------------------------------------------------------------------------

def render(mlp: CoordMLP, height: int, width: int, chunk: int = RENDER_CHUNK,
           rows: tuple[int, int] | None = None, cols: tuple[int, int] | None = None) -> torch.Tensor:
    """The MLP on a height x width grid over its rectangle -> (1, C, R, Q), unclamped.

    Whole rows at a time, about `chunk` pixels per call; rows/cols pick a window of the grid.
    """
    if height < 1 or width < 1:
        raise UsageError(f"cannot render a {width}x{height} image")
    r0, r1 = rows or (0, height)
    q0, q1 = cols or (0, width)
    rows_per_chunk = max(1, chunk // max(1, q1 - q0))
    device = next(mlp.parameters()).device
    pieces = []
    with torch.no_grad():
        for start in range(r0, r1, rows_per_chunk):
            stop = min(r1, start + rows_per_chunk)
            coords = grid_coordinates(height, width, mlp.extent, (start, stop), (q0, q1)).to(device)
            pieces.append(mlp(coords).T.reshape(mlp.channels, stop - start, q1 - q0))  # (C, r, Q)
    return torch.cat(pieces, dim=1).unsqueeze(0).cpu()


def render_image(mlp: CoordMLP, height: int, width: int, colour_channels: int,
                 chunk: int = RENDER_CHUNK) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Render and split: (colour (1, c, h, w), alpha (1, 1, h, w) or None), clamped to [0, 1]."""
    out = render(mlp, height, width, chunk).clamp_(0.0, 1.0)
    if out.shape[1] == colour_channels:
        return out, None
    return out[:, :colour_channels], out[:, colour_channels:colour_channels + 1]


def _render_grad(mlp: CoordMLP, height: int, width: int, rows, cols, extent,
                 jitter: torch.Generator | None = None) -> torch.Tensor:
    """The grid window, with autograd; `jitter` moves each grid row and column by a random
    offset within its cell (so the window stays a grid the downscale matrices apply to)."""
    if jitter is None:
        coords = grid_coordinates(height, width, extent, rows, cols)
    else:
        ys = _jittered(axis_centres(height, extent[1], *rows), 2.0 * extent[1] / height, jitter)
        xs = _jittered(axis_centres(width, extent[0], *cols), 2.0 * extent[0] / width, jitter)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        coords = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1)
    return mlp(coords).T.reshape(mlp.channels, rows[1] - rows[0], cols[1] - cols[0])  # (C, R, Q)


def _jittered(centres: torch.Tensor, cell: float, generator: torch.Generator, reach: float = 0.5) -> torch.Tensor:
    """Centres moved by uniform offsets in [-reach, reach) cells."""
    return centres + (torch.rand(centres.shape, generator=generator) - 0.5) * (2.0 * reach * cell)


# ---- the consistency term --------------------------------------------------------------------

def downscale_matrix(out_size: int, in_size: int) -> torch.Tensor:
    """(in_size, out_size): row i holds the bicubic weights input pixel i takes from the output axis."""
    idx, weights = _axis_taps(out_size, in_size, "bicubic")
    matrix = torch.zeros(in_size, out_size, dtype=torch.float64)
    matrix.scatter_add_(1, idx, weights)
    return matrix.float()


def consistency_size(input_hw: tuple[int, int], target_hw: tuple[int, int],
                     max_scale: float = 1.5) -> tuple[int, int] | None:
    """The grid the consistency term renders: the target, shrunk to at most max_scale times the
    input; None when the target is not larger than the input (nothing to be consistent with)."""
    (h, w), (th, tw) = input_hw, target_hw
    if th <= h or tw <= w:
        return None
    factor = max(th / h, tw / w)
    if factor > max_scale:
        th, tw = max(h + 1, round(th * max_scale / factor)), max(w + 1, round(tw * max_scale / factor))
    return th, tw


def _clamp_through(x: torch.Tensor) -> torch.Tensor:
    """clamp(x, 0, 1) in value, identity in gradient: a clipped pixel still learns where to go."""
    return x + (x.clamp(0.0, 1.0) - x).detach()


class ConsistencyTerm:
    """Random windows of whole input pixels, downscaled from the rendered output grid."""

    def __init__(self, pixels: torch.Tensor, grid_hw: tuple[int, int], generator: torch.Generator,
                 jitter: bool = False) -> None:
        _, _, self.h, self.w = pixels.shape
        self.pixels = pixels[0]  # (C, H, W)
        self.grid_h, self.grid_w = grid_hw
        self.rows = downscale_matrix(self.grid_h, self.h)  # (H, H')
        self.cols = downscale_matrix(self.grid_w, self.w)  # (W, W')
        scale = max(self.grid_h / self.h, self.grid_w / self.w)
        side = int(math.sqrt(CONSISTENCY_POINTS) / scale) - 2 * KERNEL_MARGIN
        self.window = (max(1, min(self.h, side)), max(1, min(self.w, side)))
        self.generator = generator
        self.jitter = jitter  # move the grid by a random sub-cell offset each step (palette fits)

    def _span(self, matrix: torch.Tensor, start: int, stop: int) -> tuple[int, int]:
        used = matrix[start:stop].abs().sum(dim=0).nonzero()
        return int(used[0]), int(used[-1]) + 1

    def loss(self, mlp: CoordMLP, extent) -> torch.Tensor:
        y0 = int(torch.randint(0, self.h - self.window[0] + 1, (1,), generator=self.generator))
        x0 = int(torch.randint(0, self.w - self.window[1] + 1, (1,), generator=self.generator))
        y1, x1 = y0 + self.window[0], x0 + self.window[1]
        rows, cols = self._span(self.rows, y0, y1), self._span(self.cols, x0, x1)
        out = _render_grad(mlp, self.grid_h, self.grid_w, rows, cols, extent,
                           self.generator if self.jitter else None)  # (C, R, Q)
        wide = _clamp_through(out @ self.cols[x0:x1, cols[0]:cols[1]].T)  # width pass, as Pillow
        down = _clamp_through(self.rows[y0:y1, rows[0]:rows[1]] @ wide)  # (C, wy, wx)
        return torch.mean((down - self.pixels[:, y0:y1, x0:x1]) ** 2)


# ---- fitting ---------------------------------------------------------------------------------

def _point_targets(pixels: torch.Tensor, mlp: CoordMLP) -> tuple[torch.Tensor, torch.Tensor]:
    _, channels, height, width = pixels.shape
    coords = grid_coordinates(height, width, mlp.extent)  # (H W, 2)
    return coords, pixels[0].reshape(channels, -1).T  # (H W, C)


def fit(pixels: torch.Tensor, alpha: torch.Tensor | None = None, config: FitConfig = FitConfig(),
        on_step: StepCallback | None = None, target_size: tuple[int, int] | None = None) -> FitResult:
    """Fit an MLP to pixels (1, C, H, W) in [0, 1] (+ alpha (1, 1, H, W) as one more channel).

    target_size=(h, w) is the size the fit will be rendered at; with config.consistency it
    adds the consistency term. on_step(step, steps, psnr) is called every PSNR_EVERY steps.
    Images of at most config.palette_colours colours get the palette head (module docstring).
    """
    _, _, height, width = pixels.shape
    check_fit_size(height, width)
    if alpha is not None:
        # the colour under alpha 0 is invisible: fit it as black rather than spend the network
        # (and palette colours) on whatever an editor left there
        pixels = torch.cat([torch.where(alpha > 0, pixels, torch.zeros_like(pixels)), alpha], dim=1)
    pixels = pixels.detach().float().cpu()
    generator = torch.Generator().manual_seed(config.seed)
    palette = image_palette(pixels, config.palette_colours)
    mlp = build_mlp(pixels.shape[1], height, width, config, palette)
    grid = None
    if target_size and config.consistency:
        grid = consistency_size((height, width), target_size, config.consistency_scale)
    term = ConsistencyTerm(pixels, grid, generator, jitter=palette is not None) if grid else None
    with _threads(FIT_THREADS):
        stats = _optimise(mlp, pixels, term, config, generator, on_step)
    return FitResult(mlp=mlp.eval(), stats=stats)


@contextmanager
def _threads(count: int):
    """Run with `count` intra-op threads: the fit's small matmuls gain little from a second thread
    and lose 10x or more when the CPU is shared and threads spin-wait on each other (measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _optimise(mlp: CoordMLP, pixels: torch.Tensor, term: ConsistencyTerm | None, config: FitConfig,
              generator: torch.Generator, on_step: StepCallback | None) -> FitStats:
    coords, targets = _point_targets(pixels, mlp)
    pixel_step = torch.tensor([2.0 * mlp.extent[0] / pixels.shape[3], 2.0 * mlp.extent[1] / pixels.shape[2]])
    jitter = POINT_JITTER if mlp.palette is not None else 0.0
    optimiser = torch.optim.Adam(mlp.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: _cosine(s, config.steps))
    start, data_mse, step, stopped = time.perf_counter(), 1.0, 0, False
    for step in range(1, config.steps + 1):
        batch = _batch(coords.shape[0], generator)
        where = coords[batch]
        if jitter:  # (N, 2) + uniform offsets within +-jitter pixels
            where = where + (torch.rand(where.shape, generator=generator) - 0.5) * (2.0 * jitter) * pixel_step
        point = torch.mean((mlp(where) - targets[batch]) ** 2)
        loss = point
        if term is not None:
            loss = config.point_weight * point + config.consistency_weight * term.loss(mlp, mlp.extent)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        mse = float(point.detach())  # the live figure: pixel centres (exact below POINT_BATCH pixels)
        data_mse = mse if step == 1 or isinstance(batch, slice) else 0.8 * data_mse + 0.2 * mse
        if step % PSNR_EVERY == 0 or step == config.steps:
            psnr = psnr_from_mse(data_mse)
            if on_step is not None:
                on_step(step, config.steps, psnr)
            if config.target_psnr is not None and psnr >= config.target_psnr:
                stopped = True
                break
    mlp.eval()
    return FitStats(step, time.perf_counter() - start, measure_point_psnr(mlp, pixels), stopped)


def _cosine(step: int, steps: int) -> float:
    progress = min(1.0, step / max(1, steps))
    return FINAL_LR_FRACTION + (1.0 - FINAL_LR_FRACTION) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _batch(count: int, generator: torch.Generator) -> slice | torch.Tensor:
    if count <= POINT_BATCH:
        return slice(None)
    return torch.randint(0, count, (POINT_BATCH,), generator=generator)


def measure_point_psnr(mlp: CoordMLP, pixels: torch.Tensor) -> float:
    """PSNR (dB) of the MLP rendered on the input's own grid, clamped, against the input."""
    _, _, height, width = pixels.shape
    out = render(mlp, height, width).clamp(0.0, 1.0)
    return psnr_from_mse(float(torch.mean((out - pixels) ** 2)))


def consistency_psnr(output: torch.Tensor, pixels: torch.Tensor) -> float:
    """PSNR (dB) of the output (1, C, h, w) downscaled to the input's size with resize(), against the input."""
    from upscale_cli.resize import resize

    down = resize(output.clamp(0.0, 1.0), tuple(pixels.shape[-2:]), "bicubic")
    return psnr_from_mse(float(torch.mean((down - pixels) ** 2)))


# ---- saving ----------------------------------------------------------------------------------

def save_fitted(mlp: CoordMLP, path: str | Path, config: FitConfig, source: dict | None = None) -> None:
    """Write a fitted MLP as safetensors (atomically); the file rebuilds a "coord-mlp" model that
    renders it, so `upscale x.png -m f.safetensors` works too. source: the image's height, width, bit_depth."""
    from upscale_cli.loader import save_weights

    settings = {**_fit_settings(config), "mlp": mlp.settings, "source": source or {}}
    save_weights(nn.ModuleDict({"mlp": mlp}), path, ARCH, settings)  # "mlp.*": the keys of CoordMLPUpscaler


def load_fitted(path: str | Path) -> tuple[CoordMLP, dict]:
    """(fitted MLP, source info) saved by save_fitted; WeightsError for anything else or a damaged file."""
    from upscale_cli.loader import META_ARCH, META_SETTINGS, read_weights

    if not Path(path).is_file():
        raise WeightsError("no such model file", path=path)
    state, metadata = read_weights(path)
    try:
        settings = json.loads(metadata.get(META_SETTINGS, "{}"))
        if metadata.get(META_ARCH) != ARCH or "mlp" not in settings:
            raise ValueError("not a fitted coord-mlp model")
        mlp = CoordMLP(**settings["mlp"])
        mlp.load_state_dict({k.removeprefix("mlp."): v for k, v in state.items()})
        source = dict(settings.get("source") or {})
    except (ValueError, TypeError, KeyError, RuntimeError, AttributeError) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise WeightsError(f"not a fit-single model ({reason})", path=path) from None
    return mlp.eval(), source


def _fit_settings(config: FitConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(config).items() if v is not None}
