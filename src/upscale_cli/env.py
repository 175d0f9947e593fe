"""Whole-number settings read from UPSCALE_* environment variables, parsed in one place.

The download retries and minimum rate (download_settings.py), the stream byte limit
(images/read.py) and the weights byte limit (weights_guard.py) accept the same spellings: ASCII
digits, spaces around them trimmed, blank meaning the default. Anything else, or a number outside
the variable's range, is one line: `NAME must be a whole number ALLOWED, not 'VALUE'`.
"""
from __future__ import annotations

import os

from upscale_cli.errors import UpscaleError, UsageError


def env_whole_number(name: str, default: int, allowed: str, *, low: int = 0, high: int | None = None,
                     error: type[UpscaleError] = UsageError) -> int:
    """The variable's number in [low, high] (high None: no bound), or `default` when it is unset or
    blank; `allowed` words the range in the message (`from 0 to 100`, `of bytes above 0`)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    value = whole_number(raw)
    if value is None or value < low or (high is not None and value > high):
        raise error(f"{name} must be a whole number {allowed}, not {raw!r}")
    return value


def whole_number(raw: str) -> int | None:
    """ASCII digits as an int; None for anything else (str.isdigit alone also takes '²', which int()
    refuses: an environment variable, or an HTTP header decoded as Latin-1 where byte 0xB2 is '²')."""
    if not (raw.isascii() and raw.isdigit()):
        return None
    try:
        return int(raw)
    except ValueError:  # more digits than Python converts (4,300): no setting is that large
        return None
