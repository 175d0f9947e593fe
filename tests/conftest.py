"""Fixtures shared by several test files, and the end-of-run summary of skipped tests.

- `cache`: an empty weights cache under tmp, no mirror, online, fast retries (a test file opts in,
  e.g. `pytestmark = pytest.mark.usefixtures("cache")`).
- `generated_weights`: weights files made here, with catalogue entries carrying their real sha256
  and size, so the download tests and `upscale models ...` run without ../shared.
- `generated_catalogue`: the shipped catalogue plus those entries, as every `load_catalog()` caller sees it.
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
    from upscale_cli.catalog import ModelSpec, WeightsFile

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

    torch.manual_seed(0)
    path = folder / f"{UNET_MODEL}_x2.safetensors"
    save_weights(build_model("unet", **TINY_UNET), path, "unet", TINY_UNET)
    return {2: path}


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
    }
    return GeneratedWeights(folder=folder, specs=MappingProxyType(specs))


@pytest.fixture
def generated_catalogue(generated_weights, monkeypatch) -> dict:
    """The shipped catalogue plus the generated entries. Every caller (cli/models.py, catalog.resolve,
    the loader) reaches it through `upscale_cli.catalog.load_catalog` at call time, so patching that
    one name is enough; the real lru_cached function keeps its own, unchanged result."""
    from upscale_cli import catalog

    merged = {**catalog.load_catalog(), **generated_weights.specs}
    monkeypatch.setattr(catalog, "load_catalog", lambda: merged)
    return merged


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty weights cache under tmp, no mirror, online, and fast retries."""
    from upscale_cli import download

    root = tmp_path / "cache"
    monkeypatch.setenv("UPSCALE_CACHE_DIR", str(root))
    monkeypatch.delenv("UPSCALE_WEIGHTS_MIRROR", raising=False)
    monkeypatch.delenv("UPSCALE_OFFLINE", raising=False)
    monkeypatch.setenv("UPSCALE_DOWNLOAD_BACKOFF", "0.01")
    download._verified.clear()
    return root


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
