"""Make the package's OpenModelDB snapshot, and the weights.toml entries of the well-known models,
from the facts in shared/openmodeldb/models.json (so no URL, size or sha256 is copied by hand).

    python scripts/openmodeldb_snapshot.py snapshot        # -> src/upscale_cli/data/openmodeldb.json.gz
    python scripts/openmodeldb_snapshot.py toml            # -> the [models.*] tables, on stdout
"""
from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "openmodeldb" / "models.json"
TARGET = ROOT / "src" / "upscale_cli" / "data" / "openmodeldb.json.gz"
KEEP = ("name", "author", "license", "architecture", "scale", "tags", "resources")

# Our short name -> (OpenModelDB id, one-line purpose). Each has a direct official URL.
WELL_KNOWN = {
    "realesrgan-x4plus": ("4x-realesrgan-x4plus", "Real-ESRGAN x4 (RRDBNet): real photos with unknown blur, noise and JPEG"),
    "realesrgan-x2plus": ("2x-realesrgan-x2plus", "Real-ESRGAN x2 (RRDBNet): real photos with unknown damage"),
    "realesrgan-x4plus-anime": ("4x-realesrgan-x4plus-anime-6b", "Real-ESRGAN x4 for anime and illustrations (6-block RRDBNet)"),
    "realesr-general-x4v3": ("4x-realesr-general-x4v3", "Real-ESRGAN small general model (SRVGGNetCompact): fast, real photos"),
    "realesr-animevideov3": ("4x-realesr-animevideo-v3", "Real-ESRGAN anime video model (Compact): very fast"),
    "swinir-classical-x2": ("2x-classicalSR-DF2K-s64w8-SwinIR-M", "SwinIR-M classical SR x2 (bicubic degradation; benchmark-style)"),
    "swinir-classical-x4": ("4x-classicalSR-DF2K-s64w8-SwinIR-M", "SwinIR-M classical SR x4 (bicubic degradation; benchmark-style)"),
    "swinir-real-x4": ("4x-realSR-BSRGAN-DFO-s64w8-SwinIR-M-x4-GAN", "SwinIR-M real-world SR x4 (BSRGAN damage, GAN)"),
    "hat-s-nomos8k-x4": ("4x-Nomos8kSCHAT-S", "HAT-S x4 trained on Nomos8k: sharp photos (attention; slow on CPU)"),
    "span-x4": ("4x-spanx4-ch48", "SPAN x4 (48 channels): a fast, small SR network"),
    "dejpeg-x1": ("1x-DeJPG-realplksr-otf", "x1 JPEG artifact removal for photos (RealPLKSR)"),
    "denoise-x1": ("1x-DeNoise-realplksr-otf", "x1 denoise for photos (RealPLKSR)"),
}


def load() -> dict:
    return json.loads(SOURCE.read_text(encoding="utf-8"))


def snapshot() -> None:
    data = load()
    models = [{"id": model_id, **{k: entry[k] for k in KEEP if k in entry}}
              for model_id, entry in sorted(data["models"].items())]
    payload = json.dumps({"source": data.get("source", ""), "models": models}, separators=(",", ":"), sort_keys=True)
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_bytes(gzip.compress(payload.encode("utf-8"), compresslevel=9, mtime=0))
    print(f"{len(models)} models -> {TARGET} ({TARGET.stat().st_size:,} bytes)")


def toml() -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from upscale_cli.openmodeldb import _model, file_name

    data = load()["models"]
    for name, (model_id, purpose) in WELL_KNOWN.items():
        model = _model({"id": model_id, **data[model_id]})
        file = model.downloadable
        assert file is not None, model_id
        urls = file.direct_urls
        print(f'[models.{name}]\narch = "spandrel"\ntask = "{"restore" if model.scale == 1 else "sr"}"\n'
              f'license = "{model.license}"\ndescription = "{purpose}; OpenModelDB {model_id}, by {model.author}"\n')
        print(f'[[models.{name}.files]]\nscale = {model.scale}\nfilename = "{file_name(file, model_id)}"\n'
              f'url = "{urls[0]}"')
        if len(urls) > 1:
            print("mirrors = [" + ", ".join(f'"{u}"' for u in urls[1:]) + "]")
        print(f'sha256 = "{file.sha256}"\nsize = {file.size}\n')


if __name__ == "__main__":
    {"snapshot": snapshot, "toml": toml}[sys.argv[1] if len(sys.argv) > 1 else "snapshot"]()
