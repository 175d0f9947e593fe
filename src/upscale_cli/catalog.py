"""The model catalogue: weights.toml -> ModelSpec entries; resolve a name or a local weights file."""
from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from upscale_cli.errors import ModelNotFoundError, UpscaleError

WEIGHTS_SUFFIXES = (".safetensors", ".pth", ".pt", ".pb")


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

    @property
    def scales(self) -> tuple[int, ...]:
        """Native scales; empty means any scale (interpolation, fit-single)."""
        return tuple(sorted(self.files))

    @property
    def needs_weights(self) -> bool:
        return bool(self.files) or self.local_path is not None


def _parse_file(name: str, raw: dict) -> WeightsFile:
    try:
        return WeightsFile(
            scale=int(raw["scale"]),
            filename=str(raw["filename"]),
            sha256=str(raw["sha256"]).lower(),
            size=int(raw["size"]),
            url=raw.get("url"),
            mirrors=tuple(raw.get("mirrors", ())),
            packaged=bool(raw.get("packaged", False)),
        )
    except KeyError as err:
        raise UpscaleError(f"weights.toml: model {name!r} has a file without {err.args[0]!r}") from None


def parse_catalog(text: str) -> dict[str, ModelSpec]:
    """Parse weights.toml text into specs keyed by name (kept in file order)."""
    data = tomllib.loads(text)
    specs = {}
    for name, raw in data.get("models", {}).items():
        files = {f.scale: f for f in (_parse_file(name, r) for r in raw.get("files", []))}
        specs[name] = ModelSpec(
            name=name,
            arch=raw["arch"],
            task=raw.get("task", "sr"),
            license=raw.get("license", "unknown"),
            description=raw.get("description", ""),
            files=MappingProxyType(files),
            options=MappingProxyType(dict(raw.get("options", {}))),
        )
    return specs


@lru_cache(maxsize=1)
def load_catalog() -> dict[str, ModelSpec]:
    """The catalogue that ships inside the package."""
    text = resources.files("upscale_cli").joinpath("weights.toml").read_text(encoding="utf-8")
    return parse_catalog(text)


def packaged_weights_path(filename: str) -> Path:
    """Where a weights file that ships inside the package lives."""
    return Path(str(resources.files("upscale_cli").joinpath("weights", filename)))


def _looks_like_path(name: str) -> bool:
    return name.lower().endswith(WEIGHTS_SUFFIXES) or "/" in name or "\\" in name


def resolve(name: str) -> ModelSpec:
    """A catalogue name, or a path to one of our weights files, -> ModelSpec."""
    catalog = load_catalog()
    if name in catalog:
        return catalog[name]
    if _looks_like_path(name):
        path = Path(name).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"model file not found: {name}")
        return ModelSpec(name=path.name, arch="file", task="sr", license="user", description=str(path), local_path=path)
    close = difflib.get_close_matches(name, catalog, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else "; `upscale models` lists them"
    raise ModelNotFoundError(f"unknown model {name!r}{hint}")
