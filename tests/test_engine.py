"""Engine: scale plans, target sizes, devices, channels and alpha handling."""
import pytest
import torch

from upscale_cli.alpha import fill_transparent
from upscale_cli.device import select_device
from upscale_cli.engine import UpscaleConfig, Upscaler, plan_passes, target_size
from upscale_cli.errors import DeviceError, ModelNotFoundError, UsageError


@pytest.mark.parametrize(
    "scales, factor, plan",
    [
        ((2, 3, 4), 4, (4,)),
        ((2, 3, 4), 3, (3,)),
        ((2, 3, 4), 8, (4, 2)),
        ((2, 3, 4), 1.5, (2,)),
        ((2, 3, 4), 16, (4, 4)),
        ((2,), 8, (2, 2, 2)),
        ((4,), 3, (4,)),
        ((2, 4, 8), 8, (8,)),
        ((1,), 1, (1,)),
        ((2, 4), 1, ()),
    ],
)
def test_plan_passes(scales, factor, plan):
    assert plan_passes(scales, factor) == plan


def test_target_size_from_scale_width_height():
    assert target_size(30, 40, UpscaleConfig(scale=2.5)) == (75, 100)
    assert target_size(30, 40, UpscaleConfig(width=80)) == (60, 80)
    assert target_size(30, 40, UpscaleConfig(height=90)) == (90, 120)
    assert target_size(30, 40, UpscaleConfig(width=10, height=10)) == (10, 10)
    assert target_size(30, 40, UpscaleConfig(), default_scale=2) == (60, 80)


@pytest.mark.parametrize("kwargs", [{"scale": 0.5}, {"scale": float("nan")}, {"width": 0}, {"tile": -1}, {"alpha": "x"}])
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(UsageError):
        UpscaleConfig(**kwargs)


def test_unknown_model_and_device():
    with pytest.raises(ModelNotFoundError, match="did you mean bicubic"):
        Upscaler(UpscaleConfig(model="bicubc"))
    assert select_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError):
            select_device("cuda")


def test_bicubic_upscale_tensor_any_scale():
    up = Upscaler(UpscaleConfig(model="bicubic", scale=1.5), progress=False)
    x = torch.rand(1, 3, 10, 14)
    out = up.upscale_tensor(x)
    assert out.shape == (1, 3, 15, 21)
    assert 0 <= out.min() and out.max() <= 1


def test_greyscale_stays_one_channel():
    up = Upscaler(UpscaleConfig(model="bicubic", scale=2), progress=False)
    assert up.upscale_tensor(torch.rand(1, 1, 8, 8)).shape == (1, 1, 16, 16)


def test_half_on_cpu_is_ignored_with_a_note():
    up = Upscaler(UpscaleConfig(model="bicubic", scale=2, half=True, device="cpu"), progress=False)
    up.upscale_tensor(torch.rand(1, 3, 8, 8))
    # the interpolation model has no weights, so the dtype choice never happened; a weighted model notes it
    assert all("half" in n for n in up.notes)


def test_fill_transparent_takes_colour_from_visible_neighbours():
    rgb = torch.zeros(1, 3, 16, 16)
    rgb[:, 0, :, :8] = 1.0  # visible red on the left, black garbage on the right
    alpha = torch.zeros(1, 1, 16, 16)
    alpha[..., :8] = 1.0
    filled = fill_transparent(rgb, alpha)
    assert torch.equal(filled[..., :8], rgb[..., :8])
    assert torch.allclose(filled[:, 0, :, 8:], torch.ones(16, 8))  # red spread into the hidden part
    opaque = torch.ones(1, 1, 16, 16)
    assert torch.equal(fill_transparent(rgb, opaque), rgb)


class _MemoryLimitedX2(torch.nn.Module):
    """A real x2 conv model that, like a small GPU, fails on inputs above a pixel budget."""

    def __init__(self, budget_pixels: int):
        super().__init__()
        from upscale_cli.models.descriptor import FixedScale

        self.info = FixedScale(scale=2, receptive_field=1)
        self.conv = torch.nn.Conv2d(3, 12, 3, padding=1)
        self.shuffle = torch.nn.PixelShuffle(2)
        self.budget = budget_pixels
        self.calls = []

    def forward(self, x):
        self.calls.append(tuple(x.shape[-2:]))
        if x.shape[-2] * x.shape[-1] > self.budget:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.shuffle(self.conv(x))


def _upscaler_with(model, **config):
    up = Upscaler(UpscaleConfig(model="bicubic", scale=2, **config), progress=False)
    up.spec = up.spec.__class__(name="test", arch="test", task="sr", license="", description="",
                                files={2: None})
    up._models[2] = model
    return up


def test_out_of_memory_halves_the_tile_and_matches_untiled():
    torch.manual_seed(0)
    model = _MemoryLimitedX2(budget_pixels=40 * 40)
    x = torch.rand(1, 3, 96, 96)
    up = _upscaler_with(model, tile=96)
    out = up.upscale_tensor(x)
    assert any("retried with --tile" in n for n in up.notes)
    assert model.calls[-1][0] * model.calls[-1][1] <= 40 * 40  # the run that succeeded used small tiles
    with torch.no_grad():
        full = model.shuffle(model.conv(x)).clamp(0, 1)
    assert (out - full).abs().max() <= 1 / 255


def test_out_of_memory_at_the_floor_is_one_clear_error():
    from upscale_cli.errors import OutOfMemoryError

    up = _upscaler_with(_MemoryLimitedX2(budget_pixels=10), tile=64)
    with pytest.raises(OutOfMemoryError, match="out of memory even with"):
        up.upscale_tensor(torch.rand(1, 3, 64, 64))


class _Poisoned(torch.nn.Module):
    """A x2 model whose output is NaN (or inf) somewhere: broken weights, or fp16 overflow."""

    def __init__(self, value: float):
        super().__init__()
        from upscale_cli.models.descriptor import FixedScale

        self.info = FixedScale(scale=2, receptive_field=1)
        self.value = value
        self.weight = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        y = torch.nn.functional.interpolate(x, scale_factor=2) * self.weight
        y[..., -1, -1] = self.value
        return y


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("tile", [0, 40])
def test_a_model_output_that_is_not_finite_is_refused(value, tile):
    from upscale_cli.errors import ModelOutputError

    up = _upscaler_with(_Poisoned(value), tile=tile)
    with pytest.raises(ModelOutputError, match="NaN or infinite"):
        up.upscale_tensor(torch.rand(1, 3, 64, 64))


def test_tile_plan_is_rounded_and_exact_for_a_size_multiple_model():
    """--tile 129..131 on a model with a size multiple used to fail ('overlap must be smaller')."""
    torch.manual_seed(0)
    model = _MemoryLimitedX2(budget_pixels=10**9)
    from upscale_cli.models.descriptor import FixedScale, SizeRequirements

    model.info = FixedScale(scale=2, receptive_field=1, size=SizeRequirements(multiple_of=4))
    x = torch.rand(1, 3, 301, 203)
    reference = _upscaler_with(model, tile=0).upscale_tensor(x)
    for tile in (129, 130, 131, 33):
        out = _upscaler_with(model, tile=tile).upscale_tensor(x)
        assert (out - reference).abs().max() < 1e-5, tile
        assert all(h % 4 == 0 and w % 4 == 0 for h, w in model.calls)


@pytest.mark.parametrize("kwargs", [{"scale": 1e5}, {"width": 100_000}, {"height": 100_000, "width": 100_000}])
def test_an_output_over_the_limit_is_refused_before_any_work(kwargs):
    from upscale_cli.errors import OutputTooLargeError

    up = Upscaler(UpscaleConfig(model="bicubic", **kwargs), progress=False)
    with pytest.raises(OutputTooLargeError, match="--max-output-pixels"):
        up.target_size(300, 400)
    assert Upscaler(UpscaleConfig(model="bicubic", max_output_pixels=0, **kwargs), progress=False).target_size(
        300, 400)[1] >= 100_000  # 0 = no limit (size only; nothing is run)


@pytest.mark.parametrize("count,text", [
    (0, "0 pixels"), (1, "1 pixel"), (4_000, "4,000 pixels"), (999_999, "999,999 pixels"), (1_000_000, "1 MP"),
    (1_048_576, "1.05 MP"), (1_500_000, "1.5 MP"), (10_500_000, "10.5 MP"), (500_000_000, "500 MP"),
    (1_234_567_890, "1,235 MP"), (10**10, "10,000 MP"),
])
def test_pixel_counts_read_sensibly(count, text):
    from upscale_cli.engine import format_pixels

    assert format_pixels(count) == text


@pytest.mark.parametrize("size,limit,words", [
    ((64, 96), 4_000, "96 x 64 = 6,144 pixels, over the limit of 4,000 pixels (--max-output-pixels"),  # was "0 MP" over "0 MP"
    ((1_000, 1_001), 1_000_000, "1001 x 1000 = 1,001,000 pixels, over the limit of 1,000,000 pixels ("),  # both "1 MP"
    ((4_000, 5_000), 1_000_000, "5000 x 4000 = 20 MP, over the limit of 1 MP ("),
    ((100_000, 100_000), 500_000_000, "100000 x 100000 = 10,000 MP, over the limit of 500 MP ("),
    ((2_000, 1_000), 1_999_999, "1000 x 2000 = 2,000,000 pixels, over the limit of 1,999,999 pixels ("),
])
def test_the_over_limit_message_names_both_counts_so_they_differ(size, limit, words):
    from upscale_cli.engine import check_output_size
    from upscale_cli.errors import OutputTooLargeError

    with pytest.raises(OutputTooLargeError) as caught:
        check_output_size(size, limit)
    assert words in str(caught.value)
    check_output_size(size, size[0] * size[1])  # at the limit: allowed


@pytest.mark.parametrize("native", [True, False])
def test_half_on_a_cpu_is_bfloat16_only_where_it_is_native(monkeypatch, native):
    """--half on the CPU: bfloat16 when the CPU computes it natively (AVX-512 BF16 / AMX), else
    float32 with one note; both detected branches run here whatever this machine has."""
    from upscale_cli import device

    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: native)
    x = torch.rand(1, 3, 40, 36)
    exact = Upscaler(UpscaleConfig(model="unet", scale=2, device="cpu"), progress=False).upscale_tensor(x)
    up = Upscaler(UpscaleConfig(model="unet", scale=2, device="cpu", half=True), progress=False)
    out = up.upscale_tensor(x)
    dtype = next(up.model(2).parameters()).dtype
    if native:
        assert dtype == torch.bfloat16 and not up.notes
        assert float((out - exact).abs().max()) < 0.05 and out.dtype == torch.float32
    else:
        assert dtype == torch.float32 and torch.equal(out, exact)
        assert up.notes == ["--half: this CPU has no native bfloat16 (AVX-512 BF16 or AMX), where it would be slower; running float32"]


def test_cpu_bf16_detection_reads_the_flags():
    from upscale_cli.device import cpu_has_native_bf16

    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        flags = []
    assert cpu_has_native_bf16() == bool({"avx512_bf16", "amx_bf16"} & set(flags))


@pytest.mark.parametrize("size", [(80, 1), (1, 80), (77, 3), (3, 77), (80, 4), (5, 6)])
def test_half_on_the_cpu_gives_finite_output_for_thin_and_tiny_images(size):
    """bfloat16 convolutions on the CPU gave NaN for some values of a 4-pixel-wide unet input (a
    1-pixel strip padded to the size rule): 10 random strips of 12 failed. Such inputs are padded
    further in bfloat16; every content and both orientations now come out finite, with --ensemble too."""
    torch.manual_seed(0)
    for ensemble in (False, True):
        up = Upscaler(UpscaleConfig(model="unet", scale=4.0, device="cpu", half=True, ensemble=ensemble),
                      progress=False)
        for _ in range(6):
            out = up.upscale_tensor(torch.rand(1, 3, *size))
            assert out.shape == (1, 3, size[0] * 4, size[1] * 4) and torch.isfinite(out).all()
