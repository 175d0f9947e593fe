"""Peak memory of one float32 forward per INPUT pixel, for each shipped model and spandrel's families.

    python research/measure_memory.py                     # every entry, 1 thread, writes the table
    python research/measure_memory.py --only unet-x4 SwinIR-M-x4 --threads 2   # prints only
    python research/measure_memory.py --list

Each (model, input side) runs in a process of its own, so one run's allocator caches never meet
another's: forked from the driver once torch and spandrel are imported (nothing run yet), or a fresh
interpreter with --spawn (same figures within a few percent, seconds of imports slower). The child
builds the model (shipped weights for ours, random weights for spandrel's classes), allocates the
input in the layout the engine feeds, resets the kernel's peak-RSS mark (/proc/self/clear_refs
"5"), reads VmRSS, runs the forward under torch.no_grad() and reads VmHWM.
Peak = VmHWM - VmRSS before: everything the forward allocates (activations, the output, OpenCV's
or oneDNN's buffers), nothing built before it. glibc's mmap threshold is held at 128 KiB so that
the figure is the forward's live set, not pages the allocator happens to keep (see
_restart_with_allocator_settings; --default-malloc measures without that).

Bytes per input pixel = the slope of that peak between two input sides (square inputs, multiples
of the model's size rule), so the constant part (lazy kernel set-up, a thread pool) drops out.
"activation" = that slope minus the model's own float32 output per input pixel (C * s^2 * 4),
which is what tiling.auto_tile_size's bytes_per_input_pixel means: the tiler adds the output
(twice: the model's and its weighted copy) on top of it.

spandrel models are keyed by the architecture id spandrel itself reports for a state dict of the
built network (ModelLoader().load_from_state_dict), and run through our SpandrelModel wrapper as the
engine runs them (its clone of spandrel's inference-mode output included).
The table goes to stdout, and a full run at the defaults (1 thread) also rewrites the generated part
of research/memory_per_pixel.md, leaving its hand-written notes.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import re
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "weights"
OPENCV_DIR = SHARED / "opencv"
COMMUNITY_FILE = SHARED / "community" / "realesr-general-x4v3.pth"
RESULTS = ROOT / "research" / "memory_per_pixel.md"
CHILD_TIMEOUT_S = 240  # one forward at one size; a family slower than this is skipped, and said so
KIB = 1024
FLOAT32_BYTES = 4
SMALL, LARGE = 64, 160  # default input sides (pixels): the slope repeats within a few percent
ATTENTION_SIDES = (48, 96)  # window-attention nets: slow on one thread, multiples of 8 and 16
HEAVY_SIDES = (32, 64)  # the slowest families (window 16, many blocks)
# fast nets whose figure is a few hundred bytes: wider apart, or 1 MiB of page noise is 10% of it
WIDE_SIDES = (96, 256)
MMAP_THRESHOLD = 128 * KIB  # glibc's own default, held fixed (see _restart_with_allocator_settings)


@dataclass(frozen=True)
class Built:
    """What the child measures: the call, the input it takes, the key the result goes under."""

    call: Callable  # (x, mask) -> output
    key: str  # our arch id, or spandrel's architecture id
    channels: int  # input channels
    scale: int
    multiple: int  # input sides must be multiples of this
    channels_last: bool = False
    out_channels: int = 3
    takes_mask: bool = False


@dataclass(frozen=True)
class Entry:
    build: Callable[[], Built]
    settings: str
    sides: tuple[int, int] = (SMALL, LARGE)
    origin: str = "ours"  # "ours", "spandrel" (random init), "file"


# ---------------------------------------------------------------- ours

def _info_fields(model) -> dict:
    """Size rule, layout, channels and mask use, from the model's descriptor."""
    from upscale_cli.models.descriptor import Masked

    info = model.info
    return {"multiple": info.size.multiple_of, "channels_last": info.channels_last, "channels": info.in_channels,
            "out_channels": info.out_channels, "takes_mask": isinstance(info, Masked)}


def _fixed(model, key: str, scale: int) -> Built:
    fields = _info_fields(model)
    if fields["takes_mask"]:
        return Built(lambda x, m: model(x, mask=m), key, scale=scale, **fields)
    return Built(lambda x, m: model(x), key, scale=scale, **fields)


def _any_size(model, key: str, scale: int) -> Built:
    fields = _info_fields(model)
    return Built(lambda x, m: model(x, size=(x.shape[-2] * scale, x.shape[-1] * scale)), key, scale=scale, **fields)


def catalogue(name: str, scale: int | None, arch: str) -> Callable[[], Built]:
    def build() -> Built:
        from upscale_cli.loader import load_model

        model = load_model(name, scale, progress=False).eval()
        if model.info.channels_last:
            import torch

            model = model.to(memory_format=torch.channels_last)  # as the engine does on the CPU
        return _fixed(model, arch, scale or 1)
    return build


def built(arch: str, factor: int, any_size: bool, **settings) -> Callable[[], Built]:
    def build() -> Built:
        from upscale_cli.models import build_model

        model = build_model(arch, **settings).eval()
        return (_any_size if any_size else _fixed)(model, arch, factor)
    return build


def opencv(algo: str, scale: int, filename: str) -> Callable[[], Built]:
    return built(f"opencv-{algo}", scale, False, algo=algo, scale=scale, model_path=str(OPENCV_DIR / filename))


def coord_mlp_render(scale: int) -> Callable[[], Built]:
    """fit-single's network with its default settings, rendered at scale x the input: the forward of
    a model saved by `fit-single --save-model` (the fit itself is a training loop, not measured)."""
    def build() -> Built:
        from upscale_cli.fit_single.fitting import FitConfig
        from upscale_cli.models import build_model

        config = FitConfig.for_encoding()
        mlp = {"channels": 3, "encoding": config.encoding, "hidden": config.hidden, "depth": config.depth,
               "features": config.features, "freq_scale": config.freq_scale, "long_side": LARGE}
        return _any_size(build_model("coord-mlp", mlp=mlp).eval(), "coord-mlp", scale)
    return build


def pixelrec_conditioning() -> Built:
    """The pixel-recursive model's conditioning net: the logits (B, 3, 256, 4h, 4w) it keeps for the
    whole pixel-by-pixel sampling loop are its memory; the loop itself adds one row's links."""
    from upscale_cli.loader import load_model

    model = load_model("pixel-recursive", 4, progress=False).eval()
    return Built(lambda x, m: model.conditioning(x), "pixelrec", channels=3, scale=4, multiple=1,
                 out_channels=3 * 256)


# ---------------------------------------------------------------- spandrel

def spandrel_net(module: str, cls: str, **kwargs) -> Callable[[], Built]:
    def build() -> Built:
        import importlib

        import spandrel
        import torch
        from upscale_cli.models.spandrel_model import SpandrelModel

        torch.manual_seed(0)
        net = getattr(importlib.import_module(f"spandrel.architectures.{module}"), cls)(**kwargs)
        descriptor = spandrel.ModelLoader().load_from_state_dict(net.state_dict()).eval()
        del net
        return _spandrel_built(SpandrelModel(descriptor), descriptor)
    return build


def spandrel_file(path: Path) -> Callable[[], Built]:
    def build() -> Built:
        from upscale_cli.loader import load_model

        model = load_model(str(path), progress=False).eval()
        return _spandrel_built(model, model.descriptor)
    return build


def _spandrel_built(model, descriptor) -> Built:
    multiple = max(1, int(descriptor.size_requirements.multiple_of))
    return Built(lambda x, m: model(x), descriptor.architecture.id, channels=int(descriptor.input_channels),
                 scale=int(descriptor.scale), multiple=multiple, out_channels=int(descriptor.output_channels))


SWINIR_M = dict(img_size=64, window_size=8, embed_dim=180, depths=[6] * 6, num_heads=[6] * 6, mlp_ratio=2.0,
                img_range=1.0, resi_connection="1conv")

ENTRIES: dict[str, Entry] = {
    # ours, as shipped (catalogue names and packaged weights)
    "unet-x2": Entry(catalogue("unet", 2, "unet"), "catalogue unet x2 (packaged weights)", WIDE_SIDES),
    "unet-x3": Entry(catalogue("unet", 3, "unet"), "catalogue unet x3 (packaged weights)", WIDE_SIDES),
    "unet-x4": Entry(catalogue("unet", 4, "unet"), "catalogue unet x4 (packaged weights)", WIDE_SIDES),
    "unet-restore": Entry(catalogue("unet-restore", 1, "unet"), "catalogue unet-restore x1", WIDE_SIDES),
    "unet-jpeg": Entry(catalogue("unet-jpeg", 1, "unet"), "catalogue unet-jpeg x1", WIDE_SIDES),
    "unet-inpaint": Entry(catalogue("unet-inpaint", 1, "unet"), "catalogue unet-inpaint x1 (mask input)", WIDE_SIDES),
    "upsampler-x2": Entry(catalogue("upsampler", 2, "upsampler"), "catalogue upsampler x2"),
    "upsampler-x4": Entry(catalogue("upsampler", 4, "upsampler"), "catalogue upsampler x4"),
    "upsampler-x8": Entry(catalogue("upsampler", 8, "upsampler"), "catalogue upsampler x8"),
    "pixelrec": Entry(pixelrec_conditioning, "catalogue pixel-recursive x4: conditioning net (see notes)", (8, 16)),
    "bicubic-x4": Entry(built("interpolate", 4, True, method="bicubic"), "method=bicubic, x4", WIDE_SIDES),
    "lanczos-x4": Entry(built("interpolate", 4, True, method="lanczos"), "method=lanczos, x4", WIDE_SIDES),
    "nearest-x4": Entry(built("interpolate", 4, True, method="nearest"), "method=nearest, x4 (RGBA)", WIDE_SIDES),
    "pixel-art-x4": Entry(built("pixel-art", 4, True), "Scale2x twice, x4 (RGBA)", WIDE_SIDES),
    "coord-mlp-x4": Entry(coord_mlp_render(4), "fit-single defaults, render at x4", WIDE_SIDES),
    "opencv-espcn-x4": Entry(opencv("espcn", 4, "ESPCN_x4.pb"), "ESPCN_x4.pb"),
    "opencv-fsrcnn-x4": Entry(opencv("fsrcnn", 4, "FSRCNN_x4.pb"), "FSRCNN_x4.pb"),
    "opencv-fsrcnn-small-x4": Entry(opencv("fsrcnn", 4, "FSRCNN-small_x4.pb"), "FSRCNN-small_x4.pb"),
    "opencv-lapsrn-x2": Entry(opencv("lapsrn", 2, "LapSRN_x2.pb"), "LapSRN_x2.pb"),
    "opencv-lapsrn-x4": Entry(opencv("lapsrn", 4, "LapSRN_x4.pb"), "LapSRN_x4.pb"),
    "opencv-lapsrn-x8": Entry(opencv("lapsrn", 8, "LapSRN_x8.pb"), "LapSRN_x8.pb"),
    "opencv-nlmeans": Entry(built("opencv-nlmeans", 1, False, h=10.0), "h=10 (catalogue)", WIDE_SIDES),
    "opencv-inpaint": Entry(built("opencv-inpaint", 1, False, method="telea", radius=3), "telea, radius 3 (catalogue)",
                            WIDE_SIDES),
    # spandrel's families, random weights, the published models' settings
    "ESRGAN-x4plus": Entry(spandrel_net("ESRGAN", "ESRGAN", num_filters=64, num_blocks=23, scale=4),
                           "RRDBNet 64 feats, 23 blocks, x4 (RealESRGAN_x4plus)", (48, 112), "spandrel"),
    "ESRGAN-x4plus-anime": Entry(spandrel_net("ESRGAN", "ESRGAN", num_filters=64, num_blocks=6, scale=4),
                                 "RRDBNet 64 feats, 6 blocks, x4 (x4plus_anime_6B)", origin="spandrel"),
    "ESRGAN-x2plus": Entry(spandrel_net("ESRGAN", "ESRGAN", num_filters=64, num_blocks=23, scale=2, shuffle_factor=2),
                           "RRDBNet 64 feats, 23 blocks, x2 via pixel unshuffle (RealESRGAN_x2plus)", (48, 112),
                           "spandrel"),
    "Compact-general-x4v3": Entry(spandrel_net("Compact", "Compact", num_feat=64, num_conv=32, upscale=4),
                                  "SRVGGNetCompact 64 feats, 32 convs, x4 (realesr-general-x4v3)", origin="spandrel"),
    "Compact-animevideov3": Entry(spandrel_net("Compact", "Compact", num_feat=64, num_conv=16, upscale=4),
                                  "SRVGGNetCompact 64 feats, 16 convs, x4 (realesr-animevideov3)", origin="spandrel"),
    "file-realesr-general-x4v3": Entry(spandrel_file(COMMUNITY_FILE), "the real file realesr-general-x4v3.pth",
                                       origin="file"),
    "SwinIR-M-x4": Entry(spandrel_net("SwinIR", "SwinIR", upscale=4, upsampler="pixelshuffle", **SWINIR_M),
                         "classical M: 180 dim, 6x6 blocks, window 8, pixelshuffle, x4", ATTENTION_SIDES, "spandrel"),
    "SwinIR-M-x2": Entry(spandrel_net("SwinIR", "SwinIR", upscale=2, upsampler="pixelshuffle", **SWINIR_M),
                         "classical M, x2", ATTENTION_SIDES, "spandrel"),
    "SwinIR-M-real-x4": Entry(spandrel_net("SwinIR", "SwinIR", upscale=4, upsampler="nearest+conv", **SWINIR_M),
                              "real-world M: nearest+conv upsampler, x4", ATTENTION_SIDES, "spandrel"),
    "HAT-S-x4": Entry(spandrel_net("HAT", "HAT", upscale=4, img_size=64, window_size=16, embed_dim=144,
                                   depths=[6] * 6, num_heads=[6] * 6, compress_ratio=24, squeeze_factor=24,
                                   conv_scale=0.01, overlap_ratio=0.5, mlp_ratio=2.0, upsampler="pixelshuffle",
                                   resi_connection="1conv"),
                      "HAT-S: 144 dim, 6x6 blocks, window 16, x4", HEAVY_SIDES, "spandrel"),
    "DAT-light-x4": Entry(spandrel_net("DAT", "DAT", upscale=4, img_size=64, embed_dim=60, split_size=[8, 32],
                                       depth=[18], num_heads=[6], expansion_factor=2.0, resi_connection="3conv",
                                       upsampler="pixelshuffledirect"),
                          "DAT-light: 60 dim, 18 blocks, split 8x32, x4", (64, 128), "spandrel"),
    "OmniSR-x4": Entry(spandrel_net("OmniSR", "OmniSR", num_feat=64, block_num=1, window_size=8, res_num=5,
                                    up_scale=4, pe=True, bias=True),
                       "64 feats, 5 groups, window 8, x4", (64, 128), "spandrel"),
    "SPAN-x4": Entry(spandrel_net("SPAN", "SPAN", num_in_ch=3, num_out_ch=3, feature_channels=48, upscale=4),
                     "48 channels, x4 (spanx4-ch48)", origin="spandrel"),
    "RealCUGAN-x4": Entry(spandrel_net("RealCUGAN", "UpCunet4x", in_channels=3, out_channels=3),
                          "UpCunet4x", (64, 128), "spandrel"),
    "RealCUGAN-x2": Entry(spandrel_net("RealCUGAN", "UpCunet2x", in_channels=3, out_channels=3),
                          "UpCunet2x", (64, 128), "spandrel"),
    "RealPLKSR-x1": Entry(spandrel_net("PLKSR", "RealPLKSR", dim=64, n_blocks=28, upscaling_factor=1),
                          "64 dim, 28 blocks, kernel 17, x1 (dejpeg-x1 / denoise-x1)", origin="spandrel"),
    "RealPLKSR-x4": Entry(spandrel_net("PLKSR", "RealPLKSR", dim=64, n_blocks=28, upscaling_factor=4),
                          "64 dim, 28 blocks, kernel 17, x4", origin="spandrel"),
    "SAFMN-x4": Entry(spandrel_net("SAFMN", "SAFMN", dim=36, n_blocks=8, ffn_scale=2.0, upscaling_factor=4),
                      "36 dim, 8 blocks, x4", origin="spandrel"),
    "RCAN-x4": Entry(spandrel_net("RCAN", "RCAN", scale=4, n_resgroups=10, n_resblocks=20, n_feats=64),
                     "10 groups x 20 blocks, 64 feats, x4", (32, 64), "spandrel"),
    "DRCT-x4": Entry(spandrel_net("DRCT", "DRCT", upscale=4, img_size=64, window_size=16, embed_dim=180,
                                  depths=[6] * 6, num_heads=[6] * 6, mlp_ratio=2.0, upsampler="pixelshuffle",
                                  resi_connection="1conv", gc=32),
                     "DRCT: 180 dim, 6x6 blocks, window 16, x4", HEAVY_SIDES, "spandrel"),
    "ATD-light-x4": Entry(spandrel_net("ATD", "ATD", upscale=4, img_size=64, embed_dim=48, depths=[6] * 4,
                                       num_heads=[4] * 4, window_size=16, category_size=128, num_tokens=64,
                                       reducted_dim=8, convffn_kernel_size=7, mlp_ratio=1.0,
                                       upsampler="pixelshuffledirect"),
                          "ATD-light: 48 dim, 4x6 blocks, window 16, x4", HEAVY_SIDES, "spandrel"),
    "Swin2SR-M-x4": Entry(spandrel_net("Swin2SR", "Swin2SR", upscale=4, upsampler="pixelshuffle", **SWINIR_M),
                          "classical M: 180 dim, 6x6 blocks, window 8, x4", ATTENTION_SIDES, "spandrel"),
    "RGT-x4": Entry(spandrel_net("RGT", "RGT", upscale=4, img_size=64, embed_dim=180, depth=[6] * 8, num_heads=[6] * 8,
                                 split_size=[8, 32], c_ratio=0.5, mlp_ratio=2.0, resi_connection="1conv"),
                    "RGT: 180 dim, 8x6 blocks, split 8x32, x4", HEAVY_SIDES, "spandrel"),
    "CRAFT-x4": Entry(spandrel_net("CRAFT", "CRAFT", upscale=4), "class defaults (48 dim, 4x2 blocks, window 16), x4",
                      (64, 128), "spandrel"),
    "DITN-x4": Entry(spandrel_net("DITN", "DITN", upscale=4), "class defaults (60 dim, patch 8), x4", (64, 128),
                     "spandrel"),
    "SeemoRe-x4": Entry(spandrel_net("SeemoRe", "SeemoRe", scale=4), "class defaults (64 dim, 6 layers), x4",
                        origin="spandrel"),
    "MoSR-x4": Entry(spandrel_net("MoSR", "MoSR", upscale=4), "class defaults (64 dim, 24 blocks), x4",
                     origin="spandrel"),
    "DCTLSA-x4": Entry(spandrel_net("DCTLSA", "DCTLSA", upscale=4), "class defaults (55 feats, 6 modules), x4",
                       (64, 128), "spandrel"),
    "FDAT-x4": Entry(spandrel_net("FDAT", "FDAT", scale=4), "class defaults (120 dim, 4x3 blocks, window 8), x4",
                     ATTENTION_SIDES, "spandrel"),
    "MoESR-x4": Entry(spandrel_net("MoESR", "MoESR", scale=4), "class defaults (64 dim, 9 blocks), x4", (64, 128),
                      "spandrel"),
    "PLKSR-x4": Entry(spandrel_net("PLKSR", "PLKSR", upscaling_factor=4), "class defaults (64 dim, 28 blocks), x4",
                      origin="spandrel"),
    "SwiftSRGAN-x4": Entry(spandrel_net("SwiftSRGAN", "SwiftSRGAN", upscale_factor=4),
                           "class defaults (64 channels, 16 blocks), x4", origin="spandrel"),
    "SCUNet-x1": Entry(spandrel_net("SCUNet", "SCUNet", in_nc=3), "colour, class defaults (64 dim), x1", (64, 128),
                       "spandrel"),
    "DRUNet-x1": Entry(spandrel_net("DRUNet", "DRUNet", in_nc=4, out_nc=3), "colour (RGB + noise map), x1", (64, 128),
                       "spandrel"),
    "NAFNet-x1": Entry(spandrel_net("NAFNet", "NAFNet", width=32, middle_blk_num=12, enc_blk_nums=[2, 2, 4, 8],
                                    dec_blk_nums=[2, 2, 2, 2]), "SIDD width 32, x1", (64, 128), "spandrel"),
    "DnCNN-x1": Entry(spandrel_net("DnCNN", "DnCNN", in_nc=3, out_nc=3, nc=64, nb=20),
                      "colour, 64 feats, 20 layers, x1", origin="spandrel"),
}


# ---------------------------------------------------------------- the child: one model, one side

def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(match.group(1))


def child(name: str, side: int, threads: int, repeats: int) -> dict:
    import warnings

    import torch

    warnings.filterwarnings("ignore")  # spandrel's classes warn about torch.meshgrid's future default
    torch.set_num_threads(threads)
    try:
        import cv2

        cv2.setNumThreads(threads)
    except ImportError:
        pass
    b = ENTRIES[name].build()
    if side % b.multiple:
        raise SystemExit(f"{name}: side {side} is not a multiple of {b.multiple}")
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1, b.channels, side, side, generator=generator)
    if b.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    mask = (torch.rand(1, 1, side, side, generator=generator) < 0.1).float() if b.takes_mask else None
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(repeats):
            y = b.call(x, mask)
            shape = list(y.shape)
            del y
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    return {"key": b.key, "side": side, "before_kib": before, "peak_kib": peak, "seconds": seconds,
            "scale": b.scale, "in_channels": b.channels, "out_channels": b.out_channels, "out_shape": shape}


# ---------------------------------------------------------------- the driver

def run_child(name: str, side: int, threads: int, repeats: int, spawn: bool) -> dict:
    """One measurement in a process of its own: forked from this driver (torch and spandrel already
    imported, nothing run yet, so every child starts from the same allocator state), or with
    spawn=True a fresh interpreter (the same figures, seconds of imports slower each)."""
    return (_run_spawned if spawn else _run_forked)(name, side, threads, repeats)


def _run_spawned(name: str, side: int, threads: int, repeats: int) -> dict:
    env = dict(os.environ)  # the thread count and allocator settings main() put there
    command = [sys.executable, __file__, "--child", name, "--side", str(side), "--threads", str(threads),
               "--repeats", str(repeats)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"over {CHILD_TIMEOUT_S} s at {side}x{side}: skipped"}
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"failed at {side}x{side}: {last[:160]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _run_forked(name: str, side: int, threads: int, repeats: int) -> dict:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: measure, send one JSON line, leave without running the driver's exit code
        os.close(read_end)
        try:
            payload = child(name, side, threads, repeats)
        except BaseException as err:  # noqa: BLE001 - anything a model raises is reported, not fatal
            first = (str(err).splitlines() or [""])[0][:160]
            payload = {"error": f"failed at {side}x{side}: {type(err).__name__}: {first}"}
        os.write(write_end, json.dumps(payload).encode())
        os._exit(0)
    os.close(write_end)
    chunks, deadline = [], time.monotonic() + CHILD_TIMEOUT_S
    with os.fdopen(read_end, "rb") as pipe:
        while True:
            ready, _, _ = select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return {"error": f"over {CHILD_TIMEOUT_S} s at {side}x{side}: skipped"}
            chunk = os.read(pipe.fileno(), 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        return {"error": f"child died at {side}x{side} (wait status {status})"}
    return json.loads(b"".join(chunks))


def measure(name: str, threads: int, repeats: int, sides: tuple[int, int] | None = None, spawn: bool = False) -> dict:
    entry = ENTRIES[name]
    small, large = sides or entry.sides
    runs = []
    for side in (small, large):
        result = run_child(name, side, threads, repeats, spawn)
        if "error" in result:
            return {"name": name, "error": result["error"]}
        runs.append(result)
    a, b = runs
    peak_a = (a["peak_kib"] - a["before_kib"]) * KIB
    peak_b = (b["peak_kib"] - b["before_kib"]) * KIB
    slope = (peak_b - peak_a) / (large * large - small * small)
    output = b["out_channels"] * b["scale"] ** 2 * FLOAT32_BYTES
    return {"name": name, "key": b["key"], "settings": entry.settings, "origin": entry.origin, "scale": b["scale"],
            "threads": threads, "sides": [small, large], "bytes_per_pixel": round(slope),
            "output_per_pixel": output, "activation_per_pixel": round(slope - output),
            "peak_mib": [round(peak_a / 2**20, 1), round(peak_b / 2**20, 1)],
            "constant_mib": round((peak_a - slope * small * small) / 2**20, 1), "seconds_large": round(b["seconds"], 2)}


def machine() -> str:
    import torch

    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    versions = [f"torch {torch.__version__}"]
    for module in ("spandrel", "cv2"):
        try:
            versions.append(f"{'opencv' if module == 'cv2' else module} {__import__(module).__version__}")
        except ImportError:
            pass
    libc = " ".join(platform.libc_ver())
    return f"{cpu} ({os.cpu_count()} CPUs visible), {platform.system()} {platform.release()}, {libc}, " \
           f"Python {platform.python_version()}, {', '.join(versions)}"


def table(results: list[dict]) -> str:
    lines = ["| key (arch id) | model | settings | scale | bytes / input px | output / input px "
             "| activation / input px "
             "| peak MiB (small, large) | constant MiB | sides | s at large |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r.get('key', '?')} | {r['name']} | {ENTRIES[r['name']].settings} | | {r['error']} "
                         "| | | | | | |")
            continue
        lines.append(f"| {r['key']} | {r['name']} | {r['settings']} | {r['scale']} | {r['bytes_per_pixel']:,} "
                     f"| {r['output_per_pixel']:,} | {r['activation_per_pixel']:,} "
                     f"| {r['peak_mib'][0]}, {r['peak_mib'][1]} "
                     f"| {r['constant_mib']} | {r['sides'][0]}, {r['sides'][1]} | {r['seconds_large']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=sorted(ENTRIES), help="entries to measure (default: all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="forwards per child (the peak over all of them)")
    parser.add_argument("--sides", type=int, nargs=2, default=None, help="override every entry's two input sides")
    parser.add_argument("--no-write", action="store_true",
                        help="print only; leave research/memory_per_pixel.md (written by a full default run only)")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's dynamic mmap threshold on (noisier figures; see the docstring)")
    parser.add_argument("--spawn", action="store_true", help="a fresh interpreter per run instead of a fork")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--side", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.side, args.threads, args.repeats)))
        return
    if args.list:
        for name, entry in ENTRIES.items():
            print(f"{name}: {entry.settings} (sides {entry.sides[0]}, {entry.sides[1]})")
        return
    _restart_with_allocator_settings(args)
    _preload()
    results = []
    for name in args.only or list(ENTRIES):
        start = time.perf_counter()
        result = measure(name, args.threads, args.repeats, tuple(args.sides) if args.sides else None, args.spawn)
        results.append(result)
        shown = result.get("error") or \
            f"{result['bytes_per_pixel']:,} B/px ({result['activation_per_pixel']:,} activation)"
        print(f"{name}: {shown} [{time.perf_counter() - start:.0f} s]", file=sys.stderr, flush=True)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.no_write or args.only or args.sides or args.threads != 1 or args.default_malloc:
        return  # the results file holds the reference run only: every entry at its own sides, 1 thread
    RESULTS.write_text(report(results, args))


def _restart_with_allocator_settings(args: argparse.Namespace) -> None:
    """Run again (same arguments) with the thread count and glibc's settings in the environment, which
    both must be there when the process starts. MALLOC_MMAP_THRESHOLD_ fixed at 128 KiB: every buffer
    above it is its own mapping, returned on free, so the peak is the forward's live set. glibc's default
    raises that threshold (up to 32 MiB) after each free and keeps smaller freed buffers in its heap,
    which at these small sides adds a varying 0-60% (--default-malloc shows it); a real tile is large
    enough that its feature maps are above 32 MiB, mapped either way."""
    wanted = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
              "MALLOC_MMAP_THRESHOLD_": None if args.default_malloc else str(MMAP_THRESHOLD)}
    if all(os.environ.get(k) == v for k, v in wanted.items()):
        return
    env = {**os.environ, **{k: v for k, v in wanted.items() if v is not None}}
    env = {k: v for k, v in env.items() if wanted.get(k, v) is not None}
    os.execve(sys.executable, [sys.executable, __file__, *sys.argv[1:]], env)


def _preload() -> None:
    """Import what every child needs once, here, and run nothing: a forked child then starts at
    once, with no thread pool or allocator history of its own yet."""
    import cv2  # noqa: F401
    import spandrel  # noqa: F401
    import torch  # noqa: F401

    import upscale_cli.loader  # noqa: F401
    import upscale_cli.models.spandrel_model  # noqa: F401


BEGIN, END = "<!-- generated by research/measure_memory.py -->", "<!-- end of generated part -->"


def by_key(results: list[dict]) -> str:
    """Each key's largest activation per input pixel over its rows: one figure per architecture id."""
    largest: dict[str, dict] = {}
    for r in results:
        if "error" not in r and r["activation_per_pixel"] > largest.get(r["key"], {}).get("activation_per_pixel", -1):
            largest[r["key"]] = r
    lines = ["| key | largest activation / input px | from |", "|---|---|---|"]
    lines += [f"| {key} | {r['activation_per_pixel']:,} | {r['name']} |" for key, r in largest.items()]
    return "\n".join(lines)


def report(results: list[dict], args: argparse.Namespace) -> str:
    """The generated part of research/memory_per_pixel.md; what the file holds outside the markers stays."""
    allocator = "glibc's default (dynamic mmap threshold)" if args.default_malloc else \
        f"glibc, MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD} (fixed)"
    generated = (f"{BEGIN}\nMeasured on {datetime.date.today().isoformat()}: {args.threads} thread(s), float32, "
                 f"torch.no_grad(), CPU; allocator {allocator}; "
                 f"{'a fresh interpreter' if args.spawn else 'a process forked from the driver'} per run.\n\n"
                 f"Machine: {machine()}.\n\n{table(results)}\n\nOne figure per key (the largest of its rows):\n\n"
                 f"{by_key(results)}\n{END}")
    old = RESULTS.read_text() if RESULTS.exists() else ""
    if BEGIN in old and END in old:
        return old[:old.index(BEGIN)] + generated + old[old.index(END) + len(END):]
    return f"# Peak forward memory per input pixel\n\n{generated}\n"


if __name__ == "__main__":
    main()
