"""Errors a user can cause, each with a one-line message and an exit code.

Library code raises these; `cli/__init__.py` is the one place that turns them
into a line on stderr and a process exit code.
"""
from __future__ import annotations

import os

EXIT_FAILED = 1  # the work ran but something failed (a file, a download)
EXIT_USAGE = 2  # the command line asked for something impossible


class UpscaleError(Exception):
    """Base class: `str(err)` is the whole user-facing line."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, path: object | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = None if path is None else str(path)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class UsageError(UpscaleError):
    """Options that contradict each other or values out of range."""

    exit_code = EXIT_USAGE


class ModelNotFoundError(UpscaleError):
    """A model name that is not in the catalogue and not a file."""

    exit_code = EXIT_USAGE


class UnsupportedScaleError(UpscaleError):
    """A model asked for a scale it cannot produce."""

    exit_code = EXIT_USAGE


class InputNotFoundError(UpscaleError):
    """A path, folder or glob that names nothing."""


class ImageReadError(UpscaleError):
    """A file that is missing, empty, truncated, corrupt or not an image."""


class ImageTooLargeError(ImageReadError):
    """An image over the --max-pixels guard."""


class OutputTooLargeError(UpscaleError):
    """An output size over --max-output-pixels, refused before any work."""


class ModelOutputError(UpscaleError):
    """A model that produced NaN or infinite values."""


class ImageWriteError(UpscaleError):
    """No permission, disk full, or an encoder that refused the image."""


class WeightsError(UpscaleError):
    """A weights file that cannot be found, fetched, verified or loaded."""


class DownloadError(WeightsError):
    """Network failures: no connection, DNS, HTTP errors, timeouts."""


class ChecksumError(WeightsError):
    """Downloaded bytes whose sha256 is not the catalogue's."""


class OfflineError(WeightsError):
    """UPSCALE_OFFLINE is set and the file is not cached."""


class DeviceError(UpscaleError):
    """A device that is not there (cuda without a GPU, mps off a Mac)."""

    exit_code = EXIT_USAGE


class OutOfMemoryError(UpscaleError):
    """Out of memory even at the smallest tile size."""


class DatasetError(UpscaleError):
    """A training or benchmark folder with no usable images."""


class TrainingError(UpscaleError):
    """A training run that cannot start or resume."""


class ModelSettingsError(UsageError):
    """Builder settings that are not the builder's own parameters, of the wrong type or out of
    bounds (train --set, a catalogue entry's options; the loader reports a weights file's as a
    WeightsError naming the file)."""


class WrongSizeError(ChecksumError):
    """A download (or mirror copy) that is longer or shorter than the catalogue's size."""


class CatalogError(UpscaleError):
    """A weights.toml entry with a field that is missing, mistyped or unsafe."""


def printable_path(path: object) -> str:
    """A file name fit for a one-line message: characters that would break the line or drive the
    terminal (newline, escape) and bytes that are not UTF-8 (which Python keeps as lone surrogates)
    are shown as backslash escapes, as `ls` quotes them."""
    text = os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else str(path)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escaped(ch) for ch in text)


_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_SURROGATE_ESCAPES = range(0xDC80, 0xDD00)  # os.fsdecode's stand-ins for the bytes 0x80..0xFF


def _escaped(ch: str) -> str:
    code = ord(ch)
    if ch in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[ch]
    if code in _SURROGATE_ESCAPES:
        return f"\\x{code - 0xDC00:02x}"  # the original byte
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"

