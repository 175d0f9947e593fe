"""HEIC/HEIF, AVIF and JPEG XL as still images (issue 28): round trips over a grid of layouts, depths and
odd sizes (what each codec really keeps is written down in KEEPS), ICC, EXIF and orientation, the CLI's
--format, folders, broken files, the pixel limit before a JPEG XL is decoded, and a missing codec as one
line naming the package. Files made "by the codec" come from pillow-heif, Pillow and pillow-jxl-plugin
directly, not through upscale_cli.images."""
from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import image_factory as f
import numpy as np
import pytest
from PIL import Image, features
from typer.testing import CliRunner

from upscale_cli.cli import app
from upscale_cli.errors import ImageReadError, ImageTooLargeError, ImageWriteError
from upscale_cli.images import DecodedImage, codecs, formats
from upscale_cli.images.read import jxl_header_size, read_image
from upscale_cli.images.write import encode_image

runner = CliRunner()
FORMATS = ("heic", "avif", "jxl")
SUFFIX = {"heic": ".heic", "avif": ".avif", "jxl": ".jxl"}
PILLOW = {"heic": "HEIF", "avif": "AVIF", "jxl": "JXL"}
SIZES = [(1, 1), (17, 9), (33, 20)]  # (width, height): odd, and one pixel
LAYOUTS = {"rgb": (3, False), "rgba": (3, True), "grey": (1, False)}


@dataclass(frozen=True)
class Keeps:
    """What a format keeps through our writer and reader at --quality 100 (measured)."""

    deep_bits: dict  # layout -> bits a 16-bit image keeps (8: written at 8)
    error: float  # largest colour error at 8 bits, in 1/255 steps, beyond the half step of rounding
    grey: bool  # grey comes back as one channel


KEEPS = {
    # x265 lossless with RGB kept as RGB: exact; 16 bits are written at 10 (write.HEIF_DEEP_BITS)
    "heic": Keeps({"rgb": 10, "rgba": 10, "grey": 10}, 0.0, True),
    # Pillow's AVIF (libavif) is 8 bits only, and quality 100 still goes through YCbCr: within 1
    "avif": Keeps({"rgb": 8, "rgba": 8, "grey": 8}, 1.0, True),
    # libjxl lossless: exact; pillow-jxl-plugin writes 16 bits for grey without alpha only
    "jxl": Keeps({"rgb": 8, "rgba": 8, "grey": 16}, 0.0, True),
}


def _image(size: tuple[int, int], layout: str, depth: int) -> DecodedImage:
    """A smooth image (channels offset so they differ) with a never-transparent alpha ramp."""
    width, height = size
    channels, has_alpha = LAYOUTS[layout]
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = x / max(width - 1, 1) * 0.6 + y / max(height - 1, 1) * 0.2 + 0.1
    colour = np.stack([ramp + 0.05 * c for c in range(channels)])
    alpha = 0.9 - 0.6 * x / max(width - 1, 1) if has_alpha else None  # never opaque: AVIF drops an opaque alpha
    step = 65535 if depth == 16 else 255
    colour = np.round(colour * step) / step  # values the depth can hold, so "exact" means exact
    pixels = colour[None].astype(np.float32)
    alpha_plane = None if alpha is None else (np.round(alpha * step) / step)[None, None].astype(np.float32)
    return DecodedImage(pixels, alpha_plane, depth)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("depth", [8, 16])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("fmt", FORMATS)
def test_lossless_round_trip_keeps_size_alpha_and_depth(fmt, layout, depth, size):
    source = _image(size, layout, depth)
    back = read_image(encode_image(source, fmt, quality=100))
    keeps = KEEPS[fmt]
    assert (back.width, back.height) == size
    assert (back.alpha is not None) == LAYOUTS[layout][1]
    bits = keeps.deep_bits[layout] if depth == 16 else 8
    assert back.bit_depth == (16 if bits > 8 else 8)
    channels = LAYOUTS[layout][0]
    assert back.pixels.shape[1] == (channels if keeps.grey or channels == 3 else 3)
    # every channel read back against the source's (grey is one channel either way here)
    tolerance = (0.5 + (keeps.error if bits == 8 else 0.0)) / (2**bits - 1) + 1e-6
    assert np.abs(back.pixels - source.pixels).max().item() <= tolerance
    if source.alpha is not None:
        assert np.abs(back.alpha - source.alpha).max().item() <= 0.5 / (2**min(bits, 10) - 1) + 1e-6


@pytest.mark.parametrize("fmt", FORMATS)
def test_default_quality_is_lossy_but_close(fmt):
    source = _image((33, 20), "rgba", 8)
    data = encode_image(source, fmt)  # --quality 95
    back = read_image(data)
    assert (back.width, back.height, back.alpha is not None) == (33, 20, True)
    assert np.abs(back.pixels - source.pixels).mean().item() < 2 / 255
    assert np.abs(back.alpha - source.alpha).max().item() < 4 / 255
    assert len(data) < len(encode_image(source, fmt, quality=100))


def test_a_deep_heif_from_libheif_reads_as_sixteen_bits():
    """10- and 12-bit HEIF made by pillow-heif itself (not our writer): every level survives."""
    import pillow_heif

    for bits in (10, 12):
        peak = 2**bits - 1
        levels = (np.arange(17 * 9 * 3).reshape(9, 17, 3) * 7 % (peak + 1)).astype("<u2")
        buffer = io.BytesIO()
        pillow_heif.from_bytes(f"RGB;{bits}", (17, 9), levels.tobytes()).save(
            buffer, quality=-1, chroma=444, matrix_coefficients=0, bit_depth=bits)
        back = read_image(buffer.getvalue())
        assert back.bit_depth == 16
        got = back.pixels[0].transpose(1, 2, 0) * peak
        assert np.abs(got - levels).max() < 1e-2, bits


@pytest.mark.parametrize("fmt", ["heic", "avif"])
def test_icc_and_exif_are_kept(fmt):
    icc = f.srgb_icc_profile()
    exif = f.camera_exif(orientation=1).tobytes()
    back = read_image(encode_image(_image((17, 9), "rgb", 8).replace(icc_profile=icc, exif=exif), fmt))
    assert back.icc_profile == icc
    kept = Image.Exif()
    kept.load(back.exif)
    assert kept.get(f.EXIF_MAKE) == f.CAMERA_MAKE and kept.get(f.EXIF_ORIENTATION, 1) == 1


def _swapped_primaries(icc: bytes) -> bytes:
    """An ICC profile whose red and blue primaries are swapped: a valid RGB profile that is not sRGB."""
    count = struct.unpack(">I", icc[128:132])[0]
    entries = {icc[132 + 12 * i:136 + 12 * i]: 132 + 12 * i for i in range(count)}
    data = bytearray(icc)
    red, blue = entries[b"rXYZ"], entries[b"bXYZ"]
    data[red + 4:red + 12], data[blue + 4:blue + 12] = icc[blue + 4:blue + 12], icc[red + 4:red + 12]
    return bytes(data)


def test_jxl_keeps_exif_and_converts_a_profile_it_cannot_embed_into_srgb():
    """pillow-jxl-plugin cannot write an ICC profile: the pixels are converted to the sRGB the file
    declares, so a red that the profile says is blue is written blue; EXIF is kept."""
    red = DecodedImage(np.ascontiguousarray(np.broadcast_to(np.array([1.0, 0.0, 0.0], np.float32).reshape(1, 3, 1, 1),
                                                            (1, 3, 4, 5))), None, 8,
                       _swapped_primaries(f.srgb_icc_profile()), f.camera_exif().tobytes())
    back = read_image(encode_image(red, "jxl", quality=100))
    r, g, b = back.pixels[0, :, 0, 0].tolist()
    assert b > 0.9 and r < 0.1, (r, g, b)
    kept = Image.Exif()
    kept.load(back.exif)
    assert kept.get(f.EXIF_MAKE) == f.CAMERA_MAKE
    # and with an sRGB profile nothing moves
    plain = read_image(encode_image(red.replace(icc_profile=f.srgb_icc_profile()), "jxl", quality=100))
    assert np.array_equal(plain.pixels, red.pixels)


def _by_codec(fmt: str, orientation: int) -> bytes:
    """A 17x9 RGB file written by the codec itself, its EXIF saying `orientation`."""
    codecs.loaded(PILLOW[fmt])
    exif = f.camera_exif(orientation).tobytes()
    buffer = io.BytesIO()
    Image.fromarray(f.gradient_rgb((17, 9))).save(buffer, PILLOW[fmt], exif=exif, quality=90)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["heic", "avif"])
def test_orientation_is_applied_on_read(fmt):
    """pillow-heif and Pillow's AVIF write an EXIF orientation as the file's rotation (irot/imir);
    reading gives upright pixels and EXIF orientation 1."""
    back = read_image(_by_codec(fmt, 6))
    assert (back.width, back.height) == (9, 17)
    kept = Image.Exif()
    kept.load(back.exif)
    assert kept.get(f.EXIF_ORIENTATION, 1) == 1 and kept.get(f.EXIF_MAKE) == f.CAMERA_MAKE


def test_jxl_exif_orientation_is_not_applied_twice():
    """In JPEG XL the codestream's orientation counts, and libjxl applies it; an EXIF orientation is a
    copy the spec says to ignore (applying it too would turn a camera photo twice)."""
    back = read_image(_by_codec("jxl", 6))
    assert (back.width, back.height) == (17, 9)
    kept = Image.Exif()
    kept.load(back.exif)
    assert kept.get(f.EXIF_ORIENTATION, 1) == 1


def test_a_heif_with_several_images_says_only_the_first_was_used():
    import pillow_heif

    frames = [Image.fromarray(f.gradient_rgb((9, 7))), Image.fromarray(f.gradient_rgb((9, 7))[::-1].copy())]
    buffer = io.BytesIO()
    pillow_heif.from_pillow(frames[0]).save(buffer, append_images=[pillow_heif.from_pillow(frames[1])[0]])
    assert read_image(buffer.getvalue()).notes == ("HEIF image collection: only image 1 of 2 was used",)


def test_an_avif_sequence_says_only_the_first_image_was_used_and_is_no_animation_target():
    codecs.loaded("AVIF")
    frames = [Image.fromarray(f.gradient_rgb((9, 7))), Image.fromarray(f.gradient_rgb((9, 7))[::-1].copy())]
    buffer = io.BytesIO()
    frames[0].save(buffer, "AVIF", save_all=True, append_images=frames[1:], duration=100)
    assert read_image(buffer.getvalue()).notes == ("AVIF sequence: only image 1 of 2 was used",)
    assert "AVIF" not in getattr(formats, "ANIMATED_FORMATS", ())  # no animation writer does AVIF


# Every width-to-height ratio code (1:1, 12:10, 4:3, 3:2, 16:9, 5:4, 2:1), sizes in multiples of 8 (the
# short form), and each width of the long form's dimensions (9, 13, 18 bits).
JXL_SIZES = [(8, 8), (12, 10), (40, 30), (48, 32), (64, 36), (50, 40), (16, 8), (1, 1), (33, 20), (257, 3),
             (3, 257), (9000, 1), (1, 70000)]


@pytest.mark.parametrize("size", JXL_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("mode", ["RGB", "I;16"])  # a bare codestream, and one in the ISO container
def test_the_jxl_header_size_is_read_without_decoding(size, mode):
    codecs.loaded("JXL")
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, "JXL", lossless=True)
    assert buffer.getvalue().startswith(b"\xff\x0a" if mode == "RGB" else b"\x00\x00\x00\x0cJXL ")
    assert jxl_header_size(buffer.getvalue()) == size


def test_a_jxl_over_max_pixels_is_refused_before_the_plugin_decodes_it(monkeypatch):
    codecs.loaded("JXL")
    import pillow_jxl.JpegXLImagePlugin as plugin

    data = encode_image(_image((33, 20), "rgb", 8), "jxl")

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded before the size was checked")

    monkeypatch.setattr(plugin, "Decoder", no_decoding)
    with pytest.raises(ImageTooLargeError, match="--max-pixels"):
        read_image(data, max_pixels=33 * 20 - 1)


@pytest.mark.parametrize("fmt", FORMATS)
def test_cli_format_writes_twice_the_size(tmp_path, fmt):
    source = f.make_rgba_png(tmp_path, "in.png")
    result = runner.invoke(app, [str(source), "--format", fmt.upper(), "-m", "nearest", "-x", "2"])
    assert result.exit_code == 0, result.output
    out = tmp_path / f"in_x2{SUFFIX[fmt]}"
    back = read_image(out)
    assert (back.width, back.height) == (2 * f.SIZE[0], 2 * f.SIZE[1]) and back.alpha is not None


def _broken(folder: Path) -> dict[str, bytes]:
    """Files of each format cut in the header, cut in the pixel data, and junk after the signature."""
    good = {fmt: encode_image(_image((33, 20), "rgb", 8), fmt) for fmt in FORMATS}
    files = {}
    for fmt, data in good.items():
        files[f"cut{SUFFIX[fmt]}"] = data[:len(data) // 2]
        files[f"end{SUFFIX[fmt]}"] = data[:len(data) - 20]
        files[f"junk{SUFFIX[fmt]}"] = data[:16] + bytes(range(256)) * 4
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def test_broken_files_fail_alone_in_one_line_each_and_a_folder_finds_every_suffix(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    broken = _broken(folder)
    good = {"a.png": "png", "b.heic": "heic", "c.heif": "heic", "d.hif": "heic", "e.avif": "avif", "g.jxl": "jxl"}
    for name, fmt in good.items():
        (folder / name).write_bytes(encode_image(_image((5, 3), "rgb", 8), fmt))
    result = runner.invoke(app, [str(folder), "-m", "nearest", "-x", "2", "-o", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    for name in good:  # every suffix was picked up, and written in its own format
        written = [p for p in (tmp_path / "out").iterdir() if p.stem == Path(name).stem]
        assert len(written) == 1 and read_image(written[0]).width == 10, (name, written)
    for name in broken:
        lines = [line for line in result.stderr.splitlines() if name in line]
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, result.stderr)
        assert "truncated or corrupt image" in lines[0], lines[0]
        assert not list((tmp_path / "out").glob(Path(name).stem + ".*"))
    assert f"{len(good)} done, 0 skipped, {len(broken)} failed" in result.stderr


@pytest.fixture
def hide(monkeypatch):
    """hide(format...): make that codec's import fail (and Pillow's own AVIF say it has none)."""
    real_check = features.check

    def hide_codecs(*names: str) -> None:
        modules = {"heic": ["pillow_heif"], "avif": ["pillow_avif"], "jxl": ["pillow_jxl"]}
        for name in names:
            for module in modules[name]:
                monkeypatch.setitem(sys.modules, module, None)
        if "avif" in names:
            monkeypatch.setattr(features, "check", lambda feature: feature != "avif" and real_check(feature))
        codecs.loaded.cache_clear()

    yield hide_codecs
    codecs.loaded.cache_clear()


PACKAGES = {"heic": "pillow-heif", "avif": "pillow-avif-plugin", "jxl": "pillow-jxl-plugin"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_missing_codec_is_one_line_naming_the_package(tmp_path, hide, fmt):
    png = f.make_rgb_png(tmp_path, "a.png")
    other = (tmp_path / f"b{SUFFIX[fmt]}")
    other.write_bytes(encode_image(_image((5, 3), "rgb", 8), fmt))
    hide(fmt)
    with pytest.raises(ImageReadError, match=f"cannot read {fmt.upper()}: .*{PACKAGES[fmt]}"):
        read_image(other)
    with pytest.raises(ImageWriteError, match=f"cannot write {fmt.upper()}: .*{PACKAGES[fmt]}"):
        encode_image(_image((5, 3), "rgb", 8), fmt)
    # in a batch: the file fails alone; --format fails at once, before any work
    batch = runner.invoke(app, [str(png), str(other), "-m", "nearest", "-x", "2", "-o", str(tmp_path / "out")])
    assert batch.exit_code == 1 and "Traceback" not in batch.output
    assert (tmp_path / "out" / "a.png").exists()
    assert [line for line in batch.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {other}: {codecs.missing_message(PILLOW[fmt], 'read')}"]
    written = runner.invoke(app, [str(png), "--format", fmt, "-m", "nearest", "-x", "2", "-o", str(tmp_path / "w")])
    assert written.exit_code != 0 and written.stderr.strip().splitlines() == [
        f"error: {codecs.missing_message(PILLOW[fmt], 'write')}"]
    assert not (tmp_path / "w").exists()


def test_help_lists_only_what_is_installed_and_a_png_does_not_load_a_codec(tmp_path):
    """In a fresh process: --help with pillow-heif and pillow-jxl-plugin made unimportable, and a PNG
    read with everything installed, which must not import any codec."""
    png = f.make_rgb_png(tmp_path, "a.png")
    hidden = ("import sys; sys.modules['pillow_heif'] = sys.modules['pillow_jxl'] = None; "
              "sys.argv = ['upscale', '--help']; from upscale_cli.cli import main; main()")
    help_text = subprocess.run([sys.executable, "-c", hidden], capture_output=True, text=True,
                               env={**os.environ, "COLUMNS": "300"}, timeout=120).stdout
    line = next(line for line in help_text.splitlines() if line.strip().startswith("--format"))
    assert "<png|jpg|jpeg|webp|tif|tiff|bmp|gif|avif>" in line
    flat = " ".join(help_text.split())
    assert "heic, heif (pip install pillow-heif); jxl (pip install pillow-jxl-plugin)" in flat
    lazy = ("import sys; from upscale_cli.images.read import read_image; read_image(sys.argv[1]); "
            "print(sorted(m for m in ('pillow_heif', 'pillow_jxl', 'pillow_avif') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", lazy, str(png)], capture_output=True, text=True, timeout=120)
    assert loaded.stdout.strip() == "[]", loaded.stderr


def test_load_for_lets_a_plain_pillow_open_read_a_codec_file(tmp_path):
    """For code that opens files with Pillow itself (training data, benchmark sets): in a fresh
    process Image.open cannot identify a .heic or .jxl until codecs.load_for(path) has run."""
    names = []
    for fmt in ("heic", "jxl"):
        path = tmp_path / f"a{SUFFIX[fmt]}"
        path.write_bytes(encode_image(_image((5, 3), "rgb", 8), fmt))
        names.append(str(path))
    script = ("import sys; from PIL import Image, UnidentifiedImageError; from upscale_cli.images import codecs\n"
              "for name in sys.argv[1:]:\n"
              "    try: Image.open(name); print('opened')\n"
              "    except UnidentifiedImageError: print('unidentified')\n"
              "    codecs.load_for(name); print(Image.open(name).size)\n")
    out = subprocess.run([sys.executable, "-c", script, *names], capture_output=True, text=True, timeout=120)
    assert out.stdout.split("\n")[:4] == ["unidentified", "(5, 3)", "unidentified", "(5, 3)"], out.stderr
