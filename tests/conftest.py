"""Fixtures shared by several test files, and the end-of-run summary of skipped tests.

- `cache`: an empty weights cache under tmp, no mirror, online, fast retries (a test file opts in,
  e.g. `pytestmark = pytest.mark.usefixtures("cache")`).
- `generated_weights`: weights files made here, with catalogue entries carrying their real sha256
  and size, so the download tests and `upscale models ...` run without ../shared.
- `generated_catalogue`: the shipped catalogue plus those entries, as every `load_catalog()` caller sees it.
- `opencv_graph`: an ESPCN-shaped TensorFlow graph (ESPCN_x2.pb) written here that OpenCV's
  dnn_superres reads and runs, for the tests of our OpenCV wrapper that need no published weights.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import pytest

# Entries of the generated catalogue: model name -> {scale: file size in bytes}. The random-bytes
# files are big enough for the resume tests (cut at 40,000 bytes, a .part of 50,000) and of
# different sizes, so that serving one under another's entry is a size mismatch.
RANDOM_MODEL = "generated-random"
RANDOM_SMALL_MODEL = "generated-random-small"
RANDOM_SIZES = {RANDOM_MODEL: {2: 90_000, 3: 95_000, 4: 100_000}, RANDOM_SMALL_MODEL: {2: 30_000}}
UNET_MODEL = "generated-unet"  # a real (tiny) model: downloaded, verified, then run by the command
OPENCV_MODEL = "generated-opencv-espcn"  # an OpenCV graph made here: downloaded, verified, then run by OpenCV
TINY_UNET = {"scale": 2, "width": 4, "levels": 1, "blocks": 0, "decoder_blocks": 0, "bottleneck_blocks": 1}
GENERATED_URL = "https://weights.example.invalid/generated/"  # never contacted: tests serve a mirror


@dataclass(frozen=True)
class GeneratedWeights:
    """Weights files in `folder` (served by name) and the catalogue entries that describe them."""

    folder: Path
    specs: MappingProxyType  # name -> ModelSpec

    def file(self, name: str = RANDOM_MODEL, scale: int = 2):
        """The WeightsFile of one model at one scale."""
        return self.specs[name].files[scale]

    def data(self, name: str = RANDOM_MODEL, scale: int = 2) -> bytes:
        return (self.folder / self.file(name, scale).filename).read_bytes()


def _entry(folder: Path, name: str, arch: str, description: str, paths: dict[int, Path]):
    from upscale_cli.model_spec import ModelSpec, WeightsFile

    files = {scale: WeightsFile(scale=scale, filename=path.name, sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                                size=path.stat().st_size, url=GENERATED_URL + path.name)
             for scale, path in paths.items()}
    return ModelSpec(name=name, arch=arch, task="sr", license="CC0-1.0", description=description,
                     files=MappingProxyType(files))


def _random_files(folder: Path, name: str, seed: int) -> dict[int, Path]:
    import numpy as np

    paths = {}
    for scale, size in RANDOM_SIZES[name].items():
        path = folder / f"{name}_x{scale}.pb"
        path.write_bytes(np.random.default_rng(seed + scale).bytes(size))
        paths[scale] = path
    return paths


def _unet_file(folder: Path) -> dict[int, Path]:
    import torch

    from upscale_cli.loader import save_weights
    from upscale_cli.models import build_model

    path = folder / f"{UNET_MODEL}_x2.safetensors"
    with torch.random.fork_rng():  # the same file every run, and other tests' random state untouched
        torch.manual_seed(0)
        save_weights(build_model("unet", **TINY_UNET), path, "unet", TINY_UNET)
    return {2: path}


@pytest.fixture
def mask_unet_file(tmp_path) -> str:
    """A random-init x1 unet that takes the mask, its mask head drawn far from its zero start (so the
    mask changes the output), saved as our export is: a stand-in for unet-inpaint of any quality."""
    import torch

    from upscale_cli.loader import save_weights
    from upscale_cli.models.unet import build_unet

    settings = dict(scale=1, width=8, levels=2, blocks=1, decoder_blocks=1, bottleneck_blocks=1, width_mult=1.5,
                    mask_channel=True)
    path = tmp_path / "inpainter.safetensors"
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = build_unet(**settings)
        torch.nn.init.normal_(model.mask_head.weight, std=0.3)
    save_weights(model, path, "unet", settings)
    return str(path)


@pytest.fixture(scope="session")
def generated_weights(tmp_path_factory) -> GeneratedWeights:
    """Random-bytes files for the download logic and a tiny unet that really runs, made once per run."""
    folder = tmp_path_factory.mktemp("generated_weights")
    specs = {
        RANDOM_MODEL: _entry(folder, RANDOM_MODEL, "random-bytes", "random bytes for the download tests; not a model",
                             _random_files(folder, RANDOM_MODEL, seed=10)),
        RANDOM_SMALL_MODEL: _entry(folder, RANDOM_SMALL_MODEL, "random-bytes", "a second random-bytes model",
                                   _random_files(folder, RANDOM_SMALL_MODEL, seed=20)),
        UNET_MODEL: _entry(folder, UNET_MODEL, "unet", "a tiny unet saved by the tests", _unet_file(folder)),
        OPENCV_MODEL: _entry(folder, OPENCV_MODEL, "opencv-espcn", "an ESPCN-shaped graph written by the tests",
                             {2: write_opencv_graph(folder / "ESPCN_x2.pb", scale=2)}),
    }
    return GeneratedWeights(folder=folder, specs=MappingProxyType(specs))


@pytest.fixture(scope="session")
def opencv_graph(tmp_path_factory) -> Path:
    """ESPCN_x2.pb: a graph OpenCV's dnn_superres runs as "espcn" x2 (named as the published file)."""
    return write_opencv_graph(tmp_path_factory.mktemp("opencv_graph") / "ESPCN_x2.pb", scale=2)


@pytest.fixture
def generated_catalogue(generated_weights, monkeypatch) -> dict:
    """The shipped catalogue plus the generated entries. Every caller (cli/models.py, catalog.resolve,
    the loader) reaches it through `upscale_cli.catalog.load_catalog` at call time, so patching that
    one name is enough; the real lru_cached function keeps its own, unchanged result."""
    from upscale_cli import catalog

    merged = {**catalog.load_catalog(), **generated_weights.specs}
    monkeypatch.setattr(catalog, "load_catalog", lambda: merged)
    return merged


TINY_UNET = dict(scale=2, width=8, levels=2, blocks=1, decoder_blocks=1, bottleneck_blocks=1)


@pytest.fixture(scope="session")
def tiny_unet(tmp_path_factory) -> str:
    """A tiny random-init unet x2 weights file (OpenVINO converts it in about a second)."""
    import torch

    from upscale_cli.loader import save_weights
    from upscale_cli.models.unet import build_unet

    path = tmp_path_factory.mktemp("unet") / "tiny-unet.safetensors"
    with torch.random.fork_rng():
        torch.manual_seed(3)
        save_weights(build_unet(**TINY_UNET), path, "unet", TINY_UNET)
    return str(path)


@pytest.fixture(autouse=True, scope="session")
def own_cache_dir(tmp_path_factory):
    """The whole session writes its downloads and compiled models into a folder of its own, never
    into the user's cache (`cache` gives a test an empty one), and commands default to PyTorch."""
    patch = pytest.MonkeyPatch()
    patch.setenv("UPSCALE_CACHE_DIR", str(tmp_path_factory.mktemp("session-cache")))
    # Commands run PyTorch unless a test asks for a runtime (test_runtime, test_array_engine,
    # test_benchmark_runtime, test_default_runtime): a default run compiles each tile shape used twice,
    # seconds each, which across the suite cost CI minutes.
    patch.setenv("UPSCALE_RUNTIME", "torch")
    yield
    patch.undo()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty weights cache under tmp, no mirror, online, and fast retries."""
    from upscale_cli import weights_cache

    root = tmp_path / "cache"
    monkeypatch.setenv("UPSCALE_CACHE_DIR", str(root))
    monkeypatch.delenv("UPSCALE_WEIGHTS_MIRROR", raising=False)
    monkeypatch.delenv("UPSCALE_OFFLINE", raising=False)
    monkeypatch.setenv("UPSCALE_DOWNLOAD_BACKOFF", "0.01")
    weights_cache._verified.clear()
    return root


# ---------------------------------------------------------------- a TensorFlow graph OpenCV can run
# OpenCV reads TensorFlow's GraphDef protobuf; the few messages needed are written here by hand
# (protobuf wire format) so that no TensorFlow or protobuf package is needed. The graph is the shape
# dnn_superres expects of ESPCN: Y channel (1, H, W, 1) -> 3x3 conv to s*s channels -> DepthToSpace.
DT_FLOAT = 1  # TensorFlow's DataType enum
WIRE_VARINT, WIRE_BYTES = 0, 2


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64 as two's complement, as protobuf does
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def _field(number: int, value: int | bytes | str) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3 | WIRE_VARINT) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | WIRE_BYTES) + _varint(len(data)) + data


def _float_tensor(array) -> bytes:
    """AttrValue.tensor: TensorProto(dtype, tensor_shape, tensor_content)."""
    import numpy as np

    array = np.ascontiguousarray(array, dtype="<f4")
    shape = b"".join(_field(2, _field(1, d)) for d in array.shape)  # TensorShapeProto.dim.size
    return _field(8, _field(1, DT_FLOAT) + _field(2, shape) + _field(4, array.tobytes()))


def _node(name: str, op: str, inputs: tuple[str, ...] = (), **attrs: bytes) -> bytes:
    """GraphDef.node: NodeDef(name, op, input*, attr map entries); attrs are encoded AttrValues."""
    body = _field(1, name) + _field(2, op) + b"".join(_field(3, i) for i in inputs)
    body += b"".join(_field(5, _field(1, key) + _field(2, value)) for key, value in attrs.items())
    return _field(1, body)


def write_opencv_graph(path: Path, scale: int, seed: int = 0) -> Path:
    """An ESPCN-shaped graph (near nearest-neighbour upscaling plus a little noise in the kernel)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    kernel = rng.normal(0.0, 0.05, (3, 3, 1, scale * scale)).astype(np.float32)  # (H, W, in, out)
    kernel[1, 1, 0, :] += 1.0
    bias = rng.normal(0.0, 0.02, (scale * scale,)).astype(np.float32)
    f32, ones = _field(6, DT_FLOAT), _field(1, _field(3, b"".join(_varint(1) for _ in range(4))))
    nhwc = _field(2, "NHWC")
    path.write_bytes(b"".join([
        _node("input", "Placeholder", dtype=f32),
        _node("conv/kernel", "Const", dtype=f32, value=_float_tensor(kernel)),
        _node("conv", "Conv2D", ("input", "conv/kernel"), T=f32, strides=ones, dilations=ones,
              padding=_field(2, "SAME"), data_format=nhwc),
        _node("conv/bias", "Const", dtype=f32, value=_float_tensor(bias)),
        _node("conv/BiasAdd", "BiasAdd", ("conv", "conv/bias"), T=f32, data_format=nhwc),
        _node("output", "DepthToSpace", ("conv/BiasAdd",), T=f32, block_size=_field(3, scale), data_format=nhwc),
    ]))
    return path


# ---------------------------------------------------------------- the end-of-run summary of skips


def _skip_reason(report) -> str:
    """The reason given to pytest.skip / skipif, without pytest's 'Skipped: ' prefix."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """One line per distinct skip reason with its count, so that no test skips without a word."""
    reports = [r for r in terminalreporter.stats.get("skipped", []) if getattr(r, "longrepr", None)]
    counts = Counter(_skip_reason(r) for r in reports)
    for reason, count in counts.most_common():
        terminalreporter.write_line(f"skipped {count}: {reason}", yellow=True)


@pytest.fixture()
def tiny_pixelrec(tmp_path):
    """A random-init pixel-recursive weights file (seed 0), small enough to sample in a second."""
    import torch

    from upscale_cli.loader import save_weights
    from upscale_cli.models import build_model

    settings = {"scale": 4, "width": 6, "blocks": 1, "prior_width": 9, "prior_layers": 2}
    torch.manual_seed(0)
    weights = tmp_path / "pixelrec.safetensors"
    save_weights(build_model("pixelrec", **settings), weights, "pixelrec", settings)
    return weights
