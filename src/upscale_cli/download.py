"""The weights cache: where downloaded weights live, and how they get there safely.

Files are stored by content hash, `CACHE/weights/<sha256>/<filename>`, so two models can
never clash and a file's folder name is its own checksum. A download streams into
`<filename>.part` while hashing, resumes that part with an HTTP Range request, retries
connection errors and 5xx with backoff, verifies the sha256, then `os.replace`s the part
into place. No more than the catalogue's size is ever written: a server that sends more, or
says the file has another size, is refused as a wrong file. A `<filename>.lock` beside it
(fcntl.flock) makes concurrent processes that need the same file download it once; the
process holding it removes it when its download ends, and a run that finds the file cached
removes that file's own `.part`/`.lock` left by a killed run (a killed run's `.part` is
otherwise what the next download resumes).

Environment (each checked; a bad value is a WeightsError that names the variable):
  UPSCALE_CACHE_DIR          the cache folder (default: the platformdirs user cache dir)
  UPSCALE_OFFLINE=1          never touch the network; a missing file is an OfflineError
  UPSCALE_WEIGHTS_MIRROR     an http(s) base URL or a local folder to fetch files from by name
  UPSCALE_DOWNLOAD_RETRIES   retries after a connection error or 5xx (default 3, at most 100)
  UPSCALE_DOWNLOAD_BACKOFF   first retry delay in seconds, doubled each time up to a minute (default 1.0)
  UPSCALE_DOWNLOAD_TIMEOUT   read timeout in seconds (default 30, at most 3600; connect timeout 10)

This module owns the console only for its download progress (`_progress_reporter`).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator
from urllib.parse import quote, unquote, urlparse

from upscale_cli.catalog import WeightsFile, packaged_weights_path
from upscale_cli.errors import ChecksumError, DownloadError, OfflineError, WeightsError, WrongSizeError

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
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 30.0
RETRIES = 3
BACKOFF_S = 1.0
MAX_RETRIES = 100
MAX_BACKOFF_S = 600.0  # the first retry delay
MAX_RETRY_DELAY_S = 60.0  # no single wait between attempts is longer, however many retries
MAX_TIMEOUT_S = 3600.0
USER_AGENT = "upscale-cli (+https://github.com/upscale-cli)"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}
_MIRROR_SCHEMES = ("http", "https", "file")

# path -> (size, mtime_ns) of files hashed and found good in this process: a batch that
# loads the same model many times hashes it once.
_verified: dict[Path, tuple[int, int]] = {}


class _Retryable(Exception):
    """A failure worth another attempt (connection dropped, timeout, 5xx)."""


class _Restart(_Retryable):
    """The server cannot continue our part: drop it and download from the start."""

    def __str__(self) -> str:
        return "the server could not resume the download"


class _WrongSize(Exception):
    """The source is not the catalogue's size: `actual` bytes, or None for "more than it"."""

    def __init__(self, actual: int | None) -> None:
        super().__init__(actual)
        self.actual = actual


# ---------------------------------------------------------------- settings and paths


@dataclass(frozen=True)
class DownloadSettings:
    """The UPSCALE_* download settings, read and checked once per ensure_weights."""

    offline: bool
    mirror: str | None
    retries: int
    backoff_s: float
    timeout_s: float


def download_settings() -> DownloadSettings:
    """Every download setting from the environment; WeightsError naming the first bad one."""
    return DownloadSettings(
        offline=is_offline(),
        mirror=mirror(),
        retries=_env_int("UPSCALE_DOWNLOAD_RETRIES", RETRIES, MAX_RETRIES),
        backoff_s=_env_seconds("UPSCALE_DOWNLOAD_BACKOFF", BACKOFF_S, MAX_BACKOFF_S, zero_ok=True),
        timeout_s=_env_seconds("UPSCALE_DOWNLOAD_TIMEOUT", READ_TIMEOUT_S, MAX_TIMEOUT_S, zero_ok=False),
    )


def _env_int(name: str, default: int, high: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) > high:
        raise WeightsError(f"{name} must be a whole number from 0 to {high}, not {raw!r}")
    return int(raw)


def _env_seconds(name: str, default: float, high: float, *, zero_ok: bool) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (0.0 <= value <= high) or (value == 0.0 and not zero_ok):
        low = "from 0" if zero_ok else "above 0 and"
        raise WeightsError(f"{name} must be a number of seconds {low} up to {high:g}, not {raw!r}")
    return value


def is_offline() -> bool:
    """UPSCALE_OFFLINE as a yes/no; WeightsError for anything else."""
    raw = os.environ.get("UPSCALE_OFFLINE", "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise WeightsError(f"UPSCALE_OFFLINE must be 1, true, yes or on (or 0, false, no, off), not {raw!r}")


def mirror() -> str | None:
    """UPSCALE_WEIGHTS_MIRROR (an http(s) URL, a file:// URL or a folder), or None."""
    raw = os.environ.get("UPSCALE_WEIGHTS_MIRROR", "").strip()
    if not raw:
        return None
    parsed = urlparse(raw)
    if "://" in raw and (parsed.scheme not in _MIRROR_SCHEMES or (parsed.scheme != "file" and not parsed.netloc)):
        raise WeightsError(f"UPSCALE_WEIGHTS_MIRROR must be an http(s) URL or a local folder, not {raw!r}")
    return raw


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


# ---------------------------------------------------------------- the public entry point


def ensure_weights(file: WeightsFile, progress: bool = True) -> Path:
    """The local path of a verified copy of `file`, downloading it first when needed."""
    path = cached_path(file)
    if file.packaged:
        if not path.is_file():
            raise WeightsError(f"packaged weights {file.filename} are missing from the installation; reinstall upscale-cli")
        return path
    settings = download_settings()
    if _cached_and_good(file, path):
        _remove_leftovers(path)
        return path
    if settings.offline and not _is_folder_mirror(settings.mirror):
        raise OfflineError(_offline_message(file, path, settings.mirror))
    _make_folder(path.parent)
    with _file_lock(_lock_path(path)):
        if _cached_and_good(file, path):  # another process fetched it while we waited
            _unlink(_part_path(path))
            return path
        _fetch(file, path, settings, progress)
    return path


def _part_path(path: Path) -> Path:
    return path.with_name(path.name + PART_SUFFIX)


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + LOCK_SUFFIX)


def _remove_leftovers(path: Path) -> None:
    """The .part and .lock of this one cached file, left by a killed run; a download of it that is
    running now holds the lock, and its files are left alone."""
    part, lock = _part_path(path), _lock_path(path)
    if fcntl is None or not (part.exists() or lock.exists()):
        return
    handle = _take_lock(lock, wait=False)
    if handle is not None:
        _unlink(part)
        _let_go(lock, handle)


def _cached_and_good(file: WeightsFile, path: Path) -> bool:
    """True for a verified cached file; a corrupt one is removed so it gets fetched again."""
    try:
        st = path.stat()
    except OSError:
        return False
    if _verified.get(path) == (st.st_size, st.st_mtime_ns):
        return True
    if st.st_size == file.size and _hash_file(path) == file.sha256:
        _verified[path] = (st.st_size, st.st_mtime_ns)
        return True
    _unlink(path)
    return False


def _offline_message(file: WeightsFile, path: Path, source: str | None) -> str:
    where = f"download {file.url} and save it as {path}" if file.url else f"save {file.filename} as {path}"
    folder = " (or into the folder named by UPSCALE_WEIGHTS_MIRROR)" if not source else ""
    return f"{file.filename} is not cached and UPSCALE_OFFLINE is set: {where}{folder}"


def _fetch(file: WeightsFile, path: Path, settings: DownloadSettings, progress: bool) -> None:
    """Fill `path` from the mirror, else from the file's URLs in order."""
    source = settings.mirror
    if _is_folder_mirror(source):
        _copy_from_folder(file, path, _folder_of(source))
        return
    if source:
        urls: tuple[str, ...] = (source.rstrip("/") + "/" + quote(file.filename),)
    else:
        urls = file.urls
    if not urls:
        raise WeightsError(f"{file.filename} has no download URL")
    first_error: WeightsError | None = None
    for url in urls:
        try:
            _download(url, file, path, settings, progress)
            return
        except (DownloadError, ChecksumError) as err:
            first_error = first_error or err
    assert first_error is not None
    if len(urls) > 1:
        first_error.message += f" (and {len(urls) - 1} mirror(s) failed too)"
    raise first_error


# ---------------------------------------------------------------- local mirror folder


def _is_folder_mirror(source: str | None) -> bool:
    return bool(source) and urlparse(source).scheme not in ("http", "https")


def _folder_of(source: str) -> Path:
    if source.startswith("file://"):
        return Path(unquote(urlparse(source).path))
    return Path(source).expanduser()


def _copy_from_folder(file: WeightsFile, path: Path, folder: Path) -> None:
    """Copy by file name from a local mirror folder, hashing as we go (no progress: it is local)."""
    src = folder / file.filename
    if not folder.is_dir():
        raise WeightsError(f"the mirror folder {folder} (UPSCALE_WEIGHTS_MIRROR) does not exist")
    if not src.is_file():
        raise WeightsError(f"{file.filename} is not in the mirror folder {folder} (UPSCALE_WEIGHTS_MIRROR)")
    _copy_verified(file, path, src)


def add_local_file(file: WeightsFile, src: Path) -> Path:
    """Put a file fetched by hand into the cache as `file` (size and sha256 checked while copying);
    the user's file is only read."""
    path = cached_path(file)
    if _cached_and_good(file, path):
        return path
    _make_folder(path.parent)
    with _file_lock(_lock_path(path)):
        if not _cached_and_good(file, path):
            _copy_verified(file, path, src)
    return path


def _copy_verified(file: WeightsFile, path: Path, src: Path) -> None:
    part = _part_path(path)
    hasher = hashlib.sha256()
    try:
        actual = src.stat().st_size
        if actual != file.size:
            raise _WrongSize(actual)
        with open(src, "rb") as f:
            chunks = iter(lambda: f.read(CHUNK_BYTES), b"")
            _write_chunks(chunks, part, "wb", hasher, _Silent().advance, file.size)
    except _WrongSize as err:
        _unlink(part)
        raise _wrong_size_error(file, str(src), err.actual) from None
    _finish(file, part, path, hasher, str(src))


# ---------------------------------------------------------------- HTTP download


def _download(url: str, file: WeightsFile, path: Path, settings: DownloadSettings, progress: bool) -> None:
    """Download `url` into `path` with resume and retries; raises DownloadError or ChecksumError
    (WrongSizeError for a file of another size). The progress ends with "downloaded" only once
    the file is verified and in place."""
    import requests

    part = _part_path(path)
    with requests.Session() as session, _progress_reporter(file, url, progress) as report:
        # identity: byte ranges must count the file's own bytes, not a gzip stream's
        session.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
        try:
            hasher = _attempts(session, url, file, part, report, settings)
        except _WrongSize as err:
            _unlink(part)
            raise _wrong_size_error(file, url, err.actual) from None
        _finish(file, part, path, hasher, url)


def _attempts(session, url: str, file: WeightsFile, part: Path, report: "_Silent", settings: DownloadSettings):
    """_attempt, retried up to settings.retries times; the hash of the whole part."""
    for attempt in range(settings.retries + 1):
        try:
            return _attempt(session, url, file, part, report, settings.timeout_s)
        except _Retryable as err:
            if attempt == settings.retries:
                raise DownloadError(f"could not download {url}: {err}") from None
            if isinstance(err, _Restart):
                _unlink(part)
            else:
                time.sleep(min(settings.backoff_s * 2**attempt, MAX_RETRY_DELAY_S))
    raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover


def _wrong_size_error(file: WeightsFile, source: str, actual: int | None) -> WrongSizeError:
    if actual is None:
        what = f"sent more than the catalogue's {file.size:,} bytes; the download was stopped there and deleted"
    else:
        what = f"is {actual:,} bytes, but the catalogue says {file.size:,}; the download was deleted"
    return WrongSizeError(f"{file.filename} from {source} {what}")


def _hash_part(part: Path, size: int) -> tuple[int, "hashlib._Hash"]:
    """Bytes already downloaded and their running hash; a part too large is dropped."""
    hasher = hashlib.sha256()
    try:
        have = part.stat().st_size
    except OSError:
        return 0, hasher
    if have > size:
        _unlink(part)
        return 0, hasher
    with open(part, "rb") as f:
        left = have  # read no more than stat said: the part may still be growing elsewhere
        while left:
            chunk = f.read(min(left, 1 << 20))
            if not chunk:
                break
            hasher.update(chunk)
            left -= len(chunk)
    return have - left, hasher


def _attempt(session, url: str, file: WeightsFile, part: Path, report: "_Silent", timeout_s: float):
    """One HTTP request that continues the part file; returns the hash of the whole part."""
    import requests

    offset, hasher = _hash_part(part, file.size)
    if offset == file.size:
        return hasher
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with session.get(url, headers=headers, stream=True, timeout=(CONNECT_TIMEOUT_S, timeout_s)) as resp:
            offset, hasher = _check_response(resp, url, offset, hasher)
            _check_declared_size(resp, offset, file.size)
            report.start_at(offset)
            chunks = resp.iter_content(CHUNK_BYTES)
            _write_chunks(chunks, part, "ab" if offset else "wb", hasher, report.advance, file.size - offset)
            have = part.stat().st_size
            # the whole file came (its end was marked) and it is short; a short 206 may just be a
            # smaller range than asked for, which the next attempt continues
            if have < file.size and resp.status_code == 200 and _body_length_known(resp):
                raise _WrongSize(have)
    except requests.exceptions.RequestException as err:
        _raise_request_error(err, url)
    if have < file.size:
        raise _Retryable(f"the server closed the connection after {have:,} of {file.size:,} bytes")
    return hasher


def _check_declared_size(resp, offset: int, size: int) -> None:
    """A 206's Content-Range total, or a plain 200's Content-Length, that is not the catalogue's size."""
    if resp.status_code == 206:
        total = resp.headers.get("Content-Range", "").rpartition("/")[2].strip()
        if total.isdigit() and int(total) != size:
            raise _WrongSize(int(total))
    elif _body_length_known(resp) and "Content-Length" in resp.headers:
        length = resp.headers["Content-Length"].strip()
        if length.isdigit() and int(length) != size:
            raise _WrongSize(int(length))


def _body_length_known(resp) -> bool:
    """Whether the body's end is marked (a Content-Length urllib3 enforces, or chunked encoding), so
    a body that ends short is the server's whole answer, not a dropped connection."""
    if resp.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        return False  # the length counts compressed bytes
    return "Content-Length" in resp.headers or "chunked" in resp.headers.get("Transfer-Encoding", "").lower()


def _check_response(resp, url: str, offset: int, hasher):
    """Accept 200 (start again from byte 0) or a 206 that continues at `offset`."""
    status = resp.status_code
    if status >= 500 or status == 429:
        raise _Retryable(f"HTTP {status} {resp.reason}")
    if status == 416:  # our part does not fit the server's file: start again
        raise _Restart()
    if status >= 400:
        raise DownloadError(f"HTTP {status} {resp.reason} from {url}")
    if status == 206 and offset:
        content_range = resp.headers.get("Content-Range", "")
        if content_range.startswith(f"bytes {offset}-"):
            return offset, hasher
    if status == 206:
        raise _Restart()
    return 0, hashlib.sha256()  # 200: the server ignored Range and sent the whole file


def _raise_request_error(err: Exception, url: str) -> None:
    """Translate a requests exception into a retry or a one-line DownloadError."""
    import requests

    host = urlparse(url).netloc
    text = repr(err)
    if isinstance(err, requests.exceptions.ConnectionError) and "NameResolutionError" in text:
        raise DownloadError(f"could not download {url}: cannot resolve host {host} (no network or DNS failure)") from None
    if isinstance(err, requests.exceptions.Timeout) or "timed out" in text.lower():
        raise _Retryable(f"timed out talking to {host}") from None
    if isinstance(err, requests.exceptions.ConnectionError) and "Connection refused" in text:
        raise _Retryable(f"connection refused by {host}") from None
    if isinstance(err, (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        raise _Retryable(f"connection to {host} failed") from None
    raise DownloadError(f"could not download {url}: {err}") from None


# ---------------------------------------------------------------- writing and verifying


def _write_chunks(chunks: Iterable[bytes], part: Path, mode: str, hasher, advance: Callable[[int], None],
                  room: int) -> None:
    """Append (or write) chunks to the part file, hashing them; disk errors become WeightsError.

    room: the bytes still missing from the catalogue's size; a source that sends more is a wrong
    file (_WrongSize), stopped before the excess reaches the disk.
    """
    try:
        with open(part, mode) as out:
            for chunk in chunks:
                if len(chunk) > room:
                    raise _WrongSize(None)
                room -= len(chunk)
                out.write(chunk)
                hasher.update(chunk)
                advance(len(chunk))
    except OSError as err:  # requests' errors are OSErrors too; they pass through untouched
        if err.errno == errno.ENOSPC:
            _unlink(part)
            raise WeightsError(f"disk full while writing {part}; free some space or set UPSCALE_CACHE_DIR to another disk") from None
        if isinstance(err, PermissionError) or err.errno in (errno.EACCES, errno.EROFS):
            raise _not_writable(part.parent) from None
        raise


def _finish(file: WeightsFile, part: Path, path: Path, hasher, source: str) -> None:
    """Verify the finished part and move it into place, or delete it and fail."""
    digest = hasher.hexdigest()
    if digest != file.sha256:
        _unlink(part)
        raise ChecksumError(f"{file.filename} from {source} has sha256 {digest}, expected {file.sha256}; the download was deleted")
    os.replace(part, path)
    st = path.stat()
    _verified[path] = (st.st_size, st.st_mtime_ns)


def _hash_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    _verified.pop(path, None)


def _not_writable(folder: Path) -> WeightsError:
    return WeightsError(f"the cache folder {folder} is not writable; set UPSCALE_CACHE_DIR to a writable folder")


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError(folder)
    except OSError:
        raise _not_writable(folder) from None


@contextlib.contextmanager
def _file_lock(lock_path: Path) -> Iterator[None]:
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
            raise _not_writable(lock_path.parent) from None
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


# ---------------------------------------------------------------- progress (the one console user)


class _Silent:
    """Progress that shows nothing; the rich bar overrides both methods."""

    def start_at(self, completed: int) -> None:
        """The transfer (re)starts with `completed` bytes already on disk."""

    def advance(self, n: int) -> None:
        """`n` more bytes arrived."""


class _RichBar(_Silent):
    def __init__(self, bar, task) -> None:
        self.bar, self.task = bar, task

    def start_at(self, completed: int) -> None:
        self.bar.update(self.task, completed=completed)

    def advance(self, n: int) -> None:
        self.bar.advance(self.task, n)


@contextlib.contextmanager
def _progress_reporter(file: WeightsFile, url: str, enabled: bool) -> Iterator[_Silent]:
    """A rich bar (size, speed, time left) when stderr is a terminal, plain lines otherwise, or nothing."""
    if not enabled:
        yield _Silent()
        return
    if not sys.stderr.isatty():
        start = time.monotonic()
        print(f"downloading {file.filename} ({format_size(file.size)}) from {url}", file=sys.stderr, flush=True)
        yield _Silent()
        print(f"downloaded {file.filename} in {time.monotonic() - start:.1f} s", file=sys.stderr, flush=True)
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(file.filename, total=file.size)
        yield _RichBar(bar, task)


def format_size(n: int) -> str:
    """1234567 -> '1.2 MB' (decimal units, like download tools)."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


# ---------------------------------------------------------------- cache maintenance


@dataclass
class VerifyReport:
    """What verify_cache found: good files, corrupt files (removed) and stale partial downloads."""

    good: list[Path] = field(default_factory=list)
    corrupt: list[Path] = field(default_factory=list)
    partial: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.corrupt


def _cache_entries() -> Iterator[tuple[str, Path]]:
    """(expected sha256, path) for each file under CACHE/weights/<sha256>/."""
    root = weights_dir()
    if not root.is_dir():
        return
    for folder in sorted(root.iterdir()):
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                yield folder.name, path


def verify_cache(remove: bool = True) -> VerifyReport:
    """Re-hash every cached file against its folder name; corrupt files are removed."""
    report = VerifyReport()
    for sha, path in _cache_entries():
        if path.name.endswith(LOCK_SUFFIX):
            continue
        if path.name.endswith(PART_SUFFIX):
            report.partial.append(path)
        elif _hash_file(path) == sha:
            report.good.append(path)
        else:
            report.corrupt.append(path)
            if remove:
                _unlink(path)
    return report


def clear_cache() -> tuple[int, int]:
    """Remove every cached weights file; returns (files removed, bytes freed)."""
    count = freed = 0
    for _, path in _cache_entries():
        if not path.name.endswith(LOCK_SUFFIX):
            count += 1
            freed += path.stat().st_size
    root = weights_dir()
    if root.exists():
        try:
            shutil.rmtree(root)
        except OSError as err:
            raise WeightsError(f"could not clear the cache {root}: {err.strerror or err}") from None
    _verified.clear()
    return count, freed
