"""The codecs Pillow does not always bring: HEIF through pillow-heif, AVIF through Pillow's own plugin
(in its wheels since 11.3; pillow-avif-plugin where an older or slimmer Pillow has none), JPEG XL
through pillow-jxl-plugin.

Each is imported and registered with Pillow the first time it is needed, here and nowhere else:
reading bytes that start with one of its format's signatures (formats.py), or writing its format.
Nothing runs at import, so listing a folder or reading a PNG never pays for them (importing
pillow_heif alone takes about 0.1 s). A codec that is missing is one line naming what to install,
for reading and for writing. `--help` only asks whether each is installed (importlib's find_spec,
which imports nothing), to list the --format words this installation can write.
"""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from upscale_cli.errors import ImageReadError, ImageWriteError
from upscale_cli.images.formats import FORMATS, SNIFF_BYTES, ImageFormat


@dataclass(frozen=True)
class Codec:
    """How one format that Pillow may lack is brought in."""

    install: str  # what to run to get it, as the message says it
    modules: tuple[str, ...]  # importable when installed (any one of them): what --help looks for
    load: Callable[[], bool]  # imports it and registers it with Pillow; False when it is not installed


def _load_heif() -> bool:
    try:
        import pillow_heif
    except ImportError:
        return False
    # Thumbnails, depth maps and other auxiliary images are never used: not even listed.
    pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
    return True


def _load_avif() -> bool:
    from PIL import features

    if features.check("avif"):
        return True  # Pillow's own plugin, registered by Image.init() like its other formats
    try:
        import pillow_avif  # noqa: F401  registers itself in place of Pillow's plugin without a codec
    except ImportError:
        return False
    return True


def _load_jxl() -> bool:
    try:
        import pillow_jxl  # noqa: F401  registers JXL with Pillow on import
    except ImportError:
        return False
    return True


CODECS: dict[str, Codec] = {
    "HEIF": Codec("pip install pillow-heif", ("pillow_heif",), _load_heif),
    "AVIF": Codec("pip install 'pillow>=11.3' (or pillow-avif-plugin)", ("PIL._avif", "pillow_avif"), _load_avif),
    "JXL": Codec("pip install pillow-jxl-plugin", ("pillow_jxl",), _load_jxl),
}
_RECORDS = {f.pillow_name: f for f in FORMATS}


@functools.lru_cache(maxsize=None)
def loaded(pillow_name: str) -> bool:
    """Whether Pillow can open `pillow_name` now: one of its own, or a codec imported and registered
    (once; a missing one is not looked for again)."""
    codec = CODECS.get(pillow_name)
    return codec is None or codec.load()


def installed(pillow_name: str) -> bool:
    """Whether the codec of `pillow_name` is installed, without importing anything (for --help)."""
    codec = CODECS.get(pillow_name)
    return codec is None or any(_findable(module) for module in codec.modules)


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a broken one
        return False


def label(pillow_name: str) -> str:
    """The format as messages name it: its first --format word, upper case (HEIC, AVIF, JXL)."""
    record = _RECORDS.get(pillow_name)
    return record.names[0].upper() if record is not None and record.names else pillow_name


def missing_message(pillow_name: str, action: str) -> str:
    """`cannot read HEIC: pip install pillow-heif` ('read' or 'write')."""
    return f"cannot {action} {label(pillow_name)}: {CODECS[pillow_name].install}"


def _starting(data: bytes) -> list[ImageFormat]:
    """The codec formats whose signature `data` starts with (two for an ISO file of a generic brand)."""
    return [f for f in FORMATS if f.pillow_name in CODECS and any(s.matches(data) for s in f.signatures)]


def formats_to_open(data: bytes, path: str) -> tuple[str, ...]:
    """The Pillow formats Image.open(formats=...) should try on `data`: Pillow's own, and each codec
    format `data` starts like, loaded now (the others are left out: Pillow would fail on a name it
    has no plugin for). ImageReadError naming the package when `data` starts like codec formats
    only missing codecs read."""
    wanted = _starting(data)
    usable = {f.pillow_name for f in wanted if loaded(f.pillow_name)}
    if wanted and not usable:
        raise ImageReadError(missing_message(wanted[0].pillow_name, "read"), path=path)
    return tuple(f.pillow_name for f in FORMATS if f.pillow_name not in CODECS or f.pillow_name in usable)


def load_for(path: str | Path) -> None:
    """Load the codecs a file's first bytes call for, so that a plain Image.open(path) reads it (for
    code that opens files with Pillow directly: training folders, benchmark sets). A missing codec,
    or a file that cannot be read, is left for Image.open to report."""
    try:
        with open(path, "rb") as file:
            head = file.read(SNIFF_BYTES)
    except (OSError, ValueError):
        return
    for record in _starting(head):
        loaded(record.pillow_name)


def check_unopened(data: bytes, path: str) -> None:
    """After Pillow could not identify `data`: ImageReadError naming the package when it starts like a
    format whose codec is missing (an ISO file of a generic brand, which another codec turned down)."""
    for record in _starting(data):
        if not loaded(record.pillow_name):
            raise ImageReadError(missing_message(record.pillow_name, "read") + " (or the file is corrupt)", path=path)


def require_writer(pillow_name: str) -> None:
    """ImageWriteError naming the package when `pillow_name` cannot be written here (the codec is
    missing, or installed without an encoder)."""
    if pillow_name not in CODECS:
        return
    if loaded(pillow_name):
        from PIL import Image

        Image.init()  # Pillow's own plugins (AVIF) register their savers here
        if pillow_name in Image.SAVE:
            return
    raise ImageWriteError(missing_message(pillow_name, "write"))


def unavailable_names() -> dict[str, str]:
    """{--format word: what to install} for every format whose codec is not installed here."""
    return {name: CODECS[f.pillow_name].install
            for f in FORMATS if f.pillow_name in CODECS and not installed(f.pillow_name) for name in f.names}


def missing_help() -> str:
    """What --help says of formats this installation lacks the codec for ('' when none):
    ' Not installed here (neither read nor written): heic, heif (pip install pillow-heif).'"""
    by_install: dict[str, list[str]] = {}
    for name, install in unavailable_names().items():
        by_install.setdefault(install, []).append(name)
    if not by_install:
        return ""
    listed = "; ".join(f"{', '.join(names)} ({install})" for install, names in by_install.items())
    return f" Not installed here (neither read nor written): {listed}."
