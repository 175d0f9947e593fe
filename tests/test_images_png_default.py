"""The default PNG (images.write._default_png): 8-bit grey, RGB and RGBA are written by OpenCV at
zlib level 1, run-length strategy, the Paeth filter on every row: the same pixels back, ICC and
EXIF kept, files no larger than Pillow's all-filters choice would be by more than a few percent;
--png-compression N still goes through Pillow's usual strategy."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms

from upscale_cli.images import DecodedImage
from upscale_cli.images.arrays import uint8_to_array
from upscale_cli.images.read import read_image
from upscale_cli.images.write import encode_image
from upscale_cli.resize import resize

PAETH = 4


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


def _photo(channels: int, size=(40, 56)) -> np.ndarray:
    rng = np.random.default_rng(4)
    small = rng.integers(0, 256, (channels, 10, 14)).astype(np.float32) / 255
    big = resize(__import__("torch").from_numpy(small)[None], size, "bicubic")[0].numpy()
    return np.round(big.transpose(1, 2, 0) * 255).astype(np.uint8)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_default_png_is_paeth_and_gives_the_same_pixels(channels):
    array = _photo(channels)
    colour, alpha = (array[..., :3], array[..., 3:]) if channels == 4 else (array, None)
    image = DecodedImage(uint8_to_array(colour), None if alpha is None else uint8_to_array(alpha))
    png = encode_image(image, "png")
    assert _row_filters(png) == {PAETH}
    with Image.open(io.BytesIO(png)) as im:
        assert im.mode == {1: "L", 3: "RGB", 4: "RGBA"}[channels]
        assert np.array_equal(np.asarray(im).reshape(array.shape), array)
    pillow = io.BytesIO()
    Image.fromarray(array if channels > 1 else array[..., 0]).save(pillow, "PNG", compress_level=1,
                                                                   compress_type=zlib.Z_RLE)
    assert len(png) <= 1.05 * len(pillow.getvalue())


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
    assert _row_filters(encode_image(image, "png")) == {PAETH}


def test_a_palette_source_with_new_colours_is_written_as_default_rgb():
    """A palette source whose upscale made new colours (bicubic) cannot stay a palette: it goes
    through Pillow's palette check, then the default PNG, as RGB with the same pixels."""
    array = _photo(3)
    palette = np.zeros((256, 4), dtype=np.uint8)
    palette[:, 3] = 255
    palette[:4, :3] = [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]
    image = DecodedImage(uint8_to_array(array), palette=palette.tobytes())
    png = encode_image(image, "png")
    assert _row_filters(png) == {PAETH}
    with Image.open(io.BytesIO(png)) as im:
        assert im.mode == "RGB" and np.array_equal(np.asarray(im), array)
    exact = DecodedImage(uint8_to_array(palette[:4, :3][np.arange(40 * 56).reshape(40, 56) % 4]),
                         palette=palette.tobytes())
    with Image.open(io.BytesIO(encode_image(exact, "png"))) as im:
        assert im.mode == "P"  # every pixel one of its colours: still a palette image
