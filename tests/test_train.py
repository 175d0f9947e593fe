"""`upscale train`: degradations, data, losses, the loop (steps, checkpoint, resume, export),
errors, the CLI and a two-process gloo DDP run. Tiny synthetic images and a tiny U-Net."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from upscale_cli.cli import app
from upscale_cli.errors import DatasetError, TrainingError, UsageError
from upscale_cli.loader import load_model
from upscale_cli.metrics import quantize8
from upscale_cli.train import TrainConfig, export, train
from upscale_cli.train import degrade, loop, recipes, validation
from upscale_cli.train.data import load_image_cache, random_crops
from upscale_cli.train.checkpoint import load_checkpoint
from upscale_cli.train.schedule import crop_at, lr_at
from upscale_cli.metrics import psnr_y_tensor as psnr_y
from upscale_cli.train.losses import PerceptualLoss, build_vgg16_features, gram_matrix, pixel_loss
from upscale_cli.models.descriptor import Masked

TINY = {"width": 8, "levels": 1, "blocks": 1, "decoder_blocks": 1, "bottleneck_blocks": 1}


def _synthetic_image(seed: int, size: int = 40) -> np.ndarray:
    """Smooth gradients, a few hard-edged rectangles and a little noise: something to learn."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = np.stack([xx, yy, 0.5 * (xx + yy)], axis=-1) * rng.uniform(0.3, 1.0, 3)
    for _ in range(3):
        top, left = rng.integers(0, size - 8, 2)
        image[top:top + rng.integers(4, 12), left:left + rng.integers(4, 12)] = rng.uniform(0, 1, 3)
    image += rng.normal(0, 0.02, image.shape)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hr")
    for i in range(6):
        Image.fromarray(_synthetic_image(i)).save(root / f"img{i}.png")
    return root


def _config(folder: Path, out: Path, **changes) -> TrainConfig:
    base = TrainConfig(data=(str(folder),), val=(str(folder),), out=str(out), scale=2, settings=TINY, steps=6,
                       batch=2, crop=8, lr=3e-3, every=3, threads=1, seed=3)
    return replace(base, **changes)


# ---------------------------------------------------------------- degradations
def test_degrade_shapes_ranges_and_determinism():
    hr = torch.rand(2, 3, 24, 24)
    assert degrade.bicubic_degrade(hr, 3).shape == (2, 3, 8, 8)
    for method in degrade.DOWNSCALE_METHODS:
        assert degrade.downscale(hr, 2, method).shape == (2, 3, 12, 12)
    assert degrade.gaussian_blur(hr, 1.2).shape == hr.shape
    outs = []
    for _ in range(2):
        gen = torch.Generator().manual_seed(7)
        outs.append(degrade.random_degrade(hr, 2, gen))
    assert outs[0].shape == (2, 3, 12, 12)
    assert torch.equal(outs[0], outs[1])
    assert outs[0].min() >= 0 and outs[0].max() <= 1
    assert torch.equal(outs[0], quantize8(outs[0]))  # 8-bit levels, like the protocol's LR


def test_noise_jpeg_holes_text():
    x = torch.full((1, 3, 32, 32), 0.5)
    gen = torch.Generator().manual_seed(0)
    noisy = degrade.gaussian_noise(x, 0.1, gen)
    assert 0.05 < float((noisy - x).std()) < 0.15
    assert torch.allclose(degrade.jpeg(x, 90), x, atol=2 / 255)
    damaged, mask = degrade.random_holes(x, gen)
    assert mask.shape == (1, 1, 32, 32) and mask.sum() > 0
    assert torch.equal(damaged * (1 - mask), x * (1 - mask))
    texted = degrade.overlay_text(x, gen, text="HELLO")
    assert texted.shape == x.shape and (texted != x).any()



@pytest.mark.parametrize("mix", degrade.DAMAGE_MIXES)
def test_restoration_damage_is_per_crop_and_seeded(mix):
    """--scale 1 --degrade: every crop draws its own damage, the same for the same seed, 8-bit levels."""
    x = torch.rand(6, 3, 40, 40, generator=torch.Generator().manual_seed(3))
    first = validation.make_lr(x, 1, True, torch.Generator().manual_seed(1), mix)
    again = validation.make_lr(x, 1, True, torch.Generator().manual_seed(1), mix)
    assert torch.equal(first, again)
    keep = torch.ones_like(x[:, :1])
    if mix == "inpaint":  # the mask of the pixels to fill rides along as a 4th channel, 0 or 1
        first, mask = first[:, :3], first[:, 3:]
        assert mask.shape == (6, 1, 40, 40) and set(mask.unique().tolist()) <= {0.0, 1.0}
        keep = 1 - mask  # the holes hold the float pre-fill, as restore.prefill gives at inference
    assert first.shape == x.shape
    assert torch.equal(first * keep, quantize8(first) * keep)
    changes = [float((first[i] - x[i]).abs().mean()) for i in range(len(x))]
    assert len({round(c, 6) for c in changes}) > 1  # crops are damaged differently
    assert max(changes) > 2 / 255  # and really damaged


def test_restoration_damage_mix_is_checked(tmp_path, folder):
    with pytest.raises(UsageError, match="damage_mix"):
        loop.train(TrainConfig(data=(str(folder),), out=str(tmp_path / "run"), scale=1, degrade=True,
                                    damage_mix="everything", steps=1))


def test_random_blob_mask_covers_about_the_asked_fraction():
    mask = degrade.random_blob_mask(64, 80, 0.1, torch.Generator().manual_seed(0), blob_sigma=3.0)
    assert mask.shape == (1, 1, 64, 80)
    assert 0.08 < float(mask.mean()) < 0.12


def test_bicubic_degrade_matches_pillow():
    image = _synthetic_image(9, 48)
    lr_pil = np.asarray(Image.fromarray(image).resize((24, 24), Image.BICUBIC))
    lr = degrade.bicubic_degrade(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255, 2)
    ours = (lr[0].permute(1, 2, 0) * 255).round().numpy()
    assert np.abs(ours - lr_pil).max() <= 1


# ---------------------------------------------------------------- data and losses
def test_cache_skips_unreadable_and_small_images(tmp_path, folder):
    for p in folder.iterdir():
        (tmp_path / p.name).write_bytes(p.read_bytes())
    (tmp_path / "broken.png").write_bytes(b"not an image")
    Image.fromarray(_synthetic_image(1, 10)).save(tmp_path / "small.png")
    skipped = []
    cache = load_image_cache([tmp_path], min_size=16, on_skip=lambda p, why: skipped.append(p.name))
    assert len(cache.images) == 6 and sorted(skipped) == ["broken.png", "small.png"]
    crops = random_crops(cache, 4, 16, torch.Generator().manual_seed(0))
    assert crops.shape == (4, 3, 16, 16) and crops.dtype == torch.float32 and crops.max() <= 1
    # handed to a device as uint8 (the GPU path): the same draws, the same values
    for device in ("cpu", torch.device("cpu")):
        assert torch.equal(random_crops(cache, 4, 16, torch.Generator().manual_seed(0), device=device), crops)


def test_losses_and_psnr():
    a, b = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    assert pixel_loss(a, a) == 0 and pixel_loss(a, b, "mse") > 0
    assert psnr_y(a, a, border=2) == float("inf")
    assert 0 < psnr_y(a, b, border=2) < 20
    vgg = build_vgg16_features(upto=8).eval().requires_grad_(False)
    loss = PerceptualLoss(vgg, feature_weight=1.0, gram_weight=1.0)
    assert float(loss(a, a)) == 0.0 and float(loss(a, b)) > 0
    assert gram_matrix(torch.rand(2, 4, 5, 5)).shape == (2, 4, 4)


@pytest.mark.parametrize("kind", ["l1", "mse"])
def test_pixel_loss_with_a_mask_sees_only_the_marked_pixels(kind):
    hr = torch.rand(3, 3, 9, 7)
    mask = (torch.rand(3, 1, 9, 7) < 0.3).float()
    mask[1] = 0  # a crop with nothing marked (the inpaint mix's undamaged share)
    wrong_outside = hr + (1 - mask) * torch.randn_like(hr)
    assert float(pixel_loss(wrong_outside, hr, kind, mask)) == 0.0
    off = hr + 0.1 * mask  # every marked pixel off by 0.1 in each channel
    expected = 0.1 if kind == "l1" else 0.01
    assert float(pixel_loss(off, hr, kind, mask)) == pytest.approx(expected, rel=1e-4)
    sr = off.clone().requires_grad_(True)
    pixel_loss(sr, hr, kind, mask).backward()
    assert torch.equal(sr.grad != 0, mask.expand_as(sr).bool())  # no gradient outside the mask
    none = pixel_loss(sr, hr, kind, torch.zeros_like(mask))
    assert float(none.detach()) == 0.0 and none.requires_grad
    with pytest.raises(TrainingError):
        pixel_loss(sr, hr, "huber", mask)


def test_masked_psnr_scores_inside_the_mask():
    hr = torch.rand(1, 3, 10, 10)
    mask = torch.zeros(1, 1, 10, 10)
    mask[..., 2:5, 3:7] = 1
    out = hr + (1 - mask) * 0.5 + mask * 0.1  # far off outside, 0.1 off inside
    assert validation.masked_psnr(out, hr, mask) == pytest.approx(20.0, abs=1e-4)
    assert validation.masked_psnr(hr + (1 - mask), hr, mask) == float("inf")


def test_one_cycle_schedule_and_progressive_crops(tmp_path):
    c = TrainConfig(data=("x",), out="y", lr=1e-3, warmup=0.1, crop=48, progressive=True)
    assert lr_at(0.0, c) == pytest.approx(1e-3 / 25)
    assert lr_at(0.1, c) == pytest.approx(1e-3)
    assert lr_at(1.0, c) == pytest.approx(1e-6)
    assert crop_at(0.0, c, 4) == 24 and crop_at(1.0, c, 4) == 48


# ---------------------------------------------------------------- the loop
def test_a_few_steps_reduce_the_loss(folder, tmp_path):
    losses = []
    train(_config(folder, tmp_path / "run", steps=60, every=60, batch=4, crop=12, lr=5e-3, val=()),
          on_event=lambda e: losses.append(e.loss) if e.kind == "step" else None)
    assert len(losses) == 6
    assert losses[-1] < losses[0]


def test_checkpoint_resume_continues_with_the_same_state(folder, tmp_path):
    straight = train(_config(folder, tmp_path / "straight"))

    class Stop(Exception):
        pass

    def stop_at_first_checkpoint(event):
        if event.kind == "checkpoint":
            raise Stop

    with pytest.raises(Stop):
        train(_config(folder, tmp_path / "split"), on_event=stop_at_first_checkpoint)
    assert load_checkpoint(tmp_path / "split")["step"] == 3
    steps = []
    train(_config(folder, tmp_path / "split"), resume=True,
          on_event=lambda e: steps.append(e.step) if e.kind == "checkpoint" else None)
    assert steps == [6]
    a, b = load_checkpoint(straight), load_checkpoint(tmp_path / "split")
    assert a["step"] == b["step"] == 6
    for key in ("model", "ema"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    assert torch.equal(a["data_rng"][0], b["data_rng"][0])
    assert (tmp_path / "split" / "samples" / "step_0000006.png").is_file()


def test_export_then_load_model_gives_the_same_output(folder, tmp_path):
    run = train(_config(folder, tmp_path / "run"))
    path = export(run, tmp_path / "m.safetensors")
    model = load_model(str(path))
    reference = TrainConfig.from_dict(load_checkpoint(run)["config"])
    from upscale_cli.models import build_model

    ema = build_model("unet", **reference.model_settings).eval()
    ema.load_state_dict(load_checkpoint(run)["ema"])
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        assert torch.equal(model(x), ema(x))
    assert model.info.scale == 2
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # readable like any file the user writes


def test_init_from_another_scale_copies_the_body(folder, tmp_path):
    run = train(_config(folder, tmp_path / "x2", val=()))
    messages = []
    train(_config(folder, tmp_path / "x4", scale=4, crop=4, steps=1, val=(), init=str(run)),
          on_event=lambda e: messages.append(e.message))
    assert any("initialised" in m for m in messages)


def test_errors(folder, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError):
        train(_config(empty, tmp_path / "a"))
    with pytest.raises(DatasetError):  # 40-pixel images, 80-pixel HR crops
        train(_config(folder, tmp_path / "b", crop=40, val=()))
    with pytest.raises(UsageError, match="scale = 5: cannot train unet at x5"):
        train(_config(folder, tmp_path / "c", scale=5))
    with pytest.raises(TrainingError):
        train(_config(folder, tmp_path / "d"), resume=True)
    with pytest.raises(UsageError):
        train(_config(folder, tmp_path / "e", crop=9, settings={**TINY, "levels": 2}))
    run = train(_config(folder, tmp_path / "f", steps=1, val=()))
    with pytest.raises(TrainingError):
        train(_config(folder, run))  # would overwrite a run


def test_perceptual_loss_without_weights_warns_and_trains(folder, tmp_path):
    warnings = []
    train(_config(folder, tmp_path / "run", steps=1, val=(), feature_weight=0.1),
          on_event=lambda e: warnings.append(e.message) if e.kind == "warning" else None)
    assert any("VGG" in w for w in warnings)


# ---------------------------------------------------------------- the CLI
def test_cli_train_resume_export_and_errors(folder, tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    common = ["--set", "width=8", "--set", "levels=1", "--set", "blocks=1", "--threads", "1"]
    result = runner.invoke(app, ["train", str(folder), "--scale", "2", "--out", str(run), "--steps", "4", "--every", "2",
                                 "--batch", "2", "--crop", "8", "--plain", *common])
    assert result.exit_code == 0, result.output
    assert "checkpoint" in result.output
    state = (run / "checkpoint.pt").read_bytes()
    for changes in (["--lr", "0.5"], ["--loss", "mse"], ["--set", "width=16"], ["--spade"], ["--batch", "3"],
                    ["--val", str(folder)]):  # a resumed run keeps its recipe: said, not silently ignored
        result = runner.invoke(app, ["train", "--resume", str(run), *changes, "--steps", "6", "--plain"])
        assert result.exit_code == 2 and changes[0] in result.stderr and "--init" in result.stderr, result.output
        assert (run / "checkpoint.pt").read_bytes() == state
    result = runner.invoke(app, ["train", "--resume", str(run), "--steps", "6", "--plain"])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(run)["step"] == 6
    out = tmp_path / "m.safetensors"
    result = runner.invoke(app, ["train", "export", str(run), "-o", str(out), "--half"])
    assert result.exit_code == 0, result.output
    assert load_model(str(out)).info.scale == 2

    result = runner.invoke(app, ["train", str(tmp_path / "nothing-here"), "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "error:" in result.output
    result = runner.invoke(app, ["train", str(folder), "--scale", "7", "--out", str(tmp_path / "y"), *common])
    assert result.exit_code == 2 and "x7" in result.output
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "checkpoint" in result.output


def test_cli_export_writes_a_weights_file_again_in_float16(folder, tmp_path):
    """What a GPU run sends back (float32 .safetensors) becomes a float16 file that ships: the same
    model to float16 rounding; the input is never replaced; files that are not ours are refused."""
    from safetensors.torch import load_file, save_file

    runner = CliRunner()
    run = train(_config(folder, tmp_path / "run"))
    fp32 = export(run, tmp_path / "fp32.safetensors")
    before = fp32.read_bytes()
    half = tmp_path / "half.safetensors"
    result = runner.invoke(app, ["train", "export", str(fp32), "-o", str(half), "--half"])
    assert result.exit_code == 0, result.output
    assert fp32.read_bytes() == before
    assert all(t.dtype == torch.float16 for t in load_file(str(half)).values())
    a, b = load_model(str(fp32)), load_model(str(half))
    m = a.info.size.multiple_of
    x = torch.rand(1, 3, 3 * m, 2 * m)
    with torch.no_grad():
        assert torch.allclose(a(x), b(x), atol=2e-3) and b(x).shape == (1, 3, 6 * m, 4 * m)
    again = tmp_path / "again.safetensors"  # float32 again: the same tensors
    assert runner.invoke(app, ["train", "export", str(fp32), "-o", str(again)]).exit_code == 0
    assert all(torch.equal(t, load_file(str(fp32))[k]) for k, t in load_file(str(again)).items())
    for args in (["-o", str(fp32), "--half"], ["-o", str(tmp_path / "x.safetensors"), "--no-ema"]):
        result = runner.invoke(app, ["train", "export", str(fp32), *args])
        assert result.exit_code == 2 and "error:" in result.stderr
        assert fp32.read_bytes() == before
    foreign = tmp_path / "foreign.safetensors"  # no metadata: not ours to export
    save_file({"w": torch.zeros(2)}, str(foreign))
    crafted = tmp_path / "crafted.safetensors"  # ours in name only: settings that build nothing
    save_file(load_file(str(fp32)), str(crafted), metadata={"arch": "unet", "settings": '{"width": -3}'})
    for bad in (foreign, crafted, tmp_path / "missing.safetensors"):
        result = runner.invoke(app, ["train", "export", str(bad), "-o", str(tmp_path / "out.safetensors")])
        assert result.exit_code == 1 and "error:" in result.stderr and "Traceback" not in result.output, result.output
        assert not (tmp_path / "out.safetensors").exists()


def test_cli_reads_a_recipe(folder, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'scale = 2\nsteps = 2\nbatch = 2\ncrop = 8\nthreads = 1\nout = "{tmp_path / "run"}"\n'
                      f'data = ["{folder}"]\n[settings]\nwidth = 4\nlevels = 1\nblocks = 0\n')
    result = CliRunner().invoke(app, ["train", "--config", str(recipe), "--plain"])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(tmp_path / "run")["config"]["settings"]["width"] == 4


# ---------------------------------------------------------------- two processes
# Loaded by every process of the run (PYTHONPATH); at exit each rank notes the threads it still has.
THREAD_OBSERVER = """
import atexit, os
def _note():
    rank, folder = os.environ.get("RANK"), os.environ.get("UPSCALE_TEST_THREADS_DIR")
    if rank is None or not folder or not os.path.isdir("/proc/self/task"):
        return
    names = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as comm:
                names.append(comm.read().strip())
        except OSError:
            pass
    with open(os.path.join(folder, f"rank{rank}.txt"), "w") as out:
        out.write("\\n".join(sorted(names)))
atexit.register(_note)
"""


@pytest.mark.slow
def test_two_process_gloo_ddp_run(folder, tmp_path):
    run = tmp_path / "ddp"
    observer, threads = tmp_path / "observer", tmp_path / "threads"
    observer.mkdir()
    threads.mkdir()
    (observer / "sitecustomize.py").write_text(THREAD_OBSERVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "UPSCALE_TEST_THREADS_DIR": str(threads),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(observer), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "upscale_cli", "train", str(folder), "--scale", "2", "--out", str(run), "--steps", "4",
           "--every", "2", "--batch", "2", "--crop", "8", "--threads", "1", "--plain",
           "--set", "width=4", "--set", "levels=1", "--set", "blocks=0"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    said = proc.stdout + proc.stderr
    assert said.count("2 process(es)") == 1 and said.count("trained:") == 1, said  # one report, not one per rank
    ckpt = load_checkpoint(run)
    assert ckpt["step"] == 4
    assert len(ckpt["data_rng"]) == 2 and not torch.equal(ckpt["data_rng"][0], ckpt["data_rng"][1])
    # The group is really freed: no gloo thread is left running into interpreter teardown, where
    # one aborted a rank now and then ("terminate called without an active exception"). It used to
    # be kept alive by torch.distributed.nn.functional's `group=group.WORLD` defaults (see
    # distributed.import_group_capturing_modules).
    if sys.platform.startswith("linux"):
        for rank in (0, 1):
            left = (threads / f"rank{rank}.txt").read_text().split()
            assert not [name for name in left if "gloo" in name], f"rank {rank} exits with threads {left}"


def test_restoration_with_random_degradations(folder, tmp_path):
    scores = []
    train(_config(folder, tmp_path / "restore", scale=1, degrade=True, steps=2, every=2),
          on_event=lambda e: scores.append(e.psnr) if e.kind == "val" else None)
    assert len(scores) == 1 and 5 < scores[0] < 100  # a finite PSNR against damaged inputs


def test_inpainting_run_trains_and_validates_inside_the_mask(folder, tmp_path):
    """--loss-region mask: a mask-channel model on the inpaint mix, validation PSNR inside the masks
    (finite, the undamaged validation images skipped), and the exported model fills a hole."""
    scores = []
    config = _config(folder, tmp_path / "inpaint", scale=1, degrade=True, damage_mix="inpaint", loss="mse",
                     loss_region="mask", settings={**TINY, "mask_channel": True}, crop=24, steps=4, every=2)
    run = train(config, on_event=lambda e: scores.append(e.psnr) if e.kind == "val" else None)
    assert len(scores) == 2 and all(5 < s < 100 for s in scores)
    model = load_model(str(export(run, tmp_path / "inpaint.safetensors")))
    assert isinstance(model.info, Masked)
    x, mask = torch.rand(1, 3, 16, 16), torch.zeros(1, 1, 16, 16)
    mask[..., 4:9, 5:11] = 1
    assert model(x, mask=mask).shape == x.shape


@pytest.mark.parametrize("changes", [{"loss_region": "outside"}, {"loss_region": "mask"},
                                     {"loss_region": "mask", "scale": 1, "degrade": True},
                                     {"loss_region": "mask", "scale": 2, "degrade": True, "damage_mix": "inpaint"}])
def test_loss_region_is_checked(folder, tmp_path, changes):
    with pytest.raises(UsageError, match="loss.region"):
        train(_config(folder, tmp_path / "run", steps=1, **changes))


def test_stacked_upsampler_initialises_every_stage_from_x2(folder, tmp_path):
    x2 = train(_config(folder, tmp_path / "up2", arch="upsampler", settings={"width": 4, "depth": 1}, val=()))
    x4 = train(_config(folder, tmp_path / "up4", arch="upsampler", scale=4, crop=4, steps=1, val=(), ema=0.0,
                       settings={"width": 4, "depth": 1}, init=str(x2), lr=1e-12))
    stage0 = load_checkpoint(x2)["ema"]
    stacked = load_checkpoint(x4)["model"]
    for name, value in stage0.items():
        if name.endswith(".weight") and "bn" not in name and value.dim() == 4:
            second = name.replace("stages.0.", "stages.1.")
            assert torch.allclose(stacked[second], value, atol=1e-6), second


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_mixed_precision_run_on_cuda(folder, tmp_path):
    run = train(_config(folder, tmp_path / "cuda", device="cuda", amp=True))
    assert load_checkpoint(run)["step"] == 6


@pytest.mark.parametrize("bf16_gpu", [True, False])
@pytest.mark.parametrize("amp", [True, False])
def test_cuda_mixed_precision_is_bfloat16_where_the_gpu_has_it(folder, tmp_path, monkeypatch, bf16_gpu, amp):
    """On CUDA --amp means bfloat16 on a GPU with it (no loss scaler), float16 (with the scaler) on
    an older one, float32 with --no-amp; --cpu-bf16 never changes what a GPU does."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_gpu)
    for cpu_bf16 in (False, True):
        dtype, note = loop.mixed_precision(_config(folder, tmp_path, amp=amp, cpu_bf16=cpu_bf16), torch.device("cuda"))
        assert note == ""
        assert dtype == ((torch.bfloat16 if bf16_gpu else torch.float16) if amp else None)


@pytest.mark.parametrize("native", [True, False])
def test_cpu_bf16_trains_in_bfloat16_only_where_the_cpu_has_it(folder, tmp_path, monkeypatch, native):
    """--cpu-bf16 runs the forward pass under bfloat16 autocast on a CPU with native bf16; elsewhere it
    says so and trains in float32. The weights, optimiser and checkpoint stay float32 either way."""
    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: native)
    seen, warnings = [], []
    real_pixel_loss = recipes.pixel_loss

    def spy(sr, hr, kind, mask=None):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu"))
        return real_pixel_loss(sr, hr, kind, mask)

    monkeypatch.setattr(recipes, "pixel_loss", spy)
    run = train(_config(folder, tmp_path / "run", cpu_bf16=True),
                on_event=lambda e: warnings.append(e.message) if e.kind == "warning" else None)
    assert seen == [torch.bfloat16 if native else False] * 6
    assert bool(warnings) is not native and all("--cpu-bf16" in w for w in warnings)
    state = load_checkpoint(run)
    assert state["step"] == 6 and state["val_psnr"] > 0
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in state["model"].values())
    assert loop.mixed_precision(_config(folder, tmp_path), torch.device("cpu")) == (None, "")  # off by default


def test_resume_can_switch_cpu_bf16(folder, tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    common = ["--set", "width=8", "--set", "levels=1", "--set", "blocks=1", "--threads", "1", "--plain"]
    result = runner.invoke(app, ["train", str(folder), "--scale", "2", "--out", str(run), "--steps", "2", "--every",
                                 "2", "--batch", "2", "--crop", "8", *common])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["train", "--resume", str(run), "--steps", "4", "--cpu-bf16", "--plain"])
    assert result.exit_code == 0, result.output
    state = load_checkpoint(run)
    assert state["step"] == 4 and state["config"]["cpu_bf16"] is True


@pytest.mark.parametrize("bad_steps", [1, loop.MAX_NONFINITE_STEPS])
def test_non_finite_steps_are_skipped_then_the_run_stops(folder, tmp_path, monkeypatch, bad_steps):
    """A step whose gradients are not finite (a bfloat16 overflow, a bad image) leaves the weights, the
    optimiser and the EMA as they were; that many in a row stops the run with one clear error."""
    calls = {"n": 0}
    real_pixel_loss = recipes.pixel_loss

    def poisoned(sr, hr, kind, mask=None):
        calls["n"] += 1
        loss = real_pixel_loss(sr, hr, kind, mask)
        return loss * float("nan") if 2 <= calls["n"] < 2 + bad_steps else loss

    snapshots = []
    monkeypatch.setattr(recipes, "pixel_loss", poisoned)
    config = _config(folder, tmp_path / "run", steps=30, every=1, val=())
    if bad_steps < loop.MAX_NONFINITE_STEPS:
        train(config, on_event=lambda e: snapshots.append(load_checkpoint(tmp_path / "run"))
              if e.kind == "checkpoint" else None)
        first, second = snapshots[0], snapshots[1]  # step 1 trained, step 2 was the bad one
        for key in ("model", "ema"):
            assert all(torch.equal(first[key][n], second[key][n]) for n in first[key]), key
        assert torch.equal(first["optimizer"]["state"][0]["exp_avg"], second["optimizer"]["state"][0]["exp_avg"])
        final = load_checkpoint(tmp_path / "run")
        assert final["step"] == 30 and all(torch.isfinite(t).all() for t in final["model"].values())
        assert not torch.equal(final["model"]["head.weight"], first["model"]["head.weight"])  # trained on after it
    else:
        with pytest.raises(TrainingError, match="not finite for 20 steps"):
            train(config)
        assert all(torch.isfinite(t).all() for t in load_checkpoint(tmp_path / "run")["model"].values())


def test_rich_progress_printer_draws_every_event():
    from upscale_cli.cli.train import _printer
    from upscale_cli.train import TrainEvent

    show, close = _printer(plain=False)
    try:
        for event in (TrainEvent("start", message="hello"), TrainEvent("val", psnr=30.0, message="bicubic baseline"),
                      TrainEvent("step", step=10, steps=100, progress=0.1, loss=0.02, lr=1e-3, it_s=2.0, eta_s=45.0),
                      TrainEvent("warning", message="careful"), TrainEvent("checkpoint", step=10, path="x"),
                      TrainEvent("done", step=100, progress=1.0)):
            show(event)
    finally:
        close()
