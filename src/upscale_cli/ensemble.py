"""Self-ensemble (test-time augmentation): run a model on the 8 flips/rotations of its input and
average the outputs, each turned back. Pure compute on tensors; the engine decides when to use it.

A model that is exactly equivariant to flips and 90-degree turns gains nothing; a trained network
is not, and the average of its 8 views cancels part of its error (a few hundredths to a tenth
of a dB for small SR nets), at 8 times the model's time.
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor

VIEWS = 8  # the dihedral group of the square: 4 rotations, with and without a mirror


def view(x: Tensor, k: int) -> Tensor:
    """View k (0..7) of (..., H, W): mirrored left-right when k >= 4, then turned k % 4 times."""
    mirrored = x.flip(-1) if k >= 4 else x
    return mirrored.rot90(k % 4, dims=(-2, -1))


def unview(y: Tensor, k: int) -> Tensor:
    """The inverse of view(., k): unview(view(x, k), k) == x."""
    turned_back = y.rot90(-(k % 4), dims=(-2, -1))
    return turned_back.flip(-1) if k >= 4 else turned_back


def self_ensemble(fn: Callable[[Tensor, int], Tensor], x: Tensor) -> Tensor:
    """The mean over the 8 views of `fn(view(x, k), k)` turned back, in float32.

    fn maps (..., H, W) to (..., H', W') with H'/H == W'/W (a rotated input gives a rotated
    output); it is told which view k it runs (for progress).
    """
    total = None
    for k in range(VIEWS):
        out = unview(fn(view(x, k), k), k).float()
        total = out.clone() if total is None else total.add_(out)
    return total.div_(VIEWS)
