"""What a model of the catalogue is: ModelSpec (name, arch, licence, its weights files by scale)
and WeightsFile (one file: name, sha256, size, URLs), whichever source describes it (weights.toml,
the OpenModelDB snapshot, a user's own file).

A WeightsFile checks its fields when it is made: the download cache puts a file at
CACHE/weights/<sha256>/<filename>, so a file name must be a bare name and a sha256 64 hex digits,
or an entry could write outside the cache. Nothing here reads files: catalog.py reads
weights.toml into these, openmodeldb.py its snapshot, weights_cache.py stores the files.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Mapping
from urllib.parse import urlparse

from upscale_cli.errors import CatalogError

WEIGHTS_SUFFIXES = (".safetensors", ".pth", ".pt", ".pb")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
URL_SCHEMES = ("https", "http")


@dataclass(frozen=True)
class WeightsFile:
    """One weights file of a model at one scale."""

    scale: int
    filename: str
    sha256: str
    size: int
    url: str | None = None  # None for files that ship inside the package
    mirrors: tuple[str, ...] = ()
    packaged: bool = False

    def __post_init__(self) -> None:
        """Refuse fields that could place the file outside the cache or fetch it from nowhere."""
        _check_bare_name(self.filename)
        if not (isinstance(self.sha256, str) and SHA256_HEX.fullmatch(self.sha256)):
            raise CatalogError(f"sha256 must be 64 lowercase hex digits, not {_shown(self.sha256)}")
        for name in ("scale", "size"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise CatalogError(f"{name} must be a whole number of at least 1, not {_shown(value)}")
        for url in ((self.url,) if self.url is not None else ()) + tuple(self.mirrors):
            _check_url(url)

    @property
    def urls(self) -> tuple[str, ...]:
        return ((self.url,) if self.url else ()) + self.mirrors


@dataclass(frozen=True)
class ModelSpec:
    """A catalogue entry. `files` maps scale -> WeightsFile; empty for models without weights."""

    name: str
    arch: str
    task: str
    license: str
    description: str
    files: Mapping[int, WeightsFile] = field(default_factory=dict)
    options: Mapping[str, object] = field(default_factory=dict)
    local_path: Path | None = None  # set when the model is a user's own weights file
    reference: bool = False  # a published baseline the benchmark compares against by default (OpenCV's)

    @property
    def scales(self) -> tuple[int, ...]:
        """Native scales; empty means any scale (interpolation, fit-single)."""
        return tuple(sorted(self.files))


def _check_bare_name(filename: object) -> None:
    """A file name with no folder part on any system, ending in a weights suffix."""
    if not isinstance(filename, str) or filename in ("", ".", "..") or not filename.isprintable():
        raise CatalogError(f"filename must be a bare file name, not {_shown(filename)}")
    if PurePosixPath(filename).name != filename or PureWindowsPath(filename).name != filename:
        raise CatalogError(f"filename must be a bare file name with no folder, not {_shown(filename)}")
    if not filename.lower().endswith(WEIGHTS_SUFFIXES):
        raise CatalogError(f"filename {_shown(filename)} must end in one of {', '.join(WEIGHTS_SUFFIXES)}")


def _check_url(url: object) -> None:
    parsed = urlparse(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in URL_SCHEMES or not parsed.netloc:
        raise CatalogError(f"url must be an http(s) URL, not {_shown(url)}")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 70 else text[:67] + "..."
