"""images.arrays.quantise rounds in cache-sized bands in one reused buffer: still exactly the values
of clip(band, 0, 1) * peak rounded half to even, for the halfway cases of every 8- and 16-bit level,
both neighbours of each, values out of range, float32/float64, many bands and a strided view."""
import numpy as np
import pytest

from upscale_cli.images import arrays


def _reference(planes: np.ndarray, sixteen: bool) -> np.ndarray:
    peak = arrays.U16_MAX if sixteen else arrays.U8_MAX
    out = np.empty(planes.shape, dtype=np.uint16 if sixteen else np.uint8)
    band = np.clip(planes, 0.0, 1.0) * peak
    out[...] = np.round(band, out=band)
    return out


def _values() -> np.ndarray:
    k8 = (np.arange(256, dtype=np.float64) + 0.5) / arrays.U8_MAX
    k16 = (np.arange(65536, dtype=np.float64) + 0.5) / arrays.U16_MAX
    around = [k8, k16, np.nextafter(k8, 0), np.nextafter(k8, 1), np.nextafter(k16, 0), np.nextafter(k16, 1)]
    rng = np.random.default_rng(0)
    return np.concatenate(around + [rng.random(30000) * 1.4 - 0.2, [0.0, -0.0, 1.0, 2.0, -1.0]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sixteen", [False, True])
def test_bands_give_the_plain_rounding(dtype, sixteen, monkeypatch):
    values = _values()
    count = len(values) // 6 * 6
    for shape in ((count // 3, 1, 3), (1, count // 3, 3), (count // 6, 2, 3)):
        planes = values[:count].astype(dtype).reshape(shape)
        assert np.array_equal(arrays.quantise(planes, sixteen), _reference(planes, sixteen))
    strided = np.random.default_rng(1).random((300, 200, 4)).astype(dtype)[:, :, :3]  # a view, as to_planes gives
    monkeypatch.setattr(arrays, "QUANTISE_FLOATS", 1000)  # many bands, the last one short
    assert np.array_equal(arrays.quantise(strided, sixteen), _reference(strided, sixteen))
