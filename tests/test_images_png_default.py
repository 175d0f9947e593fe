"""The default PNG (images.write._default_png): 8-bit grey, grey+alpha, RGB and RGBA are written with
the Up filter on every row and libdeflate at level 1 (Python's zlib where the `deflate` package is
missing): the same pixels back in Pillow, OpenCV and our reader at every size (1-pixel strips, odd
sizes, a stream cut into many IDAT chunks), ICC and EXIF kept, files at most 15% larger than Pillow's
all-filters choice at level 1; --png-compression N still goes through
Pillow's usual strategy."""
from __future__ import annotations

import io
import struct
import sys
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms

from upscale_cli.images import DecodedImage
from upscale_cli.images.arrays import uint8_to_array
from upscale_cli.images.read import read_image
from upscale_cli.images import write
from upscale_cli.images.write import encode_image
from upscale_cli.resize import resize

UP = 2


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    chunks, at = [], 8
    while at < len(png):
        length, kind = struct.unpack(">I4s", png[at : at + 8])
        chunks.append((kind, png[at + 8 : at + 8 + length]))
        at += 12 + length
    return chunks


def _row_filters(png: bytes) -> set[int]:
    chunks = _chunks(png)
    width, height, depth, colour = struct.unpack(">IIBB", chunks[0][1][:10])
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    raw = zlib.decompress(b"".join(data for kind, data in chunks if kind == b"IDAT"))
    stride = 1 + width * channels * depth // 8
    return {raw[row * stride] for row in range(height)}


def _image(array: np.ndarray, **metadata) -> DecodedImage:
    """(H, W, C) uint8 -> a DecodedImage, the last channel as alpha for 2 and 4 channels."""
    colour, alpha = (array[..., :-1], array[..., -1:]) if array.shape[2] in (2, 4) else (array, None)
    return DecodedImage(uint8_to_array(colour), None if alpha is None else uint8_to_array(alpha), **metadata)


def _photo(channels: int, size=(40, 56)) -> np.ndarray:
    rng = np.random.default_rng(4)
    small = rng.integers(0, 256, (channels, 10, 14)).astype(np.float32) / 255
    big = resize(__import__("torch").from_numpy(small)[None], size, "bicubic")[0].numpy()
    return np.round(big.transpose(1, 2, 0) * 255).astype(np.uint8)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_default_png_is_up_and_gives_the_same_pixels(channels):
    array = _photo(channels)
    png = encode_image(_image(array), "png")
    assert _row_filters(png) == {UP}
    with Image.open(io.BytesIO(png)) as im:
        assert im.mode == {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
        assert np.array_equal(np.asarray(im).reshape(array.shape), array)
    pillow = io.BytesIO()
    Image.fromarray(array if channels > 1 else array[..., 0]).save(pillow, "PNG", compress_level=1,
                                                                   compress_type=zlib.Z_RLE)
    assert len(png) <= 1.15 * len(pillow.getvalue())  # BENCHMARKS.md: 0.99-1.11x on upscales; this one 1.13x


def test_default_png_keeps_icc_and_exif():
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    exif[0x0112] = 6
    image = DecodedImage(uint8_to_array(_photo(3)), icc_profile=icc, exif=exif.tobytes())
    back = read_image(encode_image(image, "png"))
    assert back.icc_profile == icc
    written = Image.Exif()
    written.load(back.exif)
    assert written[0x010F] == "TestCam" and written[0x0112] == 1


def test_an_asked_level_uses_pillows_filters():
    image = DecodedImage(uint8_to_array(_photo(3)))
    assert len(_row_filters(encode_image(image, "png", png_compression=6))) > 1  # adaptive, per row
    assert _row_filters(encode_image(image, "png")) == {UP}


def test_a_palette_source_with_new_colours_is_written_as_default_rgb():
    """A palette source whose upscale made new colours (bicubic) cannot stay a palette: it goes
    through Pillow's palette check, then the default PNG, as RGB with the same pixels."""
    array = _photo(3)
    palette = np.zeros((256, 4), dtype=np.uint8)
    palette[:, 3] = 255
    palette[:4, :3] = [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]
    image = DecodedImage(uint8_to_array(array), palette=palette.tobytes())
    png = encode_image(image, "png")
    assert _row_filters(png) == {UP}
    with Image.open(io.BytesIO(png)) as im:
        assert im.mode == "RGB" and np.array_equal(np.asarray(im), array)
    exact = DecodedImage(uint8_to_array(palette[:4, :3][np.arange(40 * 56).reshape(40, 56) % 4]),
                         palette=palette.tobytes())
    with Image.open(io.BytesIO(encode_image(exact, "png"))) as im:
        assert im.mode == "P"  # every pixel one of its colours: still a palette image


SIZES = [(1, 1), (1, 9), (9, 1), (2, 2), (13, 17), (64, 3), (3, 64), (101, 99)]


def _decoders(png: bytes, channels: int) -> dict[str, np.ndarray]:
    """The pixels three decoders read from `png`, each as (H, W, C) uint8 in RGB(A) order."""
    with Image.open(io.BytesIO(png)) as im:
        pillow = np.asarray(im)
    opencv = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    if opencv.ndim == 3 and opencv.shape[2] >= 3:
        opencv = opencv[..., [2, 1, 0, 3][: opencv.shape[2]]]
    ours = read_image(png)
    planes = ours.pixels if ours.alpha is None else np.concatenate([ours.pixels, ours.alpha], axis=1)
    out = {"pillow": pillow, "ours": np.round(planes[0].transpose(1, 2, 0) * 255).astype(np.uint8)}
    if channels != 2:  # OpenCV reads grey+alpha as BGRA
        out["opencv"] = opencv
    return out


@pytest.mark.parametrize("compressor", ["libdeflate", "zlib"])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_every_size_and_layout_reads_back_exactly(channels, compressor, monkeypatch):
    """Random pixels (the worst case for the filter) and flat ones, at 1-pixel strips and odd sizes,
    through libdeflate and through the zlib fallback (the `deflate` package made unimportable)."""
    if compressor == "zlib":
        monkeypatch.setitem(sys.modules, "deflate", None)
    else:
        pytest.importorskip("deflate", reason="the deflate package (libdeflate) is not installed")
    rng = np.random.default_rng(channels)
    for height, width in SIZES:
        for array in (rng.integers(0, 256, (height, width, channels), dtype=np.uint8),
                      np.full((height, width, channels), 255, dtype=np.uint8)):
            png = encode_image(_image(array), "png")
            assert _row_filters(png) == {UP}
            for name, pixels in _decoders(png, channels).items():
                assert np.array_equal(pixels.reshape(array.shape), array), (name, height, width)


def test_a_large_stream_is_cut_into_idat_chunks(monkeypatch):
    """The compressed stream goes out in IDAT chunks of at most PNG_IDAT_BYTES, each with its own
    CRC, and decoders join them: made small here so a small image needs many."""
    monkeypatch.setattr(write, "PNG_IDAT_BYTES", 97)
    array = np.random.default_rng(5).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    png = encode_image(_image(array), "png")
    idats = [data for kind, data in _chunks(png) if kind == b"IDAT"]
    assert len(idats) > 30 and max(map(len, idats)) == 97
    for pixels in _decoders(png, 3).values():
        assert np.array_equal(pixels, array)
    with Image.open(io.BytesIO(png)) as im:
        im.verify()  # every chunk's CRC


def test_the_zlib_fallback_and_libdeflate_give_the_same_pixels(monkeypatch):
    pytest.importorskip("deflate", reason="the deflate package (libdeflate) is not installed")
    image = _image(_photo(3))
    fast = encode_image(image, "png")
    monkeypatch.setitem(sys.modules, "deflate", None)
    slow = encode_image(image, "png")
    assert fast != slow
    with Image.open(io.BytesIO(fast)) as a, Image.open(io.BytesIO(slow)) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
