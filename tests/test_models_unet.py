"""Our own models: the U-Net super-resolver and the stacked upsampler (tiny settings, CPU)."""
from __future__ import annotations

import pytest
import torch

from upscale_cli.errors import UnsupportedScaleError, UsageError
from upscale_cli.models import build_model
from upscale_cli.models.unet import SubPixelUp, build_unet, icnr_, matrix_resize
from upscale_cli.models.upsampler import build_upsampler
from upscale_cli.resize import resize

TINY_UNET = dict(width=8, levels=2, blocks=1, decoder_blocks=1, bottleneck_blocks=1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_unet_output_shape_at_every_scale(scale):
    model = build_unet(scale=scale, **TINY_UNET).eval()
    x = torch.rand(2, 3, 12, 16)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 3, 12 * scale, 16 * scale)
    assert model.info.scale == scale


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_upsampler_output_shape_at_every_scale(scale):
    model = build_model("upsampler", scale=scale, width=4, depth=1).eval()
    with torch.no_grad():
        y = model(torch.rand(1, 3, 8, 10))
    assert y.shape == (1, 3, 8 * scale, 10 * scale)
    assert len(model.stages) == scale.bit_length() - 1


def test_unet_info_fields():
    model = build_model("unet", scale=3, width=8, levels=3, blocks=1)
    info = model.info
    assert (info.scale, info.in_channels, info.supports_half) == (3, 3, True)
    assert info.size.multiple_of == 2**3
    assert info.tileable and info.device_bound is None


def _measured_field(model, size=64):
    """Input pixels (each side) that influence the centre output pixel, from the gradient."""
    model.eval()
    x = torch.rand(1, 3, size, size, requires_grad=True)
    y = model(x)
    s = model.info.scale
    y[0, :, (size // 2) * s, (size // 2) * s].sum().backward()
    rows = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 3)) > 0).flatten()
    return int(max(size // 2 - rows.min(), rows.max() - size // 2))


@pytest.mark.parametrize("builder, settings", [
    (build_unet, dict(scale=2, **TINY_UNET)),
    (build_unet, dict(scale=4, width=8, levels=1, blocks=2, decoder_blocks=0, bottleneck_blocks=1)),
    (build_upsampler, dict(scale=4, width=4, depth=1)),
])
def test_receptive_field_is_honest(builder, settings):
    model = builder(**settings)
    measured = _measured_field(model)
    assert measured <= model.info.receptive_field <= 2 * measured + 4


def test_icnr_conv_gives_checkerboard_free_output():
    up = SubPixelUp(6, 3, ratio=3, kernel=3)
    x = torch.full((1, 6, 10, 10), 0.7)
    with torch.no_grad():
        y = up(x)  # (1, 3, 30, 30)
    interior = y[..., 3:-3, 3:-3]  # away from the zero padding
    assert torch.allclose(interior, interior[..., :1, :1].expand_as(interior), atol=1e-6)
    # and on any input every 3x3 block of the output is flat: nearest-neighbour structure
    with torch.no_grad():
        z = up(torch.rand(1, 6, 5, 5))
    blocks = z.reshape(1, 3, 5, 3, 5, 3)
    assert torch.allclose(blocks, blocks[:, :, :, :1, :, :1].expand_as(blocks), atol=1e-6)


def test_icnr_rejects_bad_channel_count():
    with pytest.raises(ValueError):
        icnr_(torch.empty(5, 2, 3, 3), ratio=2)


def test_untrained_unet_is_close_to_bicubic():
    model = build_unet(scale=2, **TINY_UNET).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        y = model(x)
    assert (y - resize(x, (32, 32), clamp=False)).abs().mean() < 0.1


def test_unsupported_scales_and_settings():
    with pytest.raises(UnsupportedScaleError):
        build_unet(scale=5)
    with pytest.raises(UnsupportedScaleError):
        build_upsampler(scale=3)
    with pytest.raises(UsageError):
        build_unet(scale=2, residual="lanczos")


def test_matrix_resize_matches_resize():
    x = torch.rand(2, 3, 19, 27)
    for size in [(38, 54), (7, 9), (57, 81)]:
        for clamp in (True, False):
            assert torch.allclose(matrix_resize(x, size, "bicubic", clamp), resize(x, size, "bicubic", clamp), atol=1e-5)


def test_half_precision_state_dict_loads_into_float_model():
    model = build_unet(scale=2, **TINY_UNET).eval()
    clone = build_unet(scale=2, **TINY_UNET).eval()
    clone.load_state_dict({k: v.half() for k, v in model.state_dict().items()})
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(x), clone(x), atol=2e-3)


def test_packaged_unet_weights_load_and_beat_bicubic():
    from upscale_cli.catalog import load_catalog
    from upscale_cli.loader import load_model

    spec = load_catalog().get("unet")
    if spec is None or not spec.files:
        pytest.skip("no packaged unet weights")
    gen = torch.Generator().manual_seed(5)
    hr = torch.full((1, 3, 96, 96), 0.5)
    for _ in range(12):  # hard-edged rectangles: edges are where SR beats bicubic
        top, left, h, w = torch.randint(0, 80, (4,), generator=gen).tolist()
        hr[..., top:top + 8 + h // 3, left:left + 8 + w // 3] = torch.rand(3, 1, 1, generator=gen)
    for scale in spec.scales:
        model = load_model("unet", scale)
        assert model.info.scale == scale
        side = 96 // scale // 4 * 4
        target = hr[..., : side * scale, : side * scale]
        lr = resize(target, (side, side))
        with torch.no_grad():
            sr = model(lr).clamp(0, 1)
        bicubic = resize(lr, (side * scale, side * scale))
        b = 2 * scale  # borders are padded guesses for both
        error = (sr - target)[..., b:-b, b:-b].pow(2).mean()
        assert error < (bicubic - target)[..., b:-b, b:-b].pow(2).mean()


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("size", [(6, 8), (2, 10), (300, 20)])  # the model's size rule: even; 300 * 4 passes resize's dense-matrix limit
def test_reduced_precision_keeps_the_carried_input_in_float32(scale, size):
    """In bfloat16 the detail is computed in bfloat16, but the bicubic of the input (most of each
    output value) is added in float32: with no detail the output is exactly the float32 bicubic of
    the input as the model received it, not that bicubic rounded to bfloat16 (about one grey level)."""
    torch.manual_seed(0)
    model = build_model("unet", scale=scale, width=4, levels=1, blocks=0, decoder_blocks=0, bottleneck_blocks=0)
    with torch.no_grad():
        for p in model.tail.parameters():
            p.zero_()
    x = torch.rand(1, 3, *size).to(torch.bfloat16)
    out = model.to(torch.bfloat16).eval()(x)
    expected = resize(x.float(), (size[0] * scale, size[1] * scale), "bicubic", clamp=False)
    assert out.dtype == torch.float32
    assert torch.allclose(out, expected, atol=1e-6)
    assert not torch.equal(expected.to(torch.bfloat16).float(), expected)  # bfloat16 would have rounded it


def test_loading_unet_does_not_import_torch_dynamo():
    """The bundled unet loads in a fraction of a second: its ICNR initialisation is skipped on the
    meta device (model_skeleton), where repeat_interleave imported torch._dynamo, 1.9-2.9 s of every
    first unet load in a process (10 images x4: the whole command took 10.85 s, now 8.05 s)."""
    import subprocess
    import sys

    code = ("import sys; from upscale_cli.engine import UpscaleConfig, Upscaler; "
            "u = Upscaler(UpscaleConfig(model='unet'), progress=False); u.model(4); u.model(2); "
            "print('torch._dynamo' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
