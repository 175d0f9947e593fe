"""Issue #28's "Done when", end to end through the real `upscale` command: every frame of an animated
GIF, APNG and WebP, and a video with its sound, as a user runs them (Typer's CliRunner in process; a
subprocess where the run is killed).

The animations come from tests/test_animation.py's byte builders, with the canvases a browser shows
composited there pixel by pixel from the specifications; outputs are read back with Pillow, not with
our own reader. The videos are made here with PyAV (tests/video_factory.py), 64x48 at most, so that
the whole file runs in seconds on two cores.
"""
from __future__ import annotations

import json
import math
import os
import signal
import struct
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image, ImageSequence
from typer.testing import CliRunner

import image_factory
from test_animation import (APNG_SIZE, DELAYS, GIF_PALETTE, WEBP_SIZE, _descriptor_offsets, apng_bytes, apng_frames,
                            browser_composite, browser_gif, gif_bytes, same_shown, twelve_frames, webp_bytes,
                            webp_frames)
from upscale_cli.cli import app
from upscale_cli.video.segments import work_folder
from video_factory import (BT709, LIMITED, _audio_stream, _tone, frame_times, gradient_frame, make_audio_only,
                           make_video, packets)

runner = CliRunner()
MODEL_TOLERANCE = 2  # out of 255: a frame of an animation against the same frame upscaled alone as a PNG
PSNR_SLACK_DB = 1.0  # a video's frame against the same decoded frame upscaled alone as a PNG


def upscale(*args):
    """The real command, in process; never a traceback, whatever happens."""
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def json_rows(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def entries(folder: Path) -> set[str]:
    """Every name in a folder, hidden ones (temp files, work folders) included."""
    return {p.name for p in folder.iterdir()}


def up2(rgba: np.ndarray) -> np.ndarray:
    """Nearest-neighbour x2 of an (H, W, C) array: each pixel repeated."""
    return np.repeat(np.repeat(rgba, 2, axis=0), 2, axis=1)


def pillow_frames(path: Path) -> tuple[list[np.ndarray], list[float], int | None]:
    """Every frame (RGBA as shown), its duration in ms and the loop count, as Pillow reads them."""
    frames, durations = [], []
    with Image.open(path) as im:
        for k in range(getattr(im, "n_frames", 1)):
            im.seek(k)
            im.load()
            frames.append(np.asarray(im.convert("RGBA")))
            durations.append(im.info.get("duration"))
        return frames, durations, im.info.get("loop")


# ------------------------------------------------------------------------------------- animations


def _gif_image_descriptors(data: bytes) -> list[int]:
    """The flags byte of each image descriptor of a GIF (bit 0x80: a local colour table)."""
    return [data[pos + 9] for pos in _descriptor_offsets(data)]


def test_gif_nearest_keeps_frames_durations_loop_transparency_and_palette(tmp_path):
    frames = twelve_frames()  # sub-rectangles, every disposal, transparency, a local table, interlaced
    source = gif_bytes(frames, loop=0)
    (tmp_path / "a.gif").write_bytes(source)
    result = upscale(tmp_path / "a.gif", "-x", "2", "-m", "nearest", "--json")
    assert result.exit_code == 0, result.output
    row, = json_rows(result)
    assert (row["status"], row["frames"], row["size"]) == ("ok", 12, [20, 16])
    assert row["duration"] == pytest.approx(sum(DELAYS) / 100)
    written = (tmp_path / "a_x2.gif").read_bytes()
    assert written[:6] == b"GIF89a" and entries(tmp_path) == {"a.gif", "a_x2.gif"}
    # the palette kept: the source's global colour table, byte for byte, and no frame has its own
    assert written[10] & 0x87 == source[10] & 0x87 and written[13:13 + 3 * 16] == source[13:13 + 3 * 16]
    assert [tuple(written[13 + 3 * k: 16 + 3 * k]) for k in range(16)] == GIF_PALETTE
    assert not any(flags & 0x80 for flags in _gif_image_descriptors(written))
    shown, durations, loop = pillow_frames(tmp_path / "a_x2.gif")
    assert len(shown) == 12 and durations == [10 * d for d in DELAYS] and loop == 0
    expected = browser_gif(frames)
    assert sum((want[..., 3] == 0).any() for want in expected) >= 6  # really transparent
    for k, (got, want) in enumerate(zip(shown, expected)):
        assert same_shown(got, up2(want)), f"frame {k + 1}"


def _webp_frame_chunks(data: bytes) -> list[list[bytes]]:
    """The chunk names inside each ANMF frame of an animated WebP (VP8L: lossless; VP8/ALPH: lossy)."""
    frames, pos = [], 12
    while pos + 8 <= len(data):
        kind, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if kind == b"ANMF":
            inner, end, names = pos + 8 + 16, pos + 8 + size, []
            while inner + 8 <= end:
                names.append(data[inner:inner + 4])
                length = struct.unpack_from("<I", data, inner + 4)[0]
                inner += 8 + length + (length & 1)
            frames.append(names)
        pos += 8 + size + (size & 1)
    return frames


ANIMATIONS = {
    # kind: (its bytes, the canvases a browser shows, its frames' durations in ms); loop 0 each
    "apng": (lambda: apng_bytes(APNG_SIZE, apng_frames(), plays=0), lambda: browser_composite(APNG_SIZE, apng_frames()),
             [100, 33, 10, 233.333, 400, 50]),
    "webp": (lambda: webp_bytes(WEBP_SIZE, webp_frames(), loop=0), lambda: browser_composite(WEBP_SIZE, webp_frames()),
             [70, 30, 120, 10]),
}


@pytest.mark.parametrize("kind", ANIMATIONS)
def test_apng_and_webp_through_unet_equal_each_frame_upscaled_alone(kind, tmp_path):
    """Each output frame is within 2/255 of the same composited frame written as a PNG and upscaled
    on its own by the same command; the output is lossless, with the same durations and loop."""
    make, composite, durations = ANIMATIONS[kind]
    suffix = ".png" if kind == "apng" else ".webp"
    animation = tmp_path / f"a{suffix}"
    animation.write_bytes(make())
    alone = tmp_path / "alone"
    alone.mkdir()
    canvases = composite()
    for k, canvas in enumerate(canvases):
        Image.fromarray(canvas, "RGBA").save(alone / f"f{k:02d}.png")
    result = upscale(animation, "-x", "2", "-m", "unet", "--json")
    assert result.exit_code == 0, result.output
    assert json_rows(result)[0]["frames"] == len(canvases)
    assert upscale(alone, "-x", "2", "-m", "unet", "-o", tmp_path / "alone_x2", "-q").exit_code == 0
    output = tmp_path / f"a_x2{suffix}"
    data = output.read_bytes()
    if kind == "webp":
        chunks = _webp_frame_chunks(data)
        assert len(chunks) == len(canvases) and all(names == [b"VP8L"] for names in chunks), chunks  # lossless
    shown, got_durations, loop = pillow_frames(output)
    assert len(shown) == len(canvases) and loop == 0
    assert got_durations == pytest.approx(durations, abs=0.001)
    worst = 0
    for k, got in enumerate(shown):
        with Image.open(tmp_path / "alone_x2" / f"f{k:02d}.png") as im:
            want = np.asarray(im.convert("RGBA")).astype(int)
        got = got.astype(int)
        assert got.shape == want.shape == (2 * canvases[k].shape[0], 2 * canvases[k].shape[1], 4)
        visible = want[..., 3] > 0
        colour = np.abs(got[..., :3] - want[..., :3])[visible]
        worst = max(worst, np.abs(got[..., 3] - want[..., 3]).max(), colour.max() if colour.size else 0)
    assert worst <= MODEL_TOLERANCE, worst


def test_format_jpg_refuses_an_animation_and_webp_writes_one(tmp_path):
    frames = twelve_frames()
    (tmp_path / "a.gif").write_bytes(gif_bytes(frames, loop=0))
    refused = upscale(tmp_path / "a.gif", "-x", "2", "-m", "nearest", "--format", "jpg")
    assert refused.exit_code == 1
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {tmp_path / 'a.gif'}: animated GIF of 12 frames: JPEG holds one image; "
                      f"use --format gif, png, webp (or -o NAME.gif, .png, .webp)"], refused.stderr
    assert entries(tmp_path) == {"a.gif"}  # nothing written, no temp file
    result = upscale(tmp_path / "a.gif", "-x", "2", "-m", "nearest", "--format", "webp")
    assert result.exit_code == 0, result.output
    assert _webp_frame_chunks((tmp_path / "a_x2.webp").read_bytes()) == [[b"VP8L"]] * 12
    shown, durations, loop = pillow_frames(tmp_path / "a_x2.webp")
    assert len(shown) == 12 and durations == [10 * d for d in DELAYS] and loop == 0
    for k, (got, want) in enumerate(zip(shown, browser_gif(frames))):
        assert same_shown(got, up2(want)), f"frame {k + 1}"


# ------------------------------------------------------------------------------------------ video


def _box_half(rgb: np.ndarray) -> np.ndarray:
    """(2H, 2W, 3) uint8 -> (H, W, 3) uint8, each output pixel the mean of a 2x2 block."""
    h, w = rgb.shape[0] // 2, rgb.shape[1] // 2
    return np.rint(rgb.astype(np.float64).reshape(h, 2, w, 2, 3).mean(axis=(1, 3))).astype(np.uint8)


def make_truth_clip(path: Path, frames: int = 48, fps: int = 24) -> list[np.ndarray]:
    """An H.264 + AAC mp4 of 64x48: a known 128x96 sequence of smooth moving ramps, each frame
    box-downscaled by 2. Returns the 128x96 ground truth."""
    truth = [gradient_frame(k, 128, 96) for k in range(frames)]
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        time_base = video.time_base = video.codec_context.time_base = Fraction(1, fps)
        context = video.codec_context
        context.color_range, context.color_primaries = LIMITED, BT709
        context.color_trc, context.colorspace = BT709, BT709
        sound = _audio_stream(container, "aac")
        container.start_encoding()
        for k, big in enumerate(truth):
            frame = av.VideoFrame.from_ndarray(_box_half(big), format="rgb24")
            frame = frame.reformat(format="yuv420p", dst_colorspace=BT709, dst_color_range=LIMITED)
            frame.pts, frame.time_base = k, time_base
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        _tone(container, sound, frames / fps)
    return truth


def player_frames(path: Path) -> list[np.ndarray]:
    """Every frame as (H, W, 3) float in [0, 1] as a player shows it: FFmpeg's swscale with its
    default filter and the stream's BT.709 limited-range tags (checked), independent of our reader."""
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            assert (frame.color_range, frame.colorspace) == (LIMITED, BT709)
            rgb = frame.reformat(format="rgb24", src_colorspace=BT709, src_color_range=LIMITED).to_ndarray()
            frames.append(rgb.astype(np.float64) / 255)
    return frames


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two arrays in [0, 1]."""
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def test_mp4_through_unet_keeps_frames_time_and_audio_and_equals_frames_alone(tmp_path):
    """48 frames of 128x96, the duration, the AAC packets byte for byte (and their times), and each
    frame within 1 dB (PSNR against the ground truth) of the same decoded frame upscaled alone as a PNG."""
    clip = tmp_path / "clip.mp4"
    truth = make_truth_clip(clip)
    result = upscale(clip, "-x", "2", "-m", "unet", "--json")
    assert result.exit_code == 0, result.output
    row, = json_rows(result)
    assert (row["status"], row["frames"], row["fps"], row["duration"], row["streams_copied"], row["size"]) == (
        "ok", 48, 24.0, 2.0, ["audio: aac"], [128, 96])
    output = tmp_path / "clip_x2.mp4"
    assert row["output"] == str(output) and entries(tmp_path) == {"clip.mp4", "clip_x2.mp4"}
    with av.open(str(clip)) as a, av.open(str(output)) as b:
        assert b.duration == a.duration and b.streams.video[0].codec_context.name == "h264"
    assert packets(output, "audio") == packets(clip, "audio")  # bytes and presentation times
    assert frame_times(output) == frame_times(clip)

    alone = tmp_path / "alone"
    alone.mkdir()
    for k, frame in enumerate(player_frames(clip)):  # frame k as a user would extract it
        Image.fromarray(np.rint(frame * 255).astype(np.uint8), "RGB").save(alone / f"f{k:02d}.png")
    assert upscale(alone, "-x", "2", "-m", "unet", "-o", tmp_path / "alone_x2", "-q").exit_code == 0
    video = player_frames(output)
    assert len(video) == 48 and all(frame.shape == (96, 128, 3) for frame in video)
    gaps = []
    for k, (frame, want) in enumerate(zip(video, truth)):
        with Image.open(tmp_path / "alone_x2" / f"f{k:02d}.png") as im:
            still = np.asarray(im.convert("RGB")).astype(np.float64) / 255
        gaps.append(psnr(still, want / 255) - psnr(frame, want / 255))
    assert max(gaps) <= PSNR_SLACK_DB, [round(g, 3) for g in gaps]


def test_variable_frame_rate_and_ten_bits_are_kept(tmp_path):
    vfr = make_video(tmp_path / "vfr.mp4", frames=12, vfr=True)
    deep = make_video(tmp_path / "deep.mkv", frames=6, codec="libx265", pix_fmt="yuv420p10le", audio=None,
                      options={"x265-params": "log-level=error"})
    result = upscale(vfr, deep, "-x", "2", "-m", "nearest", "--json")
    assert result.exit_code == 0, result.output
    assert [(r["status"], r["frames"]) for r in json_rows(result)] == [("ok", 12), ("ok", 6)]
    times = frame_times(vfr)
    assert len({round(float(b - a), 4) for a, b in zip(times, times[1:])}) > 1  # really variable
    assert frame_times(tmp_path / "vfr_x2.mp4") == times
    assert packets(tmp_path / "vfr_x2.mp4", "audio") == packets(vfr, "audio")
    with av.open(str(tmp_path / "deep_x2.mkv")) as container:
        stream = container.streams.video[0]
        first = next(container.decode(stream))
        assert (stream.codec_context.name, first.format.name, first.width, first.height) == (
            "hevc", "yuv420p10le", 128, 96)


# ------------------------------------------------------------------------------------- bad input


def _cut(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _damaged(path: Path) -> Path:
    """A 10-frame mp4 whose 6th frame's data is garbage: opens, then fails while decoding."""
    make_video(path, frames=10, audio=None)
    with av.open(str(path)) as container:
        spans = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    data = bytearray(path.read_bytes())
    start, size = spans[5]
    data[start:start + size] = b"\xff" * size
    path.write_bytes(bytes(data))
    return path


def _unknown_codec(path: Path) -> Path:
    make_video(path, frames=4, audio=None)
    path.write_bytes(path.read_bytes().replace(b"V_MPEG4/ISO/AVC", b"V_MPEG4/ISO/XYZ"))
    return path


BAD_VIDEOS = {
    # name: (make it, what its one error line says)
    "cut.mp4": (lambda p: _cut(make_video(p, frames=12)),
                "not a readable video: truncated, corrupt or not a video file"),
    "sound.mp4": (make_audio_only, "has no video stream"),
    "zero.mkv": (lambda p: make_video(p, frames=0), "has no video frames"),
    "many.mp4": (lambda p: make_video(p, frames=12), "12 frames is over the limit of 10 (--max-frames)"),
    "many.webm": (lambda p: make_video(p, frames=12, codec="libvpx-vp9", audio=None, options={"b": "0", "crf": "30"}),
                  "11 frames is over the limit of 10 (--max-frames), counted while decoding"),
    "damaged.mp4": (_damaged, "corrupt or undecodable h264 video after frame"),
    "unknown.mkv": (_unknown_codec, "cannot decode its video: the codec is unknown"),
    "odd.mp4": (lambda p: make_video(p, frames=3, size=(66, 50), audio=None),
                "libx264 cannot write 99 x 75 in yuv420p, which needs an even width and height"),
}


def test_bad_videos_in_a_batch_are_one_line_each_and_leave_nothing(tmp_path):
    """Each bad video: one `error:` line naming it, the good file still written, exit 1, and nothing
    left behind (no output, no temp file, no .upscale-segments work folder) beside the outputs or
    the inputs. x1.5 makes the 66x50 video's output odd (99x75), which 4:2:0 cannot hold."""
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out.mkdir()
    good = image_factory.make_rgb_png(inputs, "good.png")
    for name, (make, _) in BAD_VIDEOS.items():
        make(inputs / name)
    before = entries(inputs)
    result = upscale(good, *(inputs / name for name in BAD_VIDEOS), "-x", "1.5", "-m", "nearest", "-o", out,
                     "--max-frames", "10")
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    for name, (_, says) in BAD_VIDEOS.items():
        mine = [line for line in lines if f"{name}:" in line]
        assert len(mine) == 1 and mine[0].startswith("error: ") and says in mine[0], (name, result.stderr)
    assert f"1 done, 0 skipped, {len(BAD_VIDEOS)} failed" in result.stderr
    assert entries(out) == {"good.png"} and entries(inputs) == before
    with Image.open(out / "good.png") as im:
        assert im.size == (36, 24)


@pytest.mark.parametrize("output, says", [
    ("-", "a video is written to a file, not to stdout (-o -); give -o FILE"),
    ("out.png", "a video is written as a video (.mp4, .m4v, .mkv, .webm, .mov), not as .png"),
])
def test_a_video_to_stdout_or_to_an_image_name_is_one_line(tmp_path, output, says):
    clip = make_video(tmp_path / "clip.mp4", frames=4)
    target = output if output == "-" else tmp_path / output
    result = upscale(clip, "-x", "2", "-m", "nearest", "-o", target)
    assert result.exit_code == 1 and result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and says in errors[0], result.stderr
    assert entries(tmp_path) == {"clip.mp4"}


# ------------------------------------------------------------------------------- folders, --video


def test_a_folders_video_runs_only_with_video(tmp_path):
    folder = tmp_path / "shots"
    folder.mkdir()
    make_video(folder / "a.mp4", frames=6)
    image_factory.make_rgb_png(folder, "b.png")
    result = upscale(folder, "-x", "2", "-m", "nearest", "--json")
    assert result.exit_code == 0, result.output
    rows = {Path(r["input"]).name: r for r in json_rows(result)}
    assert rows["b.png"]["status"] == "ok"
    assert (rows["a.mp4"]["status"], rows["a.mp4"]["output"]) == ("skipped", None)
    assert "--video" in rows["a.mp4"]["error"]
    assert entries(folder) == {"a.mp4", "b.png", "b_x2.png"}

    result = upscale(folder, "-x", "2", "-m", "nearest", "--json", "--video", "--overwrite")
    assert result.exit_code == 0, result.output
    rows = {Path(r["input"]).name: r for r in json_rows(result)}
    assert [rows[n]["status"] for n in ("a.mp4", "b.png")] == ["ok", "ok"]
    assert (rows["a.mp4"]["frames"], rows["a.mp4"]["size"], rows["a.mp4"]["streams_copied"]) == (
        6, [128, 96], ["audio: aac"])
    assert entries(folder) == {"a.mp4", "b.png", "b_x2.png", "a_x2.mp4"}


def test_a_folders_video_left_out_is_said_and_format_is_for_images(tmp_path):
    """Without --json too, a folder's video left out has its own line (a .txt is only counted); a
    --format for the batch's images is said not to apply to a video, which keeps its container."""
    folder = tmp_path / "shots"
    folder.mkdir()
    make_video(folder / "a.mp4", frames=4, audio=None)
    (folder / "notes.txt").write_text("a sidecar")
    alone = upscale(folder, "-x", "2", "-m", "nearest")  # nothing else to do: one line says why
    assert alone.exit_code == 1 and "1 video left out: pass --video" in alone.stderr
    image_factory.make_rgb_png(folder, "b.png")
    result = upscale(folder, "-x", "2", "-m", "nearest")
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.stderr.splitlines() if "a.mp4" in line]
    assert "skipped" in line and "--video" in line
    assert not [line for line in result.stderr.splitlines() if "notes.txt" in line]
    result = upscale(folder / "a.mp4", "-x", "2", "-m", "nearest", "--format", "png", "--json")
    assert result.exit_code == 0, result.output
    (row,) = json_rows(result)
    assert row["output"].endswith("a_x2.mp4") and any("--format png is for images" in n for n in row["notes"])


def test_a_video_into_a_new_output_folder(tmp_path):
    """Its folder is made as an image's is (it failed: the work folder beside it had no parent)."""
    folder = tmp_path / "shots"
    folder.mkdir()
    make_video(folder / "a.mp4", frames=4, audio=None)  # before b.png: the first output of the batch
    image_factory.make_rgb_png(folder, "b.png")
    result = upscale(folder, "--video", "-x", "2", "-m", "nearest", "-o", tmp_path / "new")
    assert result.exit_code == 0, result.stderr
    assert entries(tmp_path / "new") == {"a.mp4", "b.png"}
    alone = upscale(folder / "a.mp4", "-x", "2", "-m", "nearest", "-o", tmp_path / "deep" / "er" / "a.mp4")
    assert alone.exit_code == 0, alone.stderr
    assert entries(tmp_path / "deep" / "er") == {"a.mp4"}


# ------------------------------------------------------------------------------------ killed run

SEGMENT = 240  # video.settings.SEGMENT_FRAMES: the command has no option for it


def _listed_segments(folder: Path) -> list:
    """The finished segments the work folder's manifest lists (a segment file is renamed into place
    before it is listed, so only a listed one counts)."""
    try:
        return json.loads((folder / "manifest.json").read_text())["segments"]
    except (OSError, ValueError, KeyError):
        return []


def test_a_killed_video_run_leaves_no_output_and_a_rerun_continues(tmp_path):
    """SIGKILL once the first segment is finished: nothing at the output's name; a rerun continues
    after the finished segment and ends with every frame and nothing else left."""
    clip = make_video(tmp_path / "clip.mp4", frames=3 * SEGMENT, size=(32, 24), audio=None)
    target = tmp_path / "clip_x2.mp4"
    segments = work_folder(target)
    child = subprocess.Popen([sys.executable, "-m", "upscale_cli", str(clip), "-x", "2", "-m", "nearest"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not _listed_segments(segments):
            assert child.poll() is None, "the run ended before its first segment was seen"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert not target.exists()
    assert _listed_segments(segments) and (segments / "000000.nut").exists()

    result = upscale(clip, "-x", "2", "-m", "nearest", "--json")
    assert result.exit_code == 0, result.output
    row, = json_rows(result)
    assert row["frames"] == 3 * SEGMENT
    assert (row["size"], row["scale"], row["passes"]) == ([64, 48], 2.0, [])  # the resumed run's own frames say it
    resumed = [note for note in row["notes"] if note.startswith("resumed after ")]
    assert len(resumed) == 1 and int(resumed[0].split()[2]) >= SEGMENT, row["notes"]
    assert len(frame_times(target)) == 3 * SEGMENT
    assert entries(tmp_path) == {"clip.mp4", "clip_x2.mp4"}  # the work folder and any .part are gone


def test_restore_decides_once_for_every_frame(tmp_path):
    """restore --task auto on an animation: the first frame is assessed and every frame restored
    alike. Here the first frame is clean, so every frame is left as is, the noisy ones too (assessed
    one by one, frames 1-3 were denoised and frame 0 not: the picture would flicker)."""
    rng = np.random.default_rng(5)
    ramp = np.linspace(40, 210, 64, dtype=np.float64)[None, :, None].repeat(48, 0).repeat(3, 2)
    clean = ramp.round().astype(np.uint8)
    noisy = [np.clip(ramp + rng.normal(0, 20, ramp.shape), 0, 255).round().astype(np.uint8) for _ in range(3)]
    frames = [clean, *noisy]
    path = tmp_path / "a.png"
    Image.fromarray(frames[0]).save(path, save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]],
                                    duration=100, loop=0)
    result = upscale("restore", path, "--json")
    assert result.exit_code == 0, result.output
    (row,) = json_rows(result)
    assert row["frames"] == 4 and row["model"] == "none" and row["found"]["damage"] == "clean", row
    with Image.open(row["output"]) as out:
        written = [np.asarray(out.convert("RGB")) for _ in ImageSequence.Iterator(out)]
    assert len(written) == 4
    for got, want in zip(written, frames):
        assert np.array_equal(got, want)
