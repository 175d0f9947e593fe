"""`upscale restore` end to end through the real CLI, plus the mask helpers of restore.py.

Tiny images, the OpenCV baselines (no weights), and the packaged unet-restore when it ships.
"""
from __future__ import annotations

import json
from pathlib import Path

import image_factory as f
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from upscale_cli import restore
from upscale_cli.catalog import load_catalog
from upscale_cli.cli import app
from upscale_cli.images.arrays import uint8_to_tensor
from upscale_cli.metrics import quantize8
from upscale_cli.models.descriptor import Masked

runner = CliRunner()
W, H = f.SIZE


def _pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(np.int16)


def _mask_png(folder, size=(W, H), box=(4, 4, 12, 10), name="mask.png"):
    """Black image with one white rectangle (x0, y0, x1, y1): the pixels to fill."""
    mask = np.zeros((size[1], size[0]), np.uint8)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 255
    path = folder / name
    Image.fromarray(mask).save(path)
    return path, mask > 0


def _noisy_png(folder, name="noisy.png"):
    rng = np.random.default_rng(0)
    base = f.gradient_rgb().astype(np.float64)
    noisy = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    path = folder / name
    Image.fromarray(noisy).save(path)
    return path


def test_nlmeans_writes_restored_png_of_same_size(tmp_path):
    src = _noisy_png(tmp_path, "photo.png")
    result = runner.invoke(app, ["restore", str(src), "-m", "opencv-nlmeans"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "photo_restored.png"
    with Image.open(out) as im:
        assert im.size == (W, H)
    assert not np.array_equal(_pixels(out), _pixels(src))  # it did denoise something


def test_inpaint_with_mask_changes_only_masked_pixels(tmp_path):
    src = f.make_rgb_png(tmp_path, "photo.png")
    mask_path, mask = _mask_png(tmp_path)
    holed = _pixels(src).astype(np.uint8)
    holed[mask] = 0  # black holes that the mask marks
    Image.fromarray(holed).save(src)
    result = runner.invoke(app, ["restore", str(src), "-m", "opencv-inpaint", "--mask", str(mask_path)])
    assert result.exit_code == 0, result.output
    out = _pixels(tmp_path / "photo_restored.png")
    assert np.array_equal(out[~mask], holed[~mask])
    assert (out[mask] > 0).mean() > 0.9  # the black holes were filled from their surroundings


def test_mask_size_mismatch_is_one_error_line(tmp_path):
    src = f.make_rgb_png(tmp_path, "photo.png")
    mask_path, _ = _mask_png(tmp_path, size=(W + 3, H))
    result = runner.invoke(app, ["restore", str(src), "-m", "opencv-inpaint", "--mask", str(mask_path)])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "mask" in errors[0] and "same size" in errors[0], result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "photo_restored.png").exists()


def test_inpaint_without_mask_is_usage_error(tmp_path):
    src = f.make_rgb_png(tmp_path, "photo.png")
    result = runner.invoke(app, ["restore", str(src), "-m", "opencv-inpaint"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error:") and "--mask" in result.stderr
    assert not (tmp_path / "photo_restored.png").exists()


def test_strength_zero_returns_input_unchanged(tmp_path):
    src = _noisy_png(tmp_path, "photo.png")
    result = runner.invoke(app, ["restore", str(src), "-m", "opencv-nlmeans", "--strength", "0"])
    assert result.exit_code == 0, result.output
    assert np.array_equal(_pixels(tmp_path / "photo_restored.png"), _pixels(src))


def test_bad_strength_task_and_model_are_usage_errors(tmp_path):
    src = f.make_rgb_png(tmp_path, "photo.png")
    for args in (["--strength", "1.5"], ["--task", "sharpen"], ["-m", "bicubic"]):  # bicubic: not x1
        result = runner.invoke(app, ["restore", str(src), "-m", "opencv-nlmeans", *args])
        assert result.exit_code == 2, (args, result.output)


def test_bad_file_in_batch_fails_alone(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    _noisy_png(folder, "a.png")
    f.make_rgba_png(folder, "b.png")
    f.make_16bit_rgb_png(folder, "c16.png")
    f.make_truncated_png(folder, "broken.png")
    out = tmp_path / "out"
    result = runner.invoke(app, ["restore", str(folder), "-m", "opencv-nlmeans", "-o", str(out)])
    assert result.exit_code == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c16.png"]
    with Image.open(out / "b.png") as im:
        assert im.mode == "RGBA" and im.size == (W, H)  # alpha kept
    with Image.open(out / "c16.png") as im:
        assert im.size == (W, H)
    errors = [line for line in result.stderr.splitlines() if "broken.png" in line]
    assert len(errors) == 1 and errors[0].startswith("error:")
    assert "3 done, 0 skipped, 1 failed" in result.stderr


def test_sixteen_bit_stays_sixteen_bit(tmp_path):
    src = f.make_16bit_rgb_png(tmp_path, "deep.png")
    result = runner.invoke(app, ["restore", str(src), "-m", "opencv-nlmeans", "--strength", "0.5"])
    assert result.exit_code == 0, result.output
    from upscale_cli.images.read import read_image

    assert read_image(tmp_path / "deep_restored.png").bit_depth == 16


_HAS_UNET_RESTORE = "unet-restore" in load_catalog()


@pytest.mark.skipif(not _HAS_UNET_RESTORE, reason="unet-restore is not in the catalogue")
def test_upscale_with_restore_gives_2x_image(tmp_path):
    src = f.make_rgb_jpeg(tmp_path, "photo.jpg")
    result = runner.invoke(app, [str(src), "-x", "2", "-m", "bicubic", "--restore", "--format", "png"])
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "photo_x2.png") as im:
        assert im.size == (2 * W, 2 * H)


@pytest.mark.skipif(not _HAS_UNET_RESTORE, reason="unet-restore is not in the catalogue")
def test_unet_restore_runs_on_small_image(tmp_path):
    src = _noisy_png(tmp_path, "photo.png")
    mask_path, mask = _mask_png(tmp_path)
    result = runner.invoke(app, ["restore", str(src), "--mask", str(mask_path), "--task", "inpaint", "-m", "unet-restore"])
    assert result.exit_code == 0, result.output
    out = _pixels(tmp_path / "photo_restored.png")
    assert out.shape == (H, W, 3)
    assert np.array_equal(out[~mask], _pixels(src)[~mask])  # inpaint: only masked pixels change
    result = runner.invoke(app, ["restore", str(src), "-o", str(tmp_path / "full.png")])
    assert result.exit_code == 0, result.output
    assert _pixels(tmp_path / "full.png").shape == (H, W, 3)


# ----------------------------------------------------------------------------- library helpers


def test_prefill_keeps_known_pixels_and_fills_a_ramp_smoothly():
    ramp = torch.linspace(0, 1, 40).view(1, 1, 1, 40).expand(1, 3, 40, 40).contiguous()
    mask = torch.zeros(1, 1, 40, 40)
    mask[..., 10:30, 12:28] = 1
    holed = torch.where(mask > 0, torch.zeros_like(ramp), ramp)
    filled = restore.prefill(holed, mask)
    assert torch.equal(filled[mask.expand_as(ramp) == 0], ramp[mask.expand_as(ramp) == 0])
    assert float((filled - ramp).abs().max()) < 0.03  # a linear ramp is harmonic: found again


def test_composite_strength_and_inpaint_only():
    original, restored = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 0, 0] = 1
    half = restore.composite(original, restored, mask, 0.5, inpaint_only=False)
    assert float(half[0, 0, 0, 0]) == 1.0 and float(half[0, 0, 1, 1]) == 0.5
    only = restore.composite(original, restored, mask, 1.0, inpaint_only=True)
    assert float(only.sum()) == 3.0


def test_task_jpeg_runs_the_jpeg_specialist_and_removes_artifacts(tmp_path):
    """--task jpeg without -m runs unet-jpeg; on a blocky JPEG the result is closer to the original."""
    yy, xx = np.mgrid[0:64, 0:64]
    clean = np.stack([xx * 3.5 + 20, yy * 3.0 + 30, 180 - (xx + yy) * 1.2], axis=-1).clip(0, 255).astype(np.uint8)
    src = tmp_path / "blocky.jpg"
    Image.fromarray(clean).save(src, quality=12)
    result = runner.invoke(app, ["restore", str(src), "--task", "jpeg", "--json", "-o", str(tmp_path / "fixed.png")])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.splitlines()[-1])
    assert record["model"] == "unet-jpeg" and record["status"] == "ok"

    def psnr(a):
        return 10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - clean) ** 2))

    assert psnr(_pixels(tmp_path / "fixed.png")) > psnr(_pixels(src)) + 0.5
    assert restore.Restorer(restore.RestoreConfig(), progress=False).model_name == "unet-restore"
    chosen = restore.Restorer(restore.RestoreConfig(model="opencv-nlmeans", task="jpeg"), progress=False)
    assert chosen.model_name == "opencv-nlmeans"  # -m always wins


def _smooth(size=48):
    yy, xx = np.mgrid[0:size, 0:size]
    return np.stack([xx * 4 + 20, yy * 4 + 10, 200 - (xx + yy) * 2], axis=-1).clip(0, 255).astype(np.uint8)


def _with_noise(array, sigma, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(np.rint(array + rng.normal(0, sigma, array.shape)), 0, 255).astype(np.uint8)


def test_noise_estimate_reads_the_sigma_of_white_noise_and_about_nothing_on_a_clean_image():
    yy, xx = np.mgrid[0:128, 0:128]
    clean = (np.sin(xx / 9.0) * 60 + yy * 0.8 + 60).clip(0, 255).astype(np.uint8)[..., None].repeat(3, -1)
    assert restore.estimate_noise_sigma(uint8_to_tensor(clean)) < 1.0
    for sigma in (5.0, 10.0, 20.0):
        estimate = restore.estimate_noise_sigma(uint8_to_tensor(_with_noise(clean, sigma)))
        assert abs(estimate - sigma) < 0.15 * sigma, (sigma, estimate)
    hole = torch.zeros(1, 1, 128, 128)
    hole[..., 40:90, 40:90] = 1
    noisy = uint8_to_tensor(_with_noise(clean, 10.0))
    noisy[..., 40:90, 40:90] = 0.0  # a flat black hole would read as no noise at all
    assert restore.estimate_noise_sigma(noisy, exclude=hole) > 8.5
    assessed = restore.assess(uint8_to_tensor(clean), jpeg_quality=30)
    assert (assessed.damage, restore.route(assessed)) == ("jpeg", "unet-jpeg")
    assert restore.route(restore.assess(uint8_to_tensor(clean), jpeg_quality=95)) is None
    light = restore.assess(uint8_to_tensor(_with_noise(clean, 6.0)), jpeg_quality=None)
    assert light.damage == "noise" and 0.0 < light.scale < 1.0  # maybe grain: part of the correction
    assert restore.assess(uint8_to_tensor(_with_noise(clean, 6.0)), jpeg_quality=40).scale == 1.0  # runs anyway
    assert restore.assess(uint8_to_tensor(_with_noise(clean, 12.0)), jpeg_quality=None).scale == 1.0


def test_auto_leaves_clean_images_alone_and_routes_by_jpeg_quality_and_noise(tmp_path):
    """--task auto, no -m: a clean PNG or a JPEG of quality 85 or more is left as it is (the output's
    pixels are the input's), a heavier JPEG goes to unet-jpeg, a noisy image to unet-restore; each
    file's line and JSON row say what was found and what ran."""
    clean = _smooth()
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(clean).save(folder / "heavy.jpg", quality=15)
    Image.fromarray(clean).save(folder / "light.jpg", quality=95)
    Image.fromarray(clean).save(folder / "lossless.png")
    Image.fromarray(_with_noise(clean, 15)).save(folder / "noisy.png")
    result = runner.invoke(app, ["restore", str(folder), "-o", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    rows = {Path(r["input"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert {name: r["model"] for name, r in rows.items()} == {
        "heavy.jpg": "unet-jpeg", "light.jpg": "none", "lossless.png": "none", "noisy.png": "unet-restore"}
    assert rows["heavy.jpg"]["found"]["jpeg_quality"] == 15 and rows["heavy.jpg"]["found"]["damage"] == "jpeg"
    assert rows["lossless.png"]["found"]["jpeg_quality"] is None and rows["noisy.png"]["found"]["noise_sigma"] > 10
    assert rows["lossless.png"]["found"]["summary"].startswith("clean: left as is")
    assert np.array_equal(_pixels(tmp_path / "out" / "lossless.png"), _pixels(folder / "lossless.png"))
    plain = runner.invoke(app, ["restore", str(folder / "light.jpg"), str(folder / "noisy.png"), "-o", str(tmp_path / "p")])
    assert plain.exit_code == 0, plain.output
    lines = [line for line in plain.stderr.splitlines() if "->" in line]
    assert "clean: left as is (JPEG q95, noise sigma" in lines[0] and ": unet-restore)" in lines[1], plain.stderr
    named = runner.invoke(app, ["restore", str(folder / "lossless.png"), "-m", "unet-restore", "--json",
                                "-o", str(tmp_path / "n.png")])
    row = json.loads(named.stdout.splitlines()[-1])
    assert row["model"] == "unet-restore" and row["found"] is None  # -m always wins: nothing assessed
    upscaled = runner.invoke(app, [str(folder / "heavy.jpg"), "-x", "2", "-m", "bicubic", "--restore", "--json",
                                   "-o", str(tmp_path / "u.png")])
    assert upscaled.exit_code == 0, upscaled.output
    assert json.loads(upscaled.stdout.splitlines()[-1])["model"] == "unet-jpeg+bicubic"
    clean_up = runner.invoke(app, [str(folder / "lossless.png"), "-x", "2", "-m", "bicubic", "--restore", "--json",
                                   "-o", str(tmp_path / "c.png")])
    assert json.loads(clean_up.stdout.splitlines()[-1])["model"] == "bicubic"


def test_mask_is_filled_by_the_inpainter_and_only_the_mask_changes_on_a_clean_image(tmp_path):
    """--mask with no -m: the routed model for the rest (nothing, on a clean image), then the
    inpainter (restore.INPAINT_MODEL) fills the masked pixels; --task inpaint runs it alone."""
    inpainter = restore.INPAINT_MODEL
    clean = _smooth(64)
    mask_path, mask = _mask_png(tmp_path, size=(64, 64), box=(20, 24, 40, 34))
    holed = clean.copy()
    holed[mask] = 0
    Image.fromarray(holed).save(tmp_path / "holed.png")
    for args, model in (([], inpainter), (["--task", "inpaint"], inpainter)):
        out = tmp_path / f"out{len(args)}.png"
        result = runner.invoke(app, ["restore", str(tmp_path / "holed.png"), "--mask", str(mask_path), *args,
                                     "--json", "-o", str(out)])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout.splitlines()[-1])["model"] == model
        restored = _pixels(out)
        assert np.array_equal(restored[~mask], holed[~mask])
        assert np.abs(restored[mask] - clean[mask].astype(np.int16)).mean() < 12  # a smooth ramp is filled well
    Image.fromarray(holed).save(tmp_path / "holed.jpg", quality=20)
    result = runner.invoke(app, ["restore", str(tmp_path / "holed.jpg"), "--mask", str(mask_path), "--json",
                                 "-o", str(tmp_path / "j.png")])
    assert json.loads(result.stdout.splitlines()[-1])["model"] == f"unet-jpeg+{inpainter}"
    wrong, _ = _mask_png(tmp_path, size=(30, 20), name="small.png")
    result = runner.invoke(app, ["restore", str(tmp_path / "holed.jpg"), "--mask", str(wrong), "-o", str(tmp_path / "w.png")])
    assert result.exit_code == 1 and "same size" in result.stderr and "Traceback" not in result.output


def test_unet_mask_channel_starts_as_the_colour_model_and_takes_the_mask_either_way():
    from upscale_cli.models.unet import build_unet

    settings = dict(scale=1, width=8, levels=2, blocks=1, decoder_blocks=1, bottleneck_blocks=1, width_mult=1.5)
    plain, masked = build_unet(**settings), build_unet(**settings, mask_channel=True)
    assert isinstance(masked.info, Masked) and not isinstance(plain.info, Masked) and masked.info.in_channels == 3
    masked.load_state_dict(plain.state_dict(), strict=False)  # mask_head stays at its zero start
    x, mask = torch.rand(2, 3, 16, 16), (torch.rand(2, 1, 16, 16) > 0.7).float()
    with torch.no_grad():
        assert torch.allclose(masked(x, mask=mask), plain(x))
        torch.nn.init.normal_(masked.mask_head.weight)
        assert torch.allclose(masked(x, mask=mask), masked(torch.cat([x, mask], dim=1)))
        assert not torch.allclose(masked(x, mask=mask), masked(x))


@pytest.mark.parametrize("task", [[], ["--task", "auto"], ["--task", "inpaint"]])
@pytest.mark.parametrize("size", [(64, 64), (37, 21), (1, 30)])
def test_a_mask_channel_model_changes_only_the_masked_pixels(tmp_path, task, size, mask_unet_file):
    """A model that takes the mask was trained inside masks only: whatever it outputs elsewhere
    (here a random-init one, mask head included), the pixels outside the mask stay the input's."""
    w, h = size
    rng = np.random.default_rng(w * h)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "in.png")
    mask = np.zeros((h, w), dtype=bool)
    mask[h // 3: h // 3 + max(1, h // 3), w // 4: w // 4 + max(1, w // 2)] = True
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    result = runner.invoke(app, ["restore", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"),
                                 "-m", mask_unet_file, *task, "-o", str(out)])
    assert result.exit_code == 0, result.output
    restored = _pixels(out)
    assert np.array_equal(restored[~mask], image[~mask])
    assert not np.array_equal(restored[mask], image[mask])  # the mask was filled


def test_the_upscale_command_refuses_a_model_that_needs_a_mask(tmp_path, mask_unet_file):
    """Without a mask a mask-filling model has nothing to fill (and ours was trained inside masks
    only): `upscale` says where it belongs, once, exit 2, and writes nothing."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((12, 9, 3), 90, np.uint8)).save(folder / name)
    for model in ("opencv-inpaint", mask_unet_file):
        result = runner.invoke(app, [str(folder), "-x", "1", "-m", model, "-o", str(tmp_path / "out")])
        assert result.exit_code == 2, result.output
        assert result.stderr.count("upscale restore IMAGE --mask") == 1 and "Traceback" not in result.output
        assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_inpaint_damage_mix_gives_prefilled_colour_and_the_mask_channel():
    from upscale_cli.train import degrade

    clean = torch.rand(6, 3, 32, 32)
    out = degrade.restoration_degrade(clean, torch.Generator().manual_seed(3), "inpaint")
    assert out.shape == (6, 4, 32, 32)
    mask = out[:, 3:]
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    keep = (mask == 0).expand(-1, 3, -1, -1)
    assert torch.allclose(out[:, :3][keep], quantize8(clean)[keep])  # outside the mask: the crop
    texted, text_mask = degrade.overlay_text_with_mask(torch.full((1, 3, 64, 128), 0.5),
                                                       torch.Generator().manual_seed(0), font_scale=1.0)
    changed = (texted != 0.5).any(dim=1, keepdim=True)
    assert bool(text_mask[changed].all()) and text_mask.mean() < 0.5  # the mask covers every drawn pixel


def test_a_clean_file_left_as_is_is_written_as_its_own_bytes(tmp_path):
    """--task auto leaves a good JPEG alone; writing it again at quality 95 would lose ~3 dB."""
    from PIL import Image as PILImage

    yy, xx = np.mgrid[0:64, 0:80]
    smooth = (127 + 80 * np.sin(xx[..., None] / 9 + yy[..., None] / 13 + np.arange(3))).clip(0, 255).astype(np.uint8)
    PILImage.fromarray(smooth).save(tmp_path / "good.jpg", quality=95)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["restore", str(tmp_path / "good.jpg"), "-o", f"{out}/", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["model"] == "none"
    assert (out / "good.jpg").read_bytes() == (tmp_path / "good.jpg").read_bytes()
    again = CliRunner().invoke(app, ["restore", str(tmp_path / "good.jpg"), "-o", str(tmp_path / "q.jpg"), "--quality", "70"])
    assert again.exit_code == 0 and (tmp_path / "q.jpg").read_bytes() != (tmp_path / "good.jpg").read_bytes()
    png = CliRunner().invoke(app, ["restore", str(tmp_path / "good.jpg"), "-o", str(tmp_path / "as.png")])
    assert png.exit_code == 0 and PILImage.open(tmp_path / "as.png").format == "PNG"  # another format: encoded
