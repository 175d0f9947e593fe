"""Inputs of several frames (an animated GIF, PNG or WebP; a video) as the batch runner sees them:
one input that yields one output, its frames decoded, converted in batches and encoded as a stream.

A reader (images/animation/ for animations, video/ for video) opens the input as a `FrameSource`:
it yields each `Frame` in order, full size and composited (a frame that draws only a region is
already drawn over what came before), as a DecodedImage the converter takes like any image (an
animation's EXIF orientation is applied to every frame; a video's rotation stays metadata, carried
to the output, so its frames come as stored).
Its `sink(...)` is the matching `FrameSink`: the converted frames go in, in order, each with the
`Frame` it was made from (whose `timing` is the reader's own: a duration and disposal for an
animation, a timestamp for video, handed back unchanged), and `finish()` puts the complete output at
its target atomically. `abort()` leaves nothing at the target (a video keeps its finished segments
so that a rerun continues from them).

Nothing here imports torch, Pillow or PyAV.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Protocol, runtime_checkable

if TYPE_CHECKING:
    from upscale_cli.images import DecodedImage

DEFAULT_MAX_FRAMES = 100_000  # --max-frames: an input with more frames is refused (about 69 min at 24 fps)
FRAMES_LIMIT_OPTION = "--max-frames"


@dataclass(frozen=True)
class Frame:
    """One decoded frame of a FrameSource."""

    image: "DecodedImage"  # the whole frame, composited, (1, C, H, W) float in [0, 1] (+ alpha)
    index: int  # 0-based position in the source
    timing: object = None  # the reader's own (duration/disposal, a timestamp): the sink reads it


@dataclass(frozen=True)
class MediaSummary:
    """What a finished output holds: what its report row (and --json row) says."""

    frames: int  # frames written
    fps: float | None = None  # average frames per second of the output (None: a still rate unknown)
    duration: float | None = None  # seconds of media
    streams_copied: tuple[str, ...] = ()  # streams carried over unchanged, e.g. "audio: aac"
    notes: tuple[str, ...] = ()  # what the user should hear (a codec chosen, a resumed run)


@runtime_checkable
class FrameSink(Protocol):
    """Where converted frames go, in order; the output appears at its target only on finish().
    `frames_done`: frames already in the output from an earlier, interrupted run (a video's finished
    segments; 0 for an animation): the runner asks the source for frames(start=frames_done)."""

    frames_done: int

    def add(self, image: "DecodedImage", frame: Frame) -> None: ...

    def finish(self) -> MediaSummary: ...

    def abort(self) -> None: ...


@runtime_checkable
class FrameSource(Protocol):
    """An opened input of several frames; frames() yields those still to convert (a video rerun after
    an interruption starts after its finished segments)."""

    kind: str  # "animated GIF", "video", ... as messages name it
    frame_count: int | None  # frames in the source when known before decoding
    width: int
    height: int
    notes: tuple[str, ...]

    def frames(self, start: int = 0) -> Iterator[Frame]: ...

    def close(self) -> None: ...
