"""Benchmark datasets: HR folders, HR:LR pairs and the standard sets (Set5, Set14, BSD68).

`--set NAME` (or a bare DATASET named Set5, Set14 or BSD68) is the folder NAME (any case)
inside the data folder: the --data-dir given, else $UPSCALE_BENCHMARK_DIR, else the first
shared/datasets/benchmark above the current folder or the package. The sets are not shipped
with the package. Which files count as images is images.formats.READ_SUFFIXES (the format
table, which imports neither Pillow nor torch).

A data folder that is missing or not a folder (--data-dir, $UPSCALE_BENCHMARK_DIR, a DATASET)
is a DatasetError, exit 1, as `upscale train` reports a missing training folder.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from upscale_cli.errors import DatasetError
from upscale_cli.images.formats import READ_SUFFIXES

NAMED_SETS = ("Set5", "Set14", "BSD68")
BENCHMARK_DIR_ENV = "UPSCALE_BENCHMARK_DIR"
BENCHMARK_SUBDIR = Path("shared") / "datasets" / "benchmark"


@dataclass(frozen=True)
class DatasetSpec:
    """A folder of HR images, optionally with a folder of given LR images (matched by name)."""

    name: str
    hr_dir: Path
    lr_dir: Path | None = None


def _search_roots() -> Iterator[Path]:
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        yield from (start, *start.parents)


def find_benchmark_dir(data_dir: str | Path | None = None) -> Path | None:
    """The data folder: data_dir (--data-dir), else $UPSCALE_BENCHMARK_DIR, else the first
    shared/datasets/benchmark above the cwd or the package; None when there is none."""
    if data_dir is not None and str(data_dir).strip():
        return Path(data_dir).expanduser()
    override = os.environ.get(BENCHMARK_DIR_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    for root in _search_roots():
        candidate = root / BENCHMARK_SUBDIR
        if candidate.is_dir():
            return candidate
    return None


def _data_dir_source(data_dir: str | Path | None) -> str:
    """How the data folder was chosen, for messages."""
    if data_dir is not None and str(data_dir).strip():
        return "--data-dir"
    return BENCHMARK_DIR_ENV if os.environ.get(BENCHMARK_DIR_ENV, "").strip() else "the shared/datasets/benchmark folder"


def check_data_dir(data_dir: str | Path | None) -> None:
    """A --data-dir (or $UPSCALE_BENCHMARK_DIR) that is not a folder is a DatasetError, said once."""
    base = find_benchmark_dir(data_dir)
    if base is not None and not base.is_dir():
        what = "is not a folder" if base.exists() else "does not exist"
        raise DatasetError(f"{_data_dir_source(data_dir)} {base} {what}; it should be the folder holding the set "
                         f"folders ({', '.join(NAMED_SETS)})")


def named_set(name: str, data_dir: str | Path | None = None) -> DatasetSpec:
    """Set5, Set14 or BSD68 (any case): that folder inside the data folder (see find_benchmark_dir)."""
    base = find_benchmark_dir(data_dir)
    if base is None:
        raise DatasetError(f"--set {name}: no data folder; the sets are not shipped: pass --data-dir DIR (or set "
                           f"{BENCHMARK_DIR_ENV}) to a folder holding {', '.join(f'{n}/' for n in NAMED_SETS)}")
    check_data_dir(data_dir)
    folders = sorted(p for p in base.iterdir() if p.is_dir())
    matches = [p for p in folders if p.name.lower() == name.lower()]
    if matches:
        return DatasetSpec(matches[0].name, matches[0])
    source = _data_dir_source(data_dir)
    if not folders and any(p.suffix.lower() in READ_SUFFIXES for p in base.iterdir()):
        raise DatasetError(f"--set {name}: {source} {base} holds images, not set folders; to measure those images, "
                           f"name the folder itself: upscale benchmark {base}")
    have = f" (it has: {', '.join(p.name for p in folders)})" if folders else " (it has no folders)"
    raise DatasetError(f"--set {name}: no folder {name} in {base}, the data folder from {source}{have}")


def parse_dataset(text: str, data_dir: str | Path | None = None) -> DatasetSpec:
    """'HR_DIR', 'HR_DIR:LR_DIR', or the name of a standard set when no such folder exists."""
    path = Path(text).expanduser()
    if path.is_dir():
        return DatasetSpec(path.name or str(path), path)
    hr, sep, lr = text.rpartition(":")
    if sep and hr and lr and not (len(hr) == 1 and hr.isalpha()):  # not a Windows drive letter
        hr_path, lr_path = Path(hr).expanduser(), Path(lr).expanduser()
        return DatasetSpec(hr_path.name or hr, hr_path, lr_path)
    if text.lower() in (s.lower() for s in NAMED_SETS):
        return named_set(text, data_dir)
    return DatasetSpec(path.name or text, path)  # fails later with a clear per-dataset error


def image_files(folder: Path) -> list[Path]:
    """The image files of a set folder, sorted (hidden files left out); DatasetError when none."""
    if not folder.is_dir():
        raise DatasetError("not a folder", path=folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in READ_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise DatasetError(f"no images ({', '.join(READ_SUFFIXES)})", path=folder)
    return files


def match_lr(hr: Path, lr_files: dict[str, Path], scale: int) -> Path | None:
    """The LR file for an HR file: same stem, or the stem plus a scale tag (baby_LRx2, baby_x2, babyx2)."""
    stem = hr.stem.lower()
    for candidate in (stem, f"{stem}_lrx{scale}", f"{stem}_x{scale}", f"{stem}x{scale}", f"{stem}_lr"):
        if candidate in lr_files:
            return lr_files[candidate]
    return None


def lr_size(hr: Path, scale: int, lr: Path | None = None) -> tuple[int, int] | None:
    """(height, width) of the input a model gets for this HR image (the given LR, else the HR
    mod-cropped and divided by the scale), read from the file's header; None when it cannot be read
    (the image then fails on its own when it is loaded)."""
    from PIL import Image

    from upscale_cli.images.codecs import load_for

    load_for(lr or hr)  # a HEIC/AVIF/JPEG XL file's codec
    try:
        with Image.open(lr or hr) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001 - Pillow raises many types; load_sample reports the image itself
        return None
    return (height, width) if lr is not None else (height // scale, width // scale)
