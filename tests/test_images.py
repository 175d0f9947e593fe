"""The images package against real files: every format and mode, metadata, errors, atomic writes."""
from __future__ import annotations

import errno
import json
import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import image_factory as factory
from upscale_cli.images import arrays, atomic
from upscale_cli.cli import app
from upscale_cli.errors import ImageReadError, ImageTooLargeError, ImageWriteError
from upscale_cli.images import DecodedImage
from upscale_cli.images.read import read_image
from upscale_cli.images.write import encode_image, write_image

W, H = factory.SIZE
LOSSY_TOLERANCE = 16 / 255  # max abs error on smooth areas after JPEG/WebP at quality 95
LOSSY_MEAN_ERROR = 8 / 255  # mean abs error allowed over a whole lossy image


def as_u8(x: np.ndarray) -> np.ndarray:
    return arrays.tensor_to_uint8(x)


def as_u16(x: np.ndarray) -> np.ndarray:
    """(1, C, H, W) -> (H, W, C) uint16."""
    return np.round(x[0].transpose(1, 2, 0) * 65535).astype(np.uint16)


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def leftover_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------ reading


@pytest.mark.parametrize("maker, channels, has_alpha, depth, fmt", [
    (factory.make_rgb_png, 3, False, 8, "PNG"),
    (factory.make_rgb_jpeg, 3, False, 8, "JPEG"),
    (factory.make_webp, 3, False, 8, "WEBP"),
    (factory.make_rgba_webp, 3, True, 8, "WEBP"),
    (factory.make_tiff, 3, False, 8, "TIFF"),
    (factory.make_bmp, 3, False, 8, "BMP"),
    (factory.make_gif, 3, False, 8, "GIF"),
    (factory.make_rgba_png, 3, True, 8, "PNG"),
    (factory.make_grey_png, 1, False, 8, "PNG"),
    (factory.make_grey_alpha_png, 1, True, 8, "PNG"),
    (factory.make_bilevel_png, 1, False, 8, "PNG"),
    (factory.make_palette_png_with_transparency, 3, True, 8, "PNG"),
    (factory.make_palette_gif_with_transparency, 3, True, 8, "GIF"),
    (factory.make_16bit_png, 1, False, 16, "PNG"),
    (factory.make_16bit_tiff, 1, False, 16, "TIFF"),
    (factory.make_16bit_rgb_png, 3, False, 16, "PNG"),
    (factory.make_16bit_rgba_png, 3, True, 16, "PNG"),
    (factory.make_16bit_rgb_tiff, 3, False, 16, "TIFF"),
    (factory.make_cmyk_jpeg, 3, False, 8, "JPEG"),
])
def test_read_every_kind(tmp_path, maker, channels, has_alpha, depth, fmt):
    image = read_image(maker(tmp_path))
    assert image.pixels.shape == (1, channels, H, W)
    assert isinstance(image.pixels, np.ndarray) and image.pixels.dtype == np.float32
    assert image.pixels.flags.c_contiguous and image.pixels.flags.writeable
    assert 0.0 <= float(image.pixels.min()) and float(image.pixels.max()) <= 1.0
    assert (image.alpha is not None) == has_alpha
    if has_alpha:
        assert image.alpha.shape == (1, 1, H, W)
        assert isinstance(image.alpha, np.ndarray) and image.alpha.dtype == np.float32
        assert image.alpha.flags.c_contiguous and image.alpha.flags.writeable
    assert image.bit_depth == depth
    assert image.source_format == fmt
    assert (image.height, image.width) == (H, W)


def test_rgb_png_values_exact(tmp_path):
    image = read_image(factory.make_rgb_png(tmp_path))
    assert np.array_equal(as_u8(image.pixels), factory.gradient_rgb())


def test_16bit_grey_values_exact(tmp_path):
    image = read_image(factory.make_16bit_png(tmp_path))
    assert np.array_equal(as_u16(image.pixels)[..., 0], factory.gradient_grey16())


@pytest.mark.parametrize("maker", [factory.make_16bit_rgb_png, factory.make_16bit_rgb_tiff])
def test_16bit_rgb_values_exact_in_rgb_order(tmp_path, maker):
    image = read_image(maker(tmp_path))
    assert np.array_equal(as_u16(image.pixels), factory.gradient_rgb16())


def test_16bit_grey_alpha_values_exact(tmp_path):
    image = read_image(factory.make_16bit_grey_alpha_png(tmp_path))
    assert image.pixels.shape == (1, 1, H, W) and image.bit_depth == 16
    assert np.array_equal(as_u16(image.pixels)[..., 0], factory.gradient_grey16())
    assert np.array_equal(as_u16(image.alpha)[..., 0], factory.gradient_alpha().astype(np.uint16) * 257)


def test_16bit_rgba_alpha_exact(tmp_path):
    image = read_image(factory.make_16bit_rgba_png(tmp_path))
    assert np.array_equal(as_u16(image.alpha)[..., 0], factory.gradient_alpha().astype(np.uint16) * 257)


@pytest.mark.parametrize("maker", [factory.make_palette_png_with_transparency,
                                   factory.make_palette_gif_with_transparency])
def test_palette_transparency_becomes_alpha(tmp_path, maker):
    alpha = read_image(maker(tmp_path)).alpha[0, 0]
    assert np.all(alpha[:, : factory.TRANSPARENT_COLUMNS] == 0)
    assert np.all(alpha[:, factory.TRANSPARENT_COLUMNS:] == 1)


def test_gif_reads_first_frame(tmp_path):
    image = read_image(factory.make_gif(tmp_path))
    assert float(image.pixels.mean()) > 0.2  # frame 1 is black
    assert mean_abs(image.pixels, arrays.uint8_to_array(factory.gradient_rgb())) < 0.05


def test_cmyk_jpeg_reads_as_rgb_with_right_colours(tmp_path):
    rgb = as_u8(read_image(factory.make_cmyk_jpeg(tmp_path)).pixels).astype(int)
    band = W // 4
    centres = [rgb[H // 2, band * i + band // 2] for i in range(4)]
    expected = [(0, 255, 255), (255, 0, 255), (255, 255, 0), (127, 127, 127)]
    for got, want in zip(centres, expected):
        assert np.abs(got - np.array(want)).max() <= 20, (got, want)


@pytest.mark.parametrize("orientation, turns", [(6, -1), (8, 1)])
def test_exif_rotated_jpeg_reads_upright(tmp_path, orientation, turns):
    path = factory.make_exif_rotated_jpeg(tmp_path, orientation=orientation)
    image = read_image(path)
    assert (image.height, image.width) == (W, H)
    expected = np.rot90(factory.gradient_rgb(), turns)  # np.rot90: positive = counter-clockwise
    got = as_u8(image.pixels).astype(int)
    assert np.abs(got - expected).mean() < 8  # the factory's JPEG is 4:2:0
    assert np.abs(got - np.rot90(expected, 2)).mean() > 40  # not the other way round
    exif = Image.Exif()
    exif.load(image.exif)
    assert exif[factory.EXIF_ORIENTATION] == 1


def test_exif_rotated_jpeg_writes_orientation_1_and_stays_upright(tmp_path):
    image = read_image(factory.make_exif_rotated_jpeg(tmp_path, orientation=6))
    out = tmp_path / "out.jpg"
    write_image(image, out)
    with Image.open(out) as written:
        assert written.getexif()[factory.EXIF_ORIENTATION] == 1
        assert written.getexif()[factory.EXIF_MAKE] == factory.CAMERA_MAKE
    again = read_image(out)
    assert (again.height, again.width) == (W, H)
    assert mean_abs(again.pixels, image.pixels) < 0.02


TRANSPOSE_FOR_ORIENTATION = {
    1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}


def transposed(array: np.ndarray, orientation: int) -> np.ndarray:
    operation = TRANSPOSE_FOR_ORIENTATION[orientation]
    image = Image.fromarray(array)
    return np.asarray(image if operation is None else image.transpose(operation))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_on_both_decoders(tmp_path, orientation):
    """The Pillow path (exif_transpose) and the 16-bit OpenCV path agree."""
    pillow = read_image(factory.make_oriented_png(tmp_path, orientation))
    assert np.array_equal(as_u8(pillow.pixels), transposed(factory.gradient_rgb(), orientation))
    opencv = read_image(factory.make_16bit_rgb_png_with_orientation(tmp_path, orientation))
    assert opencv.bit_depth == 16
    for channel in range(3):
        expected = transposed(factory.gradient_rgb16()[..., channel], orientation)
        assert np.array_equal(as_u16(opencv.pixels)[..., channel], expected)


def test_broken_exif_costs_only_the_exif(tmp_path):
    path = tmp_path / "bad_exif.jpg"
    Image.fromarray(factory.gradient_rgb()).save(
        path, "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff garbage")
    with pytest.warns(UserWarning):  # Pillow's own "Corrupt EXIF data"
        image = read_image(path)
    assert (image.width, image.height) == (W, H) and image.exif is None


def test_cmyk_with_unusable_profile_uses_formula_and_drops_profile(tmp_path):
    path = tmp_path / "cmyk_bad_icc.jpg"
    cyan = np.full((H, W, 4), (255, 0, 0, 0), np.uint8)
    Image.frombytes("CMYK", (W, H), cyan.tobytes()).save(path, "JPEG", icc_profile=b"junk" * 40)
    image = read_image(path)
    assert image.icc_profile is None  # a CMYK profile would be wrong on RGB pixels
    assert np.abs(as_u8(image.pixels)[H // 2, W // 2].astype(int) - (0, 255, 255)).max() <= 8


@pytest.mark.parametrize("quality", [5, 12, 20, 50, 80, 90, 100])
def test_jpeg_quality_is_read_from_the_quantisation_tables(tmp_path, quality):
    """Exact for libjpeg-family encoders (Pillow and OpenCV here); None for other formats."""
    import cv2

    pixels = (np.random.default_rng(quality).random((24, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "p.jpg", quality=quality)
    cv2.imwrite(str(tmp_path / "c.jpg"), pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert read_image(tmp_path / "p.jpg").jpeg_quality == quality
    assert read_image(tmp_path / "c.jpg").jpeg_quality == quality
    Image.fromarray(pixels).save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").jpeg_quality is None


def test_read_from_bytes(tmp_path):
    data = factory.make_rgb_png(tmp_path).read_bytes()
    image = read_image(data)
    assert np.array_equal(as_u8(image.pixels), factory.gradient_rgb())


# ------------------------------------------------------------- round trips


LOSSLESS = ["png", "tiff", "bmp"]
ALL_FORMATS = ["png", "tiff", "bmp", "jpg", "webp"]


@pytest.mark.parametrize("suffix", ALL_FORMATS)
def test_rgb_round_trip(tmp_path, suffix):
    image = read_image(factory.make_rgb_png(tmp_path))
    out = tmp_path / f"out.{suffix}"
    write_image(image, out)
    again = read_image(out)
    assert again.pixels.shape == image.pixels.shape and again.alpha is None
    if suffix in LOSSLESS:
        assert np.array_equal(again.pixels, image.pixels)
    else:
        assert mean_abs(again.pixels, image.pixels) < LOSSY_MEAN_ERROR
    assert leftover_files(tmp_path) == []


@pytest.mark.parametrize("suffix", ["png", "tiff", "webp"])
def test_rgba_round_trip_keeps_alpha(tmp_path, suffix):
    image = read_image(factory.make_rgba_png(tmp_path))
    out = tmp_path / f"out.{suffix}"
    write_image(image, out)
    again = read_image(out)
    assert again.alpha is not None and again.pixels.shape[1] == 3
    if suffix == "webp":  # lossy colour; the alpha plane survives almost exactly
        assert mean_abs(again.alpha, image.alpha) < 2 / 255
    else:
        assert np.array_equal(again.alpha, image.alpha) and np.array_equal(again.pixels, image.pixels)


@pytest.mark.parametrize("suffix", ["jpg", "bmp"])
def test_alpha_composited_over_white_where_format_has_none(tmp_path, suffix):
    image = read_image(factory.make_rgba_png(tmp_path))
    out = tmp_path / f"out.{suffix}"
    write_image(image, out)
    again = read_image(out)
    assert again.alpha is None
    right_edge = again.pixels[0, :, :, -1]  # alpha 0 there
    assert float(right_edge.min()) > 0.9
    left_edge = again.pixels[0, :, 4:, 0]  # opaque: colour unchanged
    assert float(np.abs(left_edge - image.pixels[0, :, 4:, 0]).max()) < LOSSY_TOLERANCE * 2


@pytest.mark.parametrize("suffix", ["png", "tiff", "bmp", "jpg"])
def test_grey_stays_grey(tmp_path, suffix):
    image = read_image(factory.make_grey_png(tmp_path))
    out = tmp_path / f"out.{suffix}"
    write_image(image, out)
    with Image.open(out) as written:
        assert written.mode in ("L", "P") if suffix == "bmp" else written.mode == "L"
    again = read_image(out)
    assert again.pixels.shape == (1, 1, H, W)
    assert mean_abs(again.pixels, image.pixels) < LOSSY_MEAN_ERROR


def test_grey_to_webp_becomes_rgb(tmp_path):
    """WebP has no grey mode (documented)."""
    image = read_image(factory.make_grey_png(tmp_path))
    write_image(image, tmp_path / "out.webp")
    again = read_image(tmp_path / "out.webp")
    assert again.pixels.shape == (1, 3, H, W)


@pytest.mark.parametrize("suffix", ["png", "tiff"])
def test_grey_alpha_round_trip(tmp_path, suffix):
    image = read_image(factory.make_grey_alpha_png(tmp_path))
    write_image(image, tmp_path / f"out.{suffix}")
    again = read_image(tmp_path / f"out.{suffix}")
    assert again.pixels.shape == (1, 1, H, W)
    assert np.array_equal(again.pixels, image.pixels) and np.array_equal(again.alpha, image.alpha)


@pytest.mark.parametrize("suffix", ["png", "tiff"])
def test_16bit_grey_round_trip_exact(tmp_path, suffix):
    image = read_image(factory.make_16bit_png(tmp_path))
    out = tmp_path / f"out.{suffix}"
    write_image(image, out)
    with Image.open(out) as written:
        assert written.mode.startswith("I;16")
    again = read_image(out)
    assert again.bit_depth == 16 and again.pixels.shape == (1, 1, H, W)
    assert np.array_equal(as_u16(again.pixels)[..., 0], factory.gradient_grey16())


@pytest.mark.parametrize("suffix", ["png", "tiff"])
@pytest.mark.parametrize("maker", [factory.make_16bit_rgb_png, factory.make_16bit_rgba_png])
def test_16bit_colour_round_trip_exact(tmp_path, suffix, maker):
    image = read_image(maker(tmp_path))
    write_image(image, tmp_path / f"out.{suffix}")
    again = read_image(tmp_path / f"out.{suffix}")
    assert again.bit_depth == 16
    assert np.array_equal(as_u16(again.pixels), factory.gradient_rgb16())
    assert (again.alpha is None) == (image.alpha is None)
    if image.alpha is not None:
        assert np.array_equal(again.alpha, image.alpha)


def test_16bit_grey_alpha_written_as_16bit_rgba(tmp_path):
    grey = (factory.gradient_grey16().astype(np.float32) / 65535)[None, None]
    alpha = np.ascontiguousarray(np.broadcast_to(np.linspace(0, 1, W, dtype=np.float32), (1, 1, H, W)))
    image = DecodedImage(grey, alpha, 16, source_format="PNG")
    write_image(image, tmp_path / "out.png")
    again = read_image(tmp_path / "out.png")
    assert again.bit_depth == 16 and again.alpha is not None
    assert np.array_equal(as_u16(again.pixels)[..., 1], factory.gradient_grey16())


@pytest.mark.parametrize("suffix", ["jpg", "webp", "bmp"])
def test_16bit_quantised_to_8_bits_elsewhere(tmp_path, suffix):
    image = read_image(factory.make_16bit_rgb_png(tmp_path))
    write_image(image, tmp_path / f"out.{suffix}")
    again = read_image(tmp_path / f"out.{suffix}")
    assert again.bit_depth == 8
    assert mean_abs(again.pixels, image.pixels) < LOSSY_TOLERANCE


def test_bilevel_round_trip(tmp_path):
    image = read_image(factory.make_bilevel_png(tmp_path))
    assert set(np.unique(image.pixels).tolist()) <= {0.0, 1.0}
    write_image(image, tmp_path / "out.png")
    assert np.array_equal(read_image(tmp_path / "out.png").pixels, image.pixels)


def test_cmyk_written_as_rgb_jpeg(tmp_path):
    image = read_image(factory.make_cmyk_jpeg(tmp_path))
    write_image(image, tmp_path / "out.jpg")
    with Image.open(tmp_path / "out.jpg") as written:
        assert written.mode == "RGB"


# ----------------------------------------------------------------- metadata


@pytest.mark.parametrize("maker", [factory.make_icc_png, factory.make_rgb_jpeg])
@pytest.mark.parametrize("suffix", ["png", "jpg", "webp", "tiff"])
def test_icc_and_exif_survive(tmp_path, maker, suffix):
    image = read_image(maker(tmp_path))
    assert image.icc_profile == factory.srgb_icc_profile()
    out = tmp_path / f"out.{suffix}"
    write_image(image, out)
    with Image.open(out) as written:
        assert written.info.get("icc_profile") == factory.srgb_icc_profile()
        exif = written.getexif()
        assert exif[factory.EXIF_MAKE] == factory.CAMERA_MAKE
        assert exif[factory.EXIF_ORIENTATION] == 1
        assert exif.get_ifd(factory.EXIF_IFD)[factory.EXIF_DATETIME_ORIGINAL] == "2024:01:02 03:04:05"


def test_icc_and_exif_survive_16bit_png(tmp_path):
    rgb16 = read_image(factory.make_16bit_rgb_png(tmp_path))
    donor = read_image(factory.make_rgb_jpeg(tmp_path))
    image = rgb16.replace(icc_profile=donor.icc_profile, exif=donor.exif)
    write_image(image, tmp_path / "out.png")
    with Image.open(tmp_path / "out.png") as written:
        assert written.info.get("icc_profile") == factory.srgb_icc_profile()
        assert written.getexif()[factory.EXIF_MAKE] == factory.CAMERA_MAKE
    assert np.array_equal(as_u16(read_image(tmp_path / "out.png").pixels), factory.gradient_rgb16())


def test_tiff_exif_keeps_only_descriptive_tags(tmp_path):
    image = read_image(factory.make_tiff(tmp_path))
    exif = Image.Exif()
    exif.load(image.exif)
    assert exif[factory.EXIF_MAKE] == factory.CAMERA_MAKE
    assert 273 not in exif and 256 not in exif  # StripOffsets, ImageWidth
    write_image(image, tmp_path / "out.jpg")
    with Image.open(tmp_path / "out.jpg") as written:
        assert written.getexif()[factory.EXIF_MAKE] == factory.CAMERA_MAKE


def test_bmp_drops_metadata_quietly(tmp_path):
    image = read_image(factory.make_rgb_jpeg(tmp_path))
    write_image(image, tmp_path / "out.bmp")
    assert read_image(tmp_path / "out.bmp").icc_profile is None


# -------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("make, phrase", [
    (lambda folder: folder / "missing.png", "no such file"),
    (lambda folder: folder, "is a directory"),
    (factory.make_zero_byte, "empty file"),
    (factory.make_truncated_png, "truncated or corrupt image: "),
    (factory.make_truncated_jpeg, "truncated or corrupt image: "),
    (factory.make_text_as_png, "not an image (unrecognised format)"),
    (factory.make_float_tiff, "unsupported image mode 'F'"),
])
def test_bad_files_give_one_clear_line(tmp_path, make, phrase):
    path = make(tmp_path)
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and phrase in message
    assert "\n" not in message
    assert not isinstance(caught.value, ImageTooLargeError)


def test_png_cut_inside_header_is_corrupt(tmp_path):
    path = tmp_path / "stub.png"
    path.write_bytes(factory.make_rgb_png(tmp_path).read_bytes()[:20])
    with pytest.raises(ImageReadError, match="truncated or corrupt image"):
        read_image(path)


def test_bad_bytes_named_stdin():
    with pytest.raises(ImageReadError, match=r"^<stdin>: not an image"):
        read_image(b"hello")
    with pytest.raises(ImageReadError, match=r"^<stdin>: empty file"):
        read_image(b"")


def test_pixel_limit_checked_from_header_before_decoding(tmp_path, monkeypatch):
    path = factory.make_large_png(tmp_path, 40, 30)

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("decoded an image that is over the limit")

    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
    with pytest.raises(ImageTooLargeError) as caught:
        read_image(path, max_pixels=1000)
    assert str(caught.value) == (
        f"{path}: 40 x 30 = 1200 pixels is over the limit of 1000 (--max-pixels)")


def test_pixel_limit_allows_exact_size(tmp_path):
    assert read_image(factory.make_large_png(tmp_path, 40, 30), max_pixels=1200).width == 40


def test_pillow_global_limit_does_not_override_ours(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow would call 384 pixels a bomb
    image = read_image(factory.make_rgb_png(tmp_path), max_pixels=10_000)
    assert image.width == W
    assert Image.MAX_IMAGE_PIXELS == 100  # restored


# ------------------------------------------------------------------ writing


def test_encode_image_returns_bytes(tmp_path):
    image = read_image(factory.make_rgb_png(tmp_path))
    assert encode_image(image, "jpg").startswith(b"\xff\xd8\xff")
    assert encode_image(image, "PNG").startswith(b"\x89PNG")
    assert read_image(encode_image(image, "webp")).source_format == "WEBP"


def test_quality_changes_lossy_size(tmp_path):
    image = read_image(factory.make_rgb_png(tmp_path, size=(96, 64)))
    assert len(encode_image(image, "jpg", quality=10)) < len(encode_image(image, "jpg"))
    with pytest.raises(ImageWriteError, match="quality"):
        encode_image(image, "jpg", quality=0)


def test_explicit_format_overrides_suffix(tmp_path):
    image = read_image(factory.make_rgb_png(tmp_path))
    write_image(image, tmp_path / "out.bin", format="jpeg")
    assert read_image(tmp_path / "out.bin").source_format == "JPEG"


def test_unknown_format_names_the_path(tmp_path):
    image = read_image(factory.make_rgb_png(tmp_path))
    with pytest.raises(ImageWriteError, match=r"out\.xyz: unknown output format"):
        write_image(image, tmp_path / "out.xyz")


def test_encoder_failure_leaves_nothing(tmp_path):
    too_wide = DecodedImage(np.zeros((1, 3, 1, 70_000), np.float32))  # JPEG stops at 65,535
    target = tmp_path / "wide.jpg"
    with pytest.raises(ImageWriteError) as caught:
        write_image(too_wide, target)
    assert str(caught.value).startswith(f"{target}: cannot encode as JPEG")
    assert list(tmp_path.iterdir()) == []


def test_write_replaces_existing_file_atomically(tmp_path, monkeypatch):
    image = read_image(factory.make_rgb_png(tmp_path))
    target = tmp_path / "out.png"
    target.write_bytes(b"old contents")
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(Path(src).name)
        assert target.read_bytes() == b"old contents"  # untouched until the rename
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    write_image(image, target)
    assert seen[0].startswith(".out.png.") and seen[0].endswith(atomic.TEMP_SUFFIX)
    assert read_image(target).width == W
    assert leftover_files(tmp_path) == []


@pytest.mark.parametrize("error, phrase", [
    (OSError(errno.ENOSPC, "No space left on device"), "disk full"),
    (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
    (OSError(errno.EIO, "Input/output error"), "cannot write: Input/output error"),
])
def test_write_failure_messages_and_cleanup(tmp_path, monkeypatch, error, phrase):
    image = read_image(factory.make_rgb_png(tmp_path))
    target = tmp_path / "out.png"
    target.write_bytes(b"old contents")

    def failing_replace(src, dst):
        raise error

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(ImageWriteError) as caught:
        write_image(image, target)
    assert str(caught.value) == f"{target}: {phrase}"
    assert target.read_bytes() == b"old contents"
    assert leftover_files(tmp_path) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="chmod does not stop root from writing")
def test_write_into_read_only_folder(tmp_path):
    image = read_image(factory.make_rgb_png(tmp_path))
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(ImageWriteError, match="permission denied"):
            write_image(image, folder / "out.png")
    finally:
        folder.chmod(0o700)
    assert list(folder.iterdir()) == []


def test_write_under_a_regular_file(tmp_path):
    image = read_image(factory.make_rgb_png(tmp_path))
    parent = tmp_path / "plain.txt"
    parent.write_text("not a folder")
    with pytest.raises(ImageWriteError, match=r"plain\.txt/out\.png: cannot write: the parent is not a folder"):
        write_image(image, parent / "out.png")


def test_write_into_missing_folder(tmp_path):
    image = read_image(factory.make_rgb_png(tmp_path))
    with pytest.raises(ImageWriteError, match="folder does not exist"):
        write_image(image, tmp_path / "nope" / "out.png")


def test_written_file_mode_follows_umask(tmp_path):
    image = read_image(factory.make_rgb_png(tmp_path))
    write_image(image, tmp_path / "out.png")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "out.png").stat().st_mode & 0o777 == 0o666 & ~umask


# ------------------------------------------------------------------ helpers


def test_decoded_image_replace_and_size():
    image = DecodedImage(np.zeros((1, 3, 5, 7), np.float32))
    assert (image.height, image.width, image.bit_depth, image.alpha) == (5, 7, 8, None)
    changed = image.replace(bit_depth=16)
    assert changed.bit_depth == 16 and image.bit_depth == 8


def test_uint8_tensor_round_trip():
    import torch

    rgb = factory.gradient_rgb()
    tensor = arrays.uint8_to_tensor(rgb)
    assert tensor.shape == (1, 3, H, W) and tensor.dtype == torch.float32
    assert np.array_equal(arrays.tensor_to_uint8(tensor), rgb)
    assert np.array_equal(arrays.tensor_to_uint8(tensor[0]), rgb)
    grey = arrays.uint8_to_tensor(factory.gradient_grey())
    assert grey.shape == (1, 1, H, W)
    array = arrays.uint8_to_array(rgb)  # a DecodedImage's pixels: the same values, as NumPy
    assert isinstance(array, np.ndarray) and array.dtype == np.float32 and array.flags.c_contiguous
    assert np.array_equal(array, tensor.numpy()) and np.array_equal(arrays.tensor_to_uint8(array), rgb)
    assert np.array_equal(arrays.tensor_to_array(tensor.permute(0, 1, 3, 2)), array.transpose(0, 1, 3, 2))


def test_load_rgb_uint8_is_plain_convert(tmp_path):
    grey = arrays.load_rgb_uint8(factory.make_grey_png(tmp_path))
    assert grey.shape == (H, W, 3) and grey.dtype == np.uint8
    rotated = arrays.load_rgb_uint8(factory.make_exif_rotated_jpeg(tmp_path))
    assert rotated.shape == (H, W, 3)  # no EXIF rotation for dataset files
    with pytest.raises(ImageReadError, match="no such file"):
        arrays.load_rgb_uint8(tmp_path / "missing.png")


def test_pil_bicubic_downscale_matches_pillow():
    rgb = factory.gradient_rgb((48, 32))
    small = arrays.pil_bicubic_downscale(rgb, (12, 8))
    expected = np.asarray(Image.fromarray(rgb).resize((12, 8), Image.BICUBIC))
    assert small.shape == (8, 12, 3) and np.array_equal(small, expected)


# ------------------------------------------------ multi-page and animated files


def save_frames(path: Path, count: int = 3, **options) -> Path:
    """`count` distinct frames (the gradient, then darker copies) saved as one file."""
    first = factory.gradient_rgb()
    frames = [Image.fromarray((first // (i + 1)).astype(np.uint8)) for i in range(count)]
    frames[0].save(path, save_all=True, append_images=frames[1:], **options)
    return path


@pytest.mark.parametrize("name, options, note", [
    ("pages.tif", {}, "multi-page TIFF: only page 1 of 3 was used"),
    ("anim.gif", {"duration": 100}, "animated GIF: only frame 1 of 3 was used"),
    ("anim.png", {"duration": 100}, "animated PNG: only frame 1 of 3 was used"),
    ("anim.webp", {"duration": 100, "lossless": True}, "animated WebP: only frame 1 of 3 was used"),
])
def test_first_page_is_read_and_the_rest_are_named(tmp_path, name, options, note):
    image = read_image(save_frames(tmp_path / name, **options))
    assert image.notes == (note,)
    assert mean_abs(image.pixels, arrays.uint8_to_array(factory.gradient_rgb())) < 0.05  # page 1, not 3


def test_two_frame_gif_note_counts_both(tmp_path):
    assert read_image(factory.make_gif(tmp_path)).notes == ("animated GIF: only frame 1 of 2 was used",)


@pytest.mark.parametrize("maker", [factory.make_tiff, factory.make_rgb_png, factory.make_rgb_jpeg,
                                   factory.make_webp, factory.make_16bit_rgb_png])
def test_single_page_files_have_no_notes(tmp_path, maker):
    assert read_image(maker(tmp_path)).notes == ()


def test_16bit_multi_page_tiff_is_noted_too(tmp_path):
    path = tmp_path / "pages16.tif"
    assert cv2.imwritemulti(str(path), [np.full((H, W, 3), v, np.uint16) for v in (1000, 2000)])
    image = read_image(path)
    assert image.bit_depth == 16 and image.notes == ("multi-page TIFF: only page 1 of 2 was used",)
    assert as_u16(image.pixels).max() == 1000


def test_cli_says_which_pages_were_left_on_the_files_line(tmp_path):
    tiff = save_frames(tmp_path / "pages.tif")
    gif = save_frames(tmp_path / "anim.gif", duration=100)
    plain = factory.make_rgb_png(tmp_path, "plain.png")
    runner = CliRunner()
    args = [str(tiff), str(gif), str(plain), "-m", "nearest", "-x", "2"]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    lines = {line.split(" -> ")[0]: line for line in result.output.splitlines() if " -> " in line}
    assert lines[str(tiff)].endswith("; note: multi-page TIFF: only page 1 of 3 was used)")
    assert "note" not in lines[str(gif)]  # every frame of an animation is upscaled
    assert "note" not in lines[str(plain)]
    rows = runner.invoke(app, [*args, "-o", str(tmp_path / "json"), "--json"]).stdout.splitlines()
    notes = {Path(row["input"]).name: row["notes"] for row in map(json.loads, rows)}
    assert notes == {"pages.tif": ["multi-page TIFF: only page 1 of 3 was used"],
                     "anim.gif": [],
                     "plain.png": []}


# ------------------------------------------------------------- hostile paths


NASTY_NAMES = ["new\nline.png", "esc\x1b[31mred.png", os.fsdecode(b"not-utf8-\xff\xfe.png"), "tab\there.png"]


@pytest.mark.parametrize("name", NASTY_NAMES)
def test_nasty_names_read_and_write_and_fail_on_one_line(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(factory.make_rgb_png(tmp_path).read_bytes())
    write_image(read_image(path), tmp_path / f"out-{name}")
    assert read_image(tmp_path / f"out-{name}").width == W
    broken = factory.make_zero_byte(tmp_path, f"empty-{name}")
    with pytest.raises(ImageReadError) as caught:
        read_image(broken)
    message = str(caught.value)
    assert message.isprintable() and message.endswith("empty file")
    assert "empty-" in message and ("\\x" in message or "\\n" in message or "\\t" in message)
    with pytest.raises(ImageWriteError) as caught:
        write_image(read_image(path), tmp_path / name / "out.png")  # under a file
    assert str(caught.value).isprintable()


def test_non_utf8_name_is_shown_by_its_bytes(tmp_path):
    path = tmp_path / os.fsdecode(b"caf\xe9.png")  # Latin-1, as an old camera card may hold
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    assert str(caught.value) == f"{tmp_path}/caf\\xe9.png: no such file"


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_endless_device_is_refused_at_once():
    with pytest.raises(ImageReadError, match=r"^/dev/zero: not an image"):
        read_image("/dev/zero")  # reading it whole would never end


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_image_through_a_named_pipe_is_read(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    data = factory.make_rgb_png(tmp_path).read_bytes()
    writer = threading.Thread(target=fifo.write_bytes, args=(data,))
    writer.start()
    try:
        assert read_image(fifo).width == W  # as from `upscale <(curl ...)`
    finally:
        writer.join(timeout=10)


def test_nul_in_a_name_is_an_error_not_a_crash(tmp_path):
    with pytest.raises(ImageReadError, match=r"a\\x00b\.png: cannot read: invalid file name"):
        read_image(tmp_path / "a\x00b.png")
    with pytest.raises(ImageWriteError, match=r"a\\x00b\.png: cannot write: invalid file name"):
        write_image(read_image(factory.make_rgb_png(tmp_path)), tmp_path / "a\x00b.png")
    with pytest.raises(ImageWriteError, match=r"a\\x00b/out\.png: cannot write: invalid file name"):
        write_image(read_image(factory.make_rgb_png(tmp_path)), tmp_path / "a\x00b" / "out.png")
    assert leftover_files(tmp_path) == []


def test_target_that_is_a_folder_is_left_alone(tmp_path):
    image = read_image(factory.make_rgb_png(tmp_path))
    folder = tmp_path / "out.png"
    folder.mkdir()
    (folder / "inside.txt").write_text("keep")
    with pytest.raises(ImageWriteError) as caught:
        write_image(image, folder)
    assert str(caught.value) == f"{folder}: cannot write: a folder of that name exists"
    assert [p.name for p in folder.iterdir()] == ["inside.txt"]
    assert leftover_files(tmp_path) == []


def test_name_at_the_file_system_limit_can_be_written(tmp_path):
    name = "x" * 251 + ".png"  # 255 bytes: the temp file's name cannot simply add to it
    write_image(read_image(factory.make_rgb_png(tmp_path)), tmp_path / name)
    assert read_image(tmp_path / name).width == W
    assert leftover_files(tmp_path) == []


def test_permission_denied_on_the_folder_says_so(tmp_path, monkeypatch):
    image = read_image(factory.make_rgb_png(tmp_path))

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "open", refused)  # as in a folder without write permission, even for root
    with pytest.raises(ImageWriteError) as caught:
        write_image(image, tmp_path / "out.png")
    assert str(caught.value) == f"{tmp_path / 'out.png'}: permission denied (cannot create files in that folder)"


def test_cli_keeps_each_file_on_one_line_whatever_its_name(tmp_path):
    good = tmp_path / "new\nline.png"
    good.write_bytes(factory.make_rgb_png(tmp_path).read_bytes())
    bad = factory.make_zero_byte(tmp_path, "bad\x1b[2J.png")  # an escape that would clear the screen
    result = CliRunner().invoke(app, [str(good), str(bad), "-m", "nearest", "-x", "2", "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert f"{tmp_path}/new\\nline.png -> {tmp_path}/out/new\\nline.png (" in lines[0]
    assert lines[1] == f"error: {tmp_path}/bad\\x1b[2J.png: empty file"
    assert "\x1b" not in result.output


def test_png_compression_level_changes_size_not_pixels(tmp_path):
    """--png-compression: every level 0-9 gives the same pixels; 0 is stored, 9 the smallest;
    the default (level 1, run-length strategy) beats plain level 1; outside 0-9 is refused in one line."""
    from upscale_cli.images.write import DEFAULT_PNG_COMPRESSION

    rng = np.random.default_rng(3)
    ramp = np.linspace(0, 1, 96 * 128, dtype=np.float32).reshape(1, 1, 96, 128)
    noise = rng.random((1, 3, 96, 128), dtype=np.float32) * 0.05
    image = DecodedImage(pixels=np.clip(ramp + noise, 0, 1), source_format="PNG")
    sizes = {}
    for level in (0, 1, 6, 9, None):  # None: the default
        data = encode_image(image, "png", png_compression=level)
        sizes[level] = len(data)
        back = read_image(data)
        assert np.array_equal(back.pixels, read_image(encode_image(image, "png", png_compression=6)).pixels)
    assert sizes[0] > sizes[1] >= sizes[9]
    assert sizes[None] < sizes[DEFAULT_PNG_COMPRESSION]  # the default adds zlib's run-length strategy
    out = tmp_path / "a.png"
    write_image(image, out, png_compression=9)
    assert out.stat().st_size == sizes[9]
    with pytest.raises(ImageWriteError, match="0..9"):
        encode_image(image, "png", png_compression=10)


def test_png_compression_reaches_sixteen_bit_png():
    pixels = np.linspace(0, 1, 3 * 40 * 50, dtype=np.float32).reshape(1, 3, 40, 50)  # smooth: compressible
    image = DecodedImage(pixels=pixels, bit_depth=16, source_format="PNG")
    small, large, default = (encode_image(image, "png", png_compression=level) for level in (9, 0, None))
    assert len(small) < len(large) and len(default) < len(large)
    assert np.array_equal(read_image(default).pixels, read_image(large).pixels)
    assert np.array_equal(read_image(small).pixels, read_image(large).pixels)
    assert read_image(small).bit_depth == 16


# ------------------------------------------------------------------ without torch

# Run in a child where `import torch` fails: every file of the grid decoded and encoded to each
# format, and an animated GIF's frames decoded and written as GIF, APNG and WebP. It prints what
# it wrote; the parent compares those bytes with its own encodes of the same files.
NO_TORCH_CHILD = """
import json, sys
sys.modules["torch"] = None  # any `import torch` (or torch.anything) now raises ImportError
from pathlib import Path
import numpy as np
import upscale_cli.images.arrays, upscale_cli.images.animation, upscale_cli.video.read, upscale_cli.video.write
from upscale_cli.images.animation import open_animation
from upscale_cli.images.read import read_image
from upscale_cli.images.write import encode_image

folder, out, formats = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(",")
for path in sorted(folder.iterdir()):
    image = read_image(path)
    assert isinstance(image.pixels, np.ndarray), type(image.pixels)
    for fmt in formats:
        (out / f"{path.name}.{fmt}").write_bytes(encode_image(image, fmt))
animation = open_animation((folder / "anim.gif").read_bytes(), "anim.gif", 0)
for fmt in ("GIF", "PNG", "WEBP"):
    sink = animation.sink(out / f"anim.{fmt.lower()}", fmt, None)
    for frame in animation.frames():
        sink.add(frame.image, frame)
    sink.finish()
print(json.dumps(sorted(path.name for path in out.iterdir())))
"""
NO_TORCH_FORMATS = ("png", "jpg", "webp", "gif", "tiff", "bmp")
NO_TORCH_MAKERS = (factory.make_rgb_png, factory.make_rgb_jpeg, factory.make_rgba_webp, factory.make_gif,
                   factory.make_grey_alpha_png, factory.make_palette_png_with_transparency,
                   factory.make_16bit_png, factory.make_16bit_rgba_png, factory.make_16bit_rgb_tiff,
                   factory.make_16bit_grey_alpha_png)


def test_decode_and_encode_without_torch(tmp_path):
    """DecodedImage holds NumPy arrays: reading, writing and animations never import torch (a run whose
    model needs no PyTorch must not pay its ~3 s import), with the same bytes as in this process."""
    import subprocess
    import sys

    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    out.mkdir()
    for maker in NO_TORCH_MAKERS:
        maker(folder)
    proc = subprocess.run([sys.executable, "-c", NO_TORCH_CHILD, str(folder), str(out), ",".join(NO_TORCH_FORMATS)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    written = json.loads(proc.stdout)
    assert len(written) == len(NO_TORCH_MAKERS) * len(NO_TORCH_FORMATS) + 3  # + the animation in 3 formats
    for path in sorted(folder.iterdir()):
        image = read_image(path)
        for fmt in NO_TORCH_FORMATS:
            assert (out / f"{path.name}.{fmt}").read_bytes() == encode_image(image, fmt), (path.name, fmt)
    assert read_image(out / "anim.png").source_format == "PNG" and (out / "anim.webp").stat().st_size > 0
