"""Errors a user can cause, each with a one-line message and an exit code.

Library code raises these; `cli/__init__.py` is the one place that turns them
into a line on stderr and a process exit code.
"""
from __future__ import annotations

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
