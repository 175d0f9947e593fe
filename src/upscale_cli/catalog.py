"""The model catalogue: weights.toml -> ModelSpec entries; resolve a name or a local weights file.

Every weights file's fields are checked when the catalogue is read (WeightsFile checks itself,
model_spec.py): a file name must be a bare name and a sha256 64 hex digits, or an entry could
write outside the cache.
"""
from __future__ import annotations

import difflib
import sys
from functools import lru_cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from upscale_cli.errors import CatalogError, ModelNotFoundError
from upscale_cli.weights_guard import MODEL_FILE_NOT_FOUND, not_a_regular_file
from upscale_cli.model_spec import WEIGHTS_SUFFIXES, ModelSpec, WeightsFile


def _parse_file(name: str, raw: object) -> WeightsFile:
    where = f"weights.toml: model {name!r}"
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: each [[models.{name}.files]] must be a table")
    missing = next((key for key in ("scale", "filename", "sha256", "size") if key not in raw), None)
    if missing:
        raise CatalogError(f"{where} has a file without {missing!r}")
    mirrors = raw.get("mirrors", ())
    if isinstance(mirrors, str) or not isinstance(mirrors, (list, tuple)):
        raise CatalogError(f"{where}: mirrors must be a list of URLs")
    packaged = raw.get("packaged", False)
    if not isinstance(packaged, bool):
        raise CatalogError(f"{where}: packaged must be true or false")
    sha256 = raw["sha256"].lower() if isinstance(raw["sha256"], str) else raw["sha256"]
    try:
        return WeightsFile(scale=raw["scale"], filename=raw["filename"], sha256=sha256, size=raw["size"],
                           url=raw.get("url"), mirrors=tuple(mirrors), packaged=packaged)
    except CatalogError as err:
        raise CatalogError(f"{where}, file x{raw['scale']}: {err.message}") from None


def _parse_files(name: str, raw: list) -> MappingProxyType:
    if not isinstance(raw, list):
        raise CatalogError(f"weights.toml: model {name!r}: files must be a list of [[models.{name}.files]] tables")
    files: dict[int, WeightsFile] = {}
    for entry in raw:
        file = _parse_file(name, entry)
        if file.scale in files:
            raise CatalogError(f"weights.toml: model {name!r} has two files for x{file.scale}")
        files[file.scale] = file
    return MappingProxyType(files)


def parse_catalog(text: str) -> dict[str, ModelSpec]:
    """Parse weights.toml text into specs keyed by name (kept in file order); CatalogError for
    any field that is missing, mistyped or unsafe."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise CatalogError(f"weights.toml is not valid TOML: {err}") from None
    specs = {}
    for name, raw in data.get("models", {}).items():
        if not isinstance(raw, dict) or not isinstance(raw.get("arch"), str):
            raise CatalogError(f"weights.toml: model {name!r} has no arch")
        if not isinstance(raw.get("options", {}), dict):
            raise CatalogError(f"weights.toml: model {name!r}: options must be a table")
        files = _parse_files(name, raw.get("files", []))
        specs[name] = ModelSpec(
            name=name,
            arch=raw["arch"],
            task=raw.get("task", "sr"),
            license=raw.get("license", "unknown"),
            description=raw.get("description", ""),
            files=files,
            options=MappingProxyType(dict(raw.get("options", {}))),
            reference=_flag(name, raw, "reference"),
        )
    return specs


def _flag(name: str, raw: dict, key: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise CatalogError(f"weights.toml: model {name!r}: {key} must be true or false")
    return value


@lru_cache(maxsize=1)
def load_catalog() -> dict[str, ModelSpec]:
    """The catalogue that ships inside the package."""
    text = resources.files("upscale_cli").joinpath("weights.toml").read_text(encoding="utf-8")
    return parse_catalog(text)


def _looks_like_path(name: str) -> bool:
    return name.lower().endswith(WEIGHTS_SUFFIXES + (".ckpt",)) or "/" in name or "\\" in name


def resolve(name: str) -> ModelSpec:
    """A catalogue name, or a path to one of our weights files, -> ModelSpec."""
    catalog = load_catalog()
    if name in catalog:
        return catalog[name]
    if name.startswith("openmodeldb:"):  # any model of the OpenModelDB snapshot, by its id
        from upscale_cli.openmodeldb import PREFIX, spec_for

        return spec_for(name[len(PREFIX):])
    if _looks_like_path(name):
        path = Path(name).expanduser()
        problem = not_a_regular_file(path)  # stat only: a folder or a link to /dev/zero is named, never read
        if problem == MODEL_FILE_NOT_FOUND:
            raise ModelNotFoundError(f"model file not found: {name}")
        if problem is not None:
            raise ModelNotFoundError(problem, path=name)
        return ModelSpec(name=path.name, arch="file", task="sr", license="user", description=str(path), local_path=path)
    close = difflib.get_close_matches(name, catalog, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else "; `upscale models` lists them"
    raise ModelNotFoundError(f"unknown model {name!r}{hint}")
