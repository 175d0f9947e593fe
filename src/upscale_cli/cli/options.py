"""The options `upscale`, `upscale restore` and `upscale fit-single` share, declared once (Typer
`Annotated` aliases), so their names, defaults and help cannot drift apart. A command writes `output: options.Output = None`.

Options that always go together are a group, a frozen dataclass of such fields (BatchOptions):
a command takes the group as one parameter, and `with_groups` shows Typer its fields in that
parameter's place, so the list is written once and the command gets one typed value.

An option that takes one of a fixed set of words is typed with that set's Literal (upscale_cli.choices,
images/formats.py): Typer lists the words in `--help` and refuses any other as a usage error (exit 2,
one line naming them), so no command checks them by hand."""
from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from typing import Annotated, Callable, List, Optional

import typer

from upscale_cli import choices
from upscale_cli.choices import DEVICES, device_name
from upscale_cli.images.codecs import missing_help, unavailable_names
from upscale_cli.images.formats import FORMAT_NAMES, FormatName

# How every Typer app of ours is made (the root app, `upscale train`, `upscale models`): no shell
# completion, errors shown as our one-line messages rather than Rich tracebacks, plain help text.
APP_SETTINGS = {"add_completion": False, "pretty_exceptions_enable": False, "rich_markup_mode": None}

Paths = Annotated[List[str], typer.Argument(metavar="PATH...", help="Files, folders, quoted globs, or - for stdin.")]
Output = Annotated[Optional[str], typer.Option("-o", "--output", help="Output file (one input) or folder; - for stdout.")]
Recursive = Annotated[bool, typer.Option("-r", "--recursive", help="Include subfolders of folder inputs.")]
# --format lists the words this installation writes (HEIC, AVIF, JPEG XL need codecs that may be missing:
# images/codecs.py); the Literal still takes every word, so a missing codec's is one line naming its package.
Format = Annotated[Optional[FormatName], typer.Option(
    "--format", case_sensitive=False, metavar=f"<{'|'.join(n for n in FORMAT_NAMES if n not in unavailable_names())}>",
    help="Output format, any case; each is read too. An animation: gif, png or webp; a video keeps its container. "
         "Default: -o's extension, else the input's format." + missing_help())]
Quality = Annotated[Optional[int], typer.Option(
    "--quality", min=1, max=100, help="JPEG/WebP/HEIC/AVIF/JXL quality (default 95; 100: lossless HEIC and JXL).")]
PngCompression = Annotated[Optional[int], typer.Option(
    "--png-compression", help="PNG zlib level: 0 fastest, 9 smallest files (default: libdeflate level 1, "
                              "the size of level 6 in a twelfth of its time).")]
Shard = Annotated[Optional[str], typer.Option(
    "--shard", metavar="K/N", help="Take part K (0 to N-1) of N: a stable 1/N of the inputs by relative path, "
                                   "for N machines or array-job tasks.")]
Ray = Annotated[Optional[str], typer.Option(
    "--ray", metavar="auto|ADDRESS", help="Run on a Ray cluster (pip install 'upscale-cli[ray]'): auto joins this "
                                          "machine's cluster or starts a local one. One model per worker; files are "
                                          "read and written by the workers (same paths on every node).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs (inputs are never replaced).")]
# --device: a Literal's words and cuda:N (one GPU), so it is parsed by choices.device_name
DEVICE_METAVAR = f"<{'|'.join((*DEVICES, 'cuda:N'))}>"
DEVICE_PARSING = {"parser": device_name, "metavar": DEVICE_METAVAR}
Device = Annotated[str, typer.Option("--device", **DEVICE_PARSING, help="auto: CUDA, else Apple MPS, else the CPU.")]
Half = Annotated[bool, typer.Option(
    "--half", help="Reduced precision where it is native: float16 on a GPU, bfloat16 on a CPU with AVX-512 BF16 "
                   "or AMX; otherwise float32 (said once).")]
Runtime = Annotated[choices.Runtime, typer.Option(
    "--runtime", envvar="UPSCALE_RUNTIME", show_envvar=False, help="What runs the model on the CPU: auto (default: OpenVINO from a tile shape's second use, "
                      "compiled once and cached, where the model converts; else PyTorch), openvino (every shape), "
                      "or torch. UPSCALE_RUNTIME sets it for every run.")]
Tile = Annotated[int, typer.Option("--tile", help="Tile size in input pixels; 0 = automatic.")]
TileOverlap = Annotated[Optional[int], typer.Option(
    "--tile-overlap", help="Tile overlap in input pixels (default from the model, which keeps tiled equal to untiled).")]
MaxPixels = Annotated[Optional[int], typer.Option(
    "--max-pixels", help="Refuse inputs with more pixels than this (decompression-bomb guard; default 178956970, "
                         "0 = no limit).")]
MaxOutputPixels = Annotated[Optional[int], typer.Option(
    "--max-output-pixels", help="Refuse outputs with more pixels than this, before any work (default 500 MP, "
                                "about 11 GB of RAM; 0 = no limit).")]
MaxFrames = Annotated[Optional[int], typer.Option(
    "--max-frames", help="Refuse animations and videos with more frames than this (default 100000; 0 = no limit).")]
Videos = Annotated[bool, typer.Option("--video", help="Include the videos of folder inputs (a video named on its own "
                                                      "always runs).")]
VideoCodec = Annotated[Optional[str], typer.Option(
    "--video-codec", help="Video encoder (libx264, libx265, libvpx-vp9, ...). Default: the input's codec where "
                          "there is an encoder for it, else H.264 (VP9 in .webm).")]
Crf = Annotated[Optional[int], typer.Option(
    "--crf", help="Video quality: the encoder's constant rate factor, lower is better (when not given: x264 18, "
                  "x265 20, VP9 24, AV1 28).")]
PixFmt = Annotated[Optional[str], typer.Option(
    "--pix-fmt", help="Video pixel format (yuv420p, yuv420p10le, ...). Default: the input's, where the encoder takes it.")]
Quiet = Annotated[bool, typer.Option("-q", "--quiet", help="Print nothing but errors.")]
Json = Annotated[bool, typer.Option("--json", help="One JSON object per input on stdout.")]
# fit-single's only fixed set; declared here so its command module needs no import of its own
Encoding = Annotated[choices.Encoding, typer.Option(
    "--encoding", help="The coordinate MLP's input: siren (default), fourier, or none (a plain ReLU MLP).")]


@dataclasses.dataclass(frozen=True)
class BatchOptions:
    """What the commands that run a model over a batch of files (`upscale`, `upscale restore`) take
    besides their own options: the output's format, where the batch runs, the engine, the input
    limits, and how videos are found and encoded."""

    fmt: Format = None
    quality: Quality = None
    png_compression: PngCompression = None
    ray: Ray = None
    shard: Shard = None
    overwrite: Overwrite = False
    device: Device = "auto"
    half: Half = False
    runtime: Runtime = choices.DEFAULT_RUNTIME
    tile: Tile = 0
    tile_overlap: TileOverlap = None
    max_pixels: MaxPixels = None
    max_frames: MaxFrames = None
    videos: Videos = False
    video_codec: VideoCodec = None
    crf: Crf = None
    pix_fmt: PixFmt = None

    def engine(self) -> dict:
        """The engine settings UpscaleConfig and RestoreConfig both take."""
        return {"device": self.device, "half": self.half, "tile": self.tile, "tile_overlap": self.tile_overlap,
                "runtime": self.runtime}


def with_groups(command: Callable) -> Callable:
    """The command as Typer should read it: each parameter typed with an option group (a dataclass
    of Typer-annotated fields) is replaced, in its place, by the group's fields, and the command is
    called with one instance of the group built from them."""
    signature = inspect.signature(command, eval_str=True)
    groups, params = {}, []
    for param in signature.parameters.values():
        group = param.annotation
        if not (isinstance(group, type) and dataclasses.is_dataclass(group)):
            params.append(param)
            continue
        hints = typing.get_type_hints(group, include_extras=True)
        fields = dataclasses.fields(group)
        groups[param.name] = (group, [f.name for f in fields])
        params += [inspect.Parameter(f.name, param.kind, default=f.default, annotation=hints[f.name]) for f in fields]

    @functools.wraps(command)
    def with_groups_built(**values):
        for name, (group, names) in groups.items():
            values[name] = group(**{field: values.pop(field) for field in names})
        return command(**values)

    with_groups_built.__signature__ = signature.replace(parameters=params)
    with_groups_built.__annotations__ = {param.name: param.annotation for param in params}
    return with_groups_built
