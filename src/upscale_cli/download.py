"""Getting weights into the cache (weights_cache.py): HTTP with resume and retries, or a mirror.

`ensure_weights` is the entry point: a verified cached copy, else a download. A download
streams into the cache's `.part` file while hashing, resumes that part with an HTTP Range
request, retries connection errors and 5xx with backoff, and hands the finished part to the
cache to verify (sha256) and move into place, holding the cache's lock for the file meanwhile.

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
import hashlib
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import quote, unquote, urlparse

from upscale_cli.errors import ChecksumError, DownloadError, OfflineError, WeightsError
from upscale_cli.model_spec import WeightsFile
from upscale_cli.weights_cache import (CHUNK_BYTES, WrongSize, cached_and_good, cached_path, copy_verified, file_lock,
                                       finish, lock_path, make_folder, part_path, remove_leftovers, unlink,
                                       write_chunks, wrong_size_error)

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


class _Retryable(Exception):
    """A failure worth another attempt (connection dropped, timeout, 5xx)."""


class _Restart(_Retryable):
    """The server cannot continue our part: drop it and download from the start."""

    def __str__(self) -> str:
        return "the server could not resume the download"


# ---------------------------------------------------------------- settings


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


# ---------------------------------------------------------------- the public entry point


def ensure_weights(file: WeightsFile, progress: bool = True) -> Path:
    """The local path of a verified copy of `file`, downloading it first when needed."""
    path = cached_path(file)
    if file.packaged:
        if not path.is_file():
            raise WeightsError(f"packaged weights {file.filename} are missing from the installation; reinstall upscale-cli")
        return path
    settings = download_settings()
    if cached_and_good(file, path):
        remove_leftovers(path)
        return path
    if settings.offline and not _is_folder_mirror(settings.mirror):
        raise OfflineError(_offline_message(file, path, settings.mirror))
    make_folder(path.parent)
    with file_lock(lock_path(path)):
        if cached_and_good(file, path):  # another process fetched it while we waited
            unlink(part_path(path))
            return path
        _fetch(file, path, settings, progress)
    return path


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
    copy_verified(file, path, src)


# ---------------------------------------------------------------- HTTP download


def _download(url: str, file: WeightsFile, path: Path, settings: DownloadSettings, progress: bool) -> None:
    """Download `url` into `path` with resume and retries; raises DownloadError or ChecksumError
    (WrongSizeError for a file of another size). The progress ends with "downloaded" only once
    the file is verified and in place."""
    import requests

    part = part_path(path)
    with requests.Session() as session, _progress_reporter(file, url, progress) as report:
        # identity: byte ranges must count the file's own bytes, not a gzip stream's
        session.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
        try:
            hasher = _attempts(session, url, file, part, report, settings)
        except WrongSize as err:
            unlink(part)
            raise wrong_size_error(file, url, err.actual) from None
        finish(file, part, path, hasher, url)


def _attempts(session, url: str, file: WeightsFile, part: Path, report: "_Silent", settings: DownloadSettings):
    """_attempt, retried up to settings.retries times; the hash of the whole part."""
    for attempt in range(settings.retries + 1):
        try:
            return _attempt(session, url, file, part, report, settings.timeout_s)
        except _Retryable as err:
            if attempt == settings.retries:
                raise DownloadError(f"could not download {url}: {err}") from None
            if isinstance(err, _Restart):
                unlink(part)
            else:
                time.sleep(min(settings.backoff_s * 2**attempt, MAX_RETRY_DELAY_S))
    raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover


def _hash_part(part: Path, size: int) -> tuple[int, "hashlib._Hash"]:
    """Bytes already downloaded and their running hash; a part too large is dropped."""
    hasher = hashlib.sha256()
    try:
        have = part.stat().st_size
    except OSError:
        return 0, hasher
    if have > size:
        unlink(part)
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
            write_chunks(chunks, part, "ab" if offset else "wb", hasher, report.advance, file.size - offset)
            have = part.stat().st_size
            # the whole file came (its end was marked) and it is short; a short 206 may just be a
            # smaller range than asked for, which the next attempt continues
            if have < file.size and resp.status_code == 200 and _body_length_known(resp):
                raise WrongSize(have)
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
            raise WrongSize(int(total))
    elif _body_length_known(resp) and "Content-Length" in resp.headers:
        length = resp.headers["Content-Length"].strip()
        if length.isdigit() and int(length) != size:
            raise WrongSize(int(length))


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
