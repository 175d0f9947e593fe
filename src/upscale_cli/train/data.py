"""Training data: HR image folders -> an in-memory cache of decoded images -> random HR crops.

Every image is decoded once into a uint8 tensor (T91 + BSDS400 is about 60 MB), so a batch
costs a few tensor slices instead of file reads: loading keeps up with training without
worker processes. Crops are sampled with an explicit torch.Generator whose state goes into
the checkpoint, so a resumed run draws the same crops it would have drawn.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from upscale_cli.errors import DatasetError
from upscale_cli.images.formats import READ_SUFFIXES


def list_images(folders: Iterable[str | Path]) -> list[Path]:
    """Image files directly inside (or below) the folders, sorted; a folder may also be a file."""
    if isinstance(folders, (str, Path)):  # one folder, not its characters ("/data" would walk "/" whole)
        folders = [folders]
    files: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if folder.is_file():
            files.append(folder)
            continue
        if not folder.is_dir():
            raise DatasetError("no such folder", path=folder)
        files.extend(p for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix.lower() in READ_SUFFIXES)
    return files


def decode_rgb(path: Path) -> torch.Tensor:
    """One image file -> (3, H, W) uint8 RGB (greyscale and palette images are converted)."""
    from PIL import Image

    from upscale_cli.images.codecs import load_for

    load_for(path)  # a HEIC/AVIF/JPEG XL file's codec
    with Image.open(path) as img:
        array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


@dataclass
class ImageCache:
    """Decoded training images (uint8, (3, H, W)) and what was skipped, with the reason."""

    images: list[torch.Tensor]
    paths: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def load_image_cache(folders: Sequence[str | Path], min_size: int = 1,
                     on_skip: Callable[[Path, str], None] | None = None) -> ImageCache:
    """Decode every image of the folders into memory, skipping unreadable or too-small ones.

    Raises DatasetError when nothing usable is left (empty folder, all unreadable, or every
    image smaller than `min_size`, the HR crop side).
    """
    if isinstance(folders, (str, Path)):
        folders = [folders]
    files = list_images(folders)
    if not files:
        raise DatasetError(f"no images found in {', '.join(map(str, folders))}")
    cache = ImageCache(images=[], paths=[])
    for path in files:
        reason = None
        try:
            image = decode_rgb(path)
        except Exception as err:  # Pillow raises many types for corrupt files
            reason = f"unreadable image skipped ({type(err).__name__})"
        else:
            if min(image.shape[-2:]) < min_size:
                reason = f"{image.shape[2]}x{image.shape[1]} is smaller than the {min_size}-pixel HR crop; skipped"
        if reason:
            cache.skipped.append((path, reason))
            if on_skip:
                on_skip(path, reason)
            continue
        cache.images.append(image)
        cache.paths.append(path)
    if not cache.images:
        why = "all unreadable" if all("unreadable" in r for _, r in cache.skipped) else f"none at least {min_size} px"
        raise DatasetError(f"no usable training images in {', '.join(map(str, folders))} ({why})")
    return cache


def random_crops(cache: ImageCache, batch: int, size: int, generator: torch.Generator,
                 augment: bool = True, device: torch.device | str | None = None) -> torch.Tensor:
    """A batch of random HR crops, (B, 3, size, size) float in [0, 1], with random flips and
    90-degree rotations. Images are drawn in proportion to their area (so the many small
    T91 images do not dominate). With `device`, the uint8 crops move there before they become
    float (a quarter of the bytes to copy to a GPU); the draws are the same either way."""
    areas = torch.tensor([float(img.shape[1] * img.shape[2]) for img in cache.images])
    picks = torch.multinomial(areas, batch, replacement=True, generator=generator)
    crops = []
    for index in picks.tolist():
        image = cache.images[index]
        top = int(torch.randint(0, image.shape[1] - size + 1, (1,), generator=generator))
        left = int(torch.randint(0, image.shape[2] - size + 1, (1,), generator=generator))
        crop = image[:, top:top + size, left:left + size]
        if augment:
            flip, turns = torch.randint(0, 2, (1,), generator=generator), torch.randint(0, 4, (1,), generator=generator)
            if int(flip):
                crop = crop.flip(-1)
            crop = torch.rot90(crop, int(turns), dims=(-2, -1))
        crops.append(crop)
    stacked = torch.stack(crops)
    if device is not None:
        stacked = stacked.to(device, non_blocking=True)
    return stacked.float().div_(255.0)  # (B, 3, size, size)


def mod_crop(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """Crop (..., H, W) so both sides are multiples of `multiple` (the protocol's mod-crop)."""
    h, w = image.shape[-2:]
    return image[..., : h - h % multiple, : w - w % multiple]


def save_sample(image: torch.Tensor, path: Path) -> None:
    """Write a (1, 3, H, W) [0, 1] validation output as PNG (atomic rename)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    array = image[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    tmp = path.with_name(f".{path.name}.part")
    Image.fromarray(array).save(tmp, format="PNG")
    tmp.replace(path)
