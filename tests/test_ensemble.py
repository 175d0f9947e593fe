"""--ensemble (self-ensemble / test-time augmentation): the 8 views, their inverses, the average,
and the guarantees the rest of the tool gives (tiled == untiled, every size, the CLI and benchmark)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from upscale_cli import ensemble
from upscale_cli.cli import app
from upscale_cli.engine import UpscaleConfig, Upscaler
from upscale_cli.loader import save_weights
from upscale_cli.models import build_model

SHAPES = [(1, 1), (1, 9), (9, 1), (2, 3), (5, 8), (16, 16), (17, 6)]
UNET = {"scale": 2, "width": 6, "levels": 2, "blocks": 1, "decoder_blocks": 1, "bottleneck_blocks": 1}


@pytest.fixture(scope="module")
def unet_file(tmp_path_factory) -> Path:
    """A random-init unet x2 with a detail head strong enough that it is far from equivariant."""
    path = tmp_path_factory.mktemp("ensemble") / "random_unet_x2.safetensors"
    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = build_model("unet", **UNET)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.03)
    save_weights(model, path, "unet", UNET)
    return path


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_unview_inverts_view_and_views_are_the_eight_symmetries(shape, channels):
    x = torch.rand(2, channels, *shape)
    views = [ensemble.view(x, k) for k in range(ensemble.VIEWS)]
    for k, v in enumerate(views):
        assert torch.equal(ensemble.unview(v, k), x)
        assert sorted(v.shape[-2:]) == sorted(shape)
    if shape[0] > 1 and shape[1] > 1:  # an asymmetric image has 8 different views
        assert len({tuple(v.flatten().tolist()) for v in views if v.shape == views[0].shape}) + \
               len({tuple(v.flatten().tolist()) for v in views if v.shape != views[0].shape}) == 8


def test_an_equivariant_function_is_unchanged_and_another_is_the_mean_of_its_views():
    x = torch.rand(1, 3, 7, 5)

    def nearest(t, k):
        return t.repeat_interleave(2, -1).repeat_interleave(2, -2)

    assert torch.allclose(ensemble.self_ensemble(nearest, x), nearest(x, 0))
    weight = torch.randn(3, 3, 3, 3)  # an arbitrary kernel: not symmetric

    def conv(t, k):
        return torch.nn.functional.conv2d(t, weight, padding=1)

    manual = sum(ensemble.unview(conv(ensemble.view(x, k), k), k) for k in range(8)) / 8
    out = ensemble.self_ensemble(conv, x)
    assert torch.allclose(out, manual, atol=1e-6)
    assert not torch.allclose(out, conv(x, 0), atol=1e-3)  # it really averaged different outputs
    seen = []
    ensemble.self_ensemble(lambda t, k: seen.append(k) or t, x)
    assert seen == list(range(8))


@pytest.mark.parametrize("size", [(1, 13), (13, 1), (7, 9), (20, 33)])
def test_engine_ensemble_is_the_mean_of_the_model_on_each_view_and_tiling_does_not_change_it(unet_file, size):
    x = 0.3 + 0.4 * torch.rand(1, 3, *size)  # mid-grey: no output reaches the clamp, so mean-then-clamp
    # PyTorch on both sides: this is the ensemble's arithmetic (OpenVINO's numbers are test_runtime's)
    plain = Upscaler(UpscaleConfig(model=str(unet_file), scale=2.0, device="cpu", runtime="torch"), progress=False)
    manual = sum(ensemble.unview(plain.upscale_tensor(ensemble.view(x, k)), k) for k in range(8)) / 8
    assert 0 < manual.min() and manual.max() < 1  # == clamp-then-mean
    ens = Upscaler(UpscaleConfig(model=str(unet_file), scale=2.0, device="cpu", ensemble=True, runtime="torch"),
                   progress=False)
    out = ens.upscale_tensor(x)
    assert out.shape == (1, 3, size[0] * 2, size[1] * 2)
    assert torch.allclose(out, manual, atol=1e-5)
    assert (out - plain.upscale_tensor(x)).abs().max() > 1e-3  # a random net is far from equivariant
    tiled = Upscaler(UpscaleConfig(model=str(unet_file), scale=2.0, device="cpu", ensemble=True, tile=8),
                     progress=False)
    calls = []
    tiled_out = tiled.upscale_tensor(x, on_tile=lambda done, total: calls.append((done, total)))
    assert torch.allclose(tiled_out, out, atol=1e-4)
    assert calls and calls[-1][0] == calls[-1][1]  # progress runs once over all 8 views, to the end
    assert all(a[0] < b[0] for a, b in zip(calls, calls[1:]))


def test_cli_ensemble_writes_a_different_image_and_says_so_in_json(unet_file, tmp_path):
    src = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (11, 14, 3), dtype=np.uint8)).save(src)
    runner = CliRunner()
    plain = runner.invoke(app, [str(src), "-m", str(unet_file), "-x", "2", "-o", str(tmp_path / "plain.png"), "-q"])
    assert plain.exit_code == 0, plain.output
    result = runner.invoke(app, [str(src), "-m", str(unet_file), "-x", "2", "-o", str(tmp_path / "ens.png"),
                                 "--ensemble", "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout.strip().splitlines()[-1])
    assert row["status"] == "ok" and row["ensemble"] is True
    a, b = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in ("plain", "ens"))
    assert a.shape == b.shape == (22, 28, 3) and (a != b).any()


def test_cli_ensemble_on_an_interpolation_says_it_ran_once_and_changes_nothing(tmp_path):
    src = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (9, 10, 3), dtype=np.uint8)).save(src)
    runner = CliRunner()
    assert runner.invoke(app, [str(src), "-m", "bicubic", "-x", "3", "-o", str(tmp_path / "a.png"), "-q"]).exit_code == 0
    result = runner.invoke(app, [str(src), "-m", "bicubic", "-x", "3", "-o", str(tmp_path / "b.png"), "--ensemble",
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["status"] == "ok"
    assert "note: --ensemble: bicubic has no native scale" in result.stderr  # said once, for the run
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), np.asarray(Image.open(tmp_path / "b.png")))


def test_benchmark_ensemble_adds_a_row_per_network_and_none_for_interpolation(unet_file, tmp_path):
    from upscale_cli import benchmark as bm

    hr = tmp_path / "hr"
    hr.mkdir()
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (24, 22, 3), dtype=np.uint8)).save(hr / f"{i}.png")
    config = bm.BenchmarkConfig(datasets=(bm.DatasetSpec("syn", hr),), scales=(2,),
                                models=("bicubic", str(unet_file)), ensemble=True, lpips=False)
    result = bm.run_benchmark(config)
    assert result.ok, result.failures
    names = [r.model for r in result.records]
    assert names.count("bicubic") == 1 and "bicubic+ensemble" not in names
    assert str(unet_file) in names and str(unet_file) + "+ensemble" in names
    by_model = {r.model: r for r in result.records}
    assert by_model[str(unet_file)].psnr != by_model[str(unet_file) + "+ensemble"].psnr
