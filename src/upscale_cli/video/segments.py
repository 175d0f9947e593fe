"""The work folder that makes a video resumable: finished segments and the manifest that says
which input and which settings made them.

`.<target name>.upscale-segments/` sits beside the target (hidden, so folder expansion skips it):
  manifest.json   the input's identity (size, mtime, sha256 of its first MiB, frame count), the
                  resolved settings, the output frame size, and the finished segments in order
  000000.nut ...  one finished segment each: a complete NUT file of SEGMENT_FRAMES frames (the
                  last one fewer) starting with a keyframe. NUT keeps exact timestamps in any
                  time base (Matroska stores milliseconds); the few codecs NUT cannot hold
                  (ProRes, DNxHD, QuickTime RLE) go in .mov segments, whose start the mov muxer
                  rounds to its movie time scale, so each segment's first pts is recorded too.
  *.part          a segment being written (a killed run's is removed by the next run)
  lock            flock-ed by the run writing the folder, so two runs never share it

A segment is renamed from .part and only then listed in the manifest (rewritten atomically), so a
kill at any moment leaves a manifest that lists only complete segments. A manifest made from
another input or other settings is discarded, with a note.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from upscale_cli.errors import ImageWriteError, printable_path
from upscale_cli.images.atomic import temp_stem, write_error_message

try:
    import fcntl
except ImportError:  # Windows: no advisory lock; one run at a time is then the user's care
    fcntl = None

WORK_SUFFIX = ".upscale-segments"
MANIFEST = "manifest.json"
LOCK = "lock"
PART_SUFFIX = ".part"
IDENTITY_BYTES = 2**20  # the input's first MiB is hashed: a changed file is noticed without reading it all
MANIFEST_VERSION = 1


def work_folder(target: Path) -> Path:
    """The hidden folder beside `target` that holds its segments (atomic.py's short form of a long name)."""
    return target.parent / f".{temp_stem(target.name)}{WORK_SUFFIX}"


def input_identity(path: Path, frame_count: int | None) -> dict:
    """What tells this input from a changed one: size, mtime, the hash of its first MiB, frames."""
    stat = path.stat()
    with open(path, "rb") as file:
        head = hashlib.sha256(file.read(IDENTITY_BYTES)).hexdigest()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256_first_mib": head, "frames": frame_count}


@dataclass(frozen=True)
class Segment:
    name: str  # file name in the work folder
    first: int  # index of its first frame
    frames: int
    first_pts: int  # its first frame's pts in the input stream's time base


class SegmentStore:
    """The work folder of one target, locked while this object holds it."""

    def __init__(self, target: Path, identity: dict, settings: dict, suffix: str) -> None:
        self.folder = work_folder(target)
        self.target, self.suffix = target, suffix
        self.notes: list[str] = []
        self._header = {"version": MANIFEST_VERSION, "input": identity, "settings": settings}
        self._lock_fd: int | None = None
        self._guarded(self._open)

    def _guarded(self, action, *args):
        try:
            return action(*args)
        except OSError as err:
            raise ImageWriteError(f"{write_error_message(err)} (work folder {self.folder.name})",
                                  path=printable_path(self.target)) from None

    def _open(self) -> None:
        self.folder.mkdir(exist_ok=True)
        self._lock()
        self.segments: list[Segment] = []
        self.output_size: tuple[int, int] | None = None
        earlier = self._read_manifest()
        if earlier is not None:
            reason = self._mismatch(earlier)
            if reason is None:
                self.segments = [Segment(**entry) for entry in earlier.get("segments", [])]
                self.output_size = tuple(earlier["output_size"]) if earlier.get("output_size") else None
            elif earlier.get("segments"):
                self.notes.append(f"earlier segments discarded: {reason}")
        self.segments = [s for s in self._consecutive() if (self.folder / s.name).is_file()]
        self._tidy()
        self._write_manifest()

    def _lock(self) -> None:
        if fcntl is None:
            return
        fd = os.open(self.folder / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ImageWriteError(f"another run is writing this output (its work folder {self.folder.name} is locked)",
                                  path=printable_path(self.target)) from None
        self._lock_fd = fd

    def _read_manifest(self) -> dict | None:
        try:
            return json.loads((self.folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # none yet, or unreadable: start over

    def _mismatch(self, earlier: dict) -> str | None:
        if earlier.get("version") != MANIFEST_VERSION:
            return "made by another version"
        if earlier.get("input") != self._header["input"]:
            return "the input changed"
        if earlier.get("settings") != self._header["settings"]:
            return "the settings changed"
        return None

    def _consecutive(self) -> list[Segment]:
        """The listed segments while each starts where the previous ended."""
        kept, expected = [], 0
        for segment in self.segments:
            if segment.first != expected or segment.frames < 1:
                break
            kept.append(segment)
            expected += segment.frames
        return kept

    def _tidy(self) -> None:
        """Remove everything in the folder that is not a listed segment (parts of a killed run)."""
        keep = {s.name for s in self.segments} | {MANIFEST, LOCK}
        for entry in os.scandir(self.folder):
            if entry.name not in keep and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)

    def _write_manifest(self) -> None:
        record = dict(self._header, output_size=self.output_size,
                      segments=[vars(s) for s in self.segments])
        temp = self.folder / (MANIFEST + PART_SUFFIX)
        with open(temp, "w", encoding="utf-8") as file:
            json.dump(record, file, indent=1)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, self.folder / MANIFEST)

    @property
    def frames_done(self) -> int:
        return sum(s.frames for s in self.segments)

    def part_path(self) -> Path:
        """Where the next segment is written until it is complete."""
        return self.folder / f"{len(self.segments):06d}{self.suffix}{PART_SUFFIX}"

    def commit(self, part: Path, frames: int, first_pts: int, output_size: tuple[int, int]) -> None:
        """A finished segment: made durable, renamed, then listed in the manifest."""
        self._guarded(self._commit, part, frames, first_pts, output_size)

    def _commit(self, part: Path, frames: int, first_pts: int, output_size: tuple[int, int]) -> None:
        fd = os.open(part, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        final = part.with_name(part.name[: -len(PART_SUFFIX)])
        os.replace(part, final)
        self.segments.append(Segment(name=final.name, first=self.frames_done, frames=frames, first_pts=first_pts))
        self.output_size = output_size
        self._write_manifest()

    def paths(self) -> list[tuple[Path, int]]:
        """Each finished segment's file and its first frame's pts."""
        return [(self.folder / s.name, s.first_pts) for s in self.segments]

    def release(self) -> None:
        """Unlock; the folder stays for a later run."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def remove(self) -> None:
        """Delete the whole folder (the output is complete, or nothing in it is worth keeping)."""
        self.release()
        shutil.rmtree(self.folder, ignore_errors=True)

    def discard_segments(self) -> None:
        """Forget every segment (they do not fit this run) and start the folder over."""
        self.segments, self.output_size = [], None
        self._guarded(self._tidy)
        self._guarded(self._write_manifest)
