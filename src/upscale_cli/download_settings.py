"""The UPSCALE_* download settings: read from the environment once per download, each checked.

A bad value is a WeightsError that names the variable, its range and the value given; the
defaults and the bounds are the named constants below (download.py and download_limits.py use
them, the README quotes them).

  UPSCALE_OFFLINE=1          never touch the network; a missing file is an OfflineError
  UPSCALE_WEIGHTS_MIRROR     an http(s) base URL or a local folder to fetch files from by name
  UPSCALE_DOWNLOAD_RETRIES   retries after a connection error or 5xx (default 3, at most 100)
  UPSCALE_DOWNLOAD_BACKOFF   first retry delay in seconds, doubled each time up to a minute (default 1.0)
  UPSCALE_DOWNLOAD_TIMEOUT   read timeout in seconds (default 30, at most 3600; connect timeout 10)
  UPSCALE_DOWNLOAD_DEADLINE  seconds one file may take from one URL, retries included (default 3600)
  UPSCALE_DOWNLOAD_MIN_RATE  bytes/s a transfer must average over each rate window (default 1000; 0: off)
  UPSCALE_DOWNLOAD_RATE_WINDOW  seconds of that window, the grace before the first check (default 30)
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from urllib.parse import urlparse

from upscale_cli.env import env_whole_number
from upscale_cli.errors import WeightsError

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 30.0
RETRIES = 3
BACKOFF_S = 1.0
MAX_RETRIES = 100
MAX_BACKOFF_S = 600.0  # the first retry delay
MAX_TIMEOUT_S = 3600.0
DEADLINE_S = 3600.0  # one file from one URL, every attempt and wait included
MAX_DEADLINE_S = 7 * 86400.0
MIN_RATE_BPS = 1000  # bytes/s, averaged over each RATE_WINDOW_S of a transfer; 0 turns the check off
MAX_MIN_RATE_BPS = 10**9
RATE_WINDOW_S = 30.0  # also the grace at the start of each attempt (connect and headers included)
MAX_RATE_WINDOW_S = 3600.0
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}
_MIRROR_SCHEMES = ("http", "https", "file")


@dataclass(frozen=True)
class DownloadSettings:
    """The UPSCALE_* download settings, read and checked once per ensure_weights."""

    offline: bool
    mirror: str | None
    retries: int
    backoff_s: float
    timeout_s: float
    deadline_s: float
    min_rate_bps: int
    rate_window_s: float


def download_settings() -> DownloadSettings:
    """Every download setting from the environment; WeightsError naming the first bad one."""
    return DownloadSettings(
        offline=is_offline(),
        mirror=mirror(),
        retries=_env_int("UPSCALE_DOWNLOAD_RETRIES", RETRIES, MAX_RETRIES),
        backoff_s=_env_seconds("UPSCALE_DOWNLOAD_BACKOFF", BACKOFF_S, MAX_BACKOFF_S, zero_ok=True),
        timeout_s=_env_seconds("UPSCALE_DOWNLOAD_TIMEOUT", READ_TIMEOUT_S, MAX_TIMEOUT_S, zero_ok=False),
        deadline_s=_env_seconds("UPSCALE_DOWNLOAD_DEADLINE", DEADLINE_S, MAX_DEADLINE_S, zero_ok=False),
        min_rate_bps=_env_int("UPSCALE_DOWNLOAD_MIN_RATE", MIN_RATE_BPS, MAX_MIN_RATE_BPS),
        rate_window_s=_env_seconds("UPSCALE_DOWNLOAD_RATE_WINDOW", RATE_WINDOW_S, MAX_RATE_WINDOW_S, zero_ok=False),
    )


def _env_int(name: str, default: int, high: int) -> int:
    return env_whole_number(name, default, f"from 0 to {high}", high=high, error=WeightsError)


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
