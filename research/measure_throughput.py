"""Measure where the time of a folder upscale goes, and compare it with what the work needs.

    python research/measure_throughput.py make unet40 /tmp/tp/unet40       # 40 PNGs of 256x256 (BSDS400 crops)
    python research/measure_throughput.py make small10k /tmp/tp/small10k   # 10,000 PNGs of 64x48 in 10 subfolders
    python research/measure_throughput.py make small100 /tmp/tp/small100   # 100 PNGs of 128x128
    python research/measure_throughput.py make small2k /tmp/tp/small2k     # 2,000 PNGs of 64x48
    python research/measure_throughput.py run /tmp/tp/unet40 -- -x 4 -m unet
    python research/measure_throughput.py run /tmp/tp/small10k --pillow nearest -- -r -x 2 -m nearest
    python research/measure_throughput.py versus /tmp/tp/small100 -- -x 4 -m bicubic :: -x 4 -m nearest

`run` reports, for one folder and one set of `upscale` options, in one run: the whole command
(wall time of a fresh process, images/s, output MP/s), its start-up (`upscale --version`: Python,
Typer, no torch) and the parts measured in this process: model load, decode (images.read.read_image),
model only (Upscaler.upscale_tensor, or the bare forward of `--forward`), encode (images.write.encode_image
at the default settings). `--pillow METHOD` adds a plain one-process Pillow loop (open, resize,
save at Pillow's defaults) as a baseline; `--rounds N` alternates the whole command with its baselines
N times, so machine load hits both alike. Outputs go to a temporary folder that is removed.
`--before SRC` also times the command with another source tree first on PYTHONPATH (an earlier
commit: `git archive COMMIT src | tar -x -C /tmp/before`), alternating with this one.
`--whole-only` leaves out the parts (the 10,000-file set's parts take minutes) and times only the
commands and the Pillow loop. `versus` times two option sets on the same folder, alternating (with
`--before`, both with that code too, in the same rounds). `batching` times the bare model on
B same-size images one by one and as one batch; `png FOLDER` the PNG level/strategy table.
Every table carries `uptime`.
"""
from __future__ import annotations

import argparse
import os
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
BSDS = ROOT.parent / "shared" / "datasets" / "train" / "BSDS400"
SETS = {  # name: (count, width, height, subfolders)
    "unet40": (40, 256, 256, 0),
    "small10k": (10_000, 64, 48, 10),
    "small100": (100, 128, 128, 0),
    "small2k": (2_000, 64, 48, 0),
}


def make_set(name: str, out: Path) -> None:
    """Crops of BSDS400 photos (natural content compresses like real files; noise would not)."""
    count, width, height, subfolders = SETS[name]
    sources = sorted(BSDS.glob("*.jpg"))
    if not sources:
        sys.exit(f"no images in {BSDS}")
    out.mkdir(parents=True, exist_ok=True)
    photos = [Image.open(p).convert("RGB") for p in sources[: min(len(sources), 40)]]
    for i in range(count):
        photo = photos[i % len(photos)]
        left = (i * 37) % (photo.width - width)
        top = (i * 53) % (photo.height - height)
        folder = out / f"d{i % subfolders:02d}" if subfolders else out
        folder.mkdir(exist_ok=True)
        photo.crop((left, top, left + width, top + height)).save(folder / f"img{i:05d}.png")
    print(f"{count} PNGs of {width}x{height} in {out}")


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.png") if p.is_file())


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def time_command(folder: Path, options: list[str], code: str | None = None) -> tuple[float, Path]:
    """Wall time of `upscale FOLDER -o TMP -q OPTIONS` in a fresh process (`code`: another source
    tree, e.g. an earlier commit's `git archive`, put first on PYTHONPATH)."""
    out = Path(tempfile.mkdtemp(prefix="tp-out-"))
    env = dict(os.environ, PYTHONPATH=code) if code else None
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "upscale_cli", str(folder), "-o", str(out), "-q", *options],
                          env=env)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"upscale exited {done.returncode}")
    return seconds, out


def time_startup() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "upscale_cli", "--version"], capture_output=True, check=True)
    return time.perf_counter() - start


def time_pillow_loop(paths: list[Path], folder: Path, factor: int, method: str) -> float:
    """The plain baseline: open, resize, save (Pillow's defaults), one process, one thread."""
    filters = {"nearest": Image.NEAREST, "bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR,
               "lanczos": Image.LANCZOS}
    out = Path(tempfile.mkdtemp(prefix="tp-pil-"))
    start = time.perf_counter()
    for path in paths:
        target = out / path.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as im:
            im.resize((im.width * factor, im.height * factor), filters[method]).save(target)
    seconds = time.perf_counter() - start
    shutil.rmtree(out)
    return seconds


def parts(paths: list[Path], options: list[str], forward: bool) -> dict:
    """Model load, decode, model-only and encode times of the same images, in this process."""
    import torch

    from upscale_cli.engine import UpscaleConfig, Upscaler
    from upscale_cli.images.read import read_image
    from upscale_cli.images.write import encode_image

    model, scale = _option(options, ("-m", "--model"), "unet"), float(_option(options, ("-x", "--scale"), "4"))
    start = time.perf_counter()
    upscaler = Upscaler(UpscaleConfig(model=model, scale=scale), progress=False)
    upscaler.prepare()
    load = time.perf_counter() - start
    start = time.perf_counter()
    decoded = [read_image(p) for p in paths]
    decode = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        if forward:  # the bare forward passes, as the issue measured them
            net = upscaler.model(int(scale))
            outs = [net(d.pixels) for d in decoded]
        else:
            outs = [upscaler.upscale_tensor(d.pixels) for d in decoded]
    model_s = time.perf_counter() - start
    results = [d.replace(pixels=o, alpha=None) for d, o in zip(decoded, outs)]
    start = time.perf_counter()
    sizes = [len(encode_image(r, "png")) for r in results]
    encode = time.perf_counter() - start
    megapixels = sum(r.width * r.height for r in results) / 1e6
    return {"load": load, "decode": decode, "model": model_s, "encode": encode, "mp": megapixels,
            "bytes": sum(sizes)}


def _option(options: list[str], names: tuple[str, ...], default: str) -> str:
    for i, value in enumerate(options[:-1]):
        if value in names:
            return options[i + 1]
    return default


def run(args: argparse.Namespace) -> None:
    import torch

    folder = Path(args.folder)
    paths = images_in(folder)
    print(f"# {len(paths)} images in {folder}; upscale {' '.join(args.options)}; torch threads "
          f"{torch.get_num_threads()}; {uptime()}")
    commands, pillow, before, rounds = [], [], [], []
    for _ in range(args.rounds):  # each round: the parts in this process, then the command(s)
        if not args.whole_only:
            rounds.append(parts(paths, args.options, args.forward))
        seconds, out = time_command(folder, args.options)
        shutil.rmtree(out)
        commands.append(seconds)
        if args.before:
            seconds, out = time_command(folder, args.options, args.before)
            shutil.rmtree(out)
            before.append(seconds)
        if args.pillow:
            factor = int(float(_option(args.options, ("-x", "--scale"), "4")))
            pillow.append(time_pillow_loop(paths, folder, factor, args.pillow))
    startup = time_startup()
    whole = statistics.median(commands)
    print("| part | seconds | note |\n|---|---|---|")
    print(f"| whole command | {whole:.2f} | {len(paths) / whole:.1f} images/s; "
          f"runs {', '.join(f'{c:.2f}' for c in commands)} |")
    print(f"| start-up (`upscale --version`) | {startup:.2f} | |")
    measured = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]} if rounds else None
    if measured:
        print(f"| output MP/s | {measured['mp'] / whole:.2f} | |")
        print(f"| model load | {measured['load']:.2f} | |")
        print(f"| decode | {measured['decode']:.2f} | images.read.read_image |")
        label = "bare forward" if args.forward else "Upscaler.upscale_tensor"
        model_runs = ", ".join(f"{r['model']:.2f}" for r in rounds)
        print(f"| model only | {measured['model']:.2f} | {label}; runs {model_runs}; "
              f"whole / model = {whole / measured['model']:.2f}x |")
        print(f"| encode (PNG, default level) | {measured['encode']:.2f} | {measured['bytes'] / 1e6:.1f} MB |")
    if before:
        base = statistics.median(before)
        per_model = f"whole / model = {base / measured['model']:.2f}x; " if measured else ""
        print(f"| whole command, code of {args.before} | {base:.2f} | runs {', '.join(f'{b:.2f}' for b in before)}; "
              f"{per_model}now / then = {whole / base:.2f}x |")
    if pillow:
        base = statistics.median(pillow)
        print(f"| Pillow loop ({args.pillow}) | {base:.2f} | runs {', '.join(f'{p:.2f}' for p in pillow)}; "
              f"whole / Pillow = {whole / base:.2f}x |")
    print(f"# after: {uptime()}")


def versus(args: argparse.Namespace) -> None:
    if "::" not in args.options:
        sys.exit("versus needs two option sets separated by ::")
    cut = args.options.index("::")
    sets = [args.options[:cut], args.options[cut + 1 :]]
    folder = Path(args.folder)
    print(f"# {len(images_in(folder))} images in {folder}; {uptime()}")
    codes = [None, args.before] if args.before else [None]
    times: dict[tuple[str | None, int], list[float]] = {(code, i): [] for code in codes for i in range(2)}
    for _ in range(args.rounds):
        for code in codes:
            for i, options in enumerate(sets):
                seconds, out = time_command(folder, options, code)
                shutil.rmtree(out)
                times[code, i].append(seconds)
    for code in codes:
        a, b = (statistics.median(times[code, i]) for i in range(2))
        whose = f", code of {code}" if code else ""
        for i, options in enumerate(sets):
            runs = times[code, i]
            print(f"| upscale {' '.join(options)}{whose} | {statistics.median(runs):.2f} s | "
                  f"runs {', '.join(f'{x:.2f}' for x in runs)} |")
        print(f"ratio first / second{whose} = {a / b:.2f}x")
    print(f"# after: {uptime()}")


def batching(args: argparse.Namespace) -> None:
    """Does one batch of B same-size images beat B single passes? The bare model, alternating."""
    import torch

    from upscale_cli.loader import load_model

    net = load_model(args.model, args.scale)
    print(f"# {args.model} x{args.scale}, torch threads {torch.get_num_threads()}; {uptime()}")
    print("| input | batch | one by one s/image | in one batch s/image | batch / one by one |\n|---|---|---|---|---|")
    for side in args.sides:
        x = torch.rand(args.batch, 3, side, side)
        singles, batched = [], []
        with torch.no_grad():
            net(x[:1])
            for _ in range(args.rounds):
                start = time.perf_counter()
                for i in range(args.batch):
                    net(x[i : i + 1])
                singles.append((time.perf_counter() - start) / args.batch)
                start = time.perf_counter()
                net(x)
                batched.append((time.perf_counter() - start) / args.batch)
        a, b = statistics.median(singles), statistics.median(batched)
        print(f"| {side}x{side} | {args.batch} | {a:.4f} | {b:.4f} | {b / a:.2f}x |")
    print(f"# after: {uptime()}")


def png_table(args: argparse.Namespace) -> None:
    """PNG encoding speed vs size: Pillow's levels and strategies on 1024x1024 upscaled photos."""
    import io
    import zlib

    import cv2

    from upscale_cli.images import DecodedImage
    from upscale_cli.images.write import _default_png

    paths = images_in(Path(args.folder))[: args.count]
    pictures = [Image.open(p).convert("RGB").resize((1024, 1024), Image.BICUBIC) for p in paths]
    variants = {"level 0": {"compress_level": 0},
                "level 1": {"compress_level": 1},
                "level 1 + Z_RLE (our default)": {"compress_level": 1, "compress_type": zlib.Z_RLE},
                "level 3": {"compress_level": 3},
                "level 6 (Pillow's default)": {"compress_level": 6},
                "level 9": {"compress_level": 9}}
    variants["level 1 + Z_RLE (Pillow: for what the default PNG path does not take)"] = variants.pop(
        "level 1 + Z_RLE (our default)")
    variants["level 1 + Z_RLE + Paeth rows (OpenCV: the default before)"] = {"opencv": True}
    variants["Up rows + libdeflate level 1 (the default)"] = {"ours": True}
    times: dict[str, list[float]] = {name: [] for name in variants}
    sizes: dict[str, float] = {}
    print(f"# {len(pictures)} images of 1024x1024; {uptime()}")
    for _ in range(args.rounds):  # alternating, so load hits every variant alike
        for name, options in variants.items():
            start, total = time.perf_counter(), 0
            for picture in pictures:
                if options.get("ours"):  # what images.write._default_png does
                    total += len(_default_png(np.asarray(picture), DecodedImage(None)))
                    continue
                if options.get("opencv"):
                    params = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
                              cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_PAETH]
                    total += len(cv2.imencode(".png", np.asarray(picture)[..., ::-1].copy(), params)[1])
                    continue
                buffer = io.BytesIO()
                picture.save(buffer, "PNG", **options)
                total += len(buffer.getvalue())
            times[name].append((time.perf_counter() - start) / len(pictures))
            sizes[name] = total / len(pictures)
    base_t, base_s = statistics.median(times["level 6 (Pillow's default)"]), sizes["level 6 (Pillow's default)"]
    print("| PNG setting | s per image | MB per image | size vs level 6 | time vs level 6 |\n|---|---|---|---|---|")
    for name in variants:
        t = statistics.median(times[name])
        print(f"| {name} | {t:.3f} | {sizes[name] / 1e6:.2f} | {sizes[name] / base_s:.2f} | {t / base_t:.2f} |")
    print(f"# after: {uptime()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    make = sub.add_parser("make")
    make.add_argument("set", choices=sorted(SETS))
    make.add_argument("out")
    for name in ("run", "versus"):
        p = sub.add_parser(name)
        p.add_argument("folder")
        p.add_argument("--rounds", type=int, default=2)
        p.add_argument("--pillow", default=None, help="also time a plain Pillow loop with this filter")
        p.add_argument("--forward", action="store_true", help="model only = the bare forward passes")
        p.add_argument("--before", default=None, help="a source tree (src/ of an earlier commit) to time alike")
        p.add_argument("--whole-only", action="store_true", help="run: only the commands (and --pillow), no parts")
    b = sub.add_parser("batching")
    b.add_argument("--model", default="unet")
    b.add_argument("--scale", type=int, default=4)
    b.add_argument("--batch", type=int, default=8)
    b.add_argument("--rounds", type=int, default=3)
    b.add_argument("--sides", type=int, nargs="+", default=[48, 64, 128, 256])
    png = sub.add_parser("png")
    png.add_argument("folder")
    png.add_argument("--count", type=int, default=6)
    png.add_argument("--rounds", type=int, default=3)
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    args.options = argv[cut + 1 :]
    if args.what == "make":
        make_set(args.set, Path(args.out))
    else:
        {"run": run, "versus": versus, "batching": batching, "png": png_table}[args.what](args)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
