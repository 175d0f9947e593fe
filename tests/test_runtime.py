"""--runtime: the compiled CPU runtime (src/upscale_cli/compiled.py, OpenVINO) beside PyTorch eager.

Real models only (tiny random-init ones of ours and spandrel's, the shipped unet once), run through
the engine with its tiler, against the same engine with --runtime torch. Each distinct tile shape is a
conversion (about a second for a tiny model), so the grids are chosen to need few shapes.
"""
from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from upscale_cli.engine import UpscaleConfig, Upscaler

ov = pytest.importorskip("openvino", reason="OpenVINO is not installed: the compiled runtime has nothing to run")

from upscale_cli import compiled  # noqa: E402 - after the skip
from upscale_cli.compiled import CompiledRunner, runner_for  # noqa: E402

STEP = 1 / 255  # outputs within one 8-bit step of PyTorch's


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """A compiled cache of this test's own (UPSCALE_CACHE_DIR moves the weights cache and it)."""
    monkeypatch.setenv("UPSCALE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / compiled.COMPILED_SUBDIR


def entries(cache: Path) -> list[Path]:
    """The compiled models in the cache (a folder each; the descriptors recorded beside them are files)."""
    return sorted(p for p in cache.iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def tiny_compact(tmp_path_factory) -> str:
    from community_factory import compact

    return str(compact(tmp_path_factory.mktemp("compact"), scale=2)[0])


def upscale(model: str, x: torch.Tensor, runtime: str, tile: int = 0) -> tuple[torch.Tensor, Upscaler]:
    upscaler = Upscaler(UpscaleConfig(model=model, device="cpu", runtime=runtime, tile=tile), progress=False)
    return upscaler.upscale_tensor(x), upscaler


def image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("model_fixture, size, tile", [
    ("tiny_unet", (1, 37), 32), ("tiny_unet", (45, 67), 32), ("tiny_compact", (37, 1), 16),
    ("tiny_compact", (45, 67), 0),
])
def test_tiled_compiled_equals_untiled_torch(model_fixture, size, tile, request):
    """Tiles through OpenVINO agree with PyTorch untiled within one 8-bit step, at odd sizes and
    1-pixel strips, tiled and untiled (tiles of one pass share a shape: one conversion each)."""
    model = request.getfixturevalue(model_fixture)
    x = image(*size)
    reference, _ = upscale(model, x, "torch")
    out, upscaler = upscale(model, x, "openvino", tile)
    runner = upscaler._runners[upscaler.passes_for(*size)[0]]
    assert isinstance(runner, CompiledRunner) and runner._requests and not runner._torch_shapes
    assert out.shape == reference.shape
    assert float((out - reference).abs().max()) <= STEP, upscaler.notes
    assert not [n for n in upscaler.notes if "runtime" in n], upscaler.notes


def test_shipped_unet_within_a_step():
    """The shipped default, on a strip padded to its multiple of 8."""
    x = image(5, 29, seed=1)
    reference, _ = upscale("unet", x, "torch")
    out, upscaler = upscale("unet", x, "openvino")
    assert float((out - reference).abs().max()) <= STEP and not upscaler.notes


def test_batch_runs_image_by_image_through_one_shape(tiny_unet):
    """A batch of same-size images needs one conversion, and gives each image's own output."""
    x = torch.cat([image(24, 40, seed=s) for s in range(3)])
    before = CompiledRunner.conversions
    out, _ = upscale(tiny_unet, x, "openvino")
    assert CompiledRunner.conversions == before + 1
    reference, _ = upscale(tiny_unet, x, "torch")
    assert float((out - reference).abs().max()) <= STEP


def test_second_run_reuses_the_cache_and_auto_waits_for_a_second_call(tiny_unet, cache):
    x = image(20, 30)
    before = CompiledRunner.conversions
    auto, upscaler = upscale(tiny_unet, x, "auto")  # a shape seen once in a process: PyTorch, nothing cached
    assert CompiledRunner.conversions == before and not cache.exists()
    upscaler.upscale_tensor(x)  # seen twice: converted and cached
    assert CompiledRunner.conversions == before + 1 and len(entries(cache)) == 1
    entry = entries(cache)[0]
    mtime = (entry / "model.bin").stat().st_mtime_ns
    for runtime in ("auto", "openvino"):  # a new engine (as the next process): loaded, not converted
        out, upscaler = upscale(tiny_unet, x, runtime)
        assert isinstance(upscaler._runners[2], CompiledRunner) and upscaler._runners[2]._requests
        assert float((out - auto).abs().max()) <= STEP
    assert CompiledRunner.conversions == before + 1 and (entry / "model.bin").stat().st_mtime_ns == mtime


@pytest.fixture(scope="module")
def cached_entry(tiny_unet, tmp_path_factory) -> tuple[Path, torch.Tensor]:
    """One converted model (tiny_unet at 24x16) in a cache of its own, and its output: tests copy it."""
    root = tmp_path_factory.mktemp("made")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("UPSCALE_CACHE_DIR", str(root))
        out, _ = upscale(tiny_unet, image(16, 24), "openvino")
    return root / compiled.COMPILED_SUBDIR, out


@pytest.mark.parametrize("damage", ["flip a byte", "empty xml"])
def test_damaged_cache_entry_is_rebuilt(tiny_unet, cache, cached_entry, damage):
    shutil.copytree(cached_entry[0], cache)
    x, reference = image(16, 24), cached_entry[1]
    entry = entries(cache)[0]
    blob = entry / "model.bin"
    if damage == "flip a byte":
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF
        blob.write_bytes(bytes(data))
    else:
        (entry / "model.xml").write_text("")
    before = CompiledRunner.conversions
    out, upscaler = upscale(tiny_unet, x, "openvino")
    assert torch.equal(out, reference) or float((out - reference).abs().max()) <= STEP
    assert CompiledRunner.conversions == before + 1
    assert [n for n in upscaler.notes if "damaged" in n and "rebuilt" in n], upscaler.notes
    assert len(upscaler.notes) == 1
    _, again = upscale(tiny_unet, x, "openvino")  # rebuilt whole: the next run loads it quietly
    assert CompiledRunner.conversions == before + 1 and not again.notes


class CumulativeMax(nn.Module):
    """A real network whose op (torch.cummax) OpenVINO's PyTorch frontend does not convert."""

    def __init__(self) -> None:
        super().__init__()
        from upscale_cli.models.descriptor import FixedScale

        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.info = FixedScale(in_channels=3, scale=1, receptive_field=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cummax(self.conv(x), dim=-1).values


def test_model_that_does_not_convert_runs_in_torch_with_one_note():
    model, notes = CumulativeMax().eval(), []
    runner = runner_for(model, "openvino", torch.device("cpu"), torch.float32, notes)
    x = image(8, 12)
    with torch.no_grad():
        outs = [runner(x) for _ in range(3)]
        expected = model(x)
    assert all(torch.equal(out, expected) for out in outs)
    assert len(notes) == 1 and "could not run 12x8 tiles" in notes[0] and "PyTorch" in notes[0], notes


class NumpyStep(nn.Module):
    """A network with a step outside torch (as resize's NumPy path was inside unet's forward for
    outputs over 1024 pixels): a trace keeps the example's values of that step as constants."""

    def __init__(self) -> None:
        super().__init__()
        from upscale_cli.models.descriptor import FixedScale

        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.info = FixedScale(in_channels=3, scale=1, receptive_field=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + torch.from_numpy(x.detach().numpy() * 0.5)


def test_a_trace_that_baked_in_its_example_is_refused():
    """Such a conversion agrees with PyTorch on the tile it was traced on and not on another tile of
    the same shape: the second probe refuses it, and every tile gets PyTorch's numbers."""
    model, notes = NumpyStep().eval(), []
    runner = runner_for(model, "openvino", torch.device("cpu"), torch.float32, notes)
    with torch.no_grad():
        for seed in range(3):
            x = image(8, 12, seed=seed)
            assert torch.equal(runner(x), model(x))
    assert len(notes) == 1 and "differs from PyTorch" in notes[0], notes


def test_unet_tiles_with_outputs_over_1024_pixels_equal_untiled(tmp_path):
    """The shipped unet's tiles of 8x416 at x4 (its bicubic residual over 1024 pixels wide once ran
    through NumPy, which the trace froze): every tile right, not only the first."""
    x = image(1, 627, seed=7)
    reference, _ = upscale("unet", x, "torch")
    out, upscaler = upscale("unet", x, "openvino", tile=416)
    assert upscaler._runners[4]._requests, upscaler.notes  # compiled, not refused
    assert float((out - reference).abs().max()) <= STEP


def test_a_refused_conversion_is_remembered_by_the_next_run(monkeypatch, cache):
    """A shape that did not convert is not tried again by a later process (DAT spends a minute on
    one), nor by --runtime auto, which says nothing; `models clear` forgets it."""
    tries = []
    real = ov.convert_model
    monkeypatch.setattr(ov, "convert_model", lambda *a, **k: tries.append(1) or real(*a, **k))
    model, x = CumulativeMax().eval(), image(8, 12)
    with torch.no_grad():
        expected = model(x)
        runner_for(model, "openvino", torch.device("cpu"), torch.float32, [])(x)
        assert len(tries) == 1 and list(cache.glob("*" + compiled.REFUSED_SUFFIX))
        for mode, said in (("openvino", 1), ("auto", 0)):
            notes = []
            out = runner_for(model, mode, torch.device("cpu"), torch.float32, notes)(x)
            assert torch.equal(out, expected) and len(tries) == 1
            assert len(notes) == said and all("earlier run" in n for n in notes), notes
    compiled.clear_compiled()
    with torch.no_grad():
        runner_for(model, "openvino", torch.device("cpu"), torch.float32, [])(x)
    assert len(tries) == 2


def test_runtime_openvino_where_it_cannot_apply_says_why():
    notes = []
    model = CumulativeMax()
    assert runner_for(model, "openvino", torch.device("cpu"), torch.bfloat16, notes) is model
    assert runner_for(model, "auto", torch.device("cpu"), torch.bfloat16, notes) is model
    assert notes == ["--runtime openvino: OpenVINO runs float32 here; ran PyTorch in bfloat16"]


def test_models_clear_removes_compiled_models(cache, cached_entry):
    from typer.testing import CliRunner

    from upscale_cli.cli import app

    shutil.copytree(cached_entry[0], cache)
    result = CliRunner().invoke(app, ["models", "clear"])
    assert result.exit_code == 0, result.output
    assert "removed 1 compiled model(s)" in result.output and not cache.exists()


def test_runtime_torch_never_imports_openvino(tiny_unet, tmp_path):
    """The whole command, a fresh process: --runtime torch runs without loading OpenVINO."""
    from image_factory import make_rgb_png

    script = f"""
import sys
from upscale_cli.cli import main
sys.argv = ["upscale", {str(tmp_path / 'in.png')!r}, "-m", {tiny_unet!r}, "-o", {str(tmp_path / 'out.png')!r},
            "--runtime", "torch", "-q"]
try:
    main()
except SystemExit as stop:
    assert not stop.code, stop.code
assert "openvino" not in sys.modules, "openvino was imported"
print("ok")
"""
    make_rgb_png(tmp_path, "in.png", size=(12, 10))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
    assert (tmp_path / "out.png").is_file()


@pytest.mark.parametrize("text, cpus", [("max 100000", None), ("200000 100000", 2), ("150000 100000", 2),
                                        ("50000 100000", 1), ("", None), ("x y", None), ("100 0", None)])
def test_threads_follow_a_cgroup_cpu_quota(tmp_path, monkeypatch, text, cpus):
    """OpenVINO's threads: a container's CPU quota caps the affinity mask's count; OMP_NUM_THREADS wins."""
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text(text)
    assert compiled.cgroup_cpu_quota(cpu_max) == cpus
    monkeypatch.setattr(compiled, "CGROUP_CPU_MAX", cpu_max)
    monkeypatch.setattr(compiled.cgroup_cpu_quota, "__defaults__", (cpu_max,))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    import os

    cores = len(os.sched_getaffinity(0))
    assert compiled.threads() == (min(cores, cpus) if cpus else cores)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert compiled.threads() == 3


def test_the_compiled_cache_keeps_to_its_bound_least_recently_used_first(cache):
    """Entries past the bound go oldest first; the one just made stays even alone over the bound."""
    import os

    cache.mkdir(parents=True)
    for k in range(5):
        entry = cache / f"entry{k}"
        entry.mkdir()
        (entry / "model.bin").write_bytes(b"x" * 1000)
        os.utime(entry, (1000 + k, 1000 + k))
    os.utime(cache / "entry0", (2000, 2000))  # used last
    (cache / "x.descriptor.json").write_text("{}")
    freed = compiled.prune_compiled(keep=cache / "entry1", limit=2500)
    assert freed == 3000 and sorted(p.name for p in entries(cache)) == ["entry0", "entry1"]
    assert (cache / "x.descriptor.json").exists()
    assert compiled.prune_compiled(keep=cache / "entry1", limit=10) == 1000 and entries(cache) == [cache / "entry1"]


@pytest.mark.parametrize("runtime", ["openvino", "auto"])
def test_automatic_tiles_are_planned_by_the_compiled_models_memory(tiny_unet, runtime, monkeypatch):
    """A compiled model keeps more of a tile's activations at once than PyTorch: its automatic tile
    is planned with WORKING_SET_FACTOR times the descriptor's memory per pixel, in both the torch
    pass (the shape's first conversion) and the NumPy pass of a later engine; --runtime torch keeps
    the descriptor's own figure. With little free memory that gives a smaller tile."""
    from upscale_cli import tiling

    seen: list[tuple[str, int]] = []
    auto_tile_size = tiling.auto_tile_size

    def spy(*args, **kwargs):
        seen.append((current, args[4]))
        return auto_tile_size(*args, **kwargs)

    monkeypatch.setattr(tiling, "auto_tile_size", spy)
    x = image(24, 40)
    for current in ("torch", runtime, runtime):  # the last: a new engine that finds the shape cached
        upscaler = Upscaler(UpscaleConfig(model=tiny_unet, device="cpu", runtime=current), progress=False)
        upscaler.upscale_tensor(x)
        upscaler.upscale_tensor(x)  # auto converts on the second call
    torch_bytes = {b for r, b in seen if r == "torch"}
    compiled_bytes = {b for r, b in seen if r == runtime}
    assert len(torch_bytes) == 1 and compiled_bytes == {math.ceil(torch_bytes.pop() * compiled.WORKING_SET_FACTOR)}
    info = Upscaler(UpscaleConfig(model=tiny_unet, device="cpu", runtime="torch"), progress=False).model(2).info
    free = 64 << 20
    small = auto_tile_size(512, 512, 3, 2, compiled.planning_info(info).bytes_per_input_pixel, free_memory_bytes=free)
    large = auto_tile_size(512, 512, 3, 2, info.bytes_per_input_pixel, free_memory_bytes=free)
    assert 0 < small < large
