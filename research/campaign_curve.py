"""The validation curve of a training run as a markdown table: PSNR against training time.

    python research/campaign_curve.py runs/campaign_x4 [--rows 12] [--baseline 27.82]

Reads the run's log.jsonl (one line per checkpoint: step, elapsed training seconds, validation
PSNR on the held-out images) and the checkpoint's config (the time budget, which a resume may have
changed; config.json, the run's first config, when there is no checkpoint), and prints about --rows evenly
spaced rows plus the last one, with the training time so far and, with
--baseline, the gain over a reference figure (e.g. the shipped model on the same validation images).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_log(run: Path) -> list[dict]:
    path = run / "log.jsonl"
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist (no checkpoint written yet?)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def pick_rows(rows: list[dict], count: int) -> list[dict]:
    if len(rows) <= count:
        return rows
    stride = len(rows) / count
    picked = [rows[int(i * stride)] for i in range(count)]
    return picked + ([rows[-1]] if picked[-1] is not rows[-1] else [])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--rows", type=int, default=12)
    parser.add_argument("--baseline", type=float, help="Reference PSNR on the same validation images.")
    args = parser.parse_args()
    rows = read_log(args.run)
    config = json.loads((args.run / "config.json").read_text())
    if (args.run / "checkpoint.pt").is_file():  # what the run is now (a resume may change minutes, threads)
        from dataclasses import asdict

        from upscale_cli.train.checkpoint import resume_config

        config = asdict(resume_config(args.run))
    threads = config.get("threads") or 1
    budget = config.get("minutes")
    print(f"| training time (min) | step | validation PSNR (dB) |" + (" gain (dB) |" if args.baseline else ""))
    print("|---|---|---|" + ("---|" if args.baseline else ""))
    for row in pick_rows(rows, args.rows):
        gain = f" {row['val_psnr'] - args.baseline:+.3f} |" if args.baseline else ""
        print(f"| {row['elapsed'] / 60:.1f} | {row['step']} | {row['val_psnr']:.3f} |{gain}")
    last = rows[-1]
    done = f" of a {budget:g}-minute budget ({last['elapsed'] / 60 / budget:.0%})" if budget else ""
    print(f"\n{last['elapsed'] / 3600:.2f} hours of training time so far (the run's config says "
          f"{threads} thread(s); an earlier session may have used others){done}; "
          f"best {max(r['val_psnr'] for r in rows):.3f} dB at step {max(rows, key=lambda r: r['val_psnr'])['step']}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
