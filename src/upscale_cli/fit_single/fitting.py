"""The fitting loop of fit-single: one image's pixels -> a fitted CoordMLP (network.py).

The point term holds the MLP at the input's pixel centres to the input pixels (a random batch
of POINT_BATCH pixels per step when the image is larger); with a target size, the consistency
term (consistency.py) is added.

Images of at most `palette_colours` (default 32) distinct colours, alpha included (sprites,
icons, pixel art), are fitted through a palette head (network.py): the network picks
among the image's own colours, so flat areas render as one exact colour, alpha as exactly the
sprite's, and edges as crisp contours. Without it a sine network ripples around every hard
edge: swirls in flat areas and alpha speckles where the background should be 0, measured on
generated 64x64 sprites. Two things change with the palette, because the render switches
colour anywhere between the points the loss sees: the point term samples each pixel at a
random spot within POINT_JITTER of its centre (a sprite's pixel is a flat square of its colour,
not a point sample), and the consistency grid moves by a random sub-cell offset every step, so
the whole continuous rendering is held to the downscale, not one fixed grid of it.

Defaults (chosen on synthetic sprites and T91 crops, never on the benchmark sets): SIREN, 3 x 64,
300 steps of Adam at 2e-3 with a cosine decay, point and consistency terms weighted 1:1. SIREN
fits hard-edged sprites (35 dB at the pixels; the Fourier ReLU MLP reaches 30 dB) and beat
bicubic on T91 crops at x4 by 0.6 dB (Fourier features: 0.3 dB); see FitConfig.for_encoding.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import torch

from upscale_cli import metrics
from upscale_cli.errors import UsageError
from upscale_cli.fit_single.consistency import CONSISTENCY_POINTS, ConsistencyTerm, consistency_size
from upscale_cli.fit_single.network import ENCODINGS, MAX_PALETTE, CoordMLP, grid_coordinates, image_extent, render
from upscale_cli.fit_single.sizes import check_fit_size

POINT_BATCH = 8192  # input pixels per step for the point term
FINAL_LR_FRACTION = 0.05  # cosine schedule ends at lr * this
FIT_THREADS = 1  # intra-op threads while fitting (see _threads)
PSNR_EVERY = 10  # steps between live PSNR updates (and --target-psnr checks)
PALETTE_COLOURS = 32  # images with at most this many distinct colours get the palette head
POINT_JITTER = 0.25  # input pixels: palette fits sample each pixel this far around its centre
EXACT = "exact"  # how a PSNR of an exact fit (zero error, infinite dB) is shown

# Bounds of the settings (models/coord_mlp.py checks a weights file's settings against the same):
MAX_HIDDEN = 1024  # units per hidden layer
MAX_DEPTH = 32  # hidden layers
MAX_FEATURES = 4096  # Fourier features
MAX_STEPS = 1_000_000  # optimisation steps
MAX_LR = 10.0  # Adam learning rate
MAX_FREQ_SCALE = 1000.0  # cycles per input pixel
MIN_SEED, MAX_SEED = -(2**63), 2**64 - 1  # what torch.Generator.manual_seed takes
# Memory a fit may need, estimated from the settings before anything is built (fit_memory_bytes).
# The process holds ~0.93 GB once torch is imported and ~1.2 GB during a default fit (160x160 at
# x4, measured through the CLI); within this limit it stays under 1.5 GB (64 x 9: 1.41 GB).
MAX_FIT_BYTES = 384 * 2**20  # bytes
PARAMETER_BYTES = 16  # float32 weight, its gradient and Adam's two moments
ACTIVATION_BYTES = 24  # per hidden unit per point, kept for the backward pass (measured: up to 23, SIREN through the CLI)
FEATURE_BYTES = 24  # per Fourier feature per point: phase, sine, cosine and their concatenation (measured: 17)


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
        for name, high in (("hidden", MAX_HIDDEN), ("depth", MAX_DEPTH), ("features", MAX_FEATURES),
                           ("steps", MAX_STEPS)):
            if not 1 <= getattr(self, name) <= high:
                raise UsageError(f"--{name} must be 1 to {high:,} (MAX_{name.upper()}), not {getattr(self, name)}")
        for name, high in (("lr", MAX_LR), ("freq_scale", MAX_FREQ_SCALE)):
            if not 0 < getattr(self, name) <= high:  # NaN fails too
                raise UsageError(f"--{name.replace('_', '-')} must be above 0 and at most {high:g}, "
                                 f"not {getattr(self, name)}")
        if not MIN_SEED <= self.seed <= MAX_SEED:
            raise UsageError(f"--seed must be {MIN_SEED} to {MAX_SEED}, not {self.seed}")
        if not 0 <= self.palette_colours <= MAX_PALETTE:
            raise UsageError(f"--palette-colours must be 0 to {MAX_PALETTE}")
        check_fit_memory(self)

    @classmethod
    def for_encoding(cls, encoding: str = "siren", **changes) -> "FitConfig":
        """The defaults tuned for an encoding, then the changes."""
        return cls(**{"encoding": encoding, **ENCODING_DEFAULTS.get(encoding, {}), **changes})


# The field defaults are SIREN's; the ReLU networks want a larger rate and a lighter point term.
ENCODING_DEFAULTS: dict[str, dict] = {"siren": {}, "fourier": {"lr": 1e-2, "point_weight": 0.1},
                                      "none": {"lr": 5e-3, "point_weight": 0.1}}


def fit_memory_bytes(config: FitConfig) -> int:
    """About the most memory one fitting step with these settings needs (bytes): the parameters
    with their gradients and Adam's state, and what autograd keeps for the most points a step
    evaluates (POINT_BATCH for the point term, CONSISTENCY_POINTS for the consistency term)."""
    hidden, depth = config.hidden, config.depth
    features = config.features if config.encoding == "fourier" else 0
    first_in = 2 * features or 2
    parameters = (first_in + 1) * hidden + (depth - 1) * (hidden + 1) * hidden + (hidden + 1) * MAX_PALETTE
    per_point = ACTIVATION_BYTES * hidden * depth + FEATURE_BYTES * features
    return PARAMETER_BYTES * parameters + (POINT_BATCH + CONSISTENCY_POINTS) * per_point


def check_fit_memory(config: FitConfig) -> None:
    """Refuse settings whose fit would need more than MAX_FIT_BYTES, before anything is built."""
    need = fit_memory_bytes(config)
    if need > MAX_FIT_BYTES:
        what = f"--hidden {config.hidden} x --depth {config.depth}"
        if config.encoding == "fourier":
            what += f" with {config.features} Fourier features"
        raise UsageError(f"{what} would need about {need / 2**20:,.0f} MiB to fit, over fit-single's limit of "
                         f"{MAX_FIT_BYTES // 2**20} MiB (MAX_FIT_BYTES); use a smaller --hidden or --depth")


@dataclass(frozen=True)
class FitStats:
    steps: int
    seconds: float
    psnr: float  # dB: the fitted MLP at the input's pixel centres (clamped) vs the input; inf = exact
    stopped_early: bool  # reached config.target_psnr


@dataclass
class FitResult:
    mlp: CoordMLP
    stats: FitStats


StepCallback = Callable[[int, int, float], None]  # (step, total steps, live pixel-centre PSNR dB)


def psnr_from_mse(mse: float) -> float:
    """PSNR (dB) of values in [0, 1], metrics.py's: inf for an exact fit (see describe_psnr)."""
    return metrics.psnr_from_mse(mse, data_range=1.0)


def describe_psnr(psnr: float, prefix: str = "PSNR ") -> str:
    """'PSNR 31.42 dB', or 'exact' when nothing differs (an infinite PSNR is not a figure to print)."""
    return EXACT if math.isinf(psnr) else f"{prefix}{psnr:.2f} dB"


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
