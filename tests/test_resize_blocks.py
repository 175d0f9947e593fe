"""resize's NumPy path makes its output a cache-sized block at a time and a batch one image at a
time: still exactly the values of the plain per-tap sum (tests/test_resize.py's reference), for
batches, sizes that need many blocks, 1-pixel strips, shrinking, and values outside [0, 1]."""
import numpy as np
import pytest
import torch

from test_resize import _plain_per_tap_resize
from upscale_cli import resize as resize_module
from upscale_cli.resize import resize


@pytest.mark.parametrize("method", ["bicubic", "bilinear", "lanczos"])
@pytest.mark.parametrize("shape,size", [((8, 3, 128, 128), (512, 512)), ((3, 1, 1, 57), (4, 228)),
                                         ((2, 3, 64, 1), (256, 3)), ((1, 3, 300, 200), (75, 50)),
                                         ((5, 4, 33, 47), (99, 141))])
def test_blocks_and_batches_give_the_plain_per_tap_values(method, shape, size, monkeypatch):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(9))
    plain = _plain_per_tap_resize(x, size, method)
    assert torch.equal(resize(x, size, method), plain)
    monkeypatch.setattr(resize_module, "CACHE_FLOATS", 7)  # a block of one output row or a few
    assert torch.equal(resize(x, size, method), plain)


@pytest.mark.parametrize("method", ["nearest", "bicubic", "lanczos"])
def test_a_batch_equals_its_images_alone_also_unclamped(method):
    x = torch.rand((6, 3, 21, 34), generator=torch.Generator().manual_seed(2)) * 1.6 - 0.3
    together = resize(x, (84, 136), method, clamp=False)
    for k in range(6):
        alone = resize(x[k : k + 1], (84, 136), method, clamp=False)
        assert np.array_equal(together[k : k + 1].numpy(), alone.numpy())
        assert np.array_equal(np.signbit(together[k : k + 1].numpy()), np.signbit(alone.numpy()))
    assert float(together.min()) < 0.0  # not clipped: clamp=False
