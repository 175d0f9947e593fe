"""One report row per input: what each batch command (upscale, restore, upscale --ray) says about
each file, on its line and as its `--json` object. One dataclass, one schema: every row carries
every field, null where it does not apply.

Fields describing the output (`output`, `scale`, `size`, `passes`, `found`, and for an animation or a
video `frames`, `fps`, `duration`, `streams_copied`) are set only on an "ok"
row; a skipped or failed row wrote nothing, so they are null and `error` says why. Fields
describing the run (`model`, `task`, `strength`, `ensemble`) are on every row.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Literal, get_args

Status = Literal["ok", "skipped", "failed"]
STATUSES: tuple[Status, ...] = get_args(Status)
PlannedStatus = Literal["skipped", "failed"]


@dataclass(frozen=True)
class RowDefaults:
    """What every row of one batch carries: the command's settings."""

    model: str  # -m as given ("auto" for restore's per-file choice)
    task: str | None = None  # restore's --task (also upscale --restore); None for a plain upscale
    strength: float | None = None  # restore's --strength, likewise
    ensemble: bool = False  # upscale --ensemble


@dataclass
class ReportRow:
    """One input's outcome. The JSON object has exactly these keys, in this order."""

    input: str  # the path as found (a folder's file, a glob's match), "<stdin>" for -
    output: str | None = None  # the file this run wrote; None when nothing was written (or stdout)
    model: str | None = None  # the model(s) that ran on this file ("unet-jpeg", "none" when left as is)
    scale: float | None = None  # the real factor: output width / input width
    size: list[int] | None = None  # [width, height] of the output
    passes: list[int] | None = None  # native passes, e.g. [4, 2] for x8, [2, 2] for pixel-art x4; [] any-size
    seconds: float = 0.0  # reading, converting and writing this file
    status: Status = "ok"
    error: str | None = None  # the one line saying why it was skipped or failed
    notes: list[str] = field(default_factory=list)  # what the tool chose or found that the user did not ask
    task: str | None = None
    strength: float | None = None
    found: dict | None = None  # restore --task auto: what it measured in the file and what it ran
    ensemble: bool = False
    frames: int | None = None  # an animation or a video: frames written
    fps: float | None = None  # a video's average frame rate (an animation's, from its durations)
    duration: float | None = None  # seconds of media
    streams_copied: list[str] | None = None  # a video's other streams, carried over unchanged ("audio: aac")

    @classmethod
    def start(cls, label: str, defaults: RowDefaults) -> "ReportRow":
        """The row of one input before it runs: the batch's settings, nothing found yet."""
        return cls(input=label, model=defaults.model, task=defaults.task, strength=defaults.strength,
                   ensemble=defaults.ensemble)

    def end(self, status: Status, seconds: float, output: str | None = None, error: str | None = None) -> "ReportRow":
        """Close the row: an "ok" row keeps what its file's run recorded; any other wrote nothing,
        so what would describe its output is cleared (null in JSON)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
        self.status, self.seconds, self.error = status, seconds, error
        self.output = output if status == "ok" else None
        if status != "ok":
            self.scale = self.size = self.passes = self.found = None
            self.frames = self.fps = self.duration = self.streams_copied = None
        return self

    def as_json(self) -> dict:
        row = asdict(self)
        row["seconds"] = round(self.seconds, 4)
        return row


FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ReportRow))
