"""Getting weights into the cache (weights_cache.py): HTTP with resume and retries, or a mirror.

`ensure_weights` is the entry point: a verified cached copy, else a download. A download
streams into the cache's `.part` file while hashing, resumes that part with an HTTP Range
request, retries connection errors and 5xx with backoff, and hands the finished part to the
cache to verify (sha256) and move into place, holding the cache's lock for the file meanwhile.

A part is continued only while it can be this file's beginning: a resume asks for the last
RESUME_CHECK_BYTES of the part again and compares them, and a reply that is not the range asked
for (a 200, a 416, another Content-Range) starts the file over; a part that was continued and
then fails the checksum is dropped and the file fetched once more from byte 0, in the same run.

Every download of a file from one URL is bounded in time, a deadline and a minimum rate
(download_limits.py); the settings, each from an UPSCALE_* variable, are download_settings.py's:
  UPSCALE_CACHE_DIR          the cache folder (default: the platformdirs user cache dir)
  UPSCALE_OFFLINE, UPSCALE_WEIGHTS_MIRROR, UPSCALE_DOWNLOAD_*  see download_settings.py

This module owns the console only for its download progress (`_progress_reporter`).
"""
from __future__ import annotations

import contextlib
import hashlib
import re
import sys
import time
from pathlib import Path
from typing import Iterator
from urllib.parse import quote, unquote, urlparse

from upscale_cli.download_limits import LimitReached, Watch, watched_session
from upscale_cli.env import whole_number
from upscale_cli.download_settings import CONNECT_TIMEOUT_S, DownloadSettings, download_settings
from upscale_cli.errors import ChecksumError, DownloadError, OfflineError, WeightsError
from upscale_cli.model_spec import WeightsFile
from upscale_cli.weights_cache import (CHUNK_BYTES, WrongSize, cached_and_good, cached_path, copy_verified, file_lock,
                                       finish, hash_up_to, lock_path, make_folder, part_path, remove_leftovers,
                                       unlink, write_chunks, wrong_size_error)

MAX_RETRY_DELAY_S = 60.0  # no single wait between attempts is longer, however many retries
RESUME_CHECK_BYTES = 4096  # the end of a part fetched again and compared before it is continued
MAX_RESTARTS = 3  # starts from byte 0 after a part could not be continued; not counted as retries
USER_AGENT = "upscale-cli (+https://github.com/upscale-cli)"


class _Retryable(Exception):
    """A failure worth another attempt (connection dropped, timeout, 5xx)."""


class _Restart(Exception):
    """Our part cannot be continued (it is not this file's beginning, or the server will not say
    where its bytes go): drop it and download from the start."""

    def __init__(self, reason: str = "the server could not resume the download") -> None:
        super().__init__(reason)



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
    folder = " (or into the folder named by UPSCALE_WEIGHTS_MIRROR)" if not source else ""
    return f"{file.filename} is not cached and UPSCALE_OFFLINE is set: {by_hand(file, path)}{folder}"


def by_hand(file: WeightsFile, path: Path) -> str:
    """How to get a file into the cache without this program's download: the advice that ends a
    failed download's or an offline run's one line."""
    fetch = f"download {file.url} another way" if file.url else f"get {file.filename} another way"
    return f"{fetch}, then run `upscale models add FILE` (or save it as {path})"


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
    if isinstance(first_error, DownloadError):  # the host was not reached, or would not give it
        first_error.message += f"; {by_hand(file, path)}"
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
    part = part_path(path)
    with Watch(settings) as watch, watched_session(watch) as session, \
            _progress_reporter(file, url, progress) as report:
        # identity: byte ranges must count the file's own bytes, not a gzip stream's
        session.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
        try:
            hasher, continued = _attempts(session, url, file, part, report, settings, watch)
            try:
                finish(file, part, path, hasher, url)
            except ChecksumError:
                if not continued:
                    raise
                # the part we continued held something else (an error page, a killed run of
                # another file): finish() dropped it; fetch the whole file once more, now
                hasher, _ = _attempts(session, url, file, part, report, settings, watch)
                finish(file, part, path, hasher, url)
        except WrongSize as err:
            unlink(part)
            raise wrong_size_error(file, url, err.actual) from None
        except LimitReached as err:
            kept = _size_of(part)
            raise DownloadError(f"could not download {url}: {err}; {kept:,} of {file.size:,} bytes arrived and "
                                "are kept for the next run to continue") from None


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _attempts(session, url: str, file: WeightsFile, part: Path, report: "_Silent", settings: DownloadSettings,
              watch: "Watch"):
    """_attempt, retried up to settings.retries times, and started over from byte 0 (at most
    MAX_RESTARTS times, not counted as retries) when the part cannot be continued; the hash of the
    whole part, and whether it holds bytes from before the last request (which may have come
    from elsewhere: a killed run, an error page)."""
    failures = restarts = 0
    while True:
        try:
            hasher, start = _attempt(session, url, file, part, report, settings.timeout_s, watch)
            return hasher, start > 0
        except _Restart as err:
            unlink(part)
            restarts += 1
            if restarts > MAX_RESTARTS:
                raise DownloadError(f"could not download {url}: {err}") from None
        except _Retryable as err:
            if failures == settings.retries:
                raise DownloadError(f"could not download {url}: {err}") from None
            watch.sleep(min(settings.backoff_s * 2**failures, MAX_RETRY_DELAY_S))
            failures += 1


def _hash_part(part: Path, size: int) -> tuple[int, "hashlib._Hash", bytes]:
    """Bytes already downloaded, their running hash and their last RESUME_CHECK_BYTES; a part
    longer than the file cannot be its beginning and is dropped."""
    hasher = hashlib.sha256()
    have = _size_of(part)
    if have > size:
        unlink(part)
        return 0, hasher, b""
    if not have:
        return 0, hasher, b""
    with open(part, "rb") as f:  # no more than stat said: the part may still be growing elsewhere
        read, tail = hash_up_to(f, have, hasher, keep=RESUME_CHECK_BYTES)
    return read, hasher, tail


def _attempt(session, url: str, file: WeightsFile, part: Path, report: "_Silent", timeout_s: float,
             watch: "Watch"):
    """One HTTP request that continues the part file, or starts it over; returns the hash of the
    whole part and the byte the request's data was written from."""
    import requests
    import urllib3

    offset, hasher, tail = _hash_part(part, file.size)
    if offset == file.size:
        return hasher, offset
    check = len(tail)  # asked for again: the server's bytes there must be the part's own
    headers = {"Range": f"bytes={offset - check}-"} if offset else {}
    try:
        with watch.transfer(), session.get(url, headers=headers, stream=True,
                                           timeout=(CONNECT_TIMEOUT_S, timeout_s)) as resp:
            start, hasher = _check_response(resp, url, offset - check, offset, file.size, hasher)
            _check_declared_size(resp, start, file.size)
            report.start_at(start)
            chunks = _body(resp, watch)
            if start:
                chunks = _after_prefix(chunks, tail)
            write_chunks(chunks, part, "ab" if start else "wb", hasher, report.advance, file.size - start)
            watch.check()
            have = part.stat().st_size
            # the whole file came (its end was marked) and it is short; a short 206 may just be a
            # smaller range than asked for, which the next attempt continues
            if have < file.size and resp.status_code == 200 and _body_length_known(resp):
                raise WrongSize(have)
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as err:
        watch.check()  # a socket the watcher shut down: say which limit, not "connection failed"
        _raise_request_error(err, url)
    if have < file.size:
        raise _Retryable(f"the server closed the connection after {have:,} of {file.size:,} bytes")
    return hasher, start


def _body(resp, watch: "Watch") -> Iterator[bytes]:
    """The response body as it arrives, counted for the rate check. read1 returns whatever bytes
    are there (iter_content waits for a whole chunk, which at a trickle could be hours)."""
    read1 = getattr(resp.raw, "read1", None)  # urllib3 >= 2.3
    if read1 is None:  # pragma: no cover - older urllib3: counted a chunk at a time
        for chunk in resp.iter_content(CHUNK_BYTES):
            watch.count(len(chunk))
            yield chunk
        return
    while True:
        chunk = read1(CHUNK_BYTES, decode_content=True)
        watch.check()
        if not chunk:
            return
        watch.count(len(chunk))
        yield chunk


def _after_prefix(chunks: Iterator[bytes], expected: bytes) -> Iterator[bytes]:
    """The chunks after their first len(expected) bytes, which must be `expected` (the end of the
    part, asked for again): a part whose bytes are not the server's is not continued (_Restart)."""
    seen = 0
    for chunk in chunks:
        if seen < len(expected):
            take = min(len(chunk), len(expected) - seen)
            if chunk[:take] != expected[seen:seen + take]:
                raise _Restart("the partial download on disk is not the beginning of this file")
            seen += take
            chunk = chunk[take:]
        if chunk:
            yield chunk


def _check_declared_size(resp, offset: int, size: int) -> None:
    """A 206's Content-Range total, or a plain 200's Content-Length, that is not the catalogue's size."""
    if resp.status_code == 206:
        total = resp.headers.get("Content-Range", "").rpartition("/")[2].strip()
        declared = whole_number(total)
        if declared is not None and declared != size:
            raise WrongSize(declared)
    elif _body_length_known(resp) and "Content-Length" in resp.headers:
        declared = whole_number(resp.headers["Content-Length"].strip())
        if declared is not None and declared != size:
            raise WrongSize(declared)


def _body_length_known(resp) -> bool:
    """Whether the body's end is marked (a Content-Length urllib3 enforces, or chunked encoding), so
    a body that ends short is the server's whole answer, not a dropped connection."""
    if resp.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        return False  # the length counts compressed bytes
    return "Content-Length" in resp.headers or "chunked" in resp.headers.get("Transfer-Encoding", "").lower()


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def _check_response(resp, url: str, asked: int, offset: int, size: int, hasher):
    """Where the reply's bytes go and the hash so far: 200 starts again from byte 0; a 206 must be
    the range asked for (from `asked`, which the part reaches to `offset`) or the part is dropped."""
    status = resp.status_code
    if status >= 500 or status == 429:
        raise _Retryable(f"HTTP {status} {resp.reason}")
    if status == 416:  # our part does not fit the server's file: start again
        raise _Restart()
    if status >= 400:
        raise DownloadError(f"HTTP {status} {resp.reason} from {url}")
    if status != 206:
        return 0, hashlib.sha256()  # 200: the server ignored Range and sent the whole file
    if offset and _range_is(resp, asked, size):
        return offset, hasher
    raise _Restart()


def _range_is(resp, start: int, size: int) -> bool:
    """Whether a 206's Content-Range (and Content-Length, if given) is a range of the file that
    begins at `start`; anything else cannot be appended to our part."""
    match = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
    if not match or int(match[1]) != start or not start <= int(match[2]) < size:
        return False
    length = whole_number(resp.headers.get("Content-Length", "").strip())
    return length is None or length == int(match[2]) - start + 1


def _raise_request_error(err: Exception, url: str) -> None:
    """Translate a requests (or, from the body, urllib3) exception into a retry or a one-line DownloadError."""
    import requests
    import urllib3

    host = urlparse(url).netloc
    text = repr(err)
    if isinstance(err, requests.exceptions.ConnectionError) and "NameResolutionError" in text:
        raise DownloadError(f"could not download {url}: cannot resolve host {host} (no network or DNS failure)") from None
    if isinstance(err, requests.exceptions.Timeout) or "timed out" in text.lower():
        raise _Retryable(f"timed out talking to {host}") from None
    if isinstance(err, requests.exceptions.ConnectionError) and "Connection refused" in text:
        raise _Retryable(f"connection refused by {host}") from None
    if isinstance(err, (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                        urllib3.exceptions.ProtocolError)):
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
