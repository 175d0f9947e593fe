"""The consistency term of a fit-single fit: the output, downscaled, must give back the input.

The loss has two terms:
  point        the MLP at the input's pixel centres equals the input pixels
               (a random batch of fitting.POINT_BATCH pixels per step when the image is larger).
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

A hard edge cannot downscale exactly back: Pillow's bicubic kernel has negative lobes, so the
only images whose downscale is a 0-to-1 step overshoot [0, 1] beside it, and the written image
is clipped there. On hard-edged sprites the render downscaled back is about 30 dB from the
input (nearest-neighbour: 31 dB; the best any clipped image reaches, by direct optimisation:
34 dB); on photos it matches closely (35-37 dB on 96x96 T91 crops at x4).
"""
from __future__ import annotations

import math

import torch

from upscale_cli.fit_single.network import CoordMLP, axis_centres, grid_coordinates
from upscale_cli.resize import axis_matrix

CONSISTENCY_POINTS = 20_000  # grid pixels rendered per step, at most: whole images up to ~90 x 90 at x1.5
KERNEL_MARGIN = 2  # input pixels of context the x-s bicubic downscale reads on each side


def downscale_matrix(out_size: int, in_size: int) -> torch.Tensor:
    """(in_size, out_size): row i holds the bicubic weights input pixel i takes from the output axis."""
    return axis_matrix(out_size, in_size, "bicubic")


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


def render_grad(mlp: CoordMLP, height: int, width: int, rows, cols, extent,
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
        out = render_grad(mlp, self.grid_h, self.grid_w, rows, cols, extent,
                           self.generator if self.jitter else None)  # (C, R, Q)
        wide = _clamp_through(out @ self.cols[x0:x1, cols[0]:cols[1]].T)  # width pass, as Pillow
        down = _clamp_through(self.rows[y0:y1, rows[0]:rows[1]] @ wide)  # (C, wy, wx)
        return torch.mean((down - self.pixels[:, y0:y1, x0:x1]) ** 2)
