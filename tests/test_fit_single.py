"""fit-single: coordinates, fitting, the consistency term, rendering, save/load and the CLI (tiny images)."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from upscale_cli.errors import ImageTooLargeError, UsageError, WeightsError
from upscale_cli.fit_single import consistency, fitting, network, saved, sizes
from upscale_cli.fit_single.network import axis_centres, grid_coordinates
from upscale_cli.models import build_model
from upscale_cli.resize import resize
from upscale_cli.models.descriptor import Fitting

TINY = dict(hidden=32, depth=2, features=32)  # a network small enough for tests


def gradient(channels: int = 3, size: int = 16) -> torch.Tensor:
    ramp = torch.linspace(0.1, 0.9, size)
    planes = [ramp[None, :].expand(size, size), ramp[:, None].expand(size, size), 1.0 - ramp[None, :].expand(size, size)]
    return torch.stack(planes[:channels])[None].contiguous()  # (1, C, H, W)


def test_input_grid_sits_inside_output_grid():
    # x3: input pixel i sits exactly on output pixel 3 i + 1; both grids span the same square
    small, big = axis_centres(16), axis_centres(48)
    assert torch.allclose(small, big[1::3], atol=1e-6)
    assert math.isclose(float(small[0]), -1 + 1 / 16, abs_tol=1e-7)
    # x4 (even): each input centre is the mean of its 4 output centres
    assert torch.allclose(axis_centres(16), axis_centres(64).reshape(16, 4).mean(dim=1), atol=1e-6)
    # non-square: the longer side spans [-1, 1], the shorter keeps the aspect ratio
    coords = grid_coordinates(8, 16, network.image_extent(8, 16))
    assert float(coords[:, 0].max()) == pytest.approx(1 - 1 / 16)
    assert float(coords[:, 1].max()) == pytest.approx(0.5 - 1 / 16)


def test_same_seed_same_fit_and_each_encoding_runs():
    x = gradient()
    for encoding in ("fourier", "siren", "none"):
        config = fitting.FitConfig.for_encoding(encoding, steps=5, **TINY)
        a = network.render(fitting.fit(x, config=config).mlp, 16, 16)
        b = network.render(fitting.fit(x, config=config).mlp, 16, 16)
        assert torch.equal(a, b) and a.shape == (1, 3, 16, 16) and torch.isfinite(a).all()
    other = network.render(fitting.fit(x, config=fitting.FitConfig(steps=5, seed=1, **TINY)).mlp, 16, 16)
    assert not torch.equal(other, a)


def test_fit_reaches_good_psnr_on_gradient():
    result = fitting.fit(gradient(), config=fitting.FitConfig(steps=150, **TINY))
    assert result.stats.psnr > 30
    seen = []
    early = fitting.fit(gradient(), config=fitting.FitConfig(steps=150, target_psnr=25, **TINY),
                   on_step=lambda step, steps, psnr: seen.append(psnr))
    assert early.stats.stopped_early and early.stats.steps < 150 and seen[-1] >= 25


def smooth_image(size: int = 12) -> torch.Tensor:
    noise = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    return resize(noise, (size, size), "bicubic")  # (1, 3, size, size), detail at a few pixels


def test_consistency_window_matches_resize_and_makes_downscale_match_input():
    x = smooth_image()
    config = fitting.FitConfig(steps=200, **TINY)
    result = fitting.fit(x, config=config, target_size=(36, 36))
    out = network.render(result.mlp, 36, 36).clamp(0, 1)
    with_term = fitting.consistency_psnr(out, x)
    plain = fitting.fit(x, config=fitting.FitConfig(steps=200, consistency=False, **TINY))
    without_term = fitting.consistency_psnr(network.render(plain.mlp, 36, 36).clamp(0, 1), x)
    assert with_term > without_term + 1 and with_term > 25


def test_consistency_term_is_exact_resize():
    x = torch.rand(1, 3, 10, 13)
    mlp = fitting.build_mlp(3, 10, 13, fitting.FitConfig(**TINY))
    term = consistency.ConsistencyTerm(x, (40, 52), torch.Generator().manual_seed(0))
    reference = resize(network.render(mlp, 40, 52), (10, 13), "bicubic")
    expected_mse = float(torch.mean((reference - x) ** 2))
    term.window = (10, 13)  # the whole image: must equal resize() of the full render
    with torch.no_grad():
        assert float(term.loss(mlp, mlp.extent)) == pytest.approx(expected_mse, rel=1e-5)


def test_alpha_and_greyscale_channels():
    grey = gradient(1)
    alpha = torch.ones(1, 1, 16, 16) * 0.5
    result = fitting.fit(grey, alpha, config=fitting.FitConfig(steps=5, **TINY), target_size=(32, 32))
    assert result.mlp.channels == 2
    colour, out_alpha = network.render_image(result.mlp, 32, 32, colour_channels=1)
    assert colour.shape == (1, 1, 32, 32) and out_alpha.shape == (1, 1, 32, 32)
    rgb = fitting.fit(gradient(3), alpha, config=fitting.FitConfig(steps=5, **TINY)).mlp
    assert rgb.channels == 4


def test_chunked_render_equals_unchunked():
    mlp = fitting.fit(gradient(), config=fitting.FitConfig(steps=5, **TINY)).mlp
    whole = network.render(mlp, 40, 30, chunk=10**6)
    assert torch.allclose(network.render(mlp, 40, 30, chunk=7), whole, atol=1e-6)


def test_save_load_round_trip_and_corrupt_file(tmp_path):
    config = fitting.FitConfig(steps=5, **TINY)
    mlp = fitting.fit(gradient(), config=config).mlp
    path = tmp_path / "fit.safetensors"
    saved.save_fitted(mlp, path, config, source={"height": 16, "width": 16, "bit_depth": 16})
    loaded, source = saved.load_fitted(path)
    assert torch.equal(network.render(loaded, 24, 24), network.render(mlp, 24, 24))
    assert source["bit_depth"] == 16
    from upscale_cli.loader import load_model  # the same file works as a model for `upscale -m`

    model = load_model(str(path))
    assert torch.allclose(model(torch.zeros(1, 3, 16, 16), size=(24, 24)), network.render(mlp, 24, 24))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:100])
    with pytest.raises(WeightsError):
        saved.load_fitted(bad)


def test_output_size_rules():
    assert sizes.output_size(32, 64, size=128) == (64, 128)
    assert sizes.output_size(32, 64, out_width=16) == (8, 16)
    assert sizes.output_size(32, 64, scale=2) == (64, 128)
    assert sizes.output_size(10, 10) == (40, 40)
    with pytest.raises(UsageError):
        sizes.output_size(10, 10, size=0)


def test_too_large_image_is_refused():
    with pytest.raises(ImageTooLargeError, match="too large to fit"):
        sizes.check_fit_size(2000, 2000)


def test_registry_module_forward():
    model = build_model("coord-mlp", steps=5, **TINY)
    assert isinstance(model.info, Fitting) and not model.info.tileable
    with torch.inference_mode():  # as the engine calls it when it forgets autograd
        out = model(torch.rand(1, 3, 8, 8), size=(16, 20))
    assert out.shape == (1, 3, 16, 20)


@pytest.fixture
def sprite(tmp_path):
    rng = np.random.default_rng(0)
    array = (rng.random((16, 16, 3)) * 255).astype(np.uint8)
    path = tmp_path / "sprite.png"
    Image.fromarray(array).save(path)
    return path


def _cli(*args):
    from upscale_cli.cli import app

    return CliRunner().invoke(app, ["fit-single", *map(str, args)])


def test_cli_fit_render_save_and_from_model(sprite, tmp_path):
    out, model = tmp_path / "out.png", tmp_path / "m.safetensors"
    result = _cli(sprite, "--size", 32, "--steps", 20, "--hidden", 32, "-o", out, "--save-model", model)
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (32, 32)
    again = tmp_path / "again.png"
    result = _cli("--from-model", model, "--size", 48, "-o", again)
    assert result.exit_code == 0, result.output
    assert Image.open(again).size == (48, 48)


def test_cli_errors(sprite, tmp_path):
    result = _cli(sprite, "--size", 0, "--steps", 2)
    assert result.exit_code == 2 and "zero-size" in result.output
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    result = _cli("--from-model", bad, "--size", 32)
    assert result.exit_code != 0 and "bad.safetensors" in result.output


def test_cli_keeps_alpha_and_greyscale(tmp_path):
    ramp = np.tile(np.linspace(0, 255, 16).astype(np.uint8), (16, 1))
    rgba, grey = tmp_path / "rgba.png", tmp_path / "grey.png"
    Image.fromarray(np.dstack([ramp, ramp.T, ramp, 255 - ramp])).save(rgba)
    Image.fromarray(ramp).save(grey)
    for path, mode in ((rgba, "RGBA"), (grey, "L")):
        result = _cli(path, "-x", 2, "--steps", 5, "--hidden", 16)
        assert result.exit_code == 0, result.output
        written = Image.open(path.with_name(f"{path.stem}_fit32x32.png"))
        assert written.mode == mode and written.size == (32, 32)


def sprite_tensor(size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """A hard-edged RGBA sprite: a filled square, a 2-pixel diagonal, transparent background."""
    colour = torch.zeros(1, 3, size, size)
    alpha = torch.zeros(1, 1, size, size)
    q = size // 4
    colour[:, :, q : 3 * q, q : 3 * q] = torch.tensor([0.9, 0.7, 0.2])[None, :, None, None]
    alpha[:, :, q : 3 * q, q : 3 * q] = 1.0
    for i in range(size - 1):
        for j in (i, i + 1):
            colour[0, :, i, j] = torch.tensor([0.2, 0.3, 0.8])
            alpha[0, 0, i, j] = 1.0
    return colour, alpha


def test_sprite_fit_renders_flat_colours_exact_alpha_and_crisp_edges():
    colour, alpha = sprite_tensor()
    rgba = torch.cat([colour, alpha], dim=1)
    result = fitting.fit(colour, alpha, config=fitting.FitConfig(steps=150), target_size=(64, 64))
    assert result.mlp.palette is not None and result.mlp.palette.shape == (3, 4)
    out = network.render(result.mlp, 64, 64)  # (1, 4, 64, 64)
    inputs = {tuple(c) for c in rgba[0].reshape(4, -1).T.tolist()}
    assert {tuple(c) for c in out[0].reshape(4, -1).T.tolist()} <= inputs  # no blends, no ripples
    # the sprite comes back at its own pixels, and its downscale is as close as nearest-neighbour's, within 1.5 dB
    assert float((network.render(result.mlp, 16, 16) == rgba).all(dim=1).float().mean()) > 0.95
    nearest = rgba.repeat_interleave(4, dim=-1).repeat_interleave(4, dim=-2)
    assert fitting.consistency_psnr(out, rgba) > fitting.consistency_psnr(nearest, rgba) - 1.5


def test_palette_is_chosen_by_colour_count_and_hidden_colours_do_not_count():
    colour, alpha = sprite_tensor()
    colour = torch.where(alpha > 0, colour, torch.rand(colour.shape, generator=torch.Generator().manual_seed(0)))
    small = fitting.FitConfig(steps=2, **TINY)
    assert fitting.fit(colour, alpha, config=small).mlp.palette.shape[0] == 3  # junk under alpha 0 is ignored
    assert fitting.fit(colour, alpha, config=fitting.FitConfig(steps=2, palette_colours=0, **TINY)).mlp.palette is None
    assert fitting.fit(gradient(), config=small).mlp.palette is None  # 16 x 16 distinct colours: a photo
    assert fitting.image_palette(gradient(), 256).shape == (256, 3) and fitting.image_palette(gradient(), 255) is None
    with pytest.raises(UsageError):
        fitting.FitConfig(palette_colours=-1)


def test_palette_fit_saves_loads_and_runs_as_a_model(tmp_path):
    colour, alpha = sprite_tensor()
    config = fitting.FitConfig(steps=5, **TINY)
    mlp = fitting.fit(colour, alpha, config=config).mlp
    path = tmp_path / "sprite.safetensors"
    saved.save_fitted(mlp, path, config, source={"height": 16, "width": 16, "bit_depth": 8})
    loaded, _ = saved.load_fitted(path)
    assert torch.equal(loaded.palette, mlp.palette) and torch.equal(network.render(loaded, 40, 40), network.render(mlp, 40, 40))
    from upscale_cli.loader import load_model

    model = load_model(str(path))  # the settings check knows palette_size and palette_gain
    assert model(torch.zeros(1, 3, 16, 16), size=(40, 40)).shape == (1, 4, 40, 40)


def test_cli_sprite_keeps_hard_alpha(tmp_path):
    colour, alpha = sprite_tensor()
    array = (torch.cat([colour, alpha], dim=1)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    path = tmp_path / "sprite.png"
    Image.fromarray(array, "RGBA").save(path)
    result = _cli(path, "-x", 3, "--steps", 20, "--hidden", 32, "-o", tmp_path / "out.png")
    assert result.exit_code == 0, result.output
    written = np.asarray(Image.open(tmp_path / "out.png"))
    assert written.shape == (48, 48, 4) and set(np.unique(written[..., 3])) <= {0, 255}
    assert _cli(path, "--palette-colours", 0, "--steps", 2, "--hidden", 8, "-o", tmp_path / "plain.png").exit_code == 0


# ---- #30 item 6: one output limit with `upscale -m fit-single`, bounded network settings, refused before fitting


@pytest.fixture
def no_fitting(monkeypatch):
    """Fail the test if anything is fitted or rendered: a refusal must come first."""
    def refuse(*args, **kwargs):
        pytest.fail("fitted or rendered before the refusal")
    monkeypatch.setattr(fitting, "fit", refuse)
    monkeypatch.setattr(network, "render_image", refuse)


def _one_line_refusal(result, code: int) -> str:
    """The output of a refused command: one error line, the exit code, no traceback."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not an escaped exception
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[0]


def _file_failure(result) -> str:
    """A file the batch runner failed (a size that depends on the image): its one error line, then
    the batch's count, exit 1, no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.output.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1] == "0 done, 0 skipped, 1 failed", lines
    return lines[0]


BAD_SIZES = [  # (arguments, exit code, words of the message): 1 = that file failed, 2 = a usage error
    (["--size", 100000], 1, "over the limit of 500 MP (--max-output-pixels; 0 = no limit)"),
    (["--width", 100000], 1, "100000 x 100000 = 10,000 MP"),
    (["--height", 30000, "--width", 30000], 1, "--max-output-pixels"),
    (["-x", 10000], 1, "--max-output-pixels"),
    (["--size", 10**30], 2, "pixels a side"),
    (["-x", "inf"], 2, "pixels a side"),
    (["-x", "nan"], 2, "must be positive"),
    (["-x", "1e300"], 2, "pixels a side"),
    (["--size", 0], 2, "must be positive"),
    (["--size", -5], 2, "must be positive"),
    (["--width", 0], 2, "must be positive"),
    (["-x", 0.001], 1, "is empty"),  # of a 16x16 input (not of a 2000x2000 one): that file's failure
    (["--size", 64, "--max-output-pixels", 4000], 1, "64 x 64 = 4,096 pixels, over the limit of 4,000 pixels ("),
    (["--size", 64, "--max-output-pixels", -1], 2, "--max-output-pixels must be 0 (no limit)"),
]


@pytest.mark.parametrize("args,code,words", BAD_SIZES)
def test_output_sizes_over_the_limit_or_impossible_are_refused_before_fitting(sprite, no_fitting, args, code, words):
    result = _cli(sprite, *args)
    line = _one_line_refusal(result, code) if code == 2 else _file_failure(result)
    assert words in line


def test_fit_single_refuses_the_same_outputs_with_the_same_message_as_the_batch_command(sprite, tmp_path, no_fitting):
    from upscale_cli.cli import app
    from upscale_cli.engine import DEFAULT_MAX_OUTPUT_PIXELS

    fit_line = _file_failure(_cli(sprite, "--width", 100000, "-o", tmp_path / "o.png"))
    batch = CliRunner().invoke(app, [str(sprite), "-m", "fit-single", "--width", "100000", "-o", str(tmp_path / "b.png")])
    assert batch.exit_code == 1
    reason = fit_line.removeprefix("error: ")
    assert reason in batch.output and f"{DEFAULT_MAX_OUTPUT_PIXELS / 1e6:,.0f} MP" in reason
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "b.png").exists()


def test_from_model_render_honours_the_output_limit(sprite, tmp_path, monkeypatch):
    config = fitting.FitConfig(steps=2, **TINY)
    model = tmp_path / "m.safetensors"
    saved.save_fitted(fitting.fit(gradient(), config=config).mlp, model, config, source={"height": 16, "width": 16})
    monkeypatch.setattr(network, "render_image", lambda *a, **k: pytest.fail("rendered before the refusal"))
    assert "--max-output-pixels" in _one_line_refusal(_cli("--from-model", model, "--size", 100000), 1)
    assert "--max-output-pixels" in _one_line_refusal(
        _cli("--from-model", model, "--size", 64, "--max-output-pixels", 4000), 1)


def test_no_limit_and_a_raised_limit_let_the_fit_run(sprite, tmp_path):
    for limit in (0, 64 * 64):
        out = tmp_path / f"out{limit}.png"
        result = _cli(sprite, "--size", 64, "--max-output-pixels", limit, "--steps", 2, "--hidden", 8, "-o", out)
        assert result.exit_code == 0, result.output
        assert Image.open(out).size == (64, 64)


BAD_NETWORKS = [  # arguments, words of the message
    (["--hidden", 100000, "--depth", 50], "--hidden must be 1 to 1,024 (MAX_HIDDEN), not 100000"),
    (["--hidden", 0], "--hidden must be 1 to"),
    (["--hidden", -3], "--hidden must be 1 to"),
    (["--hidden", 1025], "not 1025"),
    (["--depth", 0], "--depth must be 1 to 32"),
    (["--depth", 50], "--depth must be 1 to 32 (MAX_DEPTH), not 50"),
    (["--hidden", 1024, "--depth", 32], "over fit-single's limit of 384 MiB (MAX_FIT_BYTES)"),
    (["--hidden", 1024], "over fit-single's limit"),
    (["--hidden", 256, "--depth", 8], "--hidden 256 x --depth 8 would need about"),
    (["--steps", 0], "--steps must be 1 to 1,000,000"),
    (["--steps", 10**9], "(MAX_STEPS)"),
    (["--lr", "nan"], "--lr must be above 0 and at most 10"),
    (["--lr", "inf"], "--lr must be above 0"),
    (["--lr", -1], "--lr must be above 0"),
    (["--lr", 0], "--lr must be above 0"),
    (["--encoding", "fourier", "--freq-scale", "inf"], "--freq-scale must be above 0"),
    (["--seed", 10**20], "--seed must be"),
    (["--palette-colours", -1], "--palette-colours must be 0 to 256"),
    # --encoding bogus: refused by the option's type (Typer's usage error), tests/test_cli_choices.py
]


@pytest.mark.parametrize("args,words", BAD_NETWORKS)
def test_network_settings_out_of_bounds_are_one_line_usage_errors_before_fitting(sprite, no_fitting, args, words):
    assert words in _one_line_refusal(_cli(sprite, *args), 2)


def test_memory_estimate_bounds_every_accepted_network():
    default = fitting.FitConfig()
    assert fitting.fit_memory_bytes(default) < fitting.MAX_FIT_BYTES / 3  # the default is far inside
    for hidden, depth in ((1024, 32), (1024, 1), (256, 8), (512, 2)):
        with pytest.raises(UsageError, match="MAX_FIT_BYTES"):
            fitting.FitConfig(hidden=hidden, depth=depth)
    for hidden, depth in ((256, 2), (512, 1), (64, 9), (1, 32)):  # accepted: within the limit
        assert fitting.fit_memory_bytes(fitting.FitConfig(hidden=hidden, depth=depth)) <= fitting.MAX_FIT_BYTES
    with pytest.raises(UsageError, match="Fourier features"):
        fitting.FitConfig.for_encoding("fourier", features=4096)


def test_render_chunk_keeps_wide_networks_within_its_memory():
    narrow = network.CoordMLP(encoding="siren", hidden=64)
    assert network.render_chunk(narrow) == network.RENDER_CHUNK  # the default network: as before
    wide = network.CoordMLP(encoding="siren", hidden=1024, depth=1)
    chunk = network.render_chunk(wide)
    assert chunk < network.RENDER_CHUNK and chunk * 4 * 3 * 1024 <= network.RENDER_CHUNK_BYTES
    assert torch.allclose(network.render(wide, 70, 300), network.render(wide, 70, 300, chunk=10**6), atol=1e-6)


# ---- #30 item 15: an exact fit says "exact", not "PSNR 120.00 dB"


def test_exact_fit_is_called_exact(tmp_path):
    two = np.zeros((8, 8, 3), np.uint8)
    two[2:6, 2:6] = 255
    path = tmp_path / "two.png"
    Image.fromarray(two).save(path)
    result = _cli(path, "-x", 2, "--steps", 30, "--hidden", 16, "-o", tmp_path / "out.png")
    assert result.exit_code == 0, result.output
    assert "exact at the input's pixels" in result.output and "120.00" not in result.output
    stats = fitting.fit(torch.from_numpy(two).permute(2, 0, 1)[None].float() / 255,
                        config=fitting.FitConfig(steps=30, hidden=16)).stats
    assert math.isinf(stats.psnr) and fitting.describe_psnr(stats.psnr) == "exact"
    assert fitting.describe_psnr(31.416) == "PSNR 31.42 dB"


# ---- the output is never the input, and never stdout (a file command): refused before fitting


@pytest.mark.parametrize("link", ["same path", "symbolic link", "hard link", "stdout"])
def test_output_that_is_the_input_or_stdout_is_refused_before_fitting(tmp_path, sprite, no_fitting, link):
    original = sprite.read_bytes()
    target = {"same path": sprite, "symbolic link": tmp_path / "sym.png", "hard link": tmp_path / "hard.png",
              "stdout": Path("-")}[link]
    if link == "symbolic link":
        target.symlink_to(sprite)
    elif link == "hard link":
        os.link(sprite, target)
    result = _cli(sprite, "--size", 32, "-o", target)
    if link == "stdout":  # a usage error
        assert "stdout" in _one_line_refusal(result, 2)
    else:  # as `upscale` refuses it: that file fails, exit 1 (and --overwrite never replaces an input)
        assert "would overwrite the input" in _file_failure(result)
        assert "would overwrite the input" in _file_failure(_cli(sprite, "--size", 32, "-o", target, "--overwrite"))
    assert sprite.read_bytes() == original
