"""pixelrec (models/pixelrec.py, models/spade.py, train/pixelrec.py, sampling.py): the prior is causal
over pixels and R -> G -> B with no blind spot, shapes, the loss, sampling (greedy equals the
teacher-forced argmax, seeds, temperatures), the training data."""
from __future__ import annotations

import math

import pytest
import torch

from upscale_cli.models import build_model, sampling_arch
from upscale_cli.models.pixelrec import LEVELS, nll_bits, pick_level
from upscale_cli.sampling import SampleConfig, check_input_size, draw_samples, sample_paths
from upscale_cli.errors import UpscaleError, UsageError
from upscale_cli.models.descriptor import Sampling

TINY = {"width": 6, "blocks": 1, "prior_width": 9, "prior_layers": 2}


def tiny_model(seed: int = 0, **settings) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model("pixelrec", **{**TINY, **settings}).eval()
    with torch.no_grad():  # random weights large enough that every dependency shows in the logits
        for p in model.prior.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


def allowed(c: int, i: int, j: int, size: int) -> torch.Tensor:
    """(3, H, W) 1 where sub-pixel (c, i, j) may look: rows above, pixels left, earlier colours."""
    mask = torch.zeros(3, size, size)
    mask[:, :i, :] = 1
    mask[:, i, :j] = 1
    mask[:c, i, j] = 1
    return mask


@pytest.mark.parametrize("kernel", [3, 5])
def test_prior_is_causal_and_has_no_blind_spot(kernel):
    """By gradient, over every position and colour of a 7x7 image: the logits of sub-pixel (c, i, j)
    depend on no later sub-pixel; and colour c's features there (smooth gates, no ReLU to hide a
    dependency) reach the pixel to the left, the one above, the one above-right (the classic
    PixelCNN's blind spot) and this pixel's earlier colours."""
    from upscale_cli.models.pixelrec import colour_groups

    model = tiny_model(prior_layers=3, kernel=kernel)
    size = 7
    y = torch.rand(1, 3, size, size, requires_grad=True)
    logits = model.prior(y)  # (1, 3, 256, H, W)
    features = model.prior.horizontal(y, model.prior.vertical_links(y))  # (1, C, H, W)
    groups = colour_groups(features.shape[1])
    for i in range(size):
        for j in range(size):
            for c in range(3):
                (grad,) = torch.autograd.grad(logits[0, c, :, i, j].sum(), y, retain_graph=True)
                mask = allowed(c, i, j, size)
                assert float((grad[0].abs() * (1 - mask)).sum()) == 0.0, (c, i, j)
                (seen,) = torch.autograd.grad(features[0, groups == c, i, j].sum(), y, retain_graph=True)
                assert float((seen[0].abs() * (1 - mask)).sum()) == 0.0, (c, i, j)
                for ci, ii, jj in ((2, i, j - 1), (2, i - 1, j), (2, i - 1, j + 1), (c - 1, i, j)):
                    if ci >= 0 and 0 <= ii < size and 0 <= jj < size:
                        assert float(seen[0, ci, ii, jj].abs()) > 0, ((c, i, j), (ci, ii, jj))


def test_changing_a_later_subpixel_never_changes_earlier_logits():
    """By perturbation: change sub-pixel k, and the logits of every sub-pixel up to k stay the same."""
    from upscale_cli.models.pixelrec import colour_groups

    model = tiny_model()
    size = 6
    y = torch.rand(1, 3, size, size)
    base = model.prior(y)
    groups = colour_groups(TINY["prior_width"])
    order = [(i, j, c) for i in range(size) for j in range(size) for c in range(3)]
    for position in range(0, len(order), 7):
        i, j, c = order[position]
        changed = y.clone()
        changed[0, c, i, j] = 1.0 - changed[0, c, i, j]
        out = model.prior(changed)
        for ii, jj, cc in order[: position + 1]:
            assert torch.equal(out[0, cc, :, ii, jj], base[0, cc, :, ii, jj]), ((i, j, c), (ii, jj, cc))
        if position + 1 < len(order) and order[position + 1][0] == i:
            # and the next sub-pixel in its row does see it (in its features: no ReLU to hide it)
            ii, jj, cc = order[position + 1]
            before, now = features(model, y), features(model, changed)
            assert not torch.equal(now[0, groups == cc, ii, jj], before[0, groups == cc, ii, jj])


def features(model, y: torch.Tensor) -> torch.Tensor:
    return model.prior.horizontal(y, model.prior.vertical_links(y))


@pytest.mark.parametrize("spade", [False, True])
def test_shapes_loss_and_greedy_sampling_match_teacher_forcing(spade):
    model = tiny_model(spade=spade)
    assert model.info.scale == 4 and isinstance(model.info, Sampling) and model.info.size.maximum == 16
    lr = torch.rand(2, 3, 3, 5)
    hr = torch.rand(2, 3, 12, 20).mul(255).round().div(255)
    fused, cond = model(lr, hr)
    assert fused.shape == cond.shape == (2, 3, LEVELS, 12, 20)
    nll = nll_bits(fused, hr)
    uniform = nll_bits(torch.zeros_like(fused), hr)
    assert math.isclose(float(uniform), 8.0, rel_tol=1e-5)  # 256 equal values: 8 bits
    assert 0 < float(nll.detach()) < 20
    greedy = model.sample(lr, temperature=0.0)  # (2, 3, 12, 20)
    assert greedy.shape == (2, 3, 12, 20)
    fused, _ = model(lr, greedy)
    assert torch.equal(fused.argmax(dim=2).float().div(LEVELS - 1), greedy)  # exact incremental sampling
    assert torch.equal(model(lr), greedy)  # the plain call is the greedy answer


def test_spade_modulates_by_the_guide():
    from upscale_cli.models.spade import Spade

    norm = Spade(4)
    torch.nn.init.normal_(norm.gamma.weight)
    x = torch.randn(2, 4, 6, 6)
    a, b = norm(x, torch.zeros(2, 3, 3, 3)), norm(x, torch.ones(2, 3, 3, 3))
    assert a.shape == x.shape and not torch.allclose(a, b)


def test_training_loss_backpropagates_into_both_networks():
    from upscale_cli.train import pixelrec as recipe

    model = tiny_model().train()
    lr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32).mul(255).round().div(255)
    loss = recipe.loss(model, lr, hr)
    loss.backward()
    assert loss.item() > 0
    assert model.conditioning.out.weight.grad.abs().sum() > 0
    assert model.prior.layers[0].vertical.weight.grad.abs().sum() > 0


def test_pick_level_temperatures():
    logits = torch.tensor([[0.0, 3.0, 1.0]]).repeat(500, 1)
    assert torch.equal(pick_level(logits, 0.0, None), torch.ones(500))
    cold = pick_level(logits, 0.1, torch.Generator().manual_seed(0))
    hot = pick_level(logits, 5.0, torch.Generator().manual_seed(0))
    assert (cold == 1).float().mean() > 0.99
    assert 0.2 < (hot == 1).float().mean() < 0.6


def test_draw_samples_seeds_temperature_and_grey():
    model = tiny_model()
    lr = torch.rand(1, 3, 3, 3)
    rows = []
    a = draw_samples(model, lr, SampleConfig(samples=3, temperature=1.0, seed=5), on_row=lambda d, t: rows.append((d, t)))
    b = draw_samples(model, lr, SampleConfig(samples=3, temperature=1.0, seed=5))
    c = draw_samples(model, lr, SampleConfig(samples=3, temperature=1.0, seed=6))
    assert a.shape == (3, 3, 12, 12) and rows[-1] == (12, 12) and len(rows) == 12
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # the answers of one draw differ
    g = draw_samples(model, lr, SampleConfig(samples=2, temperature=0.0, seed=1))
    assert torch.equal(g[0], g[1])  # greedy: one answer
    grey = draw_samples(model, lr[:, :1], SampleConfig(samples=1, temperature=0.0))
    assert grey.shape == (1, 1, 12, 12)


def test_sampling_limits():
    model = tiny_model()
    with pytest.raises(UpscaleError, match="larger than this model's 16x16 input limit"):
        check_input_size(model, 8, 17)
    check_input_size(model, 16, 16)
    with pytest.raises(UpscaleError, match="input limit"):  # the plain call (engine, benchmark) too
        model(torch.rand(1, 3, 17, 4))
    for bad in ({"samples": 0}, {"samples": 65}, {"temperature": -0.1}, {"temperature": float("nan")}):
        with pytest.raises(UsageError):
            SampleConfig(**bad)
    from pathlib import Path

    assert sample_paths(Path("a/t_x4.png"), 1) == [Path("a/t_x4.png")]
    assert sample_paths(Path("a/t_x4.png"), 2) == [Path("a/t_x4_s1.png"), Path("a/t_x4_s2.png")]
    assert sampling_arch("pixelrec") and not sampling_arch("unet") and not sampling_arch("nope")


def test_training_data_is_32px_8bit_and_deterministic(tmp_path):
    from PIL import Image
    import numpy as np

    from upscale_cli.train import pixelrec as recipe
    from upscale_cli.train.config import TrainConfig

    rng = np.random.default_rng(0)
    for k in range(2):
        Image.fromarray(rng.integers(0, 256, (40 + 10 * k, 50, 3), dtype=np.uint8)).save(tmp_path / f"{k}.png")
    config = TrainConfig(data=(str(tmp_path),), out=str(tmp_path / "run"), arch="pixelrec", batch=4, crop=8,
                         val=(str(tmp_path),))
    source, val = recipe.load_data(config, None)
    assert val.shape == (2 * (1 + recipe.VAL_CROPS) + recipe.VAL_GLYPHS, 3, 32, 32)
    lr, hr = recipe.make_batch(source, config, torch.Generator().manual_seed(1))
    lr2, hr2 = recipe.make_batch(source, config, torch.Generator().manual_seed(1))
    assert lr.shape == (4, 3, 8, 8) and hr.shape == (4, 3, 32, 32)
    assert torch.equal(hr, hr2) and torch.equal(lr, lr2)
    assert torch.allclose(hr * 255, (hr * 255).round(), atol=1e-4)
    glyph = recipe.render_glyphs(torch.Generator().manual_seed(3), recipe.find_fonts())
    assert glyph.shape == (3, 32, 32) and float(glyph.std()) > 0.02  # text on a background, not a flat image
    assert recipe.render_glyphs(torch.Generator().manual_seed(3), ()).shape == (3, 32, 32)  # Pillow's own font
