"""`upscale benchmark --runtime`: the runtime is named in every record and in report.md, a bad
value is a usage error, and with a runtime that compiles (OpenVINO) no timed call includes a
shape's conversion while every model scores as it does in PyTorch.

Tiny sets (two or one small images of their own sizes) and tiny models: interpolation, the
generated OpenCV graph and the generated unet of conftest.py (served from a local mirror folder).
Each OpenVINO conversion of the tiny unet takes about 3 s on 2 cores, so the runs need four (two
sizes, openvino and auto), the fewest that show a conversion left in a timed call.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import OPENCV_MODEL, UNET_MODEL
from image_factory import make_rgb_png

from upscale_cli import benchmark as bm
from upscale_cli import compiled
from upscale_cli.benchmark import run as run_module
from upscale_cli.errors import UsageError

pytestmark = pytest.mark.usefixtures("cache")  # an empty cache per test: a conversion is not found on disk
needs_openvino = pytest.mark.skipif(not compiled.available(), reason="OpenVINO is not installed: "
                                    "--runtime openvino has nothing to compile (pip install openvino)")
SIZES = ((40, 36), (44, 38))  # (width, height) of HR images: two sizes, two tile shapes at x2
PSNR_DB = 0.01  # OpenVINO's outputs are within 1/255 of PyTorch's: the same PSNR to this


def _dataset(folder: Path, sizes=SIZES) -> bm.DatasetSpec:
    folder.mkdir(parents=True, exist_ok=True)
    for i, size in enumerate(sizes):
        make_rgb_png(folder, f"img{i}.png", size)
    return bm.DatasetSpec(folder.name, folder)


@pytest.fixture
def mirror(generated_catalogue, generated_weights, monkeypatch):
    """The generated models (a tiny unet, an OpenCV graph) fetched from a local folder by name."""
    monkeypatch.setenv("UPSCALE_WEIGHTS_MIRROR", str(generated_weights.folder))


def _cli(*args):
    from typer.testing import CliRunner

    from upscale_cli.cli import app

    return CliRunner().invoke(app, ["benchmark", *map(str, args)])


@pytest.mark.parametrize("asked", [None, "torch", "openvino", "auto"])
def test_records_images_and_report_name_the_runtime(tmp_path, asked):
    out = tmp_path / "report"
    data = _dataset(tmp_path / "syn").hr_dir
    runtime = ["--runtime", asked] if asked else []
    result = _cli(data, "-x", 2, "-m", "bicubic", "-m", "nearest", "--no-lpips", "--out", out, *runtime)
    assert result.exit_code == 0, result.output
    want = asked or "torch"  # the benchmark's default, not upscale's auto
    records = json.loads((out / "results.json").read_text())
    assert len(records) == 2 and [r["runtime"] for r in records] == [want, want]
    for name in ("results.csv", "images.csv"):
        with open(out / name, newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert rows and all(row["runtime"] == want for row in rows), name
    speed = next(line for line in (out / "report.md").read_text().splitlines() if line.startswith("Speed:"))
    words = bm.report.RUNTIME_WORDS[want]
    assert words[:1].upper() + words[1:] in speed and "not affected by --runtime" in speed
    assert f"(--runtime {want})" in result.output  # the closing summary line on stderr


@pytest.mark.parametrize("value", ["tensorrt", "", "Torch", "open vino", "torch,openvino", "auto "])
def test_a_bad_runtime_is_a_usage_error_in_one_line(tmp_path, value):
    data = _dataset(tmp_path / "syn", SIZES[:1]).hr_dir
    result = _cli(data, "-x", 2, "-m", "bicubic", "--runtime", value)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--runtime" in lines[0], result.output
    assert "Traceback" not in result.output
    with pytest.raises(UsageError, match="--runtime"):  # library callers are checked the same way
        bm.BenchmarkConfig(datasets=(bm.DatasetSpec("syn", data),), runtime=value)


def test_the_default_is_torch_in_the_command_and_the_library():
    from upscale_cli.cli.benchmark import DEFAULT_RUNTIME

    config = bm.BenchmarkConfig(datasets=(bm.DatasetSpec("syn", Path(".")),))
    assert DEFAULT_RUNTIME == bm.protocol.BENCHMARK_RUNTIME == config.runtime == "torch"


@pytest.mark.parametrize("runtime, network_calls", [("torch", 0), ("openvino", 1), ("auto", compiled.AUTO_MIN_CALLS)])
def test_only_networks_the_runtime_compiles_run_untimed_first(mirror, runtime, network_calls):
    runners = {name: bm.build_runner(name, 2, "cpu", runtime=runtime)
               for name in ("bicubic", "nearest", OPENCV_MODEL, UNET_MODEL)}
    network = network_calls if compiled.available() else 0  # nothing converts without OpenVINO
    assert {name: r.untimed_calls for name, r in runners.items()} == {"bicubic": 0, "nearest": 0, OPENCV_MODEL: 0,
                                                                      UNET_MODEL: network}
    assert [name for name, r in runners.items() if r.network] == [UNET_MODEL]


class ConversionsPerCall:
    """run.timed_run, recording how many conversions each call made, by the seconds it returned
    (the time an ImageScore keeps), so a test can find the call that was scored."""

    def __init__(self, monkeypatch) -> None:
        self.by_seconds: dict[float, int] = {}
        timed_run = run_module.timed_run

        def recording(runner, lr):
            before = compiled.CompiledRunner.conversions
            out = timed_run(runner, lr)
            self.by_seconds[out[1]] = compiled.CompiledRunner.conversions - before
            return out

        monkeypatch.setattr(run_module, "timed_run", recording)

    def scored(self, scores) -> list[int]:
        return [self.by_seconds[s.seconds] for s in scores]


@needs_openvino
def test_openvino_times_no_conversion_and_scores_as_torch(tmp_path, mirror, monkeypatch):
    dataset = _dataset(tmp_path / "syn")
    models = ("bicubic", "nearest", OPENCV_MODEL, UNET_MODEL)
    runs = {}
    for runtime in ("torch", "openvino"):
        counter = ConversionsPerCall(monkeypatch)
        before = compiled.CompiledRunner.conversions
        config = bm.BenchmarkConfig(datasets=(dataset,), scales=(2,), models=models, lpips=False, runtime=runtime)
        runs[runtime] = result = bm.run_benchmark(config)
        assert result.ok, result.failures
        assert [r.model for r in result.records] == list(models)
        assert {r.runtime for r in result.records} == {s.runtime for s in result.images} == {runtime}
        converted = compiled.CompiledRunner.conversions - before
        assert converted == (len(SIZES) if runtime == "openvino" else 0)  # one per image size: the unet's
        assert counter.scored(result.images) == [0] * len(models) * len(SIZES)  # none inside a timed call
    psnr = {runtime: {(s.model, s.image): s.psnr for s in result.images} for runtime, result in runs.items()}
    assert psnr["openvino"] == pytest.approx(psnr["torch"], abs=PSNR_DB)  # every model, every image
    # nothing ran in PyTorch instead, and OpenCV's model (which --runtime does not run) adds no note
    assert not [note for note in runs["openvino"].notes if "--runtime" in note]


@needs_openvino
def test_auto_converts_in_the_untimed_calls_not_the_timed_one(tmp_path, mirror, monkeypatch):
    """auto converts a shape on its second call: with no untimed call the timed call of the set's
    first image (after the warm-up) would convert, with one that of the second image (a new size);
    with two, neither does."""
    counter = ConversionsPerCall(monkeypatch)
    before = compiled.CompiledRunner.conversions
    config = bm.BenchmarkConfig(datasets=(_dataset(tmp_path / "syn"),), scales=(2,), models=(UNET_MODEL,),
                                lpips=False, runtime="auto")
    result = bm.run_benchmark(config)
    assert result.ok, result.failures
    assert compiled.CompiledRunner.conversions - before == len(SIZES)
    assert counter.scored(result.images) == [0] * len(SIZES) and result.records[0].runtime == "auto"


def test_runtime_notes_reach_the_result_with_their_model(tmp_path, mirror, monkeypatch):
    """Where the runtime asked for cannot run a model, the run says so once, naming the model."""
    monkeypatch.setattr(compiled, "available", lambda: False)  # as where OpenVINO is not installed
    config = bm.BenchmarkConfig(datasets=(_dataset(tmp_path / "syn", SIZES[:1]),), scales=(2,), models=(UNET_MODEL,),
                                lpips=False, runtime="openvino")
    result = bm.run_benchmark(config)
    assert result.ok and result.records[0].runtime == "openvino"
    notes = [n for n in result.notes if "--runtime" in n]
    assert notes == [f"{UNET_MODEL}: --runtime openvino: OpenVINO is not installed (pip install openvino); ran PyTorch"]
