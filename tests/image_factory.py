"""Real image files for tests: one function per kind, each writes into `folder`
and returns the path.

Content is smooth (gradients plus a disc and a bright corner marker) so lossy
codecs behave and orientation is visible.  Files are written with Pillow or
OpenCV directly, never through upscale_cli.images, so the reader is tested
against independent encoders.  Import with `from image_factory import ...`
(pytest puts tests/ on sys.path).
"""
from __future__ import annotations

import functools
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageCms

SIZE = (24, 16)  # (width, height): tiny, and not square so rotations show
EXIF_ORIENTATION = 0x0112
EXIF_MAKE = 0x010F
EXIF_IFD = 0x8769
EXIF_DATETIME_ORIGINAL = 0x9003
CAMERA_MAKE = "TestCam"  # the EXIF Make the factory writes, for metadata checks
MARKER_SIZE = 3  # the white top-left marker square, in pixels
TRANSPARENT_COLUMNS = 8  # palette files: the left columns use the transparent index


# ----------------------------------------------------------------- content


def gradient_rgb(size: tuple[int, int] = SIZE) -> np.ndarray:
    """(H, W, 3) uint8: red ramps left->right, green top->bottom, a blue disc,
    and a white top-left marker."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    red = x / max(width - 1, 1)
    green = y / max(height - 1, 1)
    disc = ((x - width * 0.6) ** 2 + (y - height * 0.5) ** 2) < (min(size) * 0.3) ** 2
    blue = np.where(disc, 0.9, 0.2)
    rgb = np.stack([red * 0.7 + 0.1, green * 0.7 + 0.1, blue], axis=2)
    rgb[:MARKER_SIZE, :MARKER_SIZE] = 1.0
    return np.round(rgb * 255).astype(np.uint8)


def gradient_grey(size: tuple[int, int] = SIZE) -> np.ndarray:
    """(H, W) uint8: a diagonal ramp with a bright top-left marker."""
    rgb = gradient_rgb(size).astype(np.float32)
    return np.round(rgb.mean(axis=2)).astype(np.uint8)


def gradient_alpha(size: tuple[int, int] = SIZE) -> np.ndarray:
    """(H, W) uint8 alpha: opaque at the left, transparent at the right edge."""
    width, height = size
    ramp = np.linspace(255, 0, width).round().astype(np.uint8)
    return np.broadcast_to(ramp, (height, width)).copy()


def gradient_rgb16(size: tuple[int, int] = SIZE) -> np.ndarray:
    """(H, W, 3) uint16 using values 8 bits cannot hold (not multiples of 257)."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    red = x * 65535 // max(width - 1, 1)
    green = y * 65535 // max(height - 1, 1)
    blue = (x * 37 + y * 1001 + 7) % 65536
    return np.stack([red, green, blue], axis=2).astype(np.uint16)


def gradient_grey16(size: tuple[int, int] = SIZE) -> np.ndarray:
    """(H, W) uint16 with values between the 8-bit steps."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    return ((x * 2749 + y * 131 + 3) % 65536).astype(np.uint16)


@functools.lru_cache(maxsize=None)
def srgb_icc_profile() -> bytes:
    """sRGB profile bytes, cached: the header holds a creation time."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def camera_exif(orientation: int = 1) -> Image.Exif:
    """EXIF with a Make, an orientation and a DateTimeOriginal in the Exif IFD."""
    exif = Image.Exif()
    exif[EXIF_MAKE] = CAMERA_MAKE
    exif[EXIF_ORIENTATION] = orientation
    exif.get_ifd(EXIF_IFD)[EXIF_DATETIME_ORIGINAL] = "2024:01:02 03:04:05"
    return exif


def _palette_with_transparent_band(size: tuple[int, int]) -> Image.Image:
    """Mode P gradient whose left columns, and only those, use palette index 0."""
    quantised = Image.fromarray(gradient_rgb(size)).quantize(colors=15)
    indices = np.asarray(quantised) + 1  # index 0 is kept for the transparent band
    indices[:, :TRANSPARENT_COLUMNS] = 0
    image = Image.frombytes("P", size, indices.astype(np.uint8).tobytes())
    image.putpalette([0, 0, 0] + quantised.getpalette()[: 15 * 3])
    return image


# ------------------------------------------------------------ good files


def make_rgb_png(folder: Path, name: str = "rgb.png", size=SIZE) -> Path:
    path = Path(folder) / name
    Image.fromarray(gradient_rgb(size)).save(path, "PNG")
    return path


def make_icc_png(folder: Path, name: str = "icc.png", size=SIZE) -> Path:
    """RGB PNG with an sRGB ICC profile and camera EXIF."""
    path = Path(folder) / name
    Image.fromarray(gradient_rgb(size)).save(path, "PNG", icc_profile=srgb_icc_profile(),
                                             exif=camera_exif())
    return path


def make_rgb_jpeg(folder: Path, name: str = "rgb.jpg", size=SIZE) -> Path:
    """RGB JPEG with an sRGB ICC profile and camera EXIF (orientation 1)."""
    path = Path(folder) / name
    Image.fromarray(gradient_rgb(size)).save(path, "JPEG", quality=95,
                                             icc_profile=srgb_icc_profile(), exif=camera_exif())
    return path


def make_webp(folder: Path, name: str = "rgb.webp", size=SIZE) -> Path:
    path = Path(folder) / name
    Image.fromarray(gradient_rgb(size)).save(path, "WEBP", quality=95)
    return path


def make_rgba_webp(folder: Path, name: str = "rgba.webp", size=SIZE) -> Path:
    path = Path(folder) / name
    rgba = np.dstack([gradient_rgb(size), gradient_alpha(size)])
    Image.fromarray(rgba).save(path, "WEBP", lossless=True)
    return path


def make_tiff(folder: Path, name: str = "rgb.tiff", size=SIZE) -> Path:
    """Uncompressed RGB TIFF with camera EXIF."""
    path = Path(folder) / name
    Image.fromarray(gradient_rgb(size)).save(path, "TIFF", exif=camera_exif())
    return path


def make_bmp(folder: Path, name: str = "rgb.bmp", size=SIZE) -> Path:
    path = Path(folder) / name
    Image.fromarray(gradient_rgb(size)).save(path, "BMP")
    return path


def make_gif(folder: Path, name: str = "anim.gif", size=SIZE) -> Path:
    """Two-frame GIF: frame 0 is the gradient, frame 1 is plain black."""
    path = Path(folder) / name
    first = Image.fromarray(gradient_rgb(size)).quantize(colors=64)
    second = Image.new("RGB", size, (0, 0, 0)).quantize(colors=2)
    first.save(path, "GIF", save_all=True, append_images=[second], duration=100)
    return path


def make_rgba_png(folder: Path, name: str = "rgba.png", size=SIZE) -> Path:
    path = Path(folder) / name
    Image.fromarray(np.dstack([gradient_rgb(size), gradient_alpha(size)])).save(path, "PNG")
    return path


def make_grey_png(folder: Path, name: str = "grey.png", size=SIZE) -> Path:
    path = Path(folder) / name
    Image.fromarray(gradient_grey(size)).save(path, "PNG")
    return path


def make_grey_alpha_png(folder: Path, name: str = "grey_alpha.png", size=SIZE) -> Path:
    path = Path(folder) / name
    Image.fromarray(np.dstack([gradient_grey(size), gradient_alpha(size)])).save(path, "PNG")
    return path


def make_bilevel_png(folder: Path, name: str = "bilevel.png", size=SIZE) -> Path:
    """Mode "1" (1 bit per pixel) PNG."""
    path = Path(folder) / name
    Image.fromarray(gradient_grey(size)).convert("1", dither=Image.Dither.NONE).save(path, "PNG")
    return path


def make_palette_png_with_transparency(folder: Path, name: str = "palette.png", size=SIZE) -> Path:
    """Mode P PNG whose index 0 is transparent (tRNS); the left columns use it."""
    path = Path(folder) / name
    _palette_with_transparent_band(size).save(path, "PNG", transparency=0)
    return path


def make_palette_gif_with_transparency(folder: Path, name: str = "transparent.gif",
                                       size=SIZE) -> Path:
    """GIF whose index 0 is transparent; the left columns use it."""
    path = Path(folder) / name
    _palette_with_transparent_band(size).save(path, "GIF", transparency=0)
    return path


def make_16bit_png(folder: Path, name: str = "grey16.png", size=SIZE) -> Path:
    """16-bit greyscale (Pillow mode I;16) PNG with values 8 bits cannot hold."""
    path = Path(folder) / name
    Image.fromarray(gradient_grey16(size)).save(path, "PNG")
    return path


def make_16bit_tiff(folder: Path, name: str = "grey16.tiff", size=SIZE) -> Path:
    path = Path(folder) / name
    Image.fromarray(gradient_grey16(size)).save(path, "TIFF")
    return path


def make_16bit_rgb_png(folder: Path, name: str = "rgb16.png", size=SIZE) -> Path:
    """16-bit RGB PNG written by OpenCV (Pillow cannot write it)."""
    return _write_opencv16(Path(folder) / name, gradient_rgb16(size), ".png")


def make_16bit_rgba_png(folder: Path, name: str = "rgba16.png", size=SIZE) -> Path:
    rgba = np.dstack([gradient_rgb16(size), gradient_alpha(size).astype(np.uint16) * 257])
    return _write_opencv16(Path(folder) / name, rgba, ".png")


def make_16bit_rgb_tiff(folder: Path, name: str = "rgb16.tiff", size=SIZE) -> Path:
    return _write_opencv16(Path(folder) / name, gradient_rgb16(size), ".tiff")


def make_16bit_rgb_png_with_orientation(folder: Path, orientation: int,
                                        name: str = "rgb16_oriented.png", size=SIZE) -> Path:
    """16-bit RGB PNG with an eXIf chunk carrying `orientation`."""
    path = make_16bit_rgb_png(folder, name, size)
    png = path.read_bytes()
    exif = camera_exif(orientation).tobytes()[len(b"Exif\x00\x00"):]
    ihdr_end = 8 + 8 + 13 + 4  # signature, IHDR length + type, IHDR data, CRC
    path.write_bytes(png[:ihdr_end] + _png_chunk(b"eXIf", exif) + png[ihdr_end:])
    return path


def make_16bit_grey_alpha_png(folder: Path, name: str = "grey_alpha16.png", size=SIZE) -> Path:
    """16-bit grey+alpha PNG, built chunk by chunk: neither Pillow nor OpenCV
    writes one.  Grey is gradient_grey16, alpha is gradient_alpha * 257."""
    width, height = size
    samples = np.dstack([gradient_grey16(size), gradient_alpha(size).astype(np.uint16) * 257])
    rows = samples.astype(">u2").reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter type 0 per row
    header = struct.pack(">IIBBBBB", width, height, 16, 4, 0, 0, 0)  # colour type 4
    png = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
           + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b""))
    path = Path(folder) / name
    path.write_bytes(png)
    return path


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def _write_opencv16(path: Path, rgb: np.ndarray, extension: str) -> Path:
    bgr = rgb[..., [2, 1, 0, 3][: rgb.shape[2]]]  # OpenCV wants BGR(A)
    ok, buffer = cv2.imencode(extension, np.ascontiguousarray(bgr))
    assert ok, f"OpenCV could not encode {path}"
    path.write_bytes(buffer.tobytes())
    return path


def make_cmyk_jpeg(folder: Path, name: str = "cmyk.jpg", size=SIZE) -> Path:
    """CMYK JPEG in four vertical bands: cyan, magenta, yellow, 50% black."""
    path = Path(folder) / name
    width, height = size
    cmyk = np.zeros((height, width, 4), np.uint8)
    bands = [(255, 0, 0, 0), (0, 255, 0, 0), (0, 0, 255, 0), (0, 0, 0, 128)]
    for index, ink in enumerate(bands):
        cmyk[:, index * width // 4: (index + 1) * width // 4] = ink
    Image.frombytes("CMYK", size, cmyk.tobytes()).save(path, "JPEG", quality=95)
    return path


def make_exif_rotated_jpeg(folder: Path, name: str = "rotated.jpg", size=SIZE,
                           orientation: int = 6) -> Path:
    """JPEG stored as gradient_rgb(size) with EXIF orientation `orientation`."""
    path = Path(folder) / name
    Image.fromarray(gradient_rgb(size)).save(path, "JPEG", quality=95,
                                             exif=camera_exif(orientation))
    return path


def make_oriented_png(folder: Path, orientation: int, name: str = "oriented.png",
                      size=SIZE) -> Path:
    """8-bit RGB PNG stored as gradient_rgb(size) with EXIF orientation."""
    path = Path(folder) / name
    Image.fromarray(gradient_rgb(size)).save(path, "PNG", exif=camera_exif(orientation))
    return path


def make_float_tiff(folder: Path, name: str = "float.tiff", size=SIZE) -> Path:
    """32-bit float (mode F) TIFF: a mode the reader does not support."""
    path = Path(folder) / name
    Image.fromarray(gradient_grey(size).astype(np.float32) / 255).save(path, "TIFF")
    return path


def make_large_png(folder: Path, width: int, height: int, name: str = "large.png") -> Path:
    """Plain grey PNG of the given size (cheap: it compresses to almost nothing)."""
    path = Path(folder) / name
    Image.new("L", (width, height), 128).save(path, "PNG")
    return path


# ------------------------------------------------------------- bad files


def make_zero_byte(folder: Path, name: str = "empty.png") -> Path:
    path = Path(folder) / name
    path.write_bytes(b"")
    return path


def make_truncated_png(folder: Path, name: str = "truncated.png", size=SIZE) -> Path:
    """A valid PNG cut off half way through its image data."""
    path = make_rgb_png(folder, name, size)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def make_truncated_jpeg(folder: Path, name: str = "truncated.jpg", size=SIZE) -> Path:
    path = make_rgb_jpeg(folder, name, size)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def make_text_as_png(folder: Path, name: str = "notes.png") -> Path:
    """A text file with an image suffix."""
    path = Path(folder) / name
    path.write_text("this is not an image, just some text\n")
    return path
