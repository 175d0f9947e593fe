"""pixel-art: Scale2x/Scale3x on hand-checked cases, alpha and palette, and `upscale -m pixel-art`."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from upscale_cli.models import build_model
from upscale_cli.models.pixel_art import nearest, plan_passes, scale2x, scale3x, upscale_pixel_art
from upscale_cli.models.descriptor import AnySize


def plane(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)[None, None]  # (1, 1, H, W)


def repeat(x: torch.Tensor, k: int) -> torch.Tensor:
    return x.repeat_interleave(k, dim=-2).repeat_interleave(k, dim=-1)


# Worked by hand from the rules (edges repeat the border pixel). Checkerboard pixel (0, 0): the
# neighbourhood is A B C / D E F / G H I = 0 0 1 / 0 0 1 / 1 1 0; B != H and D != F, so
# E0 = D (D == B) = 0, E1 = E (B != F) = 0, E2 = E (D != H) = 0, E3 = F (H == F) = 1.
CHECKER_2X = [[0, 0, 1, 1],
              [0, 1, 0, 1],
              [1, 0, 1, 0],
              [1, 1, 0, 0]]
# Scale3x of the same pixel: E0 = D, E1 = B (D == B, E != C), E3 = D (D == B, E != G),
# E5 = F (H == F, E != C), E7 = H (H == F, E != G), E8 = F (H == F); the rest E.
CHECKER_3X = [[0, 0, 0, 1, 1, 1],
              [0, 0, 1, 0, 1, 1],
              [0, 1, 1, 0, 0, 1],
              [1, 0, 0, 1, 1, 0],
              [1, 1, 0, 1, 0, 0],
              [1, 1, 1, 0, 0, 0]]
# A 3x3 diagonal: the centre pixel has B == H, so it stays a block; pixel (0, 1) (= 0) has
# D == H == 1 with B != H and D != F, so its lower-left sub-pixel E2 becomes 1: the stairs fill in.
DIAGONAL_2X = [[1, 1, 0, 0, 0, 0],
               [1, 0, 1, 0, 0, 0],
               [0, 1, 1, 1, 0, 0],
               [0, 0, 1, 1, 1, 0],
               [0, 0, 0, 1, 0, 1],
               [0, 0, 0, 0, 1, 1]]


def test_scale2x_and_scale3x_hand_checked():
    checker = plane([[0, 1], [1, 0]])
    assert torch.equal(scale2x(checker), plane(CHECKER_2X))
    assert torch.equal(scale3x(checker), plane(CHECKER_3X))
    diagonal = torch.eye(3)[None, None]
    out = scale2x(diagonal)
    assert torch.equal(out, plane(DIAGONAL_2X))
    added = out - repeat(diagonal, 2)  # EPX vs nearest: the inner corners of the stairs fill in
    assert added[0, 0, 1, 2] == added[0, 0, 2, 1] == added[0, 0, 3, 4] == added[0, 0, 4, 3] == 1
    big = scale3x(diagonal)[0, 0]
    assert torch.equal(big[3:6, 3:6], torch.ones(3, 3))  # the centre pixel: no rule fires
    assert big[3, 1] == 1 and big[1, 3] == 1  # Scale3x fills the stairs too


def test_flat_stays_flat_and_no_rule_means_nearest():
    flat = torch.full((1, 4, 5, 7), 0.25)
    for factor in (2, 3, 4):
        size = (5 * factor, 7 * factor)
        assert torch.equal(upscale_pixel_art(flat, size), torch.full((1, 4, *size), 0.25))
    dot = plane([[0, 0, 0], [0, 1, 0], [0, 0, 0]])  # a lone pixel: B == H or D == F everywhere
    assert torch.equal(scale2x(dot), repeat(dot, 2)) and torch.equal(scale3x(dot), repeat(dot, 3))
    distinct = torch.randperm(6 * 5, generator=torch.Generator().manual_seed(0)).float().reshape(1, 1, 6, 5) / 30
    for factor in (2, 3, 4):  # no two neighbours equal: exactly nearest-neighbour
        assert torch.equal(upscale_pixel_art(distinct, (6 * factor, 5 * factor)), repeat(distinct, factor))


def test_x4_is_scale2x_twice_and_other_sizes():
    x = (torch.rand(1, 3, 6, 5, generator=torch.Generator().manual_seed(1)) * 3).floor() / 2
    assert plan_passes(6, 5, (24, 20)) == (2, 2) and plan_passes(6, 5, (18, 15)) == (3,)
    assert torch.equal(upscale_pixel_art(x, (24, 20)), scale2x(scale2x(x)))
    assert torch.equal(upscale_pixel_art(x, (12, 10)), scale2x(x))
    odd = upscale_pixel_art(x, (30, 25))  # x5: x4 (the largest chain below), then nearest
    assert odd.shape == (1, 3, 30, 25) and torch.equal(odd, nearest(scale2x(scale2x(x)), (30, 25)))


def _colours(x: torch.Tensor) -> set[tuple[float, ...]]:
    return set(map(tuple, x[0].reshape(x.shape[1], -1).T.tolist()))


def test_palette_kept():
    generator = torch.Generator().manual_seed(2)
    palette = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.2, 0.2, 1.0], [0.2, 0.6, 1.0, 1.0], [1.0, 1.0, 1.0, 0.5]])
    index = torch.randint(0, 4, (12, 9), generator=generator)
    x = palette[index].permute(2, 0, 1)[None]  # (1, 4, 12, 9)
    for size in ((24, 18), (36, 27), (48, 36), (60, 45), (17, 13)):
        out = upscale_pixel_art(x, size)
        assert out.shape[-2:] == size and _colours(out) <= _colours(x)


def test_alpha_follows_the_colour_decisions_and_hidden_colours_do_not_count():
    sprite = torch.eye(5)[None, None]  # a diagonal of opaque red on a transparent background
    red = torch.tensor([1.0, 0.0, 0.0])[None, :, None, None] * torch.ones(1, 3, 5, 5)
    hidden = torch.rand(1, 3, 5, 5, generator=torch.Generator().manual_seed(3))  # junk under alpha 0
    rgba = torch.cat([torch.where(sprite > 0, red, hidden), sprite], dim=1)
    out = scale2x(rgba)
    assert torch.equal(out[:, 3:], scale2x(sprite))  # alpha takes the decisions the clean shape takes
    opaque = out[:, 3:] > 0
    assert torch.equal(out[:, :3] * opaque, red.repeat_interleave(2, -1).repeat_interleave(2, -2) * opaque)
    # every output pixel is one input pixel, all four channels together
    assert _colours(out) <= _colours(rgba)
    # the same colour with different alpha is a different pixel: no rule may merge them
    half = torch.cat([torch.ones(1, 3, 3, 3), plane([[1, 0.5, 0.5], [0.5, 1, 0.5], [0.5, 0.5, 1]])], dim=1)
    assert torch.equal(scale2x(half)[:, 3:], scale2x(half[:, 3:]))


def test_registry_module():
    model = build_model("pixel-art")
    assert isinstance(model.info, AnySize) and model.info.in_channels == 4
    assert not model.info.supports_half and not model.info.supports_bf16
    x = torch.rand(2, 3, 4, 4)
    assert model(x, size=(12, 12)).shape == (2, 3, 12, 12)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_cli_upscales_a_sprite(tmp_path, factor):
    from upscale_cli.cli import app

    colours = np.array([[20, 20, 40], [240, 200, 40], [200, 40, 40]], dtype=np.uint8)
    index = np.zeros((8, 8), dtype=int)
    np.fill_diagonal(index, 1)
    index[5:, :2] = 2
    path = tmp_path / "sprite.png"
    Image.fromarray(colours[index]).save(path)
    out = tmp_path / "big.png"
    result = CliRunner().invoke(app, [str(path), "-x", str(factor), "-m", "pixel-art", "-o", str(out)])
    assert result.exit_code == 0, result.output
    written = np.asarray(Image.open(out).convert("RGB"))
    x = torch.from_numpy(colours[index]).permute(2, 0, 1)[None].float() / 255
    expected = upscale_pixel_art(x, (8 * factor, 8 * factor))
    assert written.shape == (8 * factor, 8 * factor, 3)
    assert np.array_equal(written, (expected[0].permute(1, 2, 0) * 255).round().byte().numpy())


def test_cli_rgba_sprite_keeps_hard_alpha_and_its_palette(tmp_path):
    from upscale_cli.cli import app

    palette = np.array([[0, 0, 0, 0], [250, 200, 60, 255], [30, 30, 90, 255], [200, 40, 40, 255]], dtype=np.uint8)
    index = np.zeros((12, 12), dtype=int)
    index[2:10, 3:9] = 1
    index[4, 4] = index[4, 7] = 2
    np.fill_diagonal(index, 3)
    path, out = tmp_path / "sprite.png", tmp_path / "big.png"
    Image.fromarray(palette[index], "RGBA").save(path)
    result = CliRunner().invoke(app, [str(path), "-x", "4", "-m", "pixel-art", "-o", str(out)])
    assert result.exit_code == 0, result.output
    written = np.asarray(Image.open(out).convert("RGBA"))
    x = torch.from_numpy(palette[index]).permute(2, 0, 1)[None].float() / 255
    expected = (upscale_pixel_art(x, (48, 48))[0].permute(1, 2, 0) * 255).round().byte().numpy()
    assert np.array_equal(written, expected)  # alpha took the colour's decisions; nothing blurred
    assert set(np.unique(written[..., 3])) == {0, 255}


def _palette_sprite(path, transparency: bool = True):
    palette = [0, 0, 0, 250, 200, 60, 30, 30, 90, 200, 40, 40] + [7, 7, 7] * 12  # 16 entries, some unused
    index = np.zeros((11, 13), dtype=np.uint8)
    index[2:9, 3:10] = 1
    index[5, 6] = 2
    np.fill_diagonal(index, 3)
    image = Image.fromarray(index, "P")
    image.putpalette(palette)
    image.save(path, **({"transparency": 0} if transparency else {}))
    return palette


@pytest.mark.parametrize("model,scale", [("nearest", "4"), ("nearest", "3"), ("pixel-art", "2"), ("pixel-art", "4")])
@pytest.mark.parametrize("transparency", [True, False])
def test_a_palette_image_stays_a_palette_image_with_its_palette(tmp_path, model, scale, transparency):
    from upscale_cli.cli import app

    palette = _palette_sprite(tmp_path / "sprite.png", transparency)
    out = tmp_path / "big.png"
    result = CliRunner().invoke(app, [str(tmp_path / "sprite.png"), "-x", scale, "-m", model, "-o", str(out)])
    assert result.exit_code == 0, result.output
    with Image.open(out) as written:
        assert written.mode == "P" and written.getpalette()[: len(palette)] == palette
        assert written.size == (13 * int(scale), 11 * int(scale))
        rgba = np.asarray(written.convert("RGBA"))
    source = np.asarray(Image.open(tmp_path / "sprite.png").convert("RGBA"))
    if model == "nearest":  # exactly the nearest-neighbour picture, alpha included
        k = int(scale)
        assert np.array_equal(rgba, np.repeat(np.repeat(source, k, 0), k, 1))
    assert {tuple(p) for p in rgba.reshape(-1, 4)} <= {tuple(p) for p in source.reshape(-1, 4)}


def test_a_network_on_a_palette_image_writes_its_new_colours_as_rgb(tmp_path):
    from upscale_cli.cli import app

    _palette_sprite(tmp_path / "sprite.png")
    result = CliRunner().invoke(app, [str(tmp_path / "sprite.png"), "-x", "2", "-m", "bicubic",
                                      "-o", str(tmp_path / "soft.png")])
    assert result.exit_code == 0
    assert Image.open(tmp_path / "soft.png").mode == "RGBA"  # new colours: no palette can hold them
