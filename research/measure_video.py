"""Measure a video upscale against the same frames as a PNG folder, and its memory against its length.

    python research/measure_video.py make 96 /tmp/vid          # clip.mp4 (H.264 + AAC, 160x120, 24 fps) + frames/
    python research/measure_video.py versus /tmp/vid --rounds 3 -- -x 2 -m unet
    python research/measure_video.py memory /tmp/vidmem 48 480 -- -x 2 -m bicubic

`make` writes a clip of N frames panning over a training photo (BSDS400, never a benchmark image)
with a 440 Hz tone, and `frames/`: each decoded frame of that clip as a PNG, so both runs convert the
same pixels. `versus` alternates, in whole fresh processes, `upscale clip.mp4 -o OUT.mp4 OPTS` with
`upscale frames/ -o OUT/ OPTS`, `--rounds` times, and prints each time, the medians and the ratio
(video / folder). `memory` makes clips of each length and prints the peak resident memory of the
video run for each (/usr/bin/time's maximum RSS). Every table carries the CPU flags and `uptime`.
"""
from __future__ import annotations

import argparse
import fractions
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT.parent / "shared" / "datasets" / "train" / "BSDS400"
SIZE = (160, 120)
RATE = 24
TONE_HZ = 440
SAMPLE_RATE = 48_000


def _photo() -> np.ndarray:
    files = sorted(p for p in TRAIN.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    if not files:
        sys.exit(f"no training photos under {TRAIN}")
    return np.asarray(Image.open(files[0]).convert("RGB"))


def make(count: int, folder: Path) -> Path:
    """clip.mp4 of `count` frames and frames/ with each decoded frame as a PNG."""
    import av

    folder.mkdir(parents=True, exist_ok=True)
    photo = _photo()
    width, height = SIZE
    clip = folder / "clip.mp4"
    with av.open(str(clip), "w") as out:
        video = out.add_stream("libx264", rate=RATE)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = out.add_stream("aac", rate=SAMPLE_RATE)
        span = photo.shape[1] - width
        for k in range(count):
            x = int(span * k / max(count - 1, 1))
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(photo[:height, x:x + width]), format="rgb24")
            out.mux(video.encode(frame))
        out.mux(video.encode())
        samples = int(SAMPLE_RATE * count / RATE)
        t = np.arange(samples) / SAMPLE_RATE
        tone = (0.2 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)
        step = 1024
        for start in range(0, samples, step):
            chunk = tone[start:start + step][None, :]
            aframe = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            aframe.sample_rate = SAMPLE_RATE
            aframe.pts = start
            aframe.time_base = fractions.Fraction(1, SAMPLE_RATE)
            out.mux(audio.encode(aframe))
        out.mux(audio.encode())
    frames = folder / "frames"
    shutil.rmtree(frames, ignore_errors=True)
    frames.mkdir()
    with av.open(str(clip)) as src:
        for k, frame in enumerate(src.decode(video=0)):
            frame.to_image().save(frames / f"f{k:05d}.png")
    return clip


def _upscale(args: list[str]) -> tuple[float, int]:
    """(seconds, peak RSS in KiB) of one fresh `upscale` process."""
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "upscale_cli", *args, "-q", "--overwrite"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"upscale {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)[1])
    return seconds, rss


def _machine() -> str:
    flags = Path("/proc/cpuinfo").read_text().split("flags")[1].split("\n")[0]
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f" {f}" in flags]
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return f"cpu flags: {' '.join(wanted)}; {load}"


def versus(folder: Path, rounds: int, options: list[str]) -> None:
    clip, frames = folder / "clip.mp4", folder / "frames"
    count = len(list(frames.glob("*.png")))
    print(_machine())
    times: dict[str, list[float]] = {"video": [], "folder": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for kind in ("video", "folder") if r % 2 == 0 else ("folder", "video"):
                target = [str(clip), "-o", f"{tmp}/out.mp4"] if kind == "video" else [str(frames), "-o", f"{tmp}/out/"]
                seconds, rss = _upscale([*target, *options])
                times[kind].append(seconds)
                print(f"round {r + 1} {kind:6s} {seconds:7.2f} s  {count / seconds:6.1f} frames/s  peak {rss / 1024:.0f} MiB")
    video, png = statistics.median(times["video"]), statistics.median(times["folder"])
    print(f"median: video {video:.2f} s, PNG folder {png:.2f} s, ratio {video / png:.3f} ({count} frames, {' '.join(options)})")
    print(_machine())


def memory(counts: list[int], folder: Path, options: list[str]) -> None:
    print(_machine())
    with tempfile.TemporaryDirectory() as tmp:
        for count in counts:
            clip = make(count, folder / f"n{count}")
            seconds, rss = _upscale([str(clip), "-o", f"{tmp}/out{count}.mp4", *options])
            print(f"{count:6d} frames: {seconds:7.2f} s, peak RSS {rss / 1024:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    m = sub.add_parser("make")
    m.add_argument("count", type=int)
    m.add_argument("folder", type=Path)
    v = sub.add_parser("versus")
    v.add_argument("folder", type=Path)
    v.add_argument("--rounds", type=int, default=3)
    mem = sub.add_parser("memory")
    mem.add_argument("folder", type=Path)
    mem.add_argument("counts", type=int, nargs="+")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    options = argv[cut + 1:]
    if args.what == "make":
        print(make(args.count, args.folder))
    elif args.what == "versus":
        versus(args.folder, args.rounds, options)
    else:
        memory(args.counts, args.folder, options)


if __name__ == "__main__":
    main()
