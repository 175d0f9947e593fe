"""Evaluate SR weights with the standard protocol (shared/README.md), independent of the benchmark package
(src/upscale_cli/benchmark/).

    python scripts/eval_sr.py WEIGHTS_OR_RUN_DIR [--sets Set5,Set14,BSD68] [--root ../shared/datasets/benchmark]

HR mod-cropped to the scale; LR = Pillow BICUBIC downscale; SR rounded to uint8; PSNR/SSIM on
BT.601 Y with `scale` border pixels cropped; dataset figure = mean over images. A run
directory is evaluated with its checkpoint's EMA weights.

Errors end as the CLI's do: one `error: ...` line and exit 1 (a missing set folder, an unreadable
image, a failed write to stdout) or 2 (an unknown model, a bad option). Every set folder is checked
before any model loads; one weights file that fails does not stop the others.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from upscale_cli.cli import report_error, stdout
from upscale_cli.errors import DatasetError, TrainingError, UpscaleError, UsageError
from upscale_cli.metrics import psnr_y, ssim_y

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "benchmark"


def set_folders(root: Path, sets: str) -> list[tuple[str, Path]]:
    """(name, folder) of each set in --sets; DatasetError naming the first that is not a folder."""
    names = [name.strip() for name in sets.split(",") if name.strip()]
    if not names:
        raise UsageError(f"--sets names no set: {sets!r}")
    folders = [(name, root / name) for name in names]
    for name, folder in folders:
        if not folder.is_dir():
            raise DatasetError(f"no such set folder (--root {root}, --sets {name})", path=folder)
    return folders


def load(source: str) -> torch.nn.Module:
    path = Path(source)
    if path.is_dir() or path.suffix == ".pt":
        from upscale_cli.models import build_model
        from upscale_cli.train.checkpoint import load_checkpoint
        from upscale_cli.train.config import TrainConfig

        ckpt = load_checkpoint(path)
        try:  # a .pt or folder that is not a training run's
            model = build_model(ckpt["config"]["arch"], **TrainConfig.from_dict(ckpt["config"], ignore_unknown=True).model_settings)
            model.load_state_dict(ckpt["ema"] or ckpt["model"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise TrainingError(f"not a training run's checkpoint ({type(err).__name__}: {err})", path=source) from None
        return _one_scale(model.eval(), source)
    from upscale_cli.loader import load_model

    return _one_scale(load_model(str(path)), source)


def _one_scale(model: torch.nn.Module, source: str) -> torch.nn.Module:
    from upscale_cli.models.descriptor import FixedScale

    if not isinstance(model.info, FixedScale):  # bicubic and the like: nothing fixes the LR size
        raise UsageError(f"{source} has no fixed scale: eval_sr.py evaluates SR weights of one scale "
                         "(`upscale benchmark -m MODEL -x N` measures any model)")
    return model


def _read_hr(path: Path, scale: int) -> np.ndarray:
    """An HR image mod-cropped to the scale; DatasetError for a file that is not one, or too small."""
    try:
        with Image.open(path) as image:
            hr = np.asarray(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DatasetError(f"not a readable image ({err})", path=path) from None
    hr = hr[: hr.shape[0] - hr.shape[0] % scale, : hr.shape[1] - hr.shape[1] % scale]
    if min(hr.shape[:2]) <= 2 * scale:  # `scale` border pixels are cropped from each side
        raise DatasetError(f"too small for x{scale} ({hr.shape[1]} x {hr.shape[0]} after mod-crop)", path=path)
    return hr


@torch.no_grad()
def evaluate(model: torch.nn.Module, folder: Path) -> tuple[float, float, float, int]:
    from upscale_cli.train.validation import forward_padded

    scale = model.info.scale
    scores, start = [], time.perf_counter()
    files = sorted(path for path in folder.iterdir() if path.is_file() and not path.name.startswith("."))
    if not files:
        raise DatasetError("no images in the set folder", path=folder)
    for path in files:
        hr = _read_hr(path, scale)
        lr = np.asarray(Image.fromarray(hr).resize((hr.shape[1] // scale, hr.shape[0] // scale), Image.BICUBIC))
        x = torch.from_numpy(lr.copy()).permute(2, 0, 1)[None].float() / 255.0
        sr = forward_padded(model, x).clamp(0, 1)[0].permute(1, 2, 0).mul(255).round().byte().numpy()
        scores.append((psnr_y(sr, hr, border=scale), ssim_y(sr, hr, border=scale)))
    seconds = time.perf_counter() - start
    return float(np.mean([s[0] for s in scores])), float(np.mean([s[1] for s in scores])), seconds, len(scores)


def main() -> int:
    """The exit code: 0, or the highest of the failures (each already said in one line)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="+")
    parser.add_argument("--sets", default="Set5,Set14,BSD68")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="one JSON line per result")
    args = parser.parse_args()
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, not {args.threads}")
    folders = set_folders(args.root, args.sets)  # all of them before any model loads
    torch.set_num_threads(args.threads)
    exit_code = 0
    for source in args.weights:  # one that fails does not stop the others
        try:
            model = load(source)
        except UpscaleError as err:
            exit_code = max(exit_code, _report(err))
            continue
        for name, folder in folders:
            try:
                p, s, sec, n = evaluate(model, folder)
            except UpscaleError as err:
                exit_code = max(exit_code, _report(err))
                continue
            row = {"weights": source, "set": name, "scale": model.info.scale, "psnr": round(p, 4), "ssim": round(s, 5),
                   "seconds": round(sec, 2), "images": n}
            stdout.echo(json.dumps(row) if args.json else  # a failed write: one line, exit 1
                        f"{name:6s} x{model.info.scale}  PSNR {p:6.2f} dB  SSIM {s:.4f}  ({n} images, {sec:.1f}s)  {source}")
    return exit_code


def _report(err: UpscaleError) -> int:
    report_error(err)  # the CLI's one error line
    return err.exit_code


def run() -> int:
    try:
        return main()
    except UpscaleError as err:
        return _report(err)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(run())
