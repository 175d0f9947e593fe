"""What a video is written as: the user's choices (VideoSettings) and the tables that turn them,
with the input's codec and the target's container, into one encoder, pixel format and options.

No PyAV import at module level: the CLI validates choices without loading FFmpeg's libraries
until a video is actually written (`resolve_encoder` and friends import it).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from upscale_cli.errors import UsageError

# A decompression bomb of a video (a tiny file declaring millions of frames) is refused before any
# work: frames.DEFAULT_MAX_FRAMES, the limit of every input of several frames (--max-frames).

# Frames per resumable segment. Each segment is a separate encode that starts with a keyframe, so
# it costs one extra keyframe per segment; 240 is under x264's and x265's default keyframe
# interval (250), so a segment adds about one keyframe the encoder would have placed anyway, and
# a killed run redoes at most 240 frames (10 s of a 24 fps film).
SEGMENT_FRAMES = 240

# Output container by the target's suffix (FFmpeg muxer names).
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mkv": "matroska", ".webm": "webm", ".mov": "mov"}
VIDEO_SUFFIXES = tuple(CONTAINERS)  # read as video (a folder's only with --video)


def is_video_name(path: Path) -> bool:
    return path.suffix.lower() in CONTAINERS

# A codec name as users say it -> the encoder that writes it. Also the input codec (decoder
# name) -> the encoder used by default to write the same codec again.
ENCODERS = {
    "h264": "libx264", "avc": "libx264", "x264": "libx264",
    "hevc": "libx265", "h265": "libx265", "x265": "libx265",
    "vp9": "libvpx-vp9", "vp8": "libvpx",
    "av1": "libsvtav1",
    "prores": "prores_ks", "ffv1": "ffv1", "mpeg4": "mpeg4", "mjpeg": "mjpeg",
}
FALLBACK_ENCODER = "libx264"  # the input's codec has no encoder here (or the container refuses it)
FALLBACK_BY_CONTAINER = {"webm": "libvpx-vp9"}  # webm holds only VP8/VP9/AV1

# Quality when --crf is not given: visually near-transparent for each encoder (x264's own default
# 23, x265's 28 and libvpx's 32 show blocking on upscaled detail). CRF scales differ per encoder.
DEFAULT_CRF = {"libx264": 18, "libx265": 20, "libvpx-vp9": 24, "libvpx": 10, "libsvtav1": 28}
CRF_RANGE = {"libx264": (0, 51), "libx265": (0, 51), "libvpx-vp9": (0, 63), "libvpx": (4, 63), "libsvtav1": (1, 63)}
# Options beside the CRF: libvpx needs b=0 (VP9) or a cap (VP8) for constant quality; x265 prints
# a banner on stderr unless told not to; SVT-AV1's default preset is slow.
EXTRA_OPTIONS = {
    "libvpx-vp9": {"b": "0", "row-mt": "1"},
    "libvpx": {"b": "20M"},
    "libx265": {"x265-params": "log-level=error"},
    "libsvtav1": {"preset": "8"},
}


@dataclass(frozen=True)
class VideoSettings:
    """How converted frames are encoded. `codec` None: the input's codec where this installation
    has an encoder (and the container holds it), else H.264 (VP9 for webm). `crf` None: DEFAULT_CRF.
    `pix_fmt` None: the input's where the encoder takes it, else 4:2:0 at the input's depth where
    the encoder has it. `conversion` names what makes the frames (model, scale, options): finished
    segments of an earlier run are reused only when it is the same. `segment_frames`: frames per
    resumable segment (tests use small ones)."""

    codec: str | None = None
    crf: int | None = None
    pix_fmt: str | None = None
    conversion: str = ""
    segment_frames: int = SEGMENT_FRAMES

    def __post_init__(self) -> None:
        if self.codec is not None and not self.codec.strip():
            raise UsageError("--video-codec must name a codec (h264, hevc, vp9, av1, ...)")
        if self.crf is not None and not 0 <= self.crf <= 63:
            raise UsageError(f"--crf must be between 0 and 63, not {self.crf}")
        if self.segment_frames < 1:
            raise UsageError(f"the segment length must be at least 1 frame, not {self.segment_frames}")


def container_for(target: Path) -> str:
    """The FFmpeg muxer for the target's suffix; UsageError for any other suffix."""
    name = CONTAINERS.get(target.suffix.lower())
    if name is None:
        raise UsageError(f"cannot write video as {target.suffix or 'a file without a suffix'}: "
                         f"choose {', '.join(VIDEO_SUFFIXES)}")
    return name


def encoder_exists(name: str) -> bool:
    import av

    try:
        return av.codec.Codec(name, "w").type == "video"
    except (av.codec.codec.UnknownCodecError, ValueError):
        return False


def container_takes(container: str, encoder: str) -> bool:
    """Whether the muxer can hold what the encoder writes (PyAV asks avformat_query_codec)."""
    import av

    with av.open(io.BytesIO(), "w", format=container) as probe:
        try:
            probe.add_stream(encoder)
        except ValueError:
            return False
    return True


def resolve_encoder(settings: VideoSettings, input_codec: str, container: str) -> tuple[str, tuple[str, ...]]:
    """(encoder name, notes): the user's codec, else the input's, else the fallback."""
    if settings.codec is not None:
        encoder = ENCODERS.get(settings.codec.lower(), settings.codec)
        if not encoder_exists(encoder):
            raise UsageError(f"unknown video codec {settings.codec!r} (--video-codec): choose "
                             f"h264, hevc, vp9, av1 or an FFmpeg video encoder of this installation")
        if not container_takes(container, encoder):
            raise UsageError(f"the {container} container cannot hold {settings.codec} video (--video-codec)")
        return encoder, ()
    encoder = ENCODERS.get(input_codec, input_codec)
    fallback = FALLBACK_BY_CONTAINER.get(container, FALLBACK_ENCODER)
    if not encoder_exists(encoder):
        return fallback, (f"written as {fallback}: this installation has no {input_codec} encoder",)
    if not container_takes(container, encoder):
        return fallback, (f"written as {fallback}: {container} cannot hold the input's {input_codec}",)
    return encoder, ()


def encoder_options(settings: VideoSettings, encoder: str) -> dict[str, str]:
    """The encoder's options: its CRF (checked against its range) and what constant quality needs."""
    options = dict(EXTRA_OPTIONS.get(encoder, {}))
    crf = settings.crf if settings.crf is not None else DEFAULT_CRF.get(encoder)
    if crf is None:
        return options
    if encoder not in CRF_RANGE:
        raise UsageError(f"--crf applies to x264, x265, VP9/VP8 and SVT-AV1, not {encoder}")
    low, high = CRF_RANGE[encoder]
    if not low <= crf <= high:
        raise UsageError(f"--crf for {encoder} must be between {low} and {high}, not {crf}")
    options["crf"] = str(crf)
    return options


def resolve_pix_fmt(settings: VideoSettings, encoder: str, input_pix_fmt: str) -> tuple[str, tuple[str, ...]]:
    """(pixel format, notes): the user's (which the encoder must take), the input's, or the
    encoder's 4:2:0 at the input's depth (a note where the depth must drop)."""
    import av

    supported = [f.name for f in (av.codec.Codec(encoder, "w").video_formats or ())]
    if settings.pix_fmt is not None:
        if supported and settings.pix_fmt not in supported:
            raise UsageError(f"{encoder} cannot write pixel format {settings.pix_fmt!r} (--pix-fmt): "
                             f"choose {', '.join(supported)}")
        try:
            av.VideoFormat(settings.pix_fmt)
        except ValueError:
            raise UsageError(f"unknown pixel format {settings.pix_fmt!r} (--pix-fmt)") from None
        return settings.pix_fmt, ()
    if not supported or input_pix_fmt in supported:
        return input_pix_fmt, ()
    deep = bit_depth_of(input_pix_fmt) > 8
    for candidate in (("yuv420p10le",) if deep else ()) + ("yuv420p",):
        if candidate in supported:
            if deep and bit_depth_of(candidate) == 8:
                return candidate, (f"written at 8 bits: {encoder} here has no {bit_depth_of(input_pix_fmt)}-bit "
                                   f"format (--video-codec hevc, or av1 in webm, keeps it)",)
            return candidate, ()
    return supported[0], ()


def bit_depth_of(pix_fmt: str) -> int:
    import av

    return max(component.bits for component in av.VideoFormat(pix_fmt).components)
