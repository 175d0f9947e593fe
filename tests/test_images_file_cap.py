"""A regular file is read whole before it is parsed, so its size is checked against what an image
within --max-pixels can take before a byte is read: a huge file (junk named .png) fails alone, with
one line, and the batch goes on. The files here are sparse: they take no disk."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import image_factory as factory
from upscale_cli.cli import app
from upscale_cli.errors import ImageTooLargeError
from upscale_cli.images.formats import DEFAULT_MAX_PIXELS, SIGNATURES
from upscale_cli.images.read import FILE_METADATA_BYTES, MAX_FILE_BYTES_PER_PIXEL, max_file_bytes, read_image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _sparse(path: Path, size: int, head: bytes = PNG_SIGNATURE) -> Path:
    with open(path, "wb") as file:
        file.write(head)
        file.truncate(size)
    return path


@pytest.mark.parametrize("max_pixels", [1, 1000, 10**6, DEFAULT_MAX_PIXELS])
def test_the_cap_is_what_an_image_within_max_pixels_can_take(max_pixels):
    assert max_file_bytes(max_pixels) == max_pixels * MAX_FILE_BYTES_PER_PIXEL + FILE_METADATA_BYTES
    assert max_file_bytes(0) is None  # --max-pixels 0: no limit of either kind


@pytest.mark.parametrize("max_pixels, over", [(1000, 1), (1000, 10**9), (DEFAULT_MAX_PIXELS, 1),
                                              (DEFAULT_MAX_PIXELS, 30 * 2**30)])
def test_a_file_over_the_cap_is_refused_unread(tmp_path, max_pixels, over):
    path = _sparse(tmp_path / "huge.png", max_file_bytes(max_pixels) + over)
    with pytest.raises(ImageTooLargeError, match=r"more than an image within --max-pixels can take .*it was not read"):
        read_image(path, max_pixels=max_pixels)


@pytest.mark.parametrize("head", [PNG_SIGNATURE, *SIGNATURES[1:], b""])
def test_a_file_at_the_cap_is_read_and_judged_by_its_content(tmp_path, head):
    path = _sparse(tmp_path / "edge.png", max_file_bytes(100), head)
    with pytest.raises(Exception) as caught:  # zeros after a signature: not an image, but read
        read_image(path, max_pixels=100)
    assert "can take" not in str(caught.value)


def test_real_images_stay_under_the_cap(tmp_path):
    for maker in (factory.make_rgb_png, factory.make_tiff, factory.make_bmp, factory.make_rgb_jpeg):
        path = maker(tmp_path)
        image = read_image(path, max_pixels=image_pixels(path))
        assert image.width * image.height == image_pixels(path)


def image_pixels(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as im:
        return im.width * im.height


def test_a_huge_file_in_a_folder_fails_alone(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    factory.make_rgb_png(folder, "good.png")
    _sparse(folder / "huge.png", 30 * 2**30)  # 30 GiB: read whole, it took the memory of the machine
    result = CliRunner().invoke(app, [str(folder), "-x", "2", "-m", "bicubic", "-o", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "huge.png" in errors[0] and "it was not read (raise --max-pixels" in errors[0]
    assert (tmp_path / "out" / "good.png").is_file() and not (tmp_path / "out" / "huge.png").exists()
    assert "Traceback" not in result.output
