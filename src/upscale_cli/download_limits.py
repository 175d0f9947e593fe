"""The time limits of one file's download from one URL: a deadline and a minimum rate.

The deadline covers the whole of it (retries and waits included); the minimum rate is checked
over each window while bytes are awaited, so a server that trickles bytes (each read within the
read timeout) cannot hold a download forever. A watcher thread (`Watch`) shuts the connection's
socket down when either limit is passed; `watched_session` is the requests Session whose
connections hand their sockets to it. The limits' values are download_settings.py's.
"""
from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Iterator

from upscale_cli.download_settings import DownloadSettings

WATCH_TICK_S = 0.1  # how often the watcher looks at the clock: the limits are kept to this


class LimitReached(Exception):
    """The download's deadline or minimum rate was passed; str() says which and how to change it."""


class Watch:
    """The deadline and the minimum rate of one file's download from one URL.

    A thread looks at the clock every WATCH_TICK_S; when a limit is passed it records which
    and shuts down every socket the download opened, so a read blocked on a trickling server
    (or on headers sent a byte at a time) returns at once. The download's thread then calls
    check(), which raises LimitReached naming the limit and its environment variable.
    """

    def __init__(self, settings: DownloadSettings) -> None:
        self.settings = settings
        self._deadline = time.monotonic() + settings.deadline_s
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._window_start: float | None = None  # None between transfers (retry waits are not slow reads)
        self._window_bytes = 0
        self._reason: str | None = None
        self._tripped = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="upscale-download-watch", daemon=True)

    def __enter__(self) -> "Watch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def add_socket(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
        if self._reason:  # connected just as a limit passed
            self._shut(sock)

    @contextlib.contextmanager
    def transfer(self) -> Iterator[None]:
        """One request: its rate windows start when it starts (connecting and headers included)."""
        with self._lock:
            self._window_start, self._window_bytes = time.monotonic(), 0
        try:
            yield
        finally:
            with self._lock:
                self._window_start = None

    def count(self, n: int) -> None:
        with self._lock:
            self._window_bytes += n

    def check(self) -> None:
        if self._reason:
            raise LimitReached(self._reason)

    def sleep(self, seconds: float) -> None:
        """Wait between attempts; the deadline ends the wait."""
        self._tripped.wait(seconds)
        self.check()

    def _run(self) -> None:
        while not self._done.wait(WATCH_TICK_S):
            reason = self._passed(time.monotonic())
            if reason:
                with self._lock:
                    self._reason, sockets = reason, list(self._sockets)
                self._tripped.set()
                for sock in sockets:
                    self._shut(sock)
                return

    def _passed(self, now: float) -> str | None:
        """Which limit has been passed, as the error's words; None while both hold."""
        s = self.settings
        if now >= self._deadline:
            return (f"not done within the {s.deadline_s:g} s deadline (set UPSCALE_DOWNLOAD_DEADLINE to more "
                    "seconds for a slow connection)")
        with self._lock:
            if self._window_start is None or not s.min_rate_bps or now - self._window_start < s.rate_window_s:
                return None
            rate = self._window_bytes / (now - self._window_start)
            self._window_start, self._window_bytes = now, 0
        if rate >= s.min_rate_bps:
            return None
        return (f"slower than the minimum {s.min_rate_bps:,} bytes/s ({rate:,.0f} bytes/s over {s.rate_window_s:g} s; "
                "set UPSCALE_DOWNLOAD_MIN_RATE lower, or to 0 to turn the check off)")

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        # the plain socket's shutdown, also for a TLS socket: it wakes a blocked read without
        # touching the TLS object the reading thread is using
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


@contextlib.contextmanager
def watched_session(watch: Watch):
    """A requests Session whose connections hand their sockets to `watch` as they connect."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    def watched(connection_class):
        class Watched(connection_class):
            def connect(self) -> None:
                super().connect()
                watch.add_socket(self.sock)
        return Watched

    class HTTPPool(HTTPConnectionPool):
        ConnectionCls = watched(HTTPConnectionPool.ConnectionCls)

    class HTTPSPool(HTTPSConnectionPool):
        ConnectionCls = watched(HTTPSConnectionPool.ConnectionCls)

    pools = {"http": HTTPPool, "https": HTTPSPool}

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

        def proxy_manager_for(self, proxy: str, **kwargs):
            manager = super().proxy_manager_for(proxy, **kwargs)
            if not proxy.lower().startswith("socks"):  # SOCKS pools are their own: the reads' checks remain
                manager.pool_classes_by_scheme = pools
            return manager

    with requests.Session() as session:
        session.mount("http://", Adapter())
        session.mount("https://", Adapter())
        yield session

