"""A real HTTP server on 127.0.0.1 for download tests, with switchable faults.

    with FileServer(folder) as server:
        server.url                      # "http://127.0.0.1:PORT"
        server.faults.status = 500      # answer 500 ...
        server.faults.status_times = 2  # ... to the next two requests, then serve normally
        server.requests                 # every request seen: path, Range header, status, bytes sent

Faults (attributes of `server.faults`, all off by default; change them at any time):
  honour_range   answer `Range: bytes=N-` with 206 (default True); False answers 200 with the whole file
  cut_after      on the next request only, send the headers and this many body bytes, then drop the connection
  wrong_bytes    serve every byte flipped (same length, wrong sha256)
  status         answer this HTTP status instead of the file (403, 404, 500, ...)
  status_times   how many requests get `status` (None: all of them)
  bytes_per_s    throttle the body (to make two clients overlap)
  stall_s        sleep this long after the headers, before the body (read timeouts)
  trickle_s      send the body one byte every trickle_s seconds, for at most trickle_for_s (a slowloris:
                 every read is well within any read timeout)
  trickle_headers_s  send the status line, then a header one byte every this many seconds, for at most
                 trickle_for_s, then close (a slowloris before the body)
  html_page      answer 200 with a short HTML page, no Content-Length, then close (a captive portal)
  content_range_shift  label a 206's Content-Range this many bytes off the bytes it carries
"""
from __future__ import annotations

import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

HANDLED_WAIT_S = 10.0  # how long a reader of the request log waits for a handler still sending
SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"
OPENCV_WEIGHTS_DIR = SHARED_DIR / "weights" / "opencv"
# The reason a test that needs the published OpenCV graphs (not just some file to download) gives
# when they are absent; conftest.py counts skips by reason at the end of the run.
NEEDS_OPENCV_WEIGHTS = ("needs ../shared/weights/opencv (the published OpenCV dnn_superres .pb files) - "
                        "place shared/ beside the checkout")
HAS_OPENCV_WEIGHTS = (OPENCV_WEIGHTS_DIR / "ESPCN_x2.pb").is_file()
CHUNK_BYTES = 16 * 1024
HTML_PAGE = b"<!DOCTYPE html>\n<html><body><h1>Sign in to continue</h1></body></html>\n"


@dataclass
class Faults:
    honour_range: bool = True
    cut_after: int | None = None
    wrong_bytes: bool = False
    status: int | None = None
    status_times: int | None = None
    bytes_per_s: float | None = None
    stall_s: float = 0.0
    trickle_s: float | None = None
    trickle_headers_s: float | None = None
    trickle_for_s: float = 20.0  # so that a client that never gives up cannot hang a test for ever
    html_page: bool = False
    content_range_shift: int = 0


@dataclass
class Request:
    path: str
    range: str | None
    status: int = 0
    bytes_sent: int = 0
    # set when the handler thread is done with it: the client can have read the last chunk before
    # the server thread has counted it, so readers of the log wait for this first
    handled: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up mid-request (the cut and timeout tests make ours do so) is normal
    here; socketserver would print a traceback from the worker thread, past pytest's capture."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


@dataclass
class FileServer:
    """Serves the files in `folder` by name on 127.0.0.1 on a free port, in a thread."""

    folder: Path
    faults: Faults = field(default_factory=Faults)
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        self._lock = threading.Lock()
        self._httpd = _QuietServer(("127.0.0.1", 0), _make_handler(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url_for(self, name: str) -> str:
        return f"{self.url}/{name}"

    def start(self) -> "FileServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "FileServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def requests_for(self, name: str) -> list[Request]:
        """The requests for `name` so far, each as its handler left it (waited for, a bounded while)."""
        with self._lock:
            found = [r for r in self.requests if r.path.lstrip("/") == name]
        for request in found:
            request.handled.wait(HANDLED_WAIT_S)
        return found

    def full_downloads(self, name: str) -> int:
        """Requests for `name` that sent the whole file from byte 0."""
        size = (self.folder / name).stat().st_size
        return sum(1 for r in self.requests_for(name) if r.range is None and r.bytes_sent == size)

    # -- called from the handler threads
    def _record(self, path: str, range_header: str | None) -> Request:
        request = Request(path=path, range=range_header)
        with self._lock:
            self.requests.append(request)
        return request

    def _take_fault_status(self) -> int | None:
        with self._lock:
            f = self.faults
            if f.status is None:
                return None
            if f.status_times is not None:
                if f.status_times <= 0:
                    return None
                f.status_times -= 1
            return f.status

    def _take_cut(self) -> int | None:
        with self._lock:
            cut, self.faults.cut_after = self.faults.cut_after, None
            return cut


def _parse_range(header: str | None, size: int) -> int | None:
    """The start of `bytes=N-` when it is satisfiable; None when there is no usable header."""
    if not header or not header.startswith("bytes=") or not header.endswith("-"):
        return None
    try:
        start = int(header[len("bytes="):-1])
    except ValueError:
        return None
    return start if 0 <= start else None


def _make_handler(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            request = server._record(self.path, self.headers.get("Range"))
            try:
                self._answer(request)
            finally:
                request.handled.set()

        def _answer(self, request: Request) -> None:
            name = unquote(urlparse(self.path).path).lstrip("/")
            status = server._take_fault_status()
            path = server.folder / name
            if status is None and ("/" in name or not path.is_file()):
                status = 404
            if status is not None:
                request.status = status
                self._send_error(status)
                return
            if server.faults.html_page:
                self._send_html(request)
            elif server.faults.trickle_headers_s:
                self._trickle_headers(request)
            else:
                self._send_file(path.read_bytes(), request)

        def _send_html(self, request: Request) -> None:
            request.status = 200
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Connection", "close")  # no length: the body ends when the connection does
            self.end_headers()
            self.wfile.write(HTML_PAGE)
            request.bytes_sent = len(HTML_PAGE)
            self.close_connection = True

        def _trickle_headers(self, request: Request) -> None:
            f = server.faults
            request.status = 200
            self.close_connection = True
            stop = time.monotonic() + f.trickle_for_s
            try:
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                while time.monotonic() < stop:
                    self.wfile.write(b"a")
                    time.sleep(f.trickle_headers_s)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _send_error(self, status: int) -> None:
            body = f"{status}\n".encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _send_file(self, data: bytes, request: Request) -> None:
            f = server.faults
            if f.wrong_bytes:
                data = bytes(b ^ 0xFF for b in data)
            start = _parse_range(request.range, len(data)) if f.honour_range else None
            if start is not None and start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                request.status = 416
                return
            body = data[start or 0:]
            request.status = 206 if start is not None else 200
            self.send_response(request.status)
            if start is not None:
                shift = f.content_range_shift
                self.send_header("Content-Range", f"bytes {start + shift}-{len(data) - 1 + shift}/{len(data)}")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes" if f.honour_range else "none")
            self.end_headers()
            self._send_body(body, request, server._take_cut())

        def _send_body(self, body: bytes, request: Request, cut: int | None) -> None:
            f = server.faults
            if f.stall_s:
                time.sleep(f.stall_s)
            if f.trickle_s:
                self._trickle_body(body, request)
                return
            limit = len(body) if cut is None else min(cut, len(body))
            try:
                for i in range(0, limit, CHUNK_BYTES):
                    chunk = body[i:min(i + CHUNK_BYTES, limit)]
                    self.wfile.write(chunk)
                    request.bytes_sent += len(chunk)
                    if f.bytes_per_s:
                        time.sleep(len(chunk) / f.bytes_per_s)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
                return
            if cut is not None:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

        def _trickle_body(self, body: bytes, request: Request) -> None:
            f = server.faults
            stop = time.monotonic() + f.trickle_for_s
            self.close_connection = True
            try:
                for i in range(len(body)):
                    if time.monotonic() >= stop:
                        break
                    self.wfile.write(body[i:i + 1])
                    request.bytes_sent += 1
                    time.sleep(f.trickle_s)
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler


def free_port() -> int:
    """A port on 127.0.0.1 with nothing listening (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
