"""Tiny videos made with PyAV for the tests: moving gradients (smooth, so a lossy codec keeps them
well above 35 dB), a sine tone, optional subtitles, variable frame rate, rotation and 10 bits.
Nothing is downloaded; a video of 48 frames of 64x48 takes about 0.1 s to make.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

BT709 = 1  # AVCOL_PRI/TRC/SPC_BT709
LIMITED = 1  # AVCOL_RANGE_MPEG
VFR_STEPS = (30, 55, 20)  # milliseconds between frames of the variable-rate video, in turn
AUDIO_RATE = 48_000
AUDIO_CHUNK = 1024
SUBTITLES = (("first line", 0.1, 0.5), ("second line", 1.0, 0.6))  # text, start s, duration s


def gradient_frame(index: int, width: int, height: int, sixteen: bool = False) -> np.ndarray:
    """(H, W, 3) uint8 or uint16: smooth ramps that move a little each frame."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    red = (xx / max(1, width - 1) * 0.8 + index * 0.004) % 1.0
    green = yy / max(1, height - 1) * 0.7 + 0.15
    blue = 0.5 + 0.35 * np.sin((xx + yy) / 9.0 + index / 5.0)
    planes = np.stack([red, green, blue], axis=-1)
    peak = 65535 if sixteen else 255
    return np.rint(planes * peak).astype(np.uint16 if sixteen else np.uint8)


def make_video(path: Path, frames: int = 48, size: tuple[int, int] = (64, 48), fps: int = 24,
               codec: str = "libx264", pix_fmt: str = "yuv420p", audio: str | None = "aac", vfr: bool = False,
               rotation: int | None = None, subtitles: str | None = None, options: dict | None = None,
               timecode: str | None = None) -> Path:
    """A video at `path` (the container follows the suffix). `vfr`: timestamps in milliseconds,
    VFR_STEPS apart; `subtitles`: a codec (subrip, webvtt, mov_text) whose packets are muxed as is;
    `timecode` ("01:00:00:00"): mov and mp4 write it as a timecode (tmcd) data track."""
    width, height = size
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=fps, options=options or {})
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        time_base = Fraction(1, 1000) if vfr else Fraction(1, fps)
        video.time_base = video.codec_context.time_base = time_base
        context = video.codec_context
        context.color_range, context.color_primaries, context.color_trc, context.colorspace = LIMITED, BT709, BT709, BT709
        if rotation is not None:
            video.set_display_rotation(rotation)
        if timecode is not None:
            video.metadata["timecode"] = timecode
        sound = _audio_stream(container, audio)
        text = container.add_mux_stream(subtitles) if subtitles else None
        if text is not None:
            text.time_base = Fraction(1, 1000)
        container.start_encoding()
        sixteen = int(pix_fmt.endswith(("10le", "12le", "16le")))
        pts = 0
        for index in range(frames):
            rgb = av.VideoFrame.from_ndarray(gradient_frame(index, width, height, bool(sixteen)),
                                             format="rgb48le" if sixteen else "rgb24")
            frame = rgb.reformat(format=pix_fmt, dst_colorspace=BT709, dst_color_range=LIMITED)
            frame.pts, frame.time_base = pts, time_base
            container.mux(video.encode(frame))
            pts += VFR_STEPS[index % len(VFR_STEPS)] if vfr else 1
        if frames:
            container.mux(video.encode(None))
        seconds = float(pts * time_base) if frames else 1.0
        if sound is not None:
            _tone(container, sound, seconds)
        if text is not None:
            _subtitles(container, text, subtitles)
    return path


def _audio_stream(container, codec: str | None):
    if codec is None:
        return None
    sound = container.add_stream(codec, rate=AUDIO_RATE)
    sound.layout = "mono"
    return sound


def _tone(container, sound, seconds: float) -> None:
    """A 440 Hz sine of `seconds`."""
    samples = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(AUDIO_RATE * seconds)) / AUDIO_RATE)).astype(np.float32)
    for start in range(0, len(samples), AUDIO_CHUNK):
        chunk = samples[None, start : start + AUDIO_CHUNK]
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="flt", layout="mono")
        frame.sample_rate, frame.pts = AUDIO_RATE, start
        container.mux(sound.encode(frame))
    container.mux(sound.encode(None))


def _subtitles(container, stream, codec: str) -> None:
    for text, start, duration in SUBTITLES:
        payload = text.encode()
        if codec == "mov_text":  # a 16-bit length before the text
            payload = len(payload).to_bytes(2, "big") + payload
        packet = av.Packet(payload)
        packet.pts = packet.dts = int(start * 1000)
        packet.duration = int(duration * 1000)
        packet.time_base = Fraction(1, 1000)
        packet.stream = stream
        container.mux(packet)


def make_audio_only(path: Path) -> Path:
    """An mp4 holding one AAC track and no video."""
    with av.open(str(path), "w") as container:
        sound = _audio_stream(container, "aac")
        _tone(container, sound, 0.5)
    return path


def packets(path: Path, kind: str) -> list[tuple[bytes, Fraction | None]]:
    """Every packet of the first stream of `kind` (audio, subtitle, video): its bytes and its
    presentation time in seconds."""
    with av.open(str(path)) as container:
        stream = next(s for s in container.streams if s.type == kind)
        return [(bytes(p), None if p.pts is None else p.pts * p.time_base)
                for p in container.demux(stream) if p.size]


def frame_times(path: Path) -> list[Fraction]:
    """Each decoded video frame's presentation time in seconds, in order."""
    with av.open(str(path)) as container:
        return [frame.pts * frame.time_base for frame in container.decode(video=0)]
