"""Video in and out (src/upscale_cli/video): decode -> x2 nearest (numpy) -> encode keeps frame
count, timestamps (VFR included), rotation, colour tags, bit depth and every other stream byte for
byte; an interrupted or killed run resumes from its finished segments and ends equal to an
uninterrupted one; every bad input, limit and refused setting is one line.

The media are made here with PyAV (tests/video_factory.py): 48 frames of 64x48 at most.
"""
from __future__ import annotations

import math
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from upscale_cli.errors import ImageReadError, ImageTooLargeError, ImageWriteError, UsageError
from upscale_cli.images.atomic import _owner_tag
from upscale_cli.video import VideoSettings, open_video
from upscale_cli.video.segments import work_folder

import av
from video_factory import BT709, LIMITED, frame_times, make_audio_only, make_video, packets

MIN_PSNR_DB = 35.0
TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """The inputs, made once for the module."""
    folder = tmp_path_factory.mktemp("media")
    return {
        "mp4": make_video(folder / "clip.mp4", rotation=90, subtitles="mov_text"),
        "vfr": make_video(folder / "vfr.mp4", vfr=True),
        "hevc10": make_video(folder / "deep.mkv", codec="libx265", pix_fmt="yuv420p10le", audio=None,
                             subtitles="subrip", options={"x265-params": "log-level=error"}),
        "webm": make_video(folder / "clip.webm", frames=12, codec="libvpx-vp9", audio="libopus", subtitles="webvtt",
                           options={"b": "0", "crf": "30"}),
        "short": make_video(folder / "short.mp4", frames=12, audio="aac"),
    }


def nearest2(pixels: np.ndarray) -> np.ndarray:
    """(1, C, H, W) -> (1, C, 2H, 2W), each pixel repeated: the test's own 'model'."""
    return pixels.repeat(2, axis=2).repeat(2, axis=3)


def convert(path: Path, target: Path, settings: VideoSettings = VideoSettings(), stop_after: int | None = None,
            threaded: bool = False, model=nearest2):
    """Upscale a video x2 the way the batch runner does; (summary or None when stopped, frames
    converted, the sink). `stop_after`: abort() after that many frames, as an interrupted run."""
    source = open_video(path, max_pixels=0, max_frames=0)
    sink = source.sink(target, settings)
    converted = 0
    add = _writer_thread(sink) if threaded else (lambda image, frame: sink.add(image, frame))
    try:
        for frame in source.frames(start=sink.frames_done):
            add(frame.image.replace(pixels=model(frame.image.pixels)), frame)
            converted += 1
            if converted == stop_after:
                sink.abort()
                return None, converted, sink
        if threaded:
            add.close()
        return sink.finish(), converted, sink
    finally:
        source.close()


class _writer_thread:
    """add() on a thread of its own, as the runner encodes while the next batch converts."""

    def __init__(self, sink) -> None:
        self.sink, self.queue, self.error = sink, queue.Queue(maxsize=4), None
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            self.sink.add(*item)

    def __call__(self, image, frame) -> None:
        self.queue.put((image, frame))

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()


def decoded(path: Path) -> list[np.ndarray]:
    """Every frame as (C, H, W) float through our own reader (its colour conversion)."""
    source = open_video(path, max_pixels=0, max_frames=0)
    try:
        return [frame.image.pixels[0] for frame in source.frames()]
    finally:
        source.close()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def video_stream_facts(path: Path) -> dict:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        first = next(container.decode(stream))
        return {"codec": stream.codec_context.name, "size": (first.width, first.height), "pix_fmt": first.format.name,
                "rotation": first.rotation, "colour": (first.color_range, first.color_primaries, first.color_trc,
                                                       first.colorspace), "duration": container.duration}


def only_files(folder: Path) -> set[str]:
    return {entry.name for entry in folder.iterdir()}


def test_mp4_round_trip_keeps_frames_time_audio_subtitles_rotation_and_colour(media, tmp_path):
    target = tmp_path / "clip_x2.mp4"
    summary, converted, _ = convert(media["mp4"], target, threaded=True)

    assert (summary.frames, converted, summary.duration, summary.fps) == (48, 48, 2.0, 24.0)
    assert summary.streams_copied == ("audio: aac", "subtitle: mov_text")
    facts = video_stream_facts(target)
    assert facts["size"] == (128, 96) and facts["codec"] == "h264" and facts["rotation"] == 90
    assert facts["colour"] == (LIMITED, BT709, BT709, BT709)
    assert facts["duration"] == video_stream_facts(media["mp4"])["duration"]
    assert frame_times(target) == frame_times(media["mp4"])
    assert packets(target, "audio") == packets(media["mp4"], "audio")  # bytes and times
    # mov_text: every cue byte for byte at its time; the mp4 muxer itself adds empty end-of-cue
    # samples (b"\0\0") where it sees other tracks (`ffmpeg -c copy` does the same).
    cues = [packet for packet in packets(target, "subtitle") if packet[0] != b"\0\0"]
    assert cues == [packet for packet in packets(media["mp4"], "subtitle") if packet[0] != b"\0\0"] and len(cues) == 2
    worst = min(psnr(out, nearest2(inp[None])[0])
                for out, inp in zip(decoded(target), decoded(media["mp4"]), strict=True))
    assert worst >= MIN_PSNR_DB
    assert only_files(tmp_path) == {"clip_x2.mp4"}  # no work folder, no temp file


def _rgb_from_yuv(planes: list[np.ndarray], kr: float, kb: float) -> np.ndarray:
    """Limited-range Y'CbCr -> R'G'B' in [0, 255] by the matrix with luma weights kr, kb."""
    y, cb, cr = ((planes[0] - 16) / 219, (planes[1] - 128) / 224, (planes[2] - 128) / 224)
    red, blue = y + 2 * (1 - kr) * cr, y + 2 * (1 - kb) * cb
    green = (y - kr * red - kb * blue) / (1 - kr - kb)
    return np.clip(np.stack([red, green, blue]) * 255, 0, 255)


def test_colours_follow_the_streams_matrix_and_range(tmp_path):
    path = make_video(tmp_path / "full_chroma.mp4", frames=2, pix_fmt="yuv444p", audio=None)  # tagged BT.709
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        planes = [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width].astype(np.float64)
                  for p in frame.planes]
    ours = decoded(path)[0] * 255
    assert np.abs(ours - _rgb_from_yuv(planes, 0.2126, 0.0722)).max() <= 1.0  # BT.709
    assert np.abs(ours - _rgb_from_yuv(planes, 0.299, 0.114)).max() > 10  # BT.601 would be wrong


def test_variable_frame_rate_keeps_every_timestamp(media, tmp_path):
    target = tmp_path / "vfr_x2.mp4"
    summary, _, _ = convert(media["vfr"], target)
    times = frame_times(media["vfr"])
    assert len(set(np.diff([float(t) for t in times]).round(4))) > 1  # really variable
    assert frame_times(target) == times
    assert summary.frames == 48
    assert packets(target, "audio") == packets(media["vfr"], "audio")


def test_ten_bit_hevc_stays_ten_bit_with_its_subtitles(media, tmp_path):
    source = open_video(media["hevc10"], max_pixels=0, max_frames=0)
    assert source.bit_depth == 16 and next(source.frames()).image.bit_depth == 16
    source.close()
    target = tmp_path / "deep_x2.mkv"
    summary, _, _ = convert(media["hevc10"], target)
    facts = video_stream_facts(target)
    assert (facts["codec"], facts["pix_fmt"], facts["size"]) == ("hevc", "yuv420p10le", (128, 96))
    assert summary.streams_copied == ("subtitle: subrip",)
    assert packets(target, "subtitle") == packets(media["hevc10"], "subtitle")
    assert frame_times(target) == frame_times(media["hevc10"])
    out, inp = decoded(target), decoded(media["hevc10"])
    assert min(psnr(o, nearest2(i[None])[0]) for o, i in zip(out, inp)) >= MIN_PSNR_DB


def test_webm_keeps_vp9_opus_and_webvtt(media, tmp_path):
    target = tmp_path / "clip_x2.webm"
    summary, _, _ = convert(media["webm"], target)
    assert video_stream_facts(target)["codec"] == "vp9"
    assert summary.streams_copied == ("audio: opus", "subtitle: webvtt")
    assert packets(target, "audio") == packets(media["webm"], "audio")
    assert packets(target, "subtitle") == packets(media["webm"], "subtitle")
    assert frame_times(target) == frame_times(media["webm"])


def test_prores_mov_keeps_its_codec_depth_and_time_across_segments(tmp_path):
    path = make_video(tmp_path / "edit.mov", frames=12, codec="prores_ks", pix_fmt="yuv422p10le")
    summary, _, _ = convert(path, tmp_path / "edit_x2.mov", VideoSettings(segment_frames=5))  # segments in .mov
    facts = video_stream_facts(tmp_path / "edit_x2.mov")
    assert (facts["codec"], facts["pix_fmt"], summary.frames) == ("prores", "yuv422p10le", 12)
    assert frame_times(tmp_path / "edit_x2.mov") == frame_times(path)
    assert packets(tmp_path / "edit_x2.mov", "audio") == packets(path, "audio")


def test_a_timecode_track_is_rebuilt_from_the_videos_tag(tmp_path):
    path = make_video(tmp_path / "camera.mov", frames=6, timecode="01:02:03:04")
    with av.open(str(path)) as container:
        assert [s.type for s in container.streams] == ["video", "audio", "data"]  # the tmcd track
    summary, _, _ = convert(path, tmp_path / "camera_x2.mov")
    assert summary.streams_copied == ("audio: aac",) and any("timecode 01:02:03:04" in n for n in summary.notes)
    with av.open(str(tmp_path / "camera_x2.mov")) as container:
        assert [(s.type, s.metadata.get("timecode")) for s in container.streams] == [
            ("video", "01:02:03:04"), ("audio", None), ("data", "01:02:03:04")]
        assert container.streams.video[0].average_rate == 24


def test_interrupted_run_resumes_and_equals_an_uninterrupted_one(media, tmp_path):
    settings = VideoSettings(segment_frames=8)
    whole = tmp_path / "whole" / "clip.mp4"
    whole.parent.mkdir()
    convert(media["mp4"], whole, settings)

    target = tmp_path / "clip.mp4"
    summary, converted, sink = convert(media["mp4"], target, settings, stop_after=20)
    assert summary is None and not target.exists()
    assert sorted(p.name for p in work_folder(target).glob("*.nut")) == ["000000.nut", "000001.nut"]

    summary, converted, sink = convert(media["mp4"], target, settings)
    assert (sink.frames_done, converted, summary.frames) == (16, 32, 48)  # 16 frames not converted again
    assert "resumed after 16 frames from an interrupted run" in summary.notes
    assert packets(target, "video") == packets(whole, "video")  # same bytes: x264 is deterministic
    assert packets(target, "audio") == packets(media["mp4"], "audio")
    assert only_files(tmp_path) == {"clip.mp4", "whole"}


KILLED_RUN = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_video import nearest2
from upscale_cli.video import VideoSettings, open_video
source = open_video(Path({path!r}), 0, 0)
sink = source.sink(Path({target!r}), VideoSettings(segment_frames=8))
for frame in source.frames(sink.frames_done):
    sink.add(frame.image.replace(pixels=nearest2(frame.image.pixels)), frame)
    if frame.index == 19:
        print("ready", flush=True)
        sys.stdin.read()  # wait here for SIGKILL: segments 0 and 1 done, segment 2 half written
"""


def test_killed_run_leaves_no_output_and_a_rerun_continues(media, tmp_path):
    target = tmp_path / "clip.mp4"
    code = KILLED_RUN.format(tests=str(TESTS), path=str(media["mp4"]), target=str(target))
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert only_files(tmp_path) == {work_folder(target).name}
    # x264's look-ahead had not written segment 2 yet; a killed run can leave one, as here, and a
    # run killed while joining leaves atomic.py's temp file beside the target:
    (work_folder(target) / "000002.nut.part").write_bytes(b"half a segment")
    (tmp_path / f".clip.mp4.{_owner_tag()}-{child.pid}-0badf00d.upscale-part").write_bytes(b"half a video")

    summary, converted, sink = convert(media["mp4"], target, VideoSettings(segment_frames=8))
    assert (sink.frames_done, converted, summary.frames) == (16, 32, 48)
    assert frame_times(target) == frame_times(media["mp4"])
    assert only_files(tmp_path) == {"clip.mp4"}  # the .part files and the work folder are gone


@pytest.mark.parametrize("change, note", [
    ("settings", "earlier segments discarded: the settings changed"),
    ("input", "earlier segments discarded: the input changed"),
])
def test_segments_of_other_settings_or_input_are_discarded(media, tmp_path, change, note):
    source_path = tmp_path / "short.mp4"
    source_path.write_bytes(media["short"].read_bytes())
    target = tmp_path / "out.mp4"
    convert(source_path, target, VideoSettings(segment_frames=4), stop_after=6)
    if change == "input":
        os.utime(source_path, ns=(1, 1))
    settings = VideoSettings(segment_frames=4, crf=30 if change == "settings" else None)
    summary, converted, sink = convert(source_path, target, settings)
    assert (sink.frames_done, converted, summary.frames) == (0, 12, 12)
    assert note in summary.notes


def test_a_second_run_on_the_same_output_is_refused(media, tmp_path):
    source = open_video(media["short"], 0, 0)
    first = source.sink(tmp_path / "out.mp4", VideoSettings())
    with pytest.raises(ImageWriteError, match="another run is writing this output"):
        source.sink(tmp_path / "out.mp4", VideoSettings())
    first.abort()
    assert only_files(tmp_path) == set()


def _cut(path: Path, folder: Path) -> Path:
    data = path.read_bytes()
    (folder / "cut.mp4").write_bytes(data[: len(data) // 2])
    return folder / "cut.mp4"


def _unknown_codec(path: Path, folder: Path) -> Path:
    make_video(folder / "plain.mkv", frames=4, audio=None)
    data = (folder / "plain.mkv").read_bytes()
    (folder / "unknown.mkv").write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_MPEG4/ISO/XYZ"))
    return folder / "unknown.mkv"


BAD_INPUTS = {
    "truncated": (_cut, "not a readable video: truncated, corrupt or not a video file"),
    "not a video": (lambda p, f: _write(f / "junk.mp4", b"\0\0\0\x18ftypmp42" + bytes(range(256)) * 8),
                    "not a readable video"),
    "empty": (lambda p, f: _write(f / "empty.mkv", b""), "not a readable video"),
    "no video stream": (lambda p, f: make_audio_only(f / "sound.mp4"), "has no video stream"),
    "zero frames": (lambda p, f: make_video(f / "zero.mkv", frames=0), "has no video frames"),
    "unknown codec": (_unknown_codec, "cannot decode its video: the codec is unknown"),
    "missing": (lambda p, f: f / "missing.mp4", "file not found"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_every_bad_input_is_one_line(media, tmp_path, case):
    make, expected = BAD_INPUTS[case]
    path = make(media["short"], tmp_path)
    with pytest.raises(ImageReadError) as caught:
        open_video(path, max_pixels=0, max_frames=0)
    message = str(caught.value)
    assert expected in message and "\n" not in message and message.startswith(str(path))


def test_corrupt_data_inside_the_file_is_one_line_while_decoding(media, tmp_path):
    data = bytearray(media["mp4"].read_bytes())
    start = data.find(b"mdat") + 3000  # some frames in: the header and first frames intact
    data[start : start + 2000] = bytes(2000)
    path = _write(tmp_path / "damaged.mp4", bytes(data))
    source = open_video(path, max_pixels=0, max_frames=0)
    with pytest.raises(ImageReadError, match=r"corrupt or undecodable h264 video after frame \d+ \(Invalid data"):
        list(source.frames())


def test_frame_limits_name_their_options(media):
    with pytest.raises(ImageReadError, match=r"48 frames is over the limit of 40 \(--max-frames\)"):
        open_video(media["mp4"], max_pixels=0, max_frames=40)  # mp4 says its count: refused before work
    source = open_video(media["webm"], max_pixels=0, max_frames=10)  # webm does not: refused while decoding
    with pytest.raises(ImageReadError, match=r"11 frames is over the limit of 10 \(--max-frames\)"):
        list(source.frames())
    with pytest.raises(ImageTooLargeError, match=r"64 x 48 = 3072 pixels a frame is over the limit of 3000 "
                                                 r"\(--max-pixels\)"):
        open_video(media["mp4"], max_pixels=3000, max_frames=0)


@pytest.mark.parametrize("target, settings, expected", [
    ("out.mp4", VideoSettings(codec="nonsense"), "unknown video codec 'nonsense' (--video-codec)"),
    ("out.webm", VideoSettings(codec="h264"), "the webm container cannot hold h264 video"),
    ("out.mp4", VideoSettings(pix_fmt="rgb48le"), "libx264 cannot write pixel format 'rgb48le' (--pix-fmt)"),
    ("out.mp4", VideoSettings(crf=60), "--crf for libx264 must be between 0 and 51, not 60"),
    ("out.mp4", VideoSettings(codec="ffv1", crf=20), "--crf applies to"),
    ("out.avi", VideoSettings(), "cannot write video as .avi: choose .mp4, .m4v, .mkv, .webm, .mov"),
])
def test_refused_settings_are_one_usage_line(media, tmp_path, target, settings, expected):
    source = open_video(media["short"], 0, 0)
    with pytest.raises(UsageError) as caught:
        source.sink(tmp_path / target, settings)
    assert expected in str(caught.value) and "\n" not in str(caught.value)
    assert only_files(tmp_path) == set()


def test_settings_out_of_range_are_refused_when_made():
    with pytest.raises(UsageError, match="--crf must be between 0 and 63, not 70"):
        VideoSettings(crf=70)


def test_an_odd_output_size_is_one_line_before_or_at_the_first_frame(media, tmp_path):
    source = open_video(media["short"], 0, 0)
    with pytest.raises(ImageWriteError, match=r"libx264 cannot write 129 x 97 in yuv420p, which needs an even width "
                                              r"and height: .* --pix-fmt yuv444p"):
        source.sink(tmp_path / "out.mp4", VideoSettings(), output_size=(129, 97))
    sink = source.sink(tmp_path / "out.mp4", VideoSettings())
    frame = next(source.frames())
    with pytest.raises(ImageWriteError, match="cannot write 65 x 49"):
        sink.add(frame.image.replace(pixels=np.zeros((1, 3, 49, 65), np.float32)), frame)
    sink.abort()
    source.close()
    assert only_files(tmp_path) == set()  # no segment finished: the work folder goes too
    summary, _, _ = convert(media["short"], tmp_path / "odd.mp4", VideoSettings(pix_fmt="yuv444p"),
                            model=lambda pixels: nearest2(pixels)[..., :-1, :-1])  # 4:4:4 takes any size
    assert summary.frames == 12 and video_stream_facts(tmp_path / "odd.mp4")["size"] == (127, 95)


def test_a_codec_the_container_cannot_hold_falls_back_with_a_note(tmp_path):
    silent = make_video(tmp_path / "silent.mp4", frames=4, audio=None)
    summary, _, _ = convert(silent, tmp_path / "silent.webm")
    assert video_stream_facts(tmp_path / "silent.webm")["codec"] == "vp9"
    assert summary.notes == ("written as libvpx-vp9: webm cannot hold the input's h264",)
    ten_bit = make_video(tmp_path / "deep.mp4", frames=4, codec="libx265", pix_fmt="yuv420p10le", audio=None,
                         options={"x265-params": "log-level=error"})
    deep, _, _ = convert(ten_bit, tmp_path / "deep.webm")
    assert "written at 8 bits: libvpx-vp9 here has no 10-bit format (--video-codec hevc, or av1 in webm, keeps it)" \
        in deep.notes


def test_audio_the_container_cannot_hold_stops_before_work(media, tmp_path):
    source = open_video(media["short"], 0, 0)
    with pytest.raises(ImageWriteError, match=r"the webm container cannot hold its audio: aac without re-encoding: "
                                              r"write \.mkv"):
        source.sink(tmp_path / "out.webm", VideoSettings())
    assert only_files(tmp_path) == set()
