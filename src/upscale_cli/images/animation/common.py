"""What the animation formats share: a frame's timing, the error a broken file's structure raises,
the pixels an encoder is given, the check that every output frame is the first's size, and the clock
that rounds durations to a format's time unit."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from upscale_cli.errors import ImageWriteError
from upscale_cli.images import DecodedImage
from upscale_cli.images.arrays import quantise_planes, to_planes


@dataclass(frozen=True)
class FrameTiming:
    """An animation frame's timing, as frames.Frame.timing carries it to the sink."""

    duration_ms: float  # how long the frame shows
    apng_delay: tuple[int, int] | None = None  # an APNG source's exact delay (numerator, denominator) s


class _Corrupt(Exception):
    """A broken file's structure; open_animation says it in one line, naming the file."""


def _frame_pixels(image: DecodedImage, alpha: bool) -> np.ndarray:
    """A converted frame as (H, W, 3) RGB or (H, W, 4) RGBA uint8 (`alpha`: the animation's kind,
    so every frame has the same channels: a frame without alpha is opaque, alpha on a frame of an
    opaque animation is dropped)."""
    colour = to_planes(image.pixels)
    frame_alpha = to_planes(image.alpha) if alpha and image.alpha is not None else None
    array = quantise_planes(colour, frame_alpha, sixteen=False)
    if array.shape[2] in (1, 2):  # grey (+ alpha)
        array = np.concatenate([np.repeat(array[..., :1], 3, axis=2), array[..., 1:]], axis=2)
    if alpha and array.shape[2] == 3:
        array = np.concatenate([array, np.full(array.shape[:2] + (1,), 255, np.uint8)], axis=2)
    return array


class _CanvasSize:
    """Every frame of an output must be the size of the first."""

    size: tuple[int, int] | None = None

    def check(self, pixels: np.ndarray, most: int) -> None:
        height, width = pixels.shape[:2]
        if self.size is None:
            if width > most or height > most:
                raise ImageWriteError(f"{width} x {height} is over the format's {most} pixels a side")
            self.size = (width, height)
        elif self.size != (width, height):
            raise ImageWriteError(f"{width} x {height}, but the first frame is {self.size[0]} x {self.size[1]}")


class _Clock:
    """Durations in a format's time unit, rounded so that the running total stays as close as it can
    to the source's (no drift over many frames)."""

    def __init__(self, unit_ms: float) -> None:
        self._unit, self._total_ms, self._ticks = unit_ms, 0.0, 0
        self.rounded = False

    @property
    def ticks(self) -> int:
        """Units elapsed so far: where the next frame starts."""
        return self._ticks

    def tick(self, duration_ms: float) -> int:
        """The next frame's duration in units."""
        self._total_ms += duration_ms
        ticks = round(self._total_ms / self._unit)
        step, self._ticks = ticks - self._ticks, ticks
        self.rounded = self.rounded or step * self._unit != duration_ms
        return step
