"""The options `upscale`, `upscale restore` and `upscale fit-single` share, declared once (Typer
`Annotated` aliases), so their names, defaults and help cannot drift apart. A command writes `output: options.Output = None`."""
from __future__ import annotations

from typing import Annotated, List, Optional

import typer

# How every Typer app of ours is made (the root app, `upscale train`, `upscale models`): no shell
# completion, errors shown as our one-line messages rather than Rich tracebacks, plain help text.
APP_SETTINGS = {"add_completion": False, "pretty_exceptions_enable": False, "rich_markup_mode": None}

Paths = Annotated[List[str], typer.Argument(metavar="PATH...", help="Files, folders, quoted globs, or - for stdin.")]
Output = Annotated[Optional[str], typer.Option("-o", "--output", help="Output file (one input) or folder; - for stdout.")]
Recursive = Annotated[bool, typer.Option("-r", "--recursive", help="Include subfolders of folder inputs.")]
Format = Annotated[Optional[str], typer.Option(
    "--format", help="png, jpg, webp, tiff or bmp. Default: -o's extension, else the input's format (GIF: png).")]
Quality = Annotated[Optional[int], typer.Option("--quality", min=1, max=100, help="JPEG/WebP quality (default 95).")]
PngCompression = Annotated[Optional[int], typer.Option(
    "--png-compression", help="PNG zlib level: 0 fastest, 9 smallest files (default: level 1 with run-length "
                              "matching, about 5x faster than 6 for files about 5% larger).")]
Shard = Annotated[Optional[str], typer.Option(
    "--shard", metavar="K/N", help="Take part K (0 to N-1) of N: a stable 1/N of the inputs by relative path, "
                                   "for N machines or array-job tasks.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs (inputs are never replaced).")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps.")]
Half = Annotated[bool, typer.Option(
    "--half", help="Reduced precision where it is native: float16 on a GPU, bfloat16 on a CPU with AVX-512 BF16 "
                   "or AMX; otherwise float32 (said once).")]
Tile = Annotated[int, typer.Option("--tile", help="Tile size in input pixels; 0 = automatic.")]
TileOverlap = Annotated[Optional[int], typer.Option(
    "--tile-overlap", help="Tile overlap in input pixels (default from the model, which keeps tiled equal to untiled).")]
MaxPixels = Annotated[Optional[int], typer.Option(
    "--max-pixels", help="Refuse inputs with more pixels than this (decompression-bomb guard; default 178956970, "
                         "0 = no limit).")]
MaxOutputPixels = Annotated[Optional[int], typer.Option(
    "--max-output-pixels", help="Refuse outputs with more pixels than this, before any work (default 500 MP, "
                                "about 11 GB of RAM; 0 = no limit).")]
Quiet = Annotated[bool, typer.Option("-q", "--quiet", help="Print nothing but errors.")]
Json = Annotated[bool, typer.Option("--json", help="One JSON object per input on stdout.")]
