"""The OpenModelDB catalogue of community models, from a snapshot shipped in the package.

`openmodeldb.json.gz` holds facts only (id, name, author, licence, architecture, scale, tags and,
for each file, its type, size, sha256 and URLs); scripts/openmodeldb_snapshot.py makes it from
shared/openmodeldb/models.json. A model is run with `-m openmodeldb:ID`: its first file with a
direct URL becomes a catalogue spec (downloaded, verified by sha256 and cached like ours). Files
whose URLs are web pages (mega, Google Drive, ...) must be fetched by a person and added with
`upscale models add FILE`, which checks the sha256 against this snapshot.
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import PurePosixPath
from types import MappingProxyType
from urllib.parse import unquote, urlparse

from upscale_cli.model_spec import WEIGHTS_SUFFIXES, ModelSpec, WeightsFile
from upscale_cli.errors import CatalogError, ModelNotFoundError

PREFIX = "openmodeldb:"
SNAPSHOT = "openmodeldb.json.gz"
# Hosts whose links are web pages for a person (a viewer, a folder, a captcha), not files.
PAGE_HOSTS = ("mega.nz", "drive.google.com", "1drv.ms", "onedrive.live.com", "mediafire.com", "icedrive.net",
              "pcloud.link", "dropbox.com", "pixeldrain.com")
NON_COMMERCIAL = ("-NC", "NONCOMMERCIAL", "NON-COMMERCIAL")


@dataclass(frozen=True)
class CommunityFile:
    type: str
    size: int
    sha256: str
    urls: tuple[str, ...]

    @property
    def direct_urls(self) -> tuple[str, ...]:
        return tuple(u for u in self.urls if is_direct(u))


@dataclass(frozen=True)
class CommunityModel:
    id: str
    name: str
    author: str
    license: str
    architecture: str
    scale: int
    tags: tuple[str, ...]
    files: tuple[CommunityFile, ...]

    @property
    def downloadable(self) -> CommunityFile | None:
        """The first file a program can fetch (a direct URL), if any."""
        return next((f for f in self.files if f.direct_urls), None)

    @property
    def size(self) -> int:
        return self.files[0].size if self.files else 0


def is_direct(url: str) -> bool:
    """A URL that serves the file itself (release assets, raw files, object storage, huggingface
    resolve/), not a web page for a person."""
    parsed = urlparse(url)
    host = parsed.netloc.lower()
    if parsed.scheme not in ("http", "https") or any(host == h or host.endswith("." + h) for h in PAGE_HOSTS):
        return False
    return PurePosixPath(unquote(parsed.path)).suffix.lower() in WEIGHTS_SUFFIXES


def is_non_commercial(license_id: str | None) -> bool:
    text = (license_id or "").upper()
    return any(mark in text for mark in NON_COMMERCIAL)


@lru_cache(maxsize=1)
def snapshot() -> dict[str, CommunityModel]:
    """Every OpenModelDB model in the shipped snapshot, by id."""
    raw = resources.files("upscale_cli").joinpath("data", SNAPSHOT).read_bytes()
    return {entry["id"]: _model(entry) for entry in json.loads(gzip.decompress(raw))["models"]}


def _model(entry: dict) -> CommunityModel:
    files = tuple(CommunityFile(type=r.get("type", ""), size=int(r.get("size") or 0), sha256=(r.get("sha256") or "").lower(),
                                urls=tuple(r.get("urls", ()))) for r in entry.get("resources", ()))
    return CommunityModel(id=entry["id"], name=entry.get("name", entry["id"]), author=_text(entry.get("author")),
                          license=entry.get("license") or "unknown", architecture=entry.get("architecture", ""),
                          scale=int(entry.get("scale") or 1), tags=tuple(entry.get("tags", ())), files=files)


def _text(value) -> str:
    return ", ".join(value) if isinstance(value, list) else str(value or "")


def search(text: str = "", scale: int | None = None, arch: str | None = None, tag: str | None = None) -> list[CommunityModel]:
    """Models whose id, name, author, architecture or tags contain every word of `text` (any case),
    filtered by scale, architecture and tag; in id order."""
    words = text.lower().split()
    found = []
    for model in snapshot().values():
        haystack = " ".join([model.id, model.name, model.author, model.architecture, *model.tags]).lower()
        if all(w in haystack for w in words) and (scale is None or model.scale == scale) \
                and (arch is None or model.architecture.lower() == arch.lower()) \
                and (tag is None or tag.lower() in (t.lower() for t in model.tags)):
            found.append(model)
    return sorted(found, key=lambda m: m.id.lower())


def get(model_id: str) -> CommunityModel:
    models = snapshot()
    if model_id in models:
        return models[model_id]
    lowered = {k.lower(): v for k, v in models.items()}
    if model_id.lower() in lowered:
        return lowered[model_id.lower()]
    import difflib

    close = difflib.get_close_matches(model_id, models, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else "; `upscale models search TEXT` finds ids"
    raise ModelNotFoundError(f"no OpenModelDB model {model_id!r}{hint}")


def file_name(file: CommunityFile, model_id: str) -> str:
    """A bare cache file name: the URL's own name when it has a weights suffix, else ID.TYPE."""
    for url in file.direct_urls:
        name = PurePosixPath(unquote(urlparse(url).path)).name
        if name and name.lower().endswith(WEIGHTS_SUFFIXES) and "/" not in name and "\\" not in name:
            return name
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_id)
    return f"{safe}.{file.type or 'pth'}"


def spec_for_file(model: CommunityModel, sha256: str) -> ModelSpec:
    """The spec of one particular file of a model (the one a person fetched by hand), cached
    under the same name `-m openmodeldb:ID` looks for when that file is the one it would use."""
    file = next(f for f in model.files if f.sha256 == sha256)
    return _spec(model, file, url=file.direct_urls[0] if file.direct_urls else None, mirrors=file.direct_urls[1:])


def _spec(model: CommunityModel, file: CommunityFile, url: str | None, mirrors: tuple[str, ...]) -> ModelSpec:
    try:
        weights = WeightsFile(scale=model.scale, filename=file_name(file, model.id), sha256=file.sha256,
                              size=file.size, url=url, mirrors=mirrors)
    except CatalogError as err:
        raise ModelNotFoundError(f"OpenModelDB {model.id}: its snapshot entry is unusable ({err.message})") from None
    return ModelSpec(name=PREFIX + model.id, arch="spandrel", task="restore" if model.scale == 1 else "sr",
                     license=model.license, description=f"{model.name} by {model.author} ({model.architecture})",
                     files=MappingProxyType({model.scale: weights}))


def spec_for(model_id: str) -> ModelSpec:
    """`-m openmodeldb:ID` -> a catalogue spec that downloads, verifies and runs its first
    direct file; a model with only web-page links says where to fetch it by hand."""
    model = get(model_id)
    file = model.downloadable
    if file is None:
        by_hand = next(iter(model.files), None)
        if by_hand is not None:
            added = _spec(model, by_hand, url=None, mirrors=())
            from upscale_cli.weights_cache import is_cached

            if is_cached(next(iter(added.files.values()))):  # fetched by hand and added earlier
                return added
        pages = "; ".join(u for f in model.files for u in f.urls) or "no link"
        sha = by_hand.sha256 if by_hand else "unknown"
        raise ModelNotFoundError(
            f"OpenModelDB {model.id} can only be downloaded by hand ({pages}); then run "
            f"`upscale models add FILE` (expected sha256 {sha}) or use -m FILE")
    return _spec(model, file, url=file.direct_urls[0], mirrors=file.direct_urls[1:])


def find_by_sha256(sha256: str) -> CommunityModel | None:
    """The snapshot model one of whose files has this sha256."""
    return next((m for m in snapshot().values() if any(f.sha256 == sha256 for f in m.files)), None)
