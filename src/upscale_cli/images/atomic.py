"""Atomic writes of image files, and the temp files killed runs leave.

Bytes are written to a hidden `.NAME.<owner>-<pid>-<random>.upscale-part` file beside the
target, then renamed over it: never a half-written image. A run killed mid-write (kill -9,
SIGTERM) leaves that file; the next write of the same target by a run on the same machine
removes it once its pid is gone. A live pid (a concurrent run) and any other file are left
alone.
"""
from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import os
import re
import secrets
import socket
import threading
import time
import zlib
from concurrent.futures import Future
from pathlib import Path
from typing import Iterable

from upscale_cli.errors import ImageWriteError, printable_path

# The temp file's name says whose it is, so a later run can tell a killed run's
# leftover from a concurrent run's file in progress and from everything else.
TEMP_SUFFIX = ".upscale-part"
NAME_MAX_BYTES = 255  # the longest file name common file systems take
TEMP_NAME_EXTRA_BYTES = 2 + 8 + 1 + 10 + 1 + 8 + len(TEMP_SUFFIX)  # dots, owner, widest pid, random
LEFTOVER_NAME = re.compile(r"\.(.+)\.([0-9a-f]{8})-([1-9][0-9]{0,9})-[0-9a-f]{8}" + re.escape(TEMP_SUFFIX))

_sweep_lock = threading.Lock()
_dead_leftovers: dict[str, dict[str, list[str]]] = {}  # folder -> target stem -> leftover names


def over_name_limit(names: Iterable[str], limit: int = NAME_MAX_BYTES) -> str | None:
    """`N bytes, over the file system's L-byte limit of a file name` for the longest of `names`
    when it passes `limit`: the one wording of that limit, wherever a name is refused; else None."""
    longest = max((len(os.fsencode(name)) for name in names), default=0)
    return f"{longest} bytes, over the file system's {limit}-byte limit of a file name" if longest > limit else None


def name_max_bytes(folder: Path) -> int:
    """The limit on a name in `folder` as its file system says, or NAME_MAX_BYTES where it does not."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return NAME_MAX_BYTES


def make_folder(folder: Path, path: object | None = None) -> None:
    """Create `folder` and its parents (an -o folder that does not exist yet); ImageWriteError, naming
    `path` when given, if the file system refuses."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ImageWriteError(f"cannot create folder {folder}: {err.strerror}", path=path) from None


def write_bytes_atomically(data: bytes, path: str | Path, group: "DurableGroup | None" = None) -> "Future | None":
    """Write already-encoded bytes (an input kept as it was) the same atomic way; ImageWriteError naming the path."""
    target = Path(path)
    if os.path.isdir(target):
        raise ImageWriteError(write_error_message(IsADirectoryError(errno.EISDIR, "")), path=printable_path(target))
    return write_atomically(target, data, group)


def write_atomically(target: Path, data: bytes, group: "DurableGroup | None" = None) -> "Future | None":
    """Temp file beside the target, made durable, then os.replace: never a half-written image.

    Alone (no group) the temp file is fsynced and renamed before this returns. With a group the
    bytes are in the temp file when this returns, and the group makes it durable together with
    others and then renames it: the returned future says when (its exception: the ImageWriteError).
    Any exception (KeyboardInterrupt included) removes the temp file; only a kill
    that runs no Python code leaves it, for the next write of the target to remove.
    """
    remove_dead_leftovers(target)
    temp = temp_path(target)
    created = False
    try:
        # os.open with 0o666 lets the umask decide the mode, like a plain open().
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        created = True
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            if group is None:
                os.fsync(file.fileno())
            device = os.fstat(file.fileno()).st_dev
        if group is not None:
            return group.add(temp, target, device)
        os.replace(temp, target)
        return None
    except BaseException as e:
        if created:
            _remove_quietly(temp)
        if isinstance(e, (OSError, ValueError)):  # ValueError: a NUL in the name
            raise _write_error(e, target, created) from e
        raise


def _write_error(e: OSError | ValueError, target: Path, created: bool = True) -> ImageWriteError:
    message = write_error_message(e)
    if isinstance(e, PermissionError) and not created:
        message += " (cannot create files in that folder)"
    return ImageWriteError(message, path=printable_path(target))


# A DurableGroup's temp files wait for company at most this long, and are made durable at the
# latest when this many wait. One fsync per file took 4.4 ms here (1-9 ms under load; 0.2-0.25 ms
# a file with four threads fsyncing at once); one syncfs for 64 new files 0.12 ms a file, for 256
# 0.05 ms (research/measure_throughput.py, docs/BENCHMARKS.md).
GROUP_LINGER_S = 0.25
GROUP_FILES = 256
IDLE_CHECK_S = 0.5  # an idle group thread looks this often whether the program is ending


class DurableGroup:
    """Atomic writes made durable together: written temp files wait (GROUP_LINGER_S at most, up to
    GROUP_FILES), then one syncfs per file system makes all of them durable at once, and only then
    is each renamed into place, in the order they were added. So, as with one fsync per file, a
    target is either as it was or the complete new file, whatever crashes when. Where syncfs is
    missing (not Linux), each temp file is fsynced instead.

    A thread of its own does the syncing and renaming. `flush()` asks it not to wait for more;
    `close()` commits everything added and waits: writes already started still end renamed, and
    no temp file is left. A file that cannot be made durable or renamed fails alone (its future's
    ImageWriteError), its temp file removed.
    """

    def __init__(self, linger_s: float = GROUP_LINGER_S, most: int = GROUP_FILES) -> None:
        self._linger_s, self._most = linger_s, most
        self._cond = threading.Condition()
        self._queue: list[tuple[Path, Path, int, Future, float]] = []
        self._flush = self._closed = False
        self._thread = threading.Thread(target=self._run, name="upscale-durable", daemon=False)
        self._thread.start()

    def add(self, temp: Path, target: Path, device: int) -> Future:
        done: Future = Future()
        with self._cond:
            if self._closed:  # too late to wait for the group thread: durable now, alone
                self._queue.append((temp, target, device, done, 0.0))
                batch, self._queue = self._queue, []
            else:
                self._queue.append((temp, target, device, done, time.monotonic()))
                self._cond.notify_all()
                return done
        try:
            _commit(batch)
        except BaseException as err:
            _fail_rest(batch, err)
            raise
        return done

    def flush(self) -> None:
        with self._cond:
            self._flush = True
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def _take(self) -> list | None:
        """The next group to commit, once it is full, old enough, asked for, or the last."""
        with self._cond:
            while True:
                ending = self._closed or not threading.main_thread().is_alive()  # never closed: still ends
                if self._queue and (self._flush or ending or len(self._queue) >= self._most):
                    break
                if not self._queue and ending:
                    return None
                due = IDLE_CHECK_S if not self._queue else self._queue[0][4] + self._linger_s - time.monotonic()
                if due <= 0:
                    break
                self._cond.wait(min(due, IDLE_CHECK_S))
            batch, self._queue, self._flush = self._queue[: self._most], self._queue[self._most :], False
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            try:
                _commit(batch)
            except BaseException as err:  # never leave a waiter waiting: what is not done fails
                _fail_rest(batch, err)


def _fail_rest(batch: list[tuple[Path, Path, int, Future, float]], err: BaseException) -> None:
    """Files of a group whose commit broke unexpectedly: each one not renamed yet fails, its temp file removed."""
    for temp, target, _, done, _ in batch:
        if not done.done():
            _remove_quietly(temp)
            done.set_exception(ImageWriteError(f"cannot write: {type(err).__name__}: {err}",
                                               path=printable_path(target)))


def _commit(batch: list[tuple[Path, Path, int, Future, float]]) -> None:
    """Make the temp files durable (one syncfs per file system), then rename each into place."""
    failed: dict[int, OSError] = {}
    for device in dict.fromkeys(entry[2] for entry in batch):
        first = next(entry[0] for entry in batch if entry[2] == device)
        try:
            _make_durable(first, [entry[0] for entry in batch if entry[2] == device])
        except OSError as err:
            failed[device] = err
    for temp, target, device, done, _ in batch:
        try:
            if device in failed:
                raise failed[device]
            os.replace(temp, target)
        except (OSError, ValueError) as err:
            _remove_quietly(temp)
            done.set_exception(_write_error(err, target))
        else:
            done.set_result(None)


def _make_durable(first: Path, temps: list[Path]) -> None:
    syncfs = _syncfs()
    if syncfs is None:
        for temp in temps:
            fd = os.open(temp, os.O_RDWR)  # Windows commits only files open for writing
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return
    fd = os.open(first, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
    finally:
        os.close(fd)


@functools.lru_cache(maxsize=None)
def _syncfs():
    """libc's syncfs(fd) (Linux: since 5.8 it also reports write-back errors), or None."""
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError, TypeError):
        return None


def temp_path(target: Path) -> Path:
    owner = f"{_owner_tag()}-{os.getpid()}-{secrets.token_hex(4)}"
    return target.parent / f".{temp_stem(target.name)}.{owner}{TEMP_SUFFIX}"


def temp_stem(name: str) -> str:
    """The target's name inside its temp file's name; a hash where the name is so long
    that the temp file's name would pass the file system's limit."""
    encoded = os.fsencode(name)
    if len(encoded) + TEMP_NAME_EXTRA_BYTES <= NAME_MAX_BYTES:
        return name
    return "~" + hashlib.sha256(encoded).hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def _owner_tag() -> str:
    """Eight hex digits for this machine and pid namespace: a pid means something only there
    (another host on a shared folder, or another container, has its own pids)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{zlib.crc32(f'{socket.gethostname()}/{namespace}'.encode()):08x}"


def remove_dead_leftovers(target: str | Path) -> None:
    """Remove the temp files that killed runs of ours left for this same target.

    Every write calls it; a caller that decides not to write a target (it exists)
    may call it too.  A folder is listed once per process (a batch writes
    thousands of files into one), when the process first asks about it.
    """
    if os.name != "posix":
        return  # os.kill(pid, 0), the liveness test, would terminate the process on Windows
    target = Path(target)
    folder = os.path.abspath(target.parent)
    with _sweep_lock:
        if folder not in _dead_leftovers:
            _dead_leftovers[folder] = _find_dead_leftovers(folder)
        names = _dead_leftovers[folder].pop(temp_stem(target.name), [])
    for name in names:
        _remove_quietly(Path(folder) / name)


def _find_dead_leftovers(folder: str) -> dict[str, list[str]]:
    """Our temp files in `folder` whose writer is gone, by target stem."""
    found: dict[str, list[str]] = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                match = LEFTOVER_NAME.fullmatch(entry.name) if entry.name.endswith(TEMP_SUFFIX) else None
                if match and match[2] == _owner_tag() and _is_dead_runs_file(entry, int(match[3])):
                    found.setdefault(match[1], []).append(entry.name)
    except (OSError, ValueError):
        pass  # an unlistable folder (or a NUL in its name): the write itself says what is wrong
    return found


def _is_dead_runs_file(entry: os.DirEntry, pid: int) -> bool:
    """A plain file of this user's whose writing process has ended."""
    try:
        if not entry.is_file(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != os.getuid():
            return False
    except OSError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):
        return False  # another user's live process (EPERM), or no pid at all
    return False  # alive: a concurrent run is still writing it


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_error_message(error: OSError | ValueError) -> str:
    if isinstance(error, ValueError):
        return f"cannot write: invalid file name ({error})"
    if error.errno == errno.EROFS:
        return "read-only file system"
    if isinstance(error, PermissionError):
        return "permission denied"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk full"
    if isinstance(error, FileNotFoundError):
        return "cannot write: the folder does not exist"
    if isinstance(error, NotADirectoryError):
        return "cannot write: the parent is not a folder"
    if isinstance(error, IsADirectoryError):
        return "cannot write: a folder of that name exists"
    return f"cannot write: {error.strerror or error}"
