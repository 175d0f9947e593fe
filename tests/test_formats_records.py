"""images/formats.py holds one record per format; every table the program reads is derived from those
records. The tables still hold exactly what they held when each was written out by hand (the values
below are copied from that version), the --format Literal cannot drift from the records, and one more
record is all a new format needs: it shows up in every table."""
from __future__ import annotations

import io
from dataclasses import replace

import pytest

from upscale_cli.errors import ImageReadError
from upscale_cli.images import formats
from upscale_cli.images.read import read_image, read_stream

# The hand-written tables before the records, verbatim.
OLD_READ_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF")
OLD_FORMAT_NAMES = ("png", "jpg", "jpeg", "webp", "tif", "tiff", "bmp")
OLD_OUTPUT_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP",
                      "tif": "TIFF", "tiff": "TIFF", "bmp": "BMP"}
OLD_READ_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif")
OLD_WRITE_SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tiff", "BMP": ".bmp"}
OLD_ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}
OLD_SIXTEEN_BIT_FORMATS = {"PNG", "TIFF"}
OLD_METADATA_FORMATS = {"PNG", "JPEG", "WEBP", "TIFF"}
OLD_LOSSY_FORMATS = {"JPEG", "WEBP"}
OLD_PALETTE_FORMATS = {"PNG", "BMP", "TIFF"}
OLD_SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
OLD_MULTI_IMAGE_KINDS = {"TIFF": ("multi-page TIFF", "page"), "GIF": ("animated GIF", "frame"),
                         "PNG": ("animated PNG", "frame"), "WEBP": ("animated WebP", "frame")}

WEBP_HEAD = b"RIFF\x24\x00\x00\x00WEBPVP8 "
# The records of those tables; issue 28 then added HEIF, AVIF and JPEG XL, a record each (their codecs:
# tests/test_modern_formats.py), and made GIF written (animations and stills: tests/test_animation.py),
# which is taken back out of its record here.
OLD_RECORDS = tuple(replace(f, names=(), write_suffix=None, alpha=False, palette=False, animated=False)
                    if f.pillow_name == "GIF" else f for f in formats.FORMATS if f.pillow_name in OLD_READ_FORMATS)
GIF_WRITTEN = {"gif": "GIF"}
NEW_FORMATS = ("HEIF", "AVIF", "JXL")
NEW_NAMES = ("heic", "heif", "avif", "jxl")


def test_the_derived_tables_hold_what_the_hand_written_ones_held():
    # Sequences compare in order: the order is visible (--help's choices, the suffix list in messages,
    # which plugin Pillow tries first).
    old = formats.derive_tables(OLD_RECORDS)
    assert old.read_formats == OLD_READ_FORMATS
    assert old.format_names == OLD_FORMAT_NAMES
    assert list(old.output_formats.items()) == list(OLD_OUTPUT_FORMATS.items())
    assert old.read_suffixes == OLD_READ_SUFFIXES
    assert list(old.write_suffix.items()) == list(OLD_WRITE_SUFFIX.items())
    assert formats.FALLBACK_FORMAT == "PNG"
    assert old.alpha == OLD_ALPHA_FORMATS
    assert old.sixteen_bit == OLD_SIXTEEN_BIT_FORMATS
    assert old.metadata == OLD_METADATA_FORMATS
    assert old.lossy == OLD_LOSSY_FORMATS
    assert old.palette == OLD_PALETTE_FORMATS
    # Matched with startswith (any of them) and looked up by key: order carries no meaning.
    assert sorted(s.prefix for s in old.signatures if not s.then) == sorted(OLD_SIGNATURES)
    assert old.multi_image_kinds == OLD_MULTI_IMAGE_KINDS
    assert formats.SNIFF_BYTES == 16


def test_the_program_reads_the_old_tables_and_the_new_records_after_them():
    assert formats.READ_FORMATS == (*OLD_READ_FORMATS, *NEW_FORMATS)
    assert formats.FORMAT_NAMES == (*OLD_FORMAT_NAMES, "gif", *NEW_NAMES)
    assert formats.OUTPUT_FORMATS == {**OLD_OUTPUT_FORMATS, **GIF_WRITTEN, "heic": "HEIF", "heif": "HEIF",
                                      "avif": "AVIF", "jxl": "JXL"}
    assert formats.READ_SUFFIXES == (*OLD_READ_SUFFIXES, ".heic", ".heif", ".hif", ".avif", ".jxl")
    assert formats.WRITE_SUFFIX == {**OLD_WRITE_SUFFIX, "GIF": ".gif", "HEIF": ".heic", "AVIF": ".avif", "JXL": ".jxl"}
    assert formats.ALPHA_FORMATS == OLD_ALPHA_FORMATS | set(NEW_FORMATS) | {"GIF"}
    assert formats.SIXTEEN_BIT_FORMATS == OLD_SIXTEEN_BIT_FORMATS | {"HEIF", "JXL"}  # AVIF: 8 bits here
    assert formats.METADATA_FORMATS == OLD_METADATA_FORMATS | set(NEW_FORMATS)
    assert formats.LOSSY_FORMATS == OLD_LOSSY_FORMATS | set(NEW_FORMATS)
    assert formats.PALETTE_FORMATS == OLD_PALETTE_FORMATS | {"GIF"}
    assert formats.ANIMATED_FORMATS == {"PNG", "WEBP", "GIF"}
    assert sorted(formats.SIGNATURES) == sorted((*OLD_SIGNATURES, b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n"))


@pytest.mark.parametrize("head", [*OLD_SIGNATURES, WEBP_HEAD, b"\x89PNG\r\n\x1a\n", b"BM" + bytes(14)])
def test_a_stream_that_starts_like_an_image_is_read_on(head):
    assert read_stream(io.BytesIO(head + bytes(100)), "<pipe>") == head + bytes(100)


# RIFF holds WAVE and AVI too; one byte short of each signature; text; zeros.
@pytest.mark.parametrize("head", [b"RIFF\x24\x00\x00\x00WAVEfmt ", b"RIFF\x24\x00\x00\x00AVI LIST",
                                  b"RIFF", b"WEBP" + bytes(12), b"\x89PN", b"\xff\xd8\x00", b"GIF7", b"B",
                                  b"II*\x01", b"MM\x00\x2b"[:3] + b"\x00", b"hello, world!\n", bytes(16)])
def test_a_stream_that_does_not_is_refused_from_its_first_bytes(head):
    with pytest.raises(ImageReadError, match="not an image"):
        read_stream(io.BytesIO(head + bytes(100)), "<pipe>")


@pytest.mark.parametrize("head", [*OLD_SIGNATURES, WEBP_HEAD])
def test_a_signature_followed_by_junk_is_corrupt_not_unknown(head):
    with pytest.raises(ImageReadError) as caught:
        read_image(head + b"\x01" * 64)
    assert "not an image" not in str(caught.value)


def test_the_format_literal_is_the_records_names():
    """--format's choices are the Literal Typer reads; they must be the written records' names, in order."""
    assert formats.FORMAT_NAMES == tuple(name for f in formats.FORMATS for name in f.names)


def _heic() -> formats.ImageFormat:
    return formats.ImageFormat(
        "HEIF", names=("heic", "heif"), suffixes=(".heic", ".heif"), write_suffix=".heic",
        alpha=True, sixteen_bit=True, metadata=True, lossy=True, palette=False,
        signatures=(formats.Signature(b"\x00\x00\x00", then=b"ftypheic", then_at=4),),
        multi_image=formats.MultiImage("HEIF sequence", "image"))


def test_one_more_record_is_all_a_format_needs():
    tables = formats.derive_tables((*OLD_RECORDS, _heic()))
    assert tables.read_formats == (*OLD_READ_FORMATS, "HEIF")
    assert tables.format_names == (*OLD_FORMAT_NAMES, "heic", "heif")
    assert tables.output_formats == {**OLD_OUTPUT_FORMATS, "heic": "HEIF", "heif": "HEIF"}
    assert tables.read_suffixes == (*OLD_READ_SUFFIXES, ".heic", ".heif")
    assert tables.write_suffix == {**OLD_WRITE_SUFFIX, "HEIF": ".heic"}
    for table, old in [(tables.alpha, OLD_ALPHA_FORMATS), (tables.sixteen_bit, OLD_SIXTEEN_BIT_FORMATS),
                       (tables.metadata, OLD_METADATA_FORMATS), (tables.lossy, OLD_LOSSY_FORMATS)]:
        assert table == old | {"HEIF"}
    assert tables.palette == OLD_PALETTE_FORMATS
    assert tables.multi_image_kinds == {**OLD_MULTI_IMAGE_KINDS, "HEIF": ("HEIF sequence", "image")}
    head = b"\x00\x00\x00\x18ftypheic" + bytes(4)
    assert tables.starts_like_image(head) and not formats.derive_tables(OLD_RECORDS).starts_like_image(head)
    assert not tables.starts_like_image(b"\x00\x00\x00\x18ftypavif" + bytes(4))


def test_a_read_only_record_adds_no_format_word():
    tables = formats.derive_tables((*OLD_RECORDS, replace(_heic(), names=(), write_suffix=None, alpha=False,
                                                              sixteen_bit=False, metadata=False, lossy=False)))
    assert tables.read_suffixes[-2:] == (".heic", ".heif") and tables.read_formats[-1] == "HEIF"
    assert tables.format_names == OLD_FORMAT_NAMES and "HEIF" not in tables.write_suffix
    assert not {"HEIF"} & (tables.alpha | tables.sixteen_bit | tables.metadata | tables.lossy | tables.palette)


@pytest.mark.parametrize("broken", [
    dict(names=()),  # written, but no --format word
    dict(write_suffix=".hif"),  # writes a suffix it does not read back
    dict(suffixes=("heic",)),  # a suffix without its dot
    dict(suffixes=(".HEIC",)),  # suffixes are compared lower-cased
    dict(names=("HEIC",)),  # --format words are looked up lower-cased
    dict(write_suffix=None),  # --format words for a format never written
    dict(signatures=()),  # nothing to tell a corrupt file from a non-image
    dict(signatures=(formats.Signature(b"", then=(b"ftypheic", b""), then_at=4),)),  # an alternative every file has
    dict(signatures=(formats.Signature(b"", then=b"ftypheic" + bytes(8), then_at=4),)),  # longer than a stream's sniff
])
def test_an_inconsistent_record_is_refused_where_it_is_written(broken):
    with pytest.raises(ValueError):
        replace(_heic(), **broken)


def test_a_record_repeating_another_formats_word_or_suffix_is_refused():
    with pytest.raises(ValueError, match="jpg"):
        formats.derive_tables((*OLD_RECORDS, replace(_heic(), names=("heic", "jpg"))))
    with pytest.raises(ValueError, match=r"\.png"):
        formats.derive_tables((*OLD_RECORDS, replace(_heic(), suffixes=(".heic", ".png"))))


def test_every_signature_fits_in_what_a_stream_is_sniffed_with():
    assert max(s.end for f in formats.FORMATS for s in f.signatures) <= formats.SNIFF_BYTES
