"""The weights cache: where downloaded weights live, and how a file gets into it safely.

Files are stored by content hash, `CACHE/weights/<sha256>/<filename>`, so two models can
never clash and a file's folder name is its own checksum. A file is filled as `<filename>.part`
while hashing (never more than the catalogue's size: a source that sends more, or says the
file has another size, is refused as a wrong file), its sha256 verified, then `os.replace`d
into place. A `<filename>.lock` beside it (fcntl.flock) makes concurrent processes that need
the same file fetch it once; the process holding it removes it when it is done, and a run that
finds the file cached removes that file's own `.part`/`.lock` left by a killed run (a killed
run's `.part` is otherwise what the next download resumes).

Where the bytes come from (HTTP with resume and retries, a mirror) is download.py's; this
module is the cache's layout, its part/verify/lock protocol, adding a file fetched by hand,
and maintenance (verify, clear). UPSCALE_CACHE_DIR names the cache folder (default: the
platformdirs user cache dir). Only regular files are ever hashed, and never past the size they
had when opened: a cache entry that is a link, device or FIFO (a link to /dev/zero) is reported
by verify, never read.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable, Iterator

from upscale_cli.model_spec import WeightsFile
from upscale_cli.errors import ChecksumError, WeightsError, WrongSizeError, printable_path

try:  # POSIX; elsewhere downloads go unlocked (the final os.replace is still atomic)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

APP_NAME = "upscale-cli"
WEIGHTS_SUBDIR = "weights"
PART_SUFFIX = ".part"
LOCK_SUFFIX = ".lock"
# A dropped connection loses the chunk being read, so resume granularity is one chunk.
CHUNK_BYTES = 16 * 1024
HASH_READ_BYTES = 2**20  # one read while hashing a file already on disk

# path -> (size, mtime_ns) of files hashed and found good in this process: a batch that
# loads the same model many times hashes it once.
_verified: dict[Path, tuple[int, int]] = {}


class NotARegularFile(Exception):
    """A path that is a link, folder, device or FIFO where a file was expected: str() says which."""


class WrongSize(Exception):
    """The source is not the catalogue's size: `actual` bytes, or None for "more than it"."""

    def __init__(self, actual: int | None) -> None:
        super().__init__(actual)
        self.actual = actual


# ---------------------------------------------------------------- paths


def cache_dir() -> Path:
    """The cache root: UPSCALE_CACHE_DIR, else the platform's user cache dir for upscale-cli."""
    override = os.environ.get("UPSCALE_CACHE_DIR", "").strip()
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def weights_dir() -> Path:
    """The folder that holds every cached weights file (what clear_cache removes)."""
    return cache_dir() / WEIGHTS_SUBDIR


def packaged_weights_path(filename: str) -> Path:
    """Where a weights file that ships inside the package lives."""
    return Path(str(resources.files("upscale_cli").joinpath("weights", filename)))


def cached_path(file: WeightsFile) -> Path:
    """Where `file` lives: inside the package when packaged, else CACHE/weights/<sha256>/<filename>."""
    if file.packaged:
        return packaged_weights_path(file.filename)
    return weights_dir() / file.sha256 / file.filename


def is_cached(file: WeightsFile) -> bool:
    """Whether the file is on disk with the right size (ensure_weights checks its hash)."""
    path = cached_path(file)
    try:
        return path.stat().st_size == file.size
    except OSError:
        return False


def part_path(path: Path) -> Path:
    return path.with_name(path.name + PART_SUFFIX)


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + LOCK_SUFFIX)


def remove_leftovers(path: Path) -> None:
    """The .part and .lock of this one cached file, left by a killed run; a download of it that is
    running now holds the lock, and its files are left alone."""
    part, lock = part_path(path), lock_path(path)
    if fcntl is None or not (part.exists() or lock.exists()):
        return
    handle = _take_lock(lock, wait=False)
    if handle is not None:
        unlink(part)
        _let_go(lock, handle)


def cached_and_good(file: WeightsFile, path: Path) -> bool:
    """True for a verified cached file; a corrupt one is removed so it gets fetched again."""
    try:
        st = path.stat()
    except OSError:
        return False
    if _verified.get(path) == (st.st_size, st.st_mtime_ns):
        return True
    if st.st_size == file.size and stat.S_ISREG(st.st_mode) and _hash_or_none(path) == file.sha256:
        _verified[path] = (st.st_size, st.st_mtime_ns)
        return True
    unlink(path)
    return False


def _hash_or_none(path: Path) -> str | None:
    try:
        return hash_file(path)
    except (NotARegularFile, OSError):
        return None


# ---------------------------------------------------------------- filling, verifying, adding by hand


def add_local_file(file: WeightsFile, src: Path) -> Path:
    """Put a file fetched by hand into the cache as `file` (size and sha256 checked while copying);
    the user's file is only read."""
    path = cached_path(file)
    if cached_and_good(file, path):
        return path
    make_folder(path.parent)
    with file_lock(lock_path(path)):
        if not cached_and_good(file, path):
            copy_verified(file, path, src)
    return path


def copy_verified(file: WeightsFile, path: Path, src: Path) -> None:
    """Copy a local file into the cache as `file`, hashing as it goes (no progress: it is local)."""
    part = part_path(path)
    hasher = hashlib.sha256()
    try:
        actual = src.stat().st_size
        if actual != file.size:
            raise WrongSize(actual)
        with open(src, "rb") as f:
            chunks = iter(lambda: f.read(CHUNK_BYTES), b"")
            write_chunks(chunks, part, "wb", hasher, _no_progress, file.size)
    except WrongSize as err:
        unlink(part)
        raise wrong_size_error(file, str(src), err.actual) from None
    finish(file, part, path, hasher, str(src))


def _no_progress(n: int) -> None:
    """A local copy shows no progress."""


def wrong_size_error(file: WeightsFile, source: str, actual: int | None) -> WrongSizeError:
    if actual is None:
        what = f"sent more than the catalogue's {file.size:,} bytes; the download was stopped there and deleted"
    else:
        what = f"is {actual:,} bytes, but the catalogue says {file.size:,}; the download was deleted"
    return WrongSizeError(f"{file.filename} from {source} {what}")


def write_chunks(chunks: Iterable[bytes], part: Path, mode: str, hasher, advance: Callable[[int], None],
                  room: int) -> None:
    """Append (or write) chunks to the part file, hashing them; disk errors become WeightsError.

    room: the bytes still missing from the catalogue's size; a source that sends more is a wrong
    file (WrongSize), stopped before the excess reaches the disk.
    """
    try:
        with open(part, mode) as out:
            for chunk in chunks:
                if len(chunk) > room:
                    raise WrongSize(None)
                room -= len(chunk)
                out.write(chunk)
                hasher.update(chunk)
                advance(len(chunk))
    except OSError as err:  # requests' errors are OSErrors too; they pass through untouched
        if err.errno == errno.ENOSPC:
            unlink(part)
            raise WeightsError(f"disk full while writing {part}; free some space or set UPSCALE_CACHE_DIR to another disk") from None
        if isinstance(err, PermissionError) or err.errno in (errno.EACCES, errno.EROFS):
            raise not_writable(part.parent) from None
        raise


def finish(file: WeightsFile, part: Path, path: Path, hasher, source: str) -> None:
    """Verify the finished part and move it into place, or delete it and fail."""
    digest = hasher.hexdigest()
    if digest != file.sha256:
        unlink(part)
        raise ChecksumError(f"{file.filename} from {source} has sha256 {digest}, expected {file.sha256}; the download was deleted")
    os.replace(part, path)
    st = path.stat()
    _verified[path] = (st.st_size, st.st_mtime_ns)


def hash_file(path: Path, *, follow: bool = True) -> str:
    """The sha256 of a regular file, reading no more than its size when opened (a file that grows
    meanwhile cannot keep us reading); NotARegularFile for anything else, a link too unless `follow`."""
    hasher = hashlib.sha256()
    f, size = open_regular(path, follow=follow)
    with f:
        hash_up_to(f, size, hasher)
    return hasher.hexdigest()


def hash_up_to(f, limit: int, hasher, keep: int = 0) -> tuple[int, bytes]:
    """Feed at most `limit` bytes of the open file `f` to `hasher`, never more (a file that grows
    meanwhile cannot keep us reading); (the bytes read, fewer at an early end; the last `keep` of them)."""
    left, tail = limit, b""
    while left:
        chunk = f.read(min(left, HASH_READ_BYTES))
        if not chunk:
            break
        hasher.update(chunk)
        if keep:
            tail = (tail + chunk[-keep:])[-keep:]  # not a copy of the whole chunk
        left -= len(chunk)
    return limit - left, tail


def open_regular(path: Path, *, follow: bool = True):
    """(binary file object, size) of a regular file. O_NONBLOCK: opening a FIFO does not wait for a
    writer; the type is checked on the open descriptor, so a swap after a check cannot slip past."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (0 if follow else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(path, flags)
    except OSError as err:
        if not follow and os.path.islink(path):  # O_NOFOLLOW's ELOOP
            raise NotARegularFile(describe(path)) from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotARegularFile(describe(path))
    return os.fdopen(fd, "rb"), st.st_size


def describe(path: Path) -> str:
    """What a path that is not a regular file is, in words ("a symbolic link to /dev/zero")."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return "missing"
    if stat.S_ISLNK(mode):
        try:
            return f"a symbolic link to {printable_path(os.readlink(path))}"
        except OSError:
            return "a symbolic link"
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISREG, "a regular file"))
    return next((words for test, words in kinds if test(mode)), "not a regular file")


def unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    _verified.pop(path, None)


def not_writable(folder: Path) -> WeightsError:
    return WeightsError(f"the cache folder {folder} is not writable; set UPSCALE_CACHE_DIR to a writable folder")


def make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError(folder)
    except OSError:
        raise not_writable(folder) from None


# ---------------------------------------------------------------- the lock


@contextlib.contextmanager
def file_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `lock_path`, and remove the file when done, success or failure
    (no-op where fcntl is missing)."""
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    handle = _take_lock(lock_path, wait=True)
    try:
        yield
    finally:
        _let_go(lock_path, handle)


def _take_lock(lock_path: Path, wait: bool):
    """An open handle holding the flock of the file now at `lock_path`; None if not `wait` and busy.

    The holder before us removes the file as it lets go, so a lock won on a file that is no
    longer there (or was replaced) is worthless: open the current one and try again.
    """
    while True:
        try:
            handle = open(lock_path, "a+b")
        except OSError:
            raise not_writable(lock_path.parent) from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.close()
            return None
        try:
            current = os.stat(lock_path)
        except FileNotFoundError:
            current = None
        held = os.fstat(handle.fileno())
        if current is not None and (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
            return handle
        handle.close()


def _let_go(lock_path: Path, handle) -> None:
    """Remove the lock file while still holding it (a waiter then sees it gone), then release it."""
    with contextlib.suppress(OSError):
        lock_path.unlink()
    handle.close()


# ---------------------------------------------------------------- maintenance


@dataclass
class VerifyReport:
    """What verify_cache found: good files, corrupt files (removed), stale partial downloads, and
    entries that are not regular files (links, folders, devices, FIFOs), never read: (path, what
    it is, whether it was removed)."""

    good: list[Path] = field(default_factory=list)
    corrupt: list[Path] = field(default_factory=list)
    partial: list[Path] = field(default_factory=list)
    not_files: list[tuple[Path, str, bool]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.corrupt and not self.not_files


def _cache_entries() -> Iterator[tuple[str | None, Path]]:
    """(expected sha256, path) for each entry of CACHE/weights/<sha256>/, and (None, path) for an
    entry of CACHE/weights/ that is not a real folder (a link to one is not followed)."""
    root = weights_dir()
    if not root.is_dir():
        return
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and not folder.is_symlink():
            for path in sorted(folder.iterdir()):
                yield folder.name, path
        else:
            yield None, folder


def verify_cache(remove: bool = True) -> VerifyReport:
    """Re-hash every cached file against its folder name; corrupt files are removed. An entry that
    is not a regular file is never followed or read: it is reported (and removed when it is not a
    folder, which removes a link, never what it points to)."""
    report = VerifyReport()
    for sha, path in _cache_entries():
        if sha is None:  # CACHE/weights/ holds only <sha256> folders: a link to one is not walked
            what = f"{describe(path)}, not a cache folder"
            report.not_files.append((path, what, remove and path.is_symlink() and _remove_entry(path)))
        elif path.name.endswith(LOCK_SUFFIX):
            continue
        elif path.name.endswith(PART_SUFFIX):
            report.partial.append(path)
        else:
            _verify_entry(sha, path, remove, report)
    return report


def _verify_entry(sha: str, path: Path, remove: bool, report: VerifyReport) -> None:
    try:
        digest = hash_file(path, follow=False)
    except NotARegularFile as err:
        report.not_files.append((path, str(err), remove and _remove_entry(path)))
        return
    except OSError as err:
        report.not_files.append((path, f"unreadable ({err.strerror or err})", False))
        return
    if digest == sha:
        report.good.append(path)
        return
    report.corrupt.append(path)
    if remove:
        unlink(path)


def _remove_entry(path: Path) -> bool:
    """Remove a link, file, device node or FIFO (the entry itself, not what a link points to);
    a folder stays. Whether it is gone."""
    if path.is_dir() and not path.is_symlink():
        return False
    try:
        unlink(path)
    except OSError:
        return False
    return True


def clear_cache() -> tuple[int, int]:
    """Remove every cached weights file; returns (files removed, bytes freed)."""
    count = freed = 0
    for _, path in _cache_entries():
        if not path.name.endswith(LOCK_SUFFIX):
            count += 1
            with contextlib.suppress(OSError):  # lstat: a link is removed, not what it points to
                st = path.lstat()
                freed += st.st_size if stat.S_ISREG(st.st_mode) else 0
    root = weights_dir()
    if root.exists():
        try:
            shutil.rmtree(root)
        except OSError as err:
            raise WeightsError(f"could not clear the cache {root}: {err.strerror or err}") from None
    _verified.clear()
    return count, freed
