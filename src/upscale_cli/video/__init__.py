"""Video in and out through PyAV (FFmpeg's libraries as a Python package; no ffmpeg binary).

`open_video(path, max_pixels, max_frames)` probes a video and returns a `VideoSource`
(a frames.FrameSource): `frames(start)` yields each frame as an RGB DecodedImage (16-bit where
the source has more than 8 bits) with its timestamp. `source.sink(target, VideoSettings(...))`
returns a `VideoSink` (a frames.FrameSink): converted frames are encoded in resumable segments,
and `finish()` remuxes them with the input's audio, subtitle and data streams (copied, never
re-encoded) into the target, atomically.

The package, by concern:
  settings.py  VideoSettings, the segment length (SEGMENT_FRAMES) and the tables that pick
               the container, encoder, pixel format and quality; no PyAV import at load time
  read.py      probing and decoding: YUV -> RGB with the stream's matrix and range, timestamps
  write.py     encoding: one encoder per segment, RGB -> YUV, the encoder's size rules
  segments.py  the work folder beside the target: finished segments and their manifest
  remux.py     the final file: segments + copied streams, interleaved, renamed into place

Choices worth knowing:
- Rotation is carried as metadata (the display matrix), not applied: frames are converted as
  stored, so width/height are the stored size and the output plays rotated like the input.
- Codec: the input's where an encoder exists and the container holds it (h264 -> libx264,
  hevc -> libx265, vp9 -> libvpx-vp9, av1 -> libsvtav1, ...), else H.264 (VP9 for webm).
- Bit depth: the input's pixel format where the encoder takes it (10-bit HEVC stays 10-bit);
  libvpx-vp9 here has no 10-bit format, so a 10-bit VP9 input is written at 8 bits, with a note.
- A frame size the encoder refuses (an odd size in 4:2:0) is one ImageWriteError line for that
  video, checked on the first frame (or at sink() when output_size is given): no padding or
  cropping, which would change the picture; `--pix-fmt yuv444p` takes any size.
- Resume: segments of SEGMENT_FRAMES frames; a rerun with the same input and settings continues
  after the last finished one. Audio is copied whole at the end, independent of segments.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from upscale_cli.frames import DEFAULT_MAX_FRAMES
from upscale_cli.video.settings import SEGMENT_FRAMES, VIDEO_SUFFIXES, VideoSettings, is_video_name

if TYPE_CHECKING:
    from upscale_cli.video.read import VideoSource

__all__ = ["SEGMENT_FRAMES", "VIDEO_SUFFIXES", "VideoSettings", "is_video_name", "open_video"]


def open_video(path: Path, max_pixels: int, max_frames: int = DEFAULT_MAX_FRAMES) -> "VideoSource":
    """See read.open_video (imported here on first use: PyAV loads only for a video)."""
    from upscale_cli.video.read import open_video as _open_video

    return _open_video(Path(path), max_pixels, max_frames)
