"""Inputs (files, folders, globs, stdin) -> planned jobs: output naming and formats, skips and
collisions decided before any work, and sharding.

An input file is never the target of a write: planning refuses it. Running the jobs (decoding
ahead, the model, writing behind, each file alone) is pipeline.py's.
"""
from __future__ import annotations

import functools
import glob
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from upscale_cli.errors import InputNotFoundError, UsageError
from upscale_cli.images.formats import (FALLBACK_FORMAT, OUTPUT_FORMATS, READ_SUFFIXES, WRITE_SUFFIX, output_format,
                                        writable_format)

STDIO = "-"
GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Source:
    """One input: a file (with the folder it was found under, for mirroring), or stdin."""

    path: Path | None  # None = stdin
    root: Path | None = None  # the folder argument it came from, if any
    missing: str | None = None  # why a command-line path names nothing (reported as a failed file)
    ignored: str | None = None  # why a file found in a folder is not read (reported as skipped)

    @property
    def label(self) -> str:
        return "<stdin>" if self.path is None else str(self.path)


@dataclass(frozen=True)
class Job:
    source: Source
    output: Path | None  # None = stdout
    skip_reason: str | None = None  # set when planning already decided not to run it
    format: str | None = None  # Pillow format to write; None = decided from the image (stdout)
    notes: tuple[str, ...] = ()  # what planning chose that the user did not ask for


@dataclass
class JobResult:
    input: str
    output: str | None
    status: str  # "ok", "skipped" or "failed"
    seconds: float = 0.0
    error: str | None = None


def _expand_folder(folder: Path, recursive: bool) -> list[Source]:
    """Every visible file of a folder: images to read, anything else to report as skipped."""
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in folder.glob(pattern) if p.is_file() and not p.name.startswith("."))
    return [Source(p, root=folder, ignored=None if p.suffix.lower() in READ_SUFFIXES
                   else f"not an image file name ({p.suffix or 'no extension'})") for p in files]


def expand_inputs(args: Iterable[str], recursive: bool = False) -> list[Source]:
    """Command-line paths -> sources. A missing path or an empty glob becomes a source that fails
    (so the other inputs still run); only when nothing at all is found is it an error."""
    sources: list[Source] = []
    for arg in args:
        if arg == STDIO:
            sources.append(Source(None))
            continue
        path = Path(arg).expanduser()
        if path.is_dir():
            sources.extend(_expand_folder(path, recursive))
        elif path.exists():
            sources.append(Source(path))
        elif GLOB_CHARS.search(arg):
            matches = sorted(Path(m) for m in glob.glob(arg, recursive=True) if Path(m).is_file())
            sources.extend(Source(m) for m in matches)
            if not matches:
                sources.append(Source(path, missing=f"no files match {arg!r}"))
        else:
            sources.append(Source(path, missing=f"{arg}: no such file or folder"))
    if all(s.missing or s.ignored for s in sources):
        missing = "; ".join(s.missing for s in sources if s.missing)
        raise InputNotFoundError(missing or "no image files found in the given inputs")
    return sources


def output_suffix(source: Source, fmt: str | None) -> str:
    """The suffix of a planned output: --format's, else the input's own when we write that format,
    else PNG's (GIF inputs, stdin)."""
    if fmt:
        return WRITE_SUFFIX[output_format(fmt)]
    if source.path is not None and writable_format(source.path.suffix):
        return source.path.suffix
    return WRITE_SUFFIX[FALLBACK_FORMAT]


def _default_output(source: Source, tag: str, fmt: str | None) -> Path:
    return source.path.with_name(f"{source.path.stem}_{tag}{output_suffix(source, fmt)}")


def _folder_output(source: Source, folder: Path, fmt: str | None) -> Path:
    relative = source.path.relative_to(source.root) if source.root else Path(source.path.name)
    return folder / relative.with_suffix(output_suffix(source, fmt))


def _output_format(source: Source, target: Path | None, fmt: str | None) -> tuple[str | None, tuple[str, ...], str | None]:
    """(format, notes, failure) of one planned write. One rule for every format: --format wins;
    else the target's suffix when we write it; else (no suffix, or a folder/default name for an
    input whose format we do not write) the input's format or PNG, said on the file's line."""
    if target is None:
        return (output_format(fmt) if fmt else None), (), None
    if fmt:
        return output_format(fmt), (), None
    suffix = target.suffix
    own = writable_format(source.path.suffix) if source.path is not None else None
    chosen = writable_format(suffix) if suffix else own or FALLBACK_FORMAT
    if chosen is None:
        return None, (), f"cannot write {suffix!r} files ({target}); use one of {', '.join(sorted(OUTPUT_FORMATS))}"
    if not suffix:
        return chosen, (f"{target.name} has no extension: wrote {chosen}",), None
    if source.path is not None and source.path.suffix and own is None:
        return chosen, (f"{source.path.suffix.lstrip('.').upper()} is not written: wrote {chosen}",), None
    return chosen, (), None


def _output_is_folder(sources: list[Source], output: str) -> bool:
    if len(sources) != 1 or sources[0].root is not None:
        return True
    return output.endswith(("/", "\\")) or Path(output).is_dir()


def _is_own_output(source: Source, tag: str) -> bool:
    """A file this command wrote next to its input on an earlier run (`photo_x4.png`, or one of
    several sampled answers, `photo_x4_s2.png`)."""
    return source.root is not None and re.search(rf"_{re.escape(tag)}(_s\d+)?$", source.path.stem) is not None


def check_output_options(fmt: str | None, as_json: bool, output: str | None) -> None:
    """The usage errors every batch command shares: an unknown --format, --json with -o -."""
    if fmt is not None and fmt.lower() not in OUTPUT_FORMATS:
        raise UsageError(f"--format must be one of {', '.join(OUTPUT_FORMATS)}, not {fmt!r}")
    if as_json and output == "-":
        raise UsageError("--json and -o - both want stdout; choose one")


def plan_jobs(sources: list[Source], output: str | None, tag: str, fmt: str | None = None,
              overwrite: bool = False, written: Callable[[Path], list[Path]] | None = None) -> list[Job]:
    """Decide every output path up front, so collisions and skips are known before any work.

    A target is never any input of the run (not only its own): compared by resolved path and,
    for files that exist, by device and inode, so a link or another name for an input counts too.
    --overwrite replaces earlier outputs, never inputs. `written(target)`: the files a job really
    writes for its target when they are others (several sampled answers); each is checked.
    """
    if output == STDIO and len(sources) != 1:
        raise UsageError("-o - (stdout) takes exactly one input")
    folder = Path(output) if output not in (None, STDIO) and _output_is_folder(sources, output) else None
    _resolved_folder.cache_clear()  # folders may have changed since an earlier run in this process
    # earlier outputs found next to their inputs are neither inputs nor protected as inputs (a rerun
    # skips them, --overwrite replaces them)
    sources = [s for s in sources if not (output is None and _is_own_output(s, tag))]
    inputs = _InputIndex(sources)
    jobs, claimed = [], {}
    for source in sources:
        target = _target_path(source, output, folder, tag, fmt)
        reason = _skip_reason(source, target, claimed, overwrite, inputs, folder_output=folder is not None,
                              written=written)
        chosen, notes, failure = _output_format(source, target, fmt)
        if failure and not reason:
            reason = f"failed:{source.label}: {failure}"
        jobs.append(Job(source, target, reason, chosen, notes))
    return jobs


class _InputIndex:
    """Every input file of a run, by resolved path and by (device, inode)."""

    def __init__(self, sources: list[Source]) -> None:
        self.by_path: dict[Path, str] = {}
        self.by_inode: dict[tuple[int, int], str] = {}
        for source in sources:
            if source.path is None or source.missing:
                continue
            self.by_path.setdefault(_resolved(source.path), source.label)
            identity = _file_identity(source.path)
            if identity is not None:
                self.by_inode.setdefault(identity, source.label)

    def input_at(self, target: Path) -> str | None:
        """The input a write to `target` would replace, or None."""
        found = self.by_path.get(_resolved(target))
        if found is None:
            identity = _file_identity(target)
            found = self.by_inode.get(identity) if identity is not None else None
        return found


def _resolved(path: Path) -> Path:
    """path.resolve(), with each folder resolved once per run (10,000 files in 10 folders: 10 walks,
    not 10,000). A file that is itself a link is resolved too, so links still count as their target."""
    if ".." in path.parts or path.name in ("", ".") or path.is_symlink():  # '..' after a link: resolve's way
        return path.resolve()
    return _resolved_folder(os.path.abspath(path.parent)) / path.name


@functools.lru_cache(maxsize=4096)
def _resolved_folder(folder: str) -> Path:
    return Path(folder).resolve()


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except (OSError, ValueError):
        return None
    return (stat.st_dev, stat.st_ino)


def _target_path(source: Source, output: str | None, folder: Path | None, tag: str, fmt: str | None) -> Path | None:
    if output == STDIO or (output is None and source.path is None):
        return None
    if folder is not None:
        if source.path is None:
            return folder / f"stdin{output_suffix(source, fmt)}"
        return _folder_output(source, folder, fmt)
    if output is not None:
        return Path(output)
    return _default_output(source, tag, fmt)


def _skip_reason(source: Source, target: Path | None, claimed: dict, overwrite: bool, inputs: _InputIndex,
                 folder_output: bool, written: Callable[[Path], list[Path]] | None = None) -> str | None:
    if source.missing:
        return f"failed:{source.missing}"
    if source.ignored:
        return f"skipped:{source.ignored}"
    if target is None:
        return None
    paths = written(target) if written is not None else [target]
    for path in paths:
        replaced = inputs.input_at(path)
        if replaced is not None:
            whose = "itself" if replaced == source.label else replaced
            return f"failed:{source.label}: the output {path} would overwrite the input {whose}; choose another -o or --format"
        key = _resolved(path)
        if key in claimed:
            hint = "use --format or another -o" if folder_output else "use -o with a folder"
            return f"failed:{source.label}: the output {path} would also be written by {claimed[key]}; {hint}"
    for path in paths:
        claimed[_resolved(path)] = source.label
    if not overwrite and any(path.exists() for path in paths):
        return "skipped:output exists (use --overwrite to replace it)"
    return None


def scale_tag(scale: float | None, width: int | None, height: int | None, default_scale: float) -> str:
    """The `x4` in `photo_x4.png`; sizes name themselves as `1920w`, `1080h` or `1920x1080`."""
    if width and height:
        return f"{width}x{height}"
    if width:
        return f"{width}w"
    if height:
        return f"{height}h"
    value = default_scale if scale is None else scale
    return f"x{value:g}"


@dataclass(frozen=True)
class WriteOptions:
    format: str | None = None
    quality: int | None = None
    max_pixels: int | None = None  # inputs over this are refused unread; 0 = no limit; None = the default
    png_compression: int | None = None  # PNG zlib level 0-9; None = images.write.DEFAULT_PNG_COMPRESSION

    def __post_init__(self) -> None:
        if self.max_pixels is not None and self.max_pixels < 0:
            raise UsageError(f"--max-pixels must be 0 (no limit) or a number of pixels, not {self.max_pixels}")
        if self.png_compression is not None and not 0 <= self.png_compression <= 9:
            raise UsageError(f"--png-compression must be 0 (fastest, largest) to 9 (slowest, smallest), "
                             f"not {self.png_compression}")


# ------------------------------------------------------------------ sharding

def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N) with 0 <= K < N: this run takes shard K of N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match:
        raise UsageError(f"--shard takes K/N (this run's part K of N parts, K from 0 to N-1), not {text!r}")
    index, count = int(match[1]), int(match[2])
    if count < 1 or index >= count:
        raise UsageError(f"--shard {text}: K must be 0 to N-1 and N at least 1")
    return index, count


def shard_key(source: Source) -> str:
    """What decides a file's shard: its path relative to the folder argument it was found under
    (the same on every machine that mounts the folder elsewhere), else the path as given."""
    if source.path is None:
        return STDIO
    if source.root is not None:
        return source.path.relative_to(source.root).as_posix()
    return source.path.as_posix()


def in_shard(source: Source, shard: tuple[int, int]) -> bool:
    """Stable: the same file is in the same shard on every run, machine and Python (a sha1 of
    its key, not hash()), and adding files to the folder never moves the others."""
    index, count = shard
    digest = hashlib.sha1(shard_key(source).encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count == index


def select_shard(jobs: list[Job], shard: tuple[int, int] | None) -> list[Job]:
    """The jobs of one shard. Planned over every input first, so each shard decides collisions,
    skips and names exactly as an unsharded run would."""
    if shard is None:
        return jobs
    return [job for job in jobs if in_shard(job.source, shard)]
