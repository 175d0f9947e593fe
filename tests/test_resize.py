"""resize.py must match Pillow's Image.resize, the reference of the SR protocol."""
import numpy as np
import pytest
import torch
from PIL import Image

from upscale_cli.resize import resize

PIL_FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS, "nearest": Image.NEAREST}


def _image(h=37, w=53, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((h, w, 3)) * 255).astype(np.uint8)


@pytest.mark.parametrize("method", list(PIL_FILTERS))
@pytest.mark.parametrize("size", [(100, 80), (12, 17), (37, 106), (20, 53), (74, 26)])
def test_matches_pillow_within_one_level(method, size):
    a = _image()
    ref = np.asarray(Image.fromarray(a).resize((size[1], size[0]), PIL_FILTERS[method])).astype(int)
    t = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255
    out = (resize(t, size, method) * 255).round()[0].permute(1, 2, 0).numpy().astype(int)
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= 1
    assert np.abs(out - ref).mean() < 0.3


def test_is_differentiable_and_keeps_constant():
    x = torch.full((1, 3, 20, 30), 0.25, requires_grad=True)
    y = resize(x, (7, 11))
    assert torch.allclose(y, torch.full_like(y, 0.25), atol=1e-6)
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_rejects_bad_arguments():
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError):
        resize(x, (0, 4))
    with pytest.raises(ValueError):
        resize(x, (4, 4), "cubic-spline")


def _plain_per_tap_resize(x, size, method):
    """The original implementation (gather along the axis in place, multiply, add tap after tap):
    the fast path must give exactly its values, not merely values within a level of Pillow."""
    from upscale_cli.resize import _axis_taps

    def axis(x, out_size, dim):
        if x.shape[dim] == out_size:
            return x
        idx, weights = _axis_taps(x.shape[dim], out_size, method, torch)  # a tensor's taps
        shape = [1] * x.dim()
        shape[dim] = out_size
        out = None
        for k in range(idx.shape[1]):
            w = weights[:, k].to(x.dtype)
            if not bool(w.any()):
                continue
            term = x.index_select(dim, idx[:, k]) * w.reshape(shape)
            out = term if out is None else out.add_(term)
        return out

    x = axis(x, size[1], x.dim() - 1).clamp(0.0, 1.0)
    return axis(x, size[0], x.dim() - 2).clamp(0.0, 1.0)


@pytest.mark.parametrize("method", ["bicubic", "bilinear", "lanczos"])
@pytest.mark.parametrize("shape,size", [((1, 3, 37, 53), (148, 212)), ((2, 1, 30, 20), (11, 47)),
                                         ((1, 4, 16, 16), (16, 40)), ((3, 9, 7), (20, 3))])
def test_same_values_as_the_plain_per_tap_sum(method, shape, size):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(5))
    assert torch.equal(resize(x, size, method), _plain_per_tap_resize(x, size, method))
