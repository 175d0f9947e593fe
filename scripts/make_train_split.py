"""Make the training/validation split every recipe in configs/ reads: runs/data/train and runs/data/val.

    python scripts/make_train_split.py [--shared ../shared] [--out runs/data]

val = every 40th file of the sorted BSDS400 listing, starting at the 8th (10 images, held out of
training; what validation PSNR and the restore routing were measured on); train = the other 390
BSDS400 images + T91 (named T91_<name>). Both are folders of symbolic links into shared/, so
nothing is copied; `--copy` copies the files instead (a lent GPU machine gets the working tree,
where a link into ../shared would point at nothing: research/gpu_campaign.sh stage). Never the
benchmark sets. Idempotent: an existing split is checked, not changed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VAL_START, VAL_EVERY = 7, 40
SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def plan(shared: Path) -> dict[str, dict[str, Path]]:
    bsds = sorted(p for p in (shared / "datasets" / "train" / "BSDS400").iterdir() if p.suffix.lower() in SUFFIXES)
    t91 = sorted(p for p in (shared / "datasets" / "train" / "T91").iterdir() if p.suffix.lower() in SUFFIXES)
    val = {p.name: p for i, p in enumerate(bsds) if i >= VAL_START and (i - VAL_START) % VAL_EVERY == 0}
    train = {p.name: p for p in bsds if p.name not in val}
    train.update({f"T91_{p.name}": p for p in t91})
    return {"train": train, "val": val}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "data")
    parser.add_argument("--copy", action="store_true", help="copy the images instead of linking them")
    args = parser.parse_args()
    split = plan(args.shared.resolve())
    for part, files in split.items():
        folder = args.out / part
        folder.mkdir(parents=True, exist_ok=True)
        existing = {p.name for p in folder.iterdir()}
        extra = existing - set(files)
        if extra:
            print(f"error: {folder} holds {len(extra)} files that are not in the split (e.g. {sorted(extra)[0]}); "
                  "remove the folder to remake it", file=sys.stderr)
            return 1
        for name, target in files.items():
            link = folder / name
            if args.copy and link.is_symlink():
                link.unlink()  # a folder first made of links becomes copies
            if link.exists():
                continue
            if args.copy:
                part_file = folder / f".{name}.part"
                shutil.copyfile(target, part_file)
                part_file.replace(link)
            else:
                os.symlink(target, link)
        print(f"{folder}: {len(files)} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
