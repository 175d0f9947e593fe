"""Evaluate pixel-recursive SR at 8x8 -> 32x32 on held-out images (issue #14).

    python research/eval_pixelrec.py --model runs/pixelrec.safetensors --spade-model runs/pixelrec_spade.safetensors \
        --logs runs/pixelrec runs/pixelrec_spade --grid runs/pixelrec_eval/grid.png

Held-out images: the photos of runs/data/val (never trained on; each whole and EVAL_CROPS large
crops, area-downscaled to 32x32) and EVAL_GLYPHS glyph images drawn from their own seed. LR is the
protocol's antialiased bicubic x4, 8-bit. Never the benchmark sets.

Rows: bicubic; our unet x4 (run at this size); the conditioning network alone (its most likely
value per sub-pixel); pixelrec with and without SPADE at temperatures 1.0, 0.8, 0.5 and 0 (greedy).
Columns: NLL in bits per sub-pixel (models with logits), PSNR and SSIM (Y, 8-bit, 4-pixel border),
and for sampled rows the spread between SAMPLES answers of one input (per-pixel standard deviation
in 8-bit levels, and the mean PSNR between two answers). Then the validation figures over training
iterations from each run's log.jsonl, and a picture grid LR | bicubic | unet | 4 samples | HR
(the samples of the last model given: --spade-model when there is one).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from upscale_cli.loader import load_model
from upscale_cli.models.pixelrec import nll_bits
from upscale_cli.resize import resize
from upscale_cli.train import data as train_data
from upscale_cli.train import pixelrec as recipe
from upscale_cli.train.degrade import bicubic_degrade
from upscale_cli.train.validation import forward_padded

EVAL_CROPS = 1
EVAL_GLYPHS = 24
EVAL_SEED = 2024  # glyphs and crops of the evaluation: neither the training draw nor the validation seed
SAMPLES = 4
TEMPERATURES = (1.0, 0.8, 0.5, 0.0)
GRID_ROWS = (0, 2, 4, 6, 20, 21, 22, 23)  # indices into the held-out set: photos, then glyphs
GRID_ZOOM = 4


def held_out(val_folder: str, crops: int = EVAL_CROPS, glyph_count: int = EVAL_GLYPHS) -> tuple[torch.Tensor, int]:
    """(N, 3, 32, 32) held-out HR images and how many of them are photos (the rest are glyphs)."""
    gen = torch.Generator().manual_seed(EVAL_SEED)
    photos = []
    for image in train_data.load_image_cache([val_folder], min_size=recipe.HR_SIDE).images:
        photos.append(recipe.photo_tiny(image, None))
        photos += [recipe.photo_tiny(image, gen) for _ in range(crops)]
    glyphs = [recipe.render_glyphs(gen, recipe.find_fonts()) for _ in range(glyph_count)]
    return torch.stack(photos + glyphs), len(photos)


def scores(sr: torch.Tensor, hr: torch.Tensor, photos: int) -> dict:
    """PSNR/SSIM on photos, glyphs and all."""
    out = {}
    for part, sl in (("photos", slice(0, photos)), ("glyphs", slice(photos, None)), ("all", slice(None))):
        out[f"psnr_{part}"], out[f"ssim_{part}"] = recipe.image_scores(sr[sl], hr[sl])
    return out


def spread(answers: torch.Tensor) -> dict:
    """answers (S, N, 3, H, W): mean per-pixel std across the S answers (8-bit levels), and the mean
    PSNR (Y) between answer pairs (lower = more different answers)."""
    std = float(answers.mul(255).std(dim=0).mean())
    pairs = [recipe.image_scores(answers[a], answers[b])[0] for a in range(len(answers))
             for b in range(a + 1, len(answers))]
    return {"spread_std": std, "pair_psnr": statistics.mean(pairs)}


@torch.no_grad()
def evaluate_pixelrec(path: str, lr: torch.Tensor, hr: torch.Tensor, photos: int, name: str) -> list[dict]:
    model = load_model(path).eval()
    fused, cond = model(lr, hr)
    rows = [{"method": f"{name}: conditioning alone (argmax)", "nll": float(nll_bits(cond, hr)),
             **scores(cond.argmax(dim=2).float().div(255), hr, photos)}]
    for temperature in TEMPERATURES:
        count = 1 if temperature == 0 else SAMPLES
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(EVAL_SEED)
        drawn = torch.stack([model.sample(lr, temperature, generator) for _ in range(count)])  # (count, N, 3, H, W)
        row = {"method": f"{name}: T={temperature:g}", "nll": float(nll_bits(fused, hr)),
               "seconds_per_answer": (time.perf_counter() - started) / (count * len(hr)),
               **scores(drawn[0], hr, photos)}
        if count > 1:
            row |= spread(drawn)
            row["psnr_all_mean_of_samples"] = statistics.mean(recipe.image_scores(d, hr)[0] for d in drawn)
        row["answers"] = drawn
        rows.append(row)
    return rows


def baselines(lr: torch.Tensor, hr: torch.Tensor, photos: int) -> tuple[list[dict], torch.Tensor, torch.Tensor]:
    bicubic = resize(lr, tuple(hr.shape[-2:]), "bicubic")
    unet = load_model("unet", 4).eval()
    with torch.no_grad():
        unet_out = torch.cat([forward_padded(unet, x[None]) for x in lr]).clamp(0, 1)
    return ([{"method": "bicubic", **scores(bicubic, hr, photos)}, {"method": "unet x4", **scores(unet_out, hr, photos)}],
            bicubic, unet_out)


def table(rows: list[dict]) -> str:
    lines = ["| method | NLL bits/sub-pixel | PSNR photos | SSIM photos | PSNR glyphs | SSIM glyphs | PSNR all | "
             "SSIM all | spread (std, levels) | PSNR between answers |", "|---|" + "---:|" * 9]
    for r in rows:
        nll = f"{r['nll']:.3f}" if "nll" in r else "-"
        sp = f"{r['spread_std']:.1f}" if "spread_std" in r else "-"
        pp = f"{r['pair_psnr']:.2f}" if "pair_psnr" in r else "-"
        lines.append(f"| {r['method']} | {nll} | {r['psnr_photos']:.2f} | {r['ssim_photos']:.3f} | {r['psnr_glyphs']:.2f} "
                     f"| {r['ssim_glyphs']:.3f} | {r['psnr_all']:.2f} | {r['ssim_all']:.3f} | {sp} | {pp} |")
    return "\n".join(lines)


def iterations_table(run: Path) -> str:
    """The validation figures of a run over its steps (the run's own 32 validation images)."""
    lines = [f"{run.name}:", "| step | minutes | NLL | NLL conditioning | PSNR greedy | SSIM greedy | PSNR T=0.8 | SSIM T=0.8 |",
             "|---:|" + "---:|" * 7]
    for entry in map(json.loads, (run / "log.jsonl").read_text().splitlines()):
        lines.append(f"| {entry['step']} | {entry['elapsed'] / 60:.1f} | {entry['nll_bits']:.3f} | {entry['nll_cond_bits']:.3f} "
                     f"| {entry['val_psnr']:.2f} | {entry['ssim']:.3f} | {entry['psnr_t08']:.2f} | {entry['ssim_t08']:.3f} |")
    return "\n".join(lines)


def save_grid(path: Path, lr, bicubic, unet_out, answers, hr) -> None:
    """Rows of LR (nearest) | bicubic | unet | 4 samples | HR, each cell zoomed GRID_ZOOM x (nearest)."""
    from PIL import Image

    rows = []
    for i in GRID_ROWS:
        if i >= len(hr):
            continue
        cells = [resize(lr[i:i + 1], tuple(hr.shape[-2:]), "nearest")[0], bicubic[i], unet_out[i],
                 *[answers[s, i] for s in range(answers.shape[0])], hr[i]]
        rows.append(torch.cat([torch.nn.functional.pad(c, (1, 1, 1, 1), value=1.0) for c in cells], dim=2))
    grid = torch.cat(rows, dim=1).clamp(0, 1)
    grid = grid.repeat_interleave(GRID_ZOOM, 1).repeat_interleave(GRID_ZOOM, 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid.mul(255).round().byte().permute(1, 2, 0).numpy()).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="pixelrec weights (batch norm)")
    parser.add_argument("--spade-model", help="pixelrec weights (SPADE)")
    parser.add_argument("--val", default="runs/data/val", help="held-out photos (never the benchmark sets)")
    parser.add_argument("--logs", nargs="*", default=[], help="run directories whose log.jsonl to tabulate")
    parser.add_argument("--grid", default="runs/pixelrec_eval/grid.png")
    parser.add_argument("--json", default="runs/pixelrec_eval/results.json")
    parser.add_argument("--crops", type=int, default=EVAL_CROPS, help="crops per held-out photo (besides the whole)")
    parser.add_argument("--glyphs", type=int, default=EVAL_GLYPHS, help="held-out glyph images")
    args = parser.parse_args()
    torch.set_num_threads(1)

    hr, photos = held_out(args.val, args.crops, args.glyphs)
    lr = bicubic_degrade(hr, 4)
    print(f"held-out: {photos} photo images and {len(hr) - photos} glyph images, 8x8 -> 32x32")
    rows, bicubic, unet_out = baselines(lr, hr, photos)
    models = [("pixelrec", args.model)] + ([("pixelrec+SPADE", args.spade_model)] if args.spade_model else [])
    grid_answers = None
    for name, path in models:
        found = evaluate_pixelrec(path, lr, hr, photos, name)
        grid_answers = next(r["answers"] for r in found if "T=0.8" in r["method"])  # the last model's (SPADE if given)
        rows += found
        print(f"{name}: done", flush=True)
    print(table(rows), flush=True)
    for run in args.logs:
        print()
        print(iterations_table(Path(run)))
    save_grid(Path(args.grid), lr, bicubic, unet_out, grid_answers, hr)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps([{k: v for k, v in r.items() if k != "answers"} for r in rows], indent=1))
    print(f"\ngrid: {args.grid} (rows: LR | bicubic | unet | 4 samples at T=0.8 | HR); figures: {args.json}")


if __name__ == "__main__":
    main()
