"""images/animation/: every frame of an animated GIF, APNG and WebP read composited as a browser
shows it, and written back frame by frame.

The animations here are assembled byte by byte by this file (GIF with an LZW encoder of its own,
APNG with plain zlib, WebP from ANMF chunks around libwebp still frames), and the expected canvases
are composited pixel by pixel in plain Python from the format specifications, so neither the reader
nor Pillow's readers check themselves.
"""
from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

from upscale_cli.errors import ImageReadError, ImageWriteError
from upscale_cli.frames import FrameSink, FrameSource
from upscale_cli.images import DecodedImage
from upscale_cli.frames import DEFAULT_MAX_FRAMES as MAX_FRAMES
from upscale_cli.images.animation import AnimationSource, encode_gif, open_animation

# ----------------------------------------------------------------------------------- GIF builder

GIF_W, GIF_H = 10, 8
GIF_PALETTE = [(17 * k, 255 - 13 * k, (40 + 71 * k) % 256) for k in range(16)]  # 16 distinct colours
GIF_CLEAR = 15  # the transparent index of most frames


def _lzw(indices: np.ndarray) -> bytes:
    """GIF image data (minimum code size 8) without compression: literal codes only, with a clear
    code every 250 so that the code width stays at 9 bits."""
    codes: list[int] = []
    flat = indices.astype(np.uint8).ravel().tolist()
    for start in range(0, len(flat), 250):
        codes.append(256)
        codes.extend(flat[start:start + 250])
    codes.append(257)
    out, bits, count = bytearray(), 0, 0
    for code in codes:
        bits |= code << count
        count += 9
        while count >= 8:
            out.append(bits & 0xFF)
            bits >>= 8
            count -= 8
    if count:
        out.append(bits & 0xFF)
    blocks = b"".join(bytes([len(out[k:k + 255])]) + bytes(out[k:k + 255]) for k in range(0, len(out), 255))
    return b"\x08" + blocks + b"\x00"


def _interlaced_rows(height: int) -> list[int]:
    return [*range(0, height, 8), *range(4, height, 8), *range(2, height, 4), *range(1, height, 2)]


def gif_bytes(frames: list[dict], palette=GIF_PALETTE, loop: int | None = 0, size=(GIF_W, GIF_H)) -> bytes:
    """A GIF89a: each frame a dict of left, top, indices (h, w), disposal, delay (1/100 s),
    transparent (index or None), local (a colour table or None), interlaced."""
    table = b"".join(bytes(c) for c in palette)
    bits = (len(palette) - 1).bit_length()
    out = [b"GIF89a", struct.pack("<HHBBB", *size, 0x80 | 0x70 | (bits - 1), 0, 0), table]
    if loop is not None:
        out.append(b"!\xff\x0bNETSCAPE2.0\x03\x01" + struct.pack("<H", loop) + b"\x00")
    for f in frames:
        transparent = f.get("transparent")
        packed = (f.get("disposal", 0) << 2) | (1 if transparent is not None else 0)
        out.append(b"!\xf9\x04" + struct.pack("<BHB", packed, f.get("delay", 0), transparent or 0) + b"\x00")
        indices = np.asarray(f["indices"], np.uint8)
        height, width = indices.shape
        flags, local = 0, b""
        if f.get("local") is not None:
            local = b"".join(bytes(c) for c in f["local"])
            flags = 0x80 | ((len(f["local"]) - 1).bit_length() - 1)
        if f.get("interlaced"):
            flags |= 0x40
            indices = indices[_interlaced_rows(height)]
        out.append(b"," + struct.pack("<HHHHB", f["left"], f["top"], width, height, flags) + local)
        out.append(f.get("lzw") or _lzw(indices))
    out.append(b";")
    return b"".join(out)


def browser_gif(frames: list[dict], palette=GIF_PALETTE, size=(GIF_W, GIF_H)) -> list[np.ndarray]:
    """What a browser shows, pixel by pixel: a transparent canvas; a frame draws its rectangle
    (clipped) except its transparent index; disposal 2 clears, 3 restores, others keep."""
    width, height = size
    canvas = [[(0, 0, 0, 0)] * width for _ in range(height)]
    shown = []
    for f in frames:
        table = f.get("local") or palette
        indices = np.asarray(f["indices"])
        before = [row[:] for row in canvas]
        for y in range(indices.shape[0]):
            for x in range(indices.shape[1]):
                cx, cy = f["left"] + x, f["top"] + y
                index = int(indices[y, x])
                if cx < width and cy < height and index != f.get("transparent"):
                    canvas[cy][cx] = (*table[index], 255)
        shown.append(np.array(canvas, np.uint8))
        for y in range(indices.shape[0]):
            for x in range(indices.shape[1]):
                cx, cy = f["left"] + x, f["top"] + y
                if cx < width and cy < height:
                    if f.get("disposal") == 2:
                        canvas[cy][cx] = (0, 0, 0, 0)
                    elif f.get("disposal") == 3:
                        canvas[cy][cx] = before[cy][cx]
    return shown


def _pattern(height: int, width: int, seed: int, clear: int | None = None, colours: int = 15) -> np.ndarray:
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, colours, (height, width))
    if clear is not None:
        indices[rng.random((height, width)) < 0.3] = clear
    return indices


DELAYS = [10, 2, 35, 7, 15, 20, 5, 50, 12, 8, 25, 40]  # hundredths of a second, all different


def twelve_frames() -> list[dict]:
    """12 frames: sub-rectangles, transparency, every disposal (and 0 after 2, which Pillow gets
    wrong), a local colour table (GIF_PALETTE reversed: same colours, other indices), an interlaced
    frame, one sticking out of the canvas, and one with another transparent index."""
    reverse = GIF_PALETTE[::-1]
    f = [
        dict(left=0, top=0, indices=_pattern(8, 10, 1), disposal=1),
        dict(left=2, top=1, indices=_pattern(3, 4, 2, GIF_CLEAR), disposal=0, transparent=GIF_CLEAR),
        dict(left=5, top=3, indices=_pattern(4, 3, 3, GIF_CLEAR), disposal=2, transparent=GIF_CLEAR),
        dict(left=0, top=0, indices=_pattern(3, 3, 4, GIF_CLEAR), disposal=0, transparent=GIF_CLEAR),
        dict(left=4, top=2, indices=_pattern(4, 4, 5, GIF_CLEAR), disposal=3, transparent=GIF_CLEAR),
        dict(left=1, top=4, indices=_pattern(3, 5, 6), disposal=3),
        dict(left=3, top=0, indices=15 - _pattern(4, 4, 7), disposal=1, local=reverse),
        dict(left=7, top=5, indices=_pattern(4, 4, 8, GIF_CLEAR), disposal=2, transparent=GIF_CLEAR),
        dict(left=0, top=2, indices=_pattern(6, 7, 9, GIF_CLEAR), disposal=1, transparent=GIF_CLEAR,
             interlaced=True),
        dict(left=6, top=0, indices=_pattern(3, 4, 10, 3, colours=15), disposal=0, transparent=3),
        dict(left=0, top=0, indices=_pattern(8, 10, 11, GIF_CLEAR), disposal=2, transparent=GIF_CLEAR),
        dict(left=2, top=2, indices=_pattern(4, 4, 12), disposal=1),
    ]
    for frame, delay in zip(f, DELAYS):
        frame["delay"] = delay
    return f


# ---------------------------------------------------------------------------------- APNG builder


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _zlib_rows(rgba: np.ndarray) -> bytes:
    rows = b"".join(b"\x00" + row.tobytes() for row in rgba.astype(np.uint8))
    return zlib.compress(rows)


def apng_bytes(size, frames: list[dict], plays: int = 0, default: np.ndarray | None = None,
               chunks: tuple[bytes, ...] = ()) -> bytes:
    """An RGBA APNG: each frame a dict of left, top, rgba (h, w, 4), dispose, blend, delay (num, den).
    `default`: an IDAT image before the first fcTL (not part of the animation); `chunks` go before it."""
    width, height = size
    out = [b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)),
           *chunks, _chunk(b"acTL", struct.pack(">II", len(frames), plays))]
    sequence = 0
    if default is not None:
        out.append(_chunk(b"IDAT", _zlib_rows(default)))
    for number, f in enumerate(frames):
        rgba = np.asarray(f["rgba"], np.uint8)
        out.append(_chunk(b"fcTL", struct.pack(">IIIIIHHBB", sequence, rgba.shape[1], rgba.shape[0], f["left"],
                                               f["top"], *f.get("delay", (1, 10)), f.get("dispose", 0),
                                               f.get("blend", 0))))
        sequence += 1
        data = _zlib_rows(rgba)
        if number == 0 and default is None:
            out.append(_chunk(b"IDAT", data))
        else:
            out.append(_chunk(b"fdAT", struct.pack(">I", sequence) + data))
            sequence += 1
    out.append(_chunk(b"IEND", b""))
    return b"".join(out)


def _over_pixel(src, dst) -> tuple:
    """The APNG / WebP specifications' "over" for one straight-alpha pixel, in floats."""
    sa, da = src[3] / 255, dst[3] / 255
    oa = sa + da * (1 - sa)
    if oa == 0:
        return (0, 0, 0, 0)
    colour = [(src[c] * sa + dst[c] * da * (1 - sa)) / oa for c in range(3)]
    return (*colour, oa * 255)


def browser_composite(size, frames: list[dict], first_previous_is_background: bool = True) -> list[np.ndarray]:
    """APNG (and WebP) compositing pixel by pixel: blend 0 replaces, 1 is "over"; dispose 1 clears
    to transparent, 2 restores the area as it was before the frame."""
    width, height = size
    canvas = np.zeros((height, width, 4), np.float64)
    shown = []
    for number, f in enumerate(frames):
        rgba = np.asarray(f["rgba"], np.float64)
        before = canvas.copy()
        for y in range(rgba.shape[0]):
            for x in range(rgba.shape[1]):
                cy, cx = f["top"] + y, f["left"] + x
                canvas[cy, cx] = rgba[y, x] if f.get("blend", 0) == 0 else _over_pixel(rgba[y, x], canvas[cy, cx])
        shown.append(np.rint(canvas).astype(np.uint8))
        dispose = f.get("dispose", 0)
        if dispose == 2 and number == 0 and first_previous_is_background:
            dispose = 1
        area = (slice(f["top"], f["top"] + rgba.shape[0]), slice(f["left"], f["left"] + rgba.shape[1]))
        if dispose == 1:
            canvas[area] = 0
        elif dispose == 2:
            canvas[area] = before[area]
    return shown


def _rgba_pattern(height: int, width: int, seed: int, alphas=(0, 255)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rgba = rng.integers(0, 256, (height, width, 4))
    rgba[..., 3] = rng.choice(alphas, (height, width))
    return rgba.astype(np.uint8)


APNG_SIZE = (9, 7)


def apng_frames() -> list[dict]:
    """Sub-rectangles, blend over with partial alpha, every dispose (previous on the first frame
    means background), different delays."""
    return [
        dict(left=0, top=0, rgba=_rgba_pattern(7, 9, 1, (255, 255, 0)), dispose=2, delay=(1, 10)),
        dict(left=2, top=1, rgba=_rgba_pattern(4, 5, 2, (0, 90, 200, 255)), blend=1, dispose=0, delay=(33, 1000)),
        dict(left=4, top=3, rgba=_rgba_pattern(3, 4, 3, (0, 128, 255)), blend=1, dispose=2, delay=(1, 0)),
        dict(left=1, top=0, rgba=_rgba_pattern(5, 3, 4, (0, 255)), blend=0, dispose=1, delay=(7, 30)),
        dict(left=0, top=4, rgba=_rgba_pattern(3, 9, 5, (40, 255)), blend=1, dispose=0, delay=(2, 5)),
        dict(left=3, top=2, rgba=_rgba_pattern(2, 2, 6, (255,)), blend=0, dispose=2, delay=(50, 1000)),
    ]


# ---------------------------------------------------------------------------------- WebP builder


def _vp8l(rgba: np.ndarray) -> bytes:
    """A lossless WebP bitstream (the VP8L chunk, header included) of one frame, by libwebp."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba), "RGBA").save(buffer, "WEBP", lossless=True, exact=True)
    data = buffer.getvalue()
    assert data[12:16] == b"VP8L", data[12:16]
    length = struct.unpack_from("<I", data, 16)[0]
    return data[12:20 + length + (length & 1)]


def _riff_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) & 1 else b"")


def webp_bytes(size, frames: list[dict], loop: int = 0) -> bytes:
    """An animated WebP: each frame a dict of left, top (even), rgba, dispose (0/1), blend (0 replace,
    1 over), delay (ms)."""
    width, height = size
    body = [b"WEBP", _riff_chunk(b"VP8X", struct.pack("<B3x", 0x12) + (width - 1).to_bytes(3, "little")
                                 + (height - 1).to_bytes(3, "little")),
            _riff_chunk(b"ANIM", struct.pack("<IH", 0xFF00FF00, loop))]
    for f in frames:
        rgba = np.asarray(f["rgba"], np.uint8)
        flags = (0 if f.get("blend", 0) == 1 else 2) | (1 if f.get("dispose", 0) == 1 else 0)
        head = b"".join(v.to_bytes(3, "little") for v in (f["left"] // 2, f["top"] // 2, rgba.shape[1] - 1,
                                                          rgba.shape[0] - 1, f["delay"]))
        body.append(_riff_chunk(b"ANMF", head + bytes([flags]) + _vp8l(rgba)))
    payload = b"".join(body)
    return b"RIFF" + struct.pack("<I", len(payload)) + payload


WEBP_SIZE = (10, 8)


def webp_frames() -> list[dict]:
    return [
        dict(left=0, top=0, rgba=_rgba_pattern(8, 10, 21, (255,)), blend=0, dispose=0, delay=70),
        dict(left=2, top=2, rgba=_rgba_pattern(4, 6, 22, (0, 255)), blend=1, dispose=1, delay=30),
        dict(left=4, top=0, rgba=_rgba_pattern(6, 5, 23, (0, 255)), blend=0, dispose=0, delay=120),
        dict(left=0, top=4, rgba=_rgba_pattern(4, 7, 24, (0, 255)), blend=1, dispose=0, delay=10),
    ]


# --------------------------------------------------------------------------------------- helpers


def rgba_of(image: DecodedImage) -> np.ndarray:
    """(H, W, 4) uint8 of a frame (opaque where it has no alpha)."""
    colour = np.rint(image.pixels[0].transpose(1, 2, 0) * 255).astype(np.uint8)
    if image.alpha is None:
        return np.concatenate([colour, np.full(colour.shape[:2] + (1,), 255, np.uint8)], axis=2)
    return np.concatenate([colour, np.rint(image.alpha[0].transpose(1, 2, 0) * 255).astype(np.uint8)], axis=2)


def same_shown(a: np.ndarray, b: np.ndarray, tolerance: int = 0) -> bool:
    """Equal as shown: the same alpha, and the same colour wherever a pixel is not fully transparent."""
    a, b = a.astype(int), b.astype(int)
    if np.abs(a[..., 3] - b[..., 3]).max() > tolerance:
        return False
    visible = a[..., 3] > 0
    return not visible.any() or np.abs(a[..., :3][visible] - b[..., :3][visible]).max() <= tolerance


def nearest_x2(image: DecodedImage) -> DecodedImage:
    def up(t):
        return None if t is None else np.repeat(np.repeat(t, 2, axis=2), 2, axis=3)
    return image.replace(pixels=up(image.pixels), alpha=up(image.alpha))


def write_all(source: AnimationSource, target, fmt: str, convert=nearest_x2, quality=None):
    sink = source.sink(target, fmt, quality)
    assert isinstance(sink, FrameSink) and sink.frames_done == 0
    for frame in source.frames():
        sink.add(convert(frame.image), frame)
    return sink.finish()


def frames_of(data: bytes) -> list[np.ndarray]:
    source = open_animation(data, "out", 0, MAX_FRAMES)
    assert source is not None
    return [rgba_of(frame.image) for frame in source.frames()]


def pillow_frames(path) -> tuple[list[np.ndarray], list[float], object]:
    """Frames, durations and loop as Pillow reads them (for outputs whose frames all cover the
    canvas, where Pillow's compositing is right)."""
    frames, durations = [], []
    with Image.open(path) as im:
        for k in range(im.n_frames):
            im.seek(k)
            im.load()
            frames.append(np.asarray(im.convert("RGBA")))
            durations.append(im.info.get("duration"))
        return frames, durations, im.info.get("loop")


# ----------------------------------------------------------------------------------------- reading


def test_gif_frames_are_the_composited_canvases():
    frames = twelve_frames()
    source = open_animation(gif_bytes(frames), "a.gif", 0, MAX_FRAMES)
    assert isinstance(source, FrameSource)
    assert (source.kind, source.frame_count, source.width, source.height) == ("animated GIF", 12, GIF_W, GIF_H)
    assert source.loop == 0 and source.has_alpha
    expected = browser_gif(frames)
    got = list(source.frames())
    assert [f.index for f in got] == list(range(12))
    assert [f.timing.duration_ms for f in got] == [10 * d for d in DELAYS]
    for k, (frame, want) in enumerate(zip(got, expected)):
        assert frame.image.alpha is not None and frame.image.source_format == "GIF"
        assert same_shown(rgba_of(frame.image), want), f"frame {k + 1}"
    rows = np.frombuffer(source.palette, np.uint8).reshape(-1, 4)
    assert [tuple(r[:3]) for r in rows] == GIF_PALETTE and rows[GIF_CLEAR, 3] == 0


def test_frames_from_start_and_one_at_a_time():
    source = open_animation(gif_bytes(twelve_frames()), "a.gif", 0, MAX_FRAMES)
    later = list(source.frames(start=9))
    assert [f.index for f in later] == [9, 10, 11]
    assert same_shown(rgba_of(later[0].image), browser_gif(twelve_frames())[9])
    images = [f.image for f in source.frames()]
    assert not any(np.shares_memory(a.pixels, b.pixels) for k, a in enumerate(images) for b in images[k + 1:])
    assert len(images) == 12  # each frame its own memory: no frame overwritten later


def test_opaque_gif_frames_have_no_alpha():
    frames = [dict(left=0, top=0, indices=_pattern(8, 10, 1), delay=3),
              dict(left=3, top=2, indices=_pattern(2, 2, 2, GIF_CLEAR), transparent=GIF_CLEAR, delay=3)]
    source = open_animation(gif_bytes(frames, loop=None), "a.gif", 0, MAX_FRAMES)
    assert not source.has_alpha and source.loop == 1
    assert all(frame.image.alpha is None for frame in source.frames())


def test_apng_frames_are_the_composited_canvases():
    frames = apng_frames()
    data = apng_bytes(APNG_SIZE, frames, plays=3)
    source = open_animation(data, "a.png", 0, MAX_FRAMES)
    assert (source.kind, source.frame_count, source.loop) == ("animated PNG", 6, 3)
    expected = browser_composite(APNG_SIZE, frames)
    got = list(source.frames())
    assert [f.timing.duration_ms for f in got] == pytest.approx([100, 33, 10, 233.333, 400, 50], abs=0.001)
    for k, (frame, want) in enumerate(zip(got, expected)):
        assert same_shown(rgba_of(frame.image), want, tolerance=1), f"frame {k + 1}"


def test_apng_default_image_is_not_a_frame():
    frames = apng_frames()[:3]
    default = np.full((APNG_SIZE[1], APNG_SIZE[0], 4), (255, 0, 0, 255), np.uint8)
    source = open_animation(apng_bytes(APNG_SIZE, frames, default=default), "a.png", 0, MAX_FRAMES)
    assert source.frame_count == 3
    for frame, want in zip(source.frames(), browser_composite(APNG_SIZE, frames)):
        assert same_shown(rgba_of(frame.image), want, tolerance=1)


def test_webp_frames_are_the_composited_canvases():
    frames = webp_frames()
    source = open_animation(webp_bytes(WEBP_SIZE, frames, loop=2), "a.webp", 0, MAX_FRAMES)
    assert (source.kind, source.frame_count, source.loop) == ("animated WebP", 4, 2)
    got = list(source.frames())
    assert [f.timing.duration_ms for f in got] == [70, 30, 120, 10]
    for k, (frame, want) in enumerate(zip(got, browser_composite(WEBP_SIZE, frames))):
        assert same_shown(rgba_of(frame.image), want, tolerance=1), f"frame {k + 1}"


@pytest.mark.parametrize("data", [
    pytest.param(lambda: gif_bytes(twelve_frames()[:1]), id="one-frame GIF"),
    pytest.param(lambda: apng_bytes(APNG_SIZE, apng_frames()[:1]), id="one-frame APNG"),
    pytest.param(lambda: _png(Image.new("RGB", (4, 3))), id="still PNG"),
    pytest.param(lambda: webp_bytes(WEBP_SIZE, webp_frames()[:1]), id="one-frame WebP"),
    pytest.param(lambda: _jpeg(), id="JPEG"),
    pytest.param(lambda: gif_bytes(twelve_frames()[:1])[:40], id="one-frame GIF cut short"),
])
def test_not_an_animation_is_none(data):
    assert open_animation(data(), "x", 0, MAX_FRAMES) is None


def _png(im: Image.Image) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize("make", [
    pytest.param(lambda n: gif_bytes([dict(left=0, top=0, indices=_pattern(2, 2, k), delay=1) for k in range(n)],
                                     size=(2, 2)), id="GIF"),
    pytest.param(lambda n: apng_bytes((2, 2), [dict(left=0, top=0, rgba=_rgba_pattern(2, 2, k)) for k in range(n)]),
                 id="APNG"),
    pytest.param(lambda n: webp_bytes((2, 2), [dict(left=0, top=0, rgba=_rgba_pattern(2, 2, k), delay=10)
                                               for k in range(n)]), id="WebP"),
])
def test_frames_over_the_limit_is_one_line(make):
    data = make(12)
    with pytest.raises(ImageReadError) as caught:
        open_animation(data, "many", 0, 10)
    assert str(caught.value) == "many: 12 frames is over --max-frames 10 (raise it, or 0 = no limit)"
    assert open_animation(data, "many", 0, 0).frame_count == 12  # 0: no limit
    assert open_animation(data, "many", 0, 12).frame_count == 12


def test_frame_limit_is_checked_before_any_frame_is_decoded():
    frames = [dict(left=0, top=0, indices=_pattern(2, 2, k), delay=1) for k in range(1200)]
    frames[-1]["lzw"] = b"\x08\x08" + b"\xff" * 8 + b"\x00"  # broken, but never reached
    with pytest.raises(ImageReadError, match=r"^many.gif: 1,200 frames is over --max-frames 1,000 "):
        open_animation(gif_bytes(frames, size=(2, 2)), "many.gif", 0, 1000)


def test_canvas_over_max_pixels_is_refused():
    with pytest.raises(ImageReadError, match=r"10 x 8 = 80 pixels is over the limit of 79 \(--max-pixels\)"):
        open_animation(gif_bytes(twelve_frames()), "big.gif", 79, MAX_FRAMES)


def _cut(data: bytes, fraction: float) -> bytes:
    return data[: int(len(data) * fraction)]


@pytest.mark.parametrize("broken", [
    pytest.param(lambda: _cut(gif_bytes(twelve_frames()), 0.6), id="GIF cut in frame 7"),
    pytest.param(lambda: _bad_lzw(), id="GIF bad LZW code"),
    pytest.param(lambda: _cut(apng_bytes(APNG_SIZE, apng_frames()), 0.6), id="APNG cut short"),
    pytest.param(lambda: _bad_crc(apng_bytes(APNG_SIZE, apng_frames())), id="APNG bad CRC"),
    pytest.param(lambda: _bad_zlib(apng_bytes(APNG_SIZE, apng_frames())), id="APNG bad frame data"),
    pytest.param(lambda: apng_bytes(APNG_SIZE, apng_frames())[:-60], id="APNG missing frames"),
    pytest.param(lambda: _cut(webp_bytes(WEBP_SIZE, webp_frames()), 0.7), id="WebP cut short"),
    pytest.param(lambda: gif_bytes(twelve_frames()[:2] + [dict(left=0, top=0, indices=_pattern(9, 2, 1))]),
                 id="GIF frame taller than the canvas"),
    pytest.param(lambda: apng_bytes(APNG_SIZE, apng_frames()[:2] + [dict(left=5, top=0, rgba=_rgba_pattern(2, 5, 1))]),
                 id="APNG frame outside the canvas"),
])
def test_a_broken_frame_is_one_line(broken):
    """Refused at open, before any frame reaches the model, with one line naming the file."""
    with pytest.raises(ImageReadError) as caught:
        open_animation(broken(), "broken", 0, MAX_FRAMES)
    line = str(caught.value)
    assert line.startswith("broken: truncated or corrupt animated ") and "\n" not in line, line


def _mutations(data: bytes, seed: int, count: int) -> list[bytes]:
    """`count` damaged copies: bytes changed, cut, zeroed, repeated or inserted anywhere."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        b, at = bytearray(data), int(rng.integers(len(data)))
        kind = rng.integers(5)
        if kind == 0:
            b[at] = int(rng.integers(256))
        elif kind == 1:
            b = b[:at]
        elif kind == 2:
            b[at:at + 16] = bytes(len(b[at:at + 16]))
        elif kind == 3:
            b[at:at] = b[int(rng.integers(len(b))):][:32]
        else:
            b[at:at] = bytes(rng.integers(0, 256, 4).tolist())
        out.append(bytes(b))
    return out


def _apng_chunk_mutations(data: bytes, seed: int, count: int) -> list[bytes]:
    """APNGs with one chunk's body changed and its CRC made right again (so only parsing and
    decoding can find what is wrong)."""
    rng = np.random.default_rng(seed)
    chunks, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        chunks.append((kind, data[pos + 8: pos + 8 + length]))
        pos += length + 12
    out = []
    for _ in range(count):
        k = int(rng.integers(len(chunks)))
        body = bytearray(chunks[k][1])
        if body:
            body[int(rng.integers(len(body)))] = int(rng.integers(256))
        changed = chunks[:k] + [(chunks[k][0], bytes(body))] + chunks[k + 1:]
        out.append(b"\x89PNG\r\n\x1a\n" + b"".join(_chunk(kind, body) for kind, body in changed))
    return out


def test_damaged_files_open_as_an_animation_a_still_or_one_line():
    """A grid of damaged GIF, APNG and WebP files: each opens (and every frame decodes), is not an
    animation (None: the still reader says what it is), or fails in one ImageReadError line."""
    damaged = (_mutations(gif_bytes(twelve_frames()), 1, 60)
               + _mutations(webp_bytes(WEBP_SIZE, webp_frames()), 2, 60)
               + _mutations(apng_bytes(APNG_SIZE, apng_frames()), 3, 30)
               + _apng_chunk_mutations(apng_bytes(APNG_SIZE, apng_frames()), 4, 60))
    outcomes = set()
    for data in damaged:
        try:
            source = open_animation(data, "damaged", 10_000, 100)
            outcomes.add("none" if source is None else f"{sum(1 for _ in source.frames())} frames")
        except ImageReadError as e:
            assert str(e).startswith("damaged: ") and "\n" not in str(e), str(e)
            outcomes.add("refused")
    assert "refused" in outcomes and "none" in outcomes and len(outcomes) > 2, outcomes


def _bad_crc(data: bytes) -> bytes:
    at = data.index(b"fdAT") + 8
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


def _bad_zlib(data: bytes) -> bytes:
    """Garbage inside the second frame's data, with a correct CRC: only decoding finds it."""
    at = data.index(b"fdAT")
    length = struct.unpack_from(">I", data, at - 4)[0]
    body = data[at + 4: at + 4 + length]
    body = body[:4] + b"\xff" * (length - 4)
    return data[:at - 4] + _chunk(b"fdAT", body) + data[at + 4 + length + 4:]


def _bad_lzw() -> bytes:
    """Frame 5's data made of codes the LZW table does not have."""
    frames = twelve_frames()
    frames[4]["lzw"] = b"\x08\x08" + b"\xff" * 8 + b"\x00"
    return gif_bytes(frames)


# ----------------------------------------------------------------------------------------- writing


def test_gif_written_back_keeps_frames_durations_loop_and_palette(tmp_path):
    frames = twelve_frames()
    data = gif_bytes(frames)
    source = open_animation(data, "a.gif", 0, MAX_FRAMES)
    target = tmp_path / "a_x2.gif"
    summary = write_all(source, target, "GIF")
    assert summary.frames == 12 and summary.duration == pytest.approx(sum(DELAYS) / 100)
    assert summary.fps == pytest.approx(12 / (sum(DELAYS) / 100)) and summary.notes == ()
    written = target.read_bytes()
    assert written[13:13 + 48] == data[13:13 + 48]  # the global colour table, exactly
    assert not any(b.local_table for b in _gif_descriptors(written))  # every frame in it
    expected = [np.repeat(np.repeat(f, 2, 0), 2, 1) for f in browser_gif(frames)]
    for k, (got, want) in enumerate(zip(frames_of(written), expected)):
        assert same_shown(got, want), f"frame {k + 1}"
    shown, durations, loop = pillow_frames(target)
    assert len(shown) == 12 and durations == [10 * d for d in DELAYS] and loop == 0
    for k, (got, want) in enumerate(zip(shown, expected)):
        assert same_shown(got, want), f"Pillow, frame {k + 1}"


class _Descriptor:
    def __init__(self, local_table: bool) -> None:
        self.local_table = local_table


def _gif_descriptors(data: bytes) -> list[_Descriptor]:
    """Each image descriptor of a GIF: whether it has a local colour table."""
    return [_Descriptor(bool(data[pos + 9] & 0x80)) for pos in _descriptor_offsets(data)]


def _gradient_frames(count: int, size=(320, 4), alpha=False) -> list[DecodedImage]:
    """Frames of 320 colours (a gradient that moves; over GIF's 256), each row the same."""
    width, height = size
    out = []
    for k in range(count):
        x = (np.arange(width) + 3 * k) / (width + 3 * count)
        rgb = np.stack([x, 1 - x, 0.5 + 0.5 * np.sin(9 * x)], axis=1)[None].repeat(height, 0).astype(np.float32)
        planes = np.clip(rgb, 0, 1).transpose(2, 0, 1)[None].copy()
        a = None
        if alpha:
            a = np.ones((1, 1, height, width), np.float32)
            a[..., : width // 10] = 0.2  # under one half: transparent
        out.append(DecodedImage(planes, a))
    return out


def test_gif_with_new_colours_gets_a_palette_per_frame_without_dithering(tmp_path):
    """A model's output has colours the source never had: each frame gets its own 256 colours, and
    the same colour maps to the same index wherever it is (no error diffusion)."""
    source = open_animation(gif_bytes(twelve_frames()[:4]), "a.gif", 0, MAX_FRAMES)
    assert source.has_alpha  # frame 4 shows the area frame 3 cleared
    images = iter(_gradient_frames(4, alpha=True))
    summary = write_all(source, tmp_path / "q.gif", "GIF", convert=lambda image: next(images))
    assert any("no dithering" in note for note in summary.notes), summary.notes
    assert any("alpha at 50%" in note for note in summary.notes), summary.notes
    descriptors = _gif_descriptors((tmp_path / "q.gif").read_bytes())
    assert all(d.local_table for d in descriptors)
    for got, image in zip(frames_of((tmp_path / "q.gif").read_bytes()), _gradient_frames(4, alpha=True)):
        assert (got == got[:1]).all()  # every row identical, as in the source: no dither pattern
        assert (got[:, :32, 3] == 0).all() and (got[:, 32:, 3] == 255).all()
        want = np.rint(image.pixels[0].transpose(1, 2, 0) * 255)
        assert np.abs(got[:, 32:, :3] - want[:, 32:]).max() <= 8  # 255 colours for 288: close


def test_opaque_gif_writes_only_what_changed(tmp_path):
    """In an opaque animation a frame is the rectangle that changed: still areas keep the pixels
    already on screen (no palette flicker there), and the file is smaller."""
    frames = [dict(left=0, top=0, indices=_pattern(8, 10, 1), delay=5),
              dict(left=4, top=3, indices=_pattern(2, 3, 2), delay=5),
              dict(left=0, top=0, indices=np.zeros((1, 1), np.uint8) + 99 % 15, delay=5, disposal=1)]
    source = open_animation(gif_bytes(frames, loop=None), "a.gif", 0, MAX_FRAMES)
    assert not source.has_alpha
    write_all(source, tmp_path / "o.gif", "GIF")
    written = (tmp_path / "o.gif").read_bytes()
    expected = [np.repeat(np.repeat(f, 2, 0), 2, 1) for f in browser_gif(frames)]
    shown, _, loop = pillow_frames(tmp_path / "o.gif")
    assert loop is None  # played once, as the source
    for got, want in zip(frames_of(written), expected):
        assert same_shown(got, want)
    for got, want in zip(shown, expected):
        assert same_shown(got, want)
    sizes = [struct.unpack_from("<HH", written, pos + 5) for pos in _descriptor_offsets(written)]
    assert sizes == [(20, 16), (6, 4), (2, 2)]


def _descriptor_offsets(data: bytes) -> list[int]:
    """Offsets of the image descriptors of a GIF."""
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    found = []
    while data[pos] != 0x3B:
        if data[pos] == 0x21:
            pos += 2
        else:
            found.append(pos)
            image_flags = data[pos + 9]
            pos += 10 + (3 << ((image_flags & 7) + 1) if image_flags & 0x80 else 0) + 1
        while data[pos]:
            pos += data[pos] + 1
        pos += 1
    return found


def test_apng_round_trip_is_lossless(tmp_path):
    frames = apng_frames()
    source = open_animation(apng_bytes(APNG_SIZE, frames, plays=3), "a.png", 0, MAX_FRAMES)
    originals = [nearest_x2(f.image) for f in source.frames()]
    target = tmp_path / "a_x2.png"
    summary = write_all(source, target, "PNG")
    assert summary.frames == 6
    again = open_animation(target.read_bytes(), "a_x2.png", 0, MAX_FRAMES)
    assert again.loop == 3 and again.frame_count == 6
    got = list(again.frames())
    assert [f.timing.apng_delay for f in got] == [(1, 10), (33, 1000), (1, 100), (7, 30), (2, 5), (50, 1000)]
    for k, (frame, original) in enumerate(zip(got, originals)):
        assert same_shown(rgba_of(frame.image), rgba_of(original)), f"frame {k + 1}"
    shown, durations, loop = pillow_frames(target)  # whole frames: Pillow reads them right
    assert loop == 3 and durations == pytest.approx([100, 33, 10, 233.333, 400, 50], abs=0.001)
    for frame, original in zip(shown, originals):
        assert same_shown(frame, rgba_of(original))


def test_webp_round_trip_is_lossless(tmp_path):
    frames = webp_frames()
    source = open_animation(webp_bytes(WEBP_SIZE, frames, loop=0), "a.webp", 0, MAX_FRAMES)
    originals = [nearest_x2(f.image) for f in source.frames()]
    target = tmp_path / "a_x2.webp"
    summary = write_all(source, target, "WEBP")
    assert summary.frames == 4 and summary.duration == pytest.approx(0.23)
    again = open_animation(target.read_bytes(), "a_x2.webp", 0, MAX_FRAMES)
    assert again.loop == 0 and again.frame_count == 4
    got = list(again.frames())
    assert [f.timing.duration_ms for f in got] == [70, 30, 120, 10]
    for k, (frame, original) in enumerate(zip(got, originals)):
        assert same_shown(rgba_of(frame.image), rgba_of(original)), f"frame {k + 1}"


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_icc_and_exif_are_kept(fmt, tmp_path):
    from image_factory import camera_exif, srgb_icc_profile

    icc, exif = srgb_icc_profile(), camera_exif(orientation=1).tobytes()
    chunks = (_chunk(b"iCCP", b"sRGB\x00\x00" + zlib.compress(icc)),
              _chunk(b"eXIf", exif.removeprefix(b"Exif\x00\x00")))
    source = open_animation(apng_bytes(APNG_SIZE, apng_frames()[:2], chunks=chunks), "a.png", 0, MAX_FRAMES)
    assert source.icc_profile == icc
    target = tmp_path / f"out.{fmt.lower()}"
    write_all(source, target, fmt)
    again = open_animation(target.read_bytes(), "out", 0, MAX_FRAMES)
    assert again.icc_profile == icc
    with Image.open(target) as im:
        assert im.info["icc_profile"] == icc and im.getexif()[0x010F] == "TestCam"


def test_exif_orientation_is_applied_to_every_frame(tmp_path):
    from image_factory import camera_exif

    frames = apng_frames()[:3]
    exif = camera_exif(orientation=6).tobytes().removeprefix(b"Exif\x00\x00")  # a quarter turn clockwise
    source = open_animation(apng_bytes(APNG_SIZE, frames, chunks=(_chunk(b"eXIf", exif),)), "r.png", 0, MAX_FRAMES)
    assert (source.width, source.height) == (APNG_SIZE[1], APNG_SIZE[0])
    for frame, want in zip(source.frames(), browser_composite(APNG_SIZE, frames)):
        assert same_shown(rgba_of(frame.image), np.rot90(want, -1), tolerance=1)
    write_all(source, tmp_path / "r.webp", "WEBP")
    with Image.open(tmp_path / "r.webp") as im:
        assert im.size == (2 * APNG_SIZE[1], 2 * APNG_SIZE[0]) and im.getexif()[0x0112] == 1


def test_webp_with_quality_is_lossy(tmp_path):
    source = open_animation(webp_bytes(WEBP_SIZE, webp_frames()), "a.webp", 0, MAX_FRAMES)
    write_all(source, tmp_path / "lossless.webp", "WEBP")
    write_all(source, tmp_path / "lossy.webp", "WEBP", quality=30)
    lossless, lossy = (frames_of((tmp_path / name).read_bytes()) for name in ("lossless.webp", "lossy.webp"))
    assert len(lossy) == 4
    assert not all(same_shown(a, b, tolerance=2) for a, b in zip(lossy, lossless))
    with Image.open(tmp_path / "lossy.webp") as im:
        assert im.n_frames == 4


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_every_format_from_every_format(fmt, tmp_path):
    """GIF, APNG and WebP sources into each output format: frame count, shown pixels (exact for
    lossless outputs of these sources, whose colours all fit GIF), timing kept."""
    gif_source = gif_bytes(twelve_frames()[:4])
    opaque_apng = apng_bytes(APNG_SIZE, [dict(f, rgba=np.concatenate([f["rgba"][..., :3], np.full(
        f["rgba"].shape[:2] + (1,), 255, np.uint8)], axis=2)) for f in apng_frames()[:3]])
    for data in (gif_source, opaque_apng):
        source = open_animation(data, "in", 0, MAX_FRAMES)
        expected = [rgba_of(nearest_x2(f.image)) for f in source.frames()]
        target = tmp_path / f"out.{fmt.lower()}"
        write_all(source, target, fmt)
        got = frames_of(target.read_bytes())
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            assert same_shown(a, b)


def test_stdout_writer_gets_the_whole_file_and_abort_leaves_nothing(tmp_path):
    source = open_animation(gif_bytes(twelve_frames()[:3]), "a.gif", 0, MAX_FRAMES)
    written: list[bytes] = []
    sink = source.sink(None, "PNG", None, written.append)
    for frame in source.frames():
        sink.add(frame.image, frame)
    sink.finish()
    assert len(written) == 1 and len(frames_of(written[0])) == 3
    target = tmp_path / "never.webp"
    sink = source.sink(target, "WEBP", None)
    first = next(source.frames())
    sink.add(first.image, first)
    sink.abort()
    assert list(tmp_path.iterdir()) == []


def test_sink_refuses_what_it_cannot_write(tmp_path):
    source = open_animation(gif_bytes(twelve_frames()[:2]), "a.gif", 0, MAX_FRAMES)
    with pytest.raises(ImageWriteError, match="JPEG holds one image"):
        source.sink(tmp_path / "a.jpg", "JPEG", None)
    with pytest.raises(ImageWriteError, match="quality must be 1..100"):
        source.sink(tmp_path / "a.webp", "WEBP", 0)
    sink = source.sink(tmp_path / "a.gif", "GIF", None)
    frames = list(source.frames())
    sink.add(nearest_x2(frames[0].image), frames[0])
    with pytest.raises(ImageWriteError, match="frame 2: 10 x 8, but the first frame is 20 x 16"):
        sink.add(frames[1].image, frames[1])
    with pytest.raises(ImageWriteError, match="4 x 20000 is over the format's 16383 pixels a side"):
        source.sink(tmp_path / "b.webp", "WEBP", None).add(DecodedImage(np.zeros((1, 3, 20000, 4), np.float32)), frames[0])


def test_still_gif_keeps_its_palette_and_transparency():
    from upscale_cli.images.read import read_image

    buffer = io.BytesIO()
    indices = _pattern(8, 10, 3, GIF_CLEAR)
    still = Image.fromarray(indices.astype(np.uint8), "P")
    still.putpalette([v for c in GIF_PALETTE for v in c])
    still.save(buffer, "GIF", transparency=GIF_CLEAR)
    image = read_image(buffer.getvalue())
    data = encode_gif(nearest_x2(image))
    assert open_animation(data, "still", 0, MAX_FRAMES) is None  # one frame
    assert _gif_descriptors(data)[0].local_table is False
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "P" and im.info["transparency"] == GIF_CLEAR
        assert im.getpalette()[:48] == [v for c in GIF_PALETTE for v in c]
        assert (np.asarray(im) == np.repeat(np.repeat(indices, 2, 0), 2, 1)).all()
    rgb = encode_gif(DecodedImage(_gradient_frames(1)[0].pixels))  # no palette: its own, not dithered
    with Image.open(io.BytesIO(rgb)) as im:
        shown = np.asarray(im.convert("RGB"))
        assert (shown == shown[:1]).all()


# ------------------------------------------------------------------------------------------ memory

def _peak_traced(count: int, fmt: str) -> int:
    """Peak of Python's traced allocations (numpy's included) while `count` frames of 64 x 48 go
    through reading, x2 and encoding into `fmt`."""
    y, x = np.mgrid[0:48, 0:64]
    frames = [dict(left=0, top=0, rgba=np.stack([(x + 3 * k) % 256, 4 * y, 0 * x + k, 255 + 0 * x], 2))
              for k in range(count)]
    source = open_animation(apng_bytes((64, 48), frames), "m.png", 0, 0)
    tracemalloc.start()
    try:
        sink = source.sink(None, fmt, None, lambda data: None)
        for frame in source.frames():
            sink.add(nearest_x2(frame.image), frame)
        sink.finish()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_memory_does_not_grow_with_frames(fmt):
    """Three times the frames peak at far less than the extra output frames' raw size (only their
    encoded bytes stay): 20 more frames of 128 x 96 RGBA are 960 KiB raw."""
    few, many = _peak_traced(10, fmt), _peak_traced(30, fmt)
    assert many - few < 20 * 128 * 96 * 4 / 4, (few, many)
