"""Inputs (files, folders, globs, stdin) -> planned jobs: output naming and formats, skips and
collisions decided before any work, and sharding.

An input file is never the target of a write: planning refuses it. Running the jobs (decoding
ahead, the model, writing behind, each file alone) is pipeline.py's.
"""
from __future__ import annotations

import errno
import functools
import glob
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from upscale_cli.errors import InputNotFoundError, UsageError
from upscale_cli.images.atomic import over_name_limit
from upscale_cli.images.formats import (FALLBACK_FORMAT, OUTPUT_FORMATS, READ_SUFFIXES, WRITE_SUFFIX, output_format,
                                        writable_format)
from upscale_cli.report import PlannedStatus
from upscale_cli.video.settings import VIDEO_SUFFIXES, is_video_name

if TYPE_CHECKING:
    from upscale_cli.video.settings import VideoSettings

STDIO = "-"
GLOB_CHARS = re.compile(r"[*?\[]")
VIDEO_HINT = "pass --video to include a folder's videos"
VIDEO_IN_FOLDER = f"a video: {VIDEO_HINT}"


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

    @property
    def is_video(self) -> bool:
        """Read as a video (by its name): its output keeps its container."""
        return self.path is not None and is_video_name(self.path)

    @property
    def has_own_line(self) -> bool:
        """Whether it gets a line of its own without --json: every input but a folder's files that are
        not images (a sidecar .txt is only counted); a folder's video left out without --video is said."""
        return self.ignored is None or self.ignored == VIDEO_IN_FOLDER


@dataclass(frozen=True)
class Planned:
    """What planning decided for a job it will not run: skipped (nothing to do) or failed."""

    status: PlannedStatus
    message: str  # the file's one line: a failure names the file, a skip says why (without it)


@dataclass(frozen=True)
class Job:
    source: Source
    output: Path | None  # None = stdout, or nothing to write (an earlier output left out)
    planned: Planned | None = None  # set when planning already decided not to run it
    format: str | None = None  # Pillow format to write; None = decided from the image (stdout)
    notes: tuple[str, ...] = ()  # what planning chose that the user did not ask for
    answers: tuple[Path, ...] = ()  # a converter's several outputs (answers.py), in order; () = output alone


@dataclass
class JobResult:
    input: str
    output: str | None
    status: str  # "ok", "skipped" or "failed"
    seconds: float = 0.0
    error: str | None = None


def fs_problem(err: OSError, path: Path | str) -> str:
    """What a file-system call said about a path, as the end of a file's line (no traceback): a
    name too long says which limit and by how much."""
    if err.errno == errno.ENAMETOOLONG:
        if over := over_name_limit(Path(path).parts):
            return f"a name in it is {over}"
        return f"the path is too long for the file system ({len(os.fsencode(str(path)))} bytes)"
    return err.strerror or str(err)


def _is_visible_file(path: Path) -> bool:
    """A file to list (hidden ones and anything that cannot even be looked at are not)."""
    return not path.name.startswith(".") and os.path.isfile(path)  # os.path.isfile never raises


def _expand_folder(folder: Path, recursive: bool, videos: bool) -> list[Source]:
    """Every visible file of a folder: images (and with `videos`, videos) to read, anything else to
    report as skipped. A folder of photos and phone clips is upscaled as photos unless asked: a video
    takes minutes where a photo takes a second."""
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in folder.glob(pattern) if _is_visible_file(p))
    return [Source(p, root=folder, ignored=_not_read(p, videos)) for p in files]


def _not_read(path: Path, videos: bool) -> str | None:
    """Why a folder's file is not read, or None."""
    if path.suffix.lower() in READ_SUFFIXES:
        return None
    if is_video_name(path):
        return None if videos else VIDEO_IN_FOLDER
    return f"not an image file name ({path.suffix or 'no extension'})"


def _kind_of(path: Path) -> str:
    """'dir', 'file' or 'none'; an OSError (a name too long, a loop of links) is the caller's to report."""
    try:
        return "dir" if path.is_dir() else "file" if path.exists() else "none"
    except ValueError:  # a NUL in the name: names nothing
        return "none"


def expand_inputs(args: Iterable[str], recursive: bool = False, videos: bool = False) -> list[Source]:
    """Command-line paths -> sources (a folder's videos only with `videos`; a video named on the
    command line always). A missing path, an empty glob or a path the file system
    refuses (a name too long) becomes a source that fails (so the other inputs still run); only
    when nothing at all is found is it an error."""
    sources: list[Source] = []
    for arg in args:
        if arg == STDIO:
            sources.append(Source(None))
            continue
        path = Path(arg).expanduser()
        try:
            kind = _kind_of(path)
        except OSError as err:
            sources.append(Source(path, missing=f"{arg}: {fs_problem(err, path)}"))
            continue
        if kind == "dir":
            sources.extend(_expand_folder(path, recursive, videos))
        elif kind == "file":
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
        videos = sum(s.ignored == VIDEO_IN_FOLDER for s in sources)
        left_out = f"; {videos} video{'s' * (videos > 1)} left out: {VIDEO_HINT}"
        raise InputNotFoundError(missing or f"no image files found in the given inputs{left_out if videos else ''}")
    return sources


def output_suffix(source: Source, fmt: str | None) -> str:
    """The suffix of a planned output: a video's own (its container; --format is for images), else
    --format's, else the input's own when we write that format, else PNG's (stdin)."""
    if source.is_video:
        return source.path.suffix
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
    if source.is_video:
        return _video_output(target, fmt)
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


def _video_output(target: Path | None, fmt: str | None) -> tuple[None, tuple[str, ...], str | None]:
    """A video is written as a video, in the container -o's suffix names (format None: no image format);
    --format, for the batch's images, is said not to apply."""
    if target is None:
        return None, (), "a video is written to a file, not to stdout (-o -); give -o FILE"
    if not is_video_name(target):
        return None, (), (f"a video is written as a video ({', '.join(VIDEO_SUFFIXES)}), not as "
                          f"{target.suffix or 'a file with no extension'} ({target.name})")
    notes = (f"--format {fmt} is for images: a video keeps its container ({target.suffix})",) if fmt else ()
    return None, notes, None


def _output_is_folder(sources: list[Source], output: str) -> bool:
    if len(sources) != 1 or sources[0].root is not None:
        return True
    return output.endswith(("/", "\\")) or os.path.isdir(output)  # never raises (a name too long: not a folder)


class _EarlierOutputs:
    """Files of a folder that this command wrote next to their input on an earlier run:
    `photo_x4.png` (or a sampled answer, `photo_x4_s2.png`; any tag: `photo_1920w.png`,
    `photo_restored.png`) while an image named `photo` (any readable suffix) is beside it. Without
    that image it is nobody's output: an input like any other."""

    def __init__(self, sources: list[Source], tag_pattern: str) -> None:
        self.pattern = re.compile(rf"(.+)_{tag_pattern}(_s\d+)?")
        self.images: dict[tuple[Path, str], Path] = {}  # (folder, stem) -> the image found there
        for source in sources:
            if source.root is not None and (source.path.suffix.lower() in READ_SUFFIXES or source.is_video):
                self.images.setdefault((source.path.parent, source.path.stem), source.path)

    def source_of(self, source: Source) -> Path | None:
        """The input that `source` is an earlier output of, or None."""
        if source.root is None or source.path is None or source.ignored:
            return None  # named on the command line (or a glob's match): the user asked for it
        match = self.pattern.fullmatch(source.path.stem)
        return None if match is None else self.images.get((source.path.parent, match[1]))


def check_output_options(as_json: bool, output: str | None) -> None:
    """The usage error every batch command shares: --json with -o - (--format is checked by its type)."""
    if as_json and output == "-":
        raise UsageError("--json and -o - both want stdout; choose one")


def plan_jobs(sources: list[Source], output: str | None, tag: str | Callable[[Source], str], fmt: str | None = None,
              overwrite: bool = False, written: Callable[[Path], list[Path]] | None = None,
              tag_pattern: str | None = None) -> list[Job]:
    """Decide every output path up front, so collisions and skips are known before any work.

    A target is never any input of the run (not only its own): compared by resolved path and,
    for files that exist, by device and inode, so a link or another name for an input counts too.
    --overwrite replaces earlier outputs, never inputs. `written(target)`: the files a job really
    writes for its target when they are others (several sampled answers); each is checked, and they
    are the job's `answers`.
    `tag` may name each source's own (fit-single's `fit64x48`, from the image's size); then
    `tag_pattern` (a regex) matches every tag, for earlier outputs.
    """
    if output == STDIO and len(sources) != 1:
        raise UsageError("-o - (stdout) takes exactly one input")
    folder = Path(output) if output not in (None, STDIO) and _output_is_folder(sources, output) else None
    _resolved_folder.cache_clear()  # folders may have changed since an earlier run in this process
    # earlier outputs found next to their inputs are neither inputs nor protected as inputs (a rerun
    # skips them, each with its row, and --overwrite replaces them)
    earlier = _EarlierOutputs(sources, tag_pattern or re.escape(str(tag))) if output is None else None
    made_from = {id(s): earlier.source_of(s) for s in sources} if earlier else {}
    inputs = _InputIndex([s for s in sources if made_from.get(id(s)) is None])
    jobs, claimed = [], {}
    for source in sources:
        if made_from.get(id(source)) is not None:
            why = (f"an earlier output of {made_from[id(source)]}; name it on the command line, "
                   "or use -o, to upscale it as an input")
            jobs.append(Job(source, None, Planned("skipped", why)))
            continue
        own_tag = tag if isinstance(tag, str) else tag(source)
        jobs.append(_plan_one(source, output, folder, own_tag, fmt, overwrite, inputs, claimed, written))
    return jobs


def _plan_one(source: Source, output: str | None, folder: Path | None, tag: str, fmt: str | None,
              overwrite: bool, inputs: "_InputIndex", claimed: dict,
              written: Callable[[Path], list[Path]] | None) -> Job:
    """One source's job. Whatever the file system says while looking (a name too long, a path it
    cannot reach) fails this file alone, in one line."""
    target = _target_path(source, output, folder, tag, fmt)
    answers = tuple(written(target)) if written is not None and target is not None else ()
    try:
        planned = _skip_reason(source, target, claimed, overwrite, inputs, folder_output=folder is not None,
                               paths=answers or (target,))
    except OSError as err:
        planned = Planned("failed", f"{source.label}: the output {_shortened(str(target))}: {fs_problem(err, target)}")
    if planned is not None:
        return Job(source, target, planned, answers=answers)
    chosen, notes, failure = _output_format(source, target, fmt)
    if failure:
        return Job(source, target, Planned("failed", f"{source.label}: {failure}"), answers=answers)
    return Job(source, target, None, chosen, notes, answers)


class _InputIndex:
    """Every input file of a run, by resolved path and by (device, inode)."""

    def __init__(self, sources: list[Source]) -> None:
        self.by_path: dict[Path, str] = {}
        self.by_inode: dict[tuple[int, int], str] = {}
        for source in sources:
            if source.path is None or source.missing:
                continue
            try:
                self.by_path.setdefault(_resolved(source.path), source.label)
            except (OSError, ValueError):  # a path that names nothing reachable: reading it fails it
                pass
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
    if ".." in path.parts or path.name in ("", ".") or os.path.islink(path):  # '..' after a link: resolve's way
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
                 folder_output: bool, paths: tuple[Path, ...]) -> Planned | None:
    """Why a source will not run (missing, not an image, one of the `paths` it writes for `target` an
    input or another's, a name the file system cannot hold, an output that exists), or None. OSError
    from looking: the caller's."""
    if source.missing:
        return Planned("failed", source.missing)
    if source.ignored:
        return Planned("skipped", source.ignored)
    if target is None:
        return None
    for path in paths:
        if over := over_name_limit([path.name]):  # said before any work, not after it when the write fails
            return Planned("failed", f"{source.label}: the output's name would be {over} ({_shortened(path.name)}); "
                                     "rename the input or give -o a shorter name")
        replaced = inputs.input_at(path)
        if replaced is not None:
            whose = "itself" if replaced == source.label else replaced
            return Planned("failed", f"{source.label}: the output {path} would overwrite the input {whose}; "
                                     "choose another -o or --format")
        key = _resolved(path)
        if key in claimed:
            hint = "use --format or another -o" if folder_output else "use -o with a folder"
            return Planned("failed", f"{source.label}: the output {path} would also be written by {claimed[key]}; {hint}")
    for path in paths:
        claimed[_resolved(path)] = source.label
    existing = [path for path in paths if path.exists()] if not overwrite else []
    if existing:
        return Planned("skipped", f"output exists: {existing[0]}; use --overwrite to replace it")
    return None


NAME_SHOWN_CHARS = 40  # of a name too long to show whole


def _shortened(name: str) -> str:
    return name if len(name) <= 2 * NAME_SHOWN_CHARS else f"{name[:NAME_SHOWN_CHARS]}...{name[-NAME_SHOWN_CHARS:]}"


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
    max_frames: int | None = None  # animations and videos with more frames are refused; 0 = no limit; None = the default
    video: "VideoSettings | None" = None  # how a video is encoded; None = the defaults

    def __post_init__(self) -> None:
        if self.max_pixels is not None and self.max_pixels < 0:
            raise UsageError(f"--max-pixels must be 0 (no limit) or a number of pixels, not {self.max_pixels}")
        if self.max_frames is not None and self.max_frames < 0:
            raise UsageError(f"--max-frames must be 0 (no limit) or a number of frames, not {self.max_frames}")
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
