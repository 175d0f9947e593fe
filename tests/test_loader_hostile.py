"""Crafted and broken weights files given with -m (issue 11, point 4): each ends in one line that
names the file and what is wrong, exit 1, no output image, nothing built or read beyond the file."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import image_factory
from upscale_cli.cli import app
from upscale_cli.errors import UnsupportedScaleError, WeightsError
from upscale_cli.loader import load_model, model_from_weights, read_weights, save_weights
from upscale_cli.models import build_model

TINY = {"scale": 2, "width": 4, "levels": 1, "blocks": 0, "decoder_blocks": 0, "bottleneck_blocks": 1}


@pytest.fixture
def unet_state() -> dict[str, torch.Tensor]:
    model = build_model("unet", **TINY)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def write(path, state, arch="unet", settings=None, raw_settings=None):
    """A safetensors file with the given tensors and metadata (raw_settings: the string as is)."""
    meta = {} if arch is None else {"arch": arch}
    if raw_settings is not None or settings is not None:
        meta["settings"] = raw_settings if raw_settings is not None else json.dumps(settings)
    save_file(state, str(path), metadata=meta)
    return path


def run_cli(tmp_path, model_file):
    """`upscale photo.png -m FILE -o out.png` as a user runs it; returns (result, output path)."""
    png = image_factory.make_rgb_png(tmp_path, "photo.png", size=(24, 16))
    out = tmp_path / "out.png"
    return CliRunner().invoke(app, [str(png), "-m", str(model_file), "-o", str(out), "-q"]), out


def assert_one_line(result, out, model_file, *fragments):
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert model_file.name in lines[0], lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output and "weights_only" not in result.output
    assert result.stdout == "" and not out.exists()


# ---------------------------------------------------------------- the cases through the CLI

CASES = {
    # name: (how to damage TINY settings / tensors, fragments the error line must hold)
    "wrong_arch": (dict(arch="upsampler", settings={"scale": 2}), ["upsampler", "'stages.0.head.0.weight'", "missing"]),
    "not_json": (dict(raw_settings="{width: 4"), ["'settings' metadata is not JSON"]),
    "unknown_key": (dict(settings={**TINY, "evil": 1}), ["unknown setting 'evil' for unet"]),
    "a_list": (dict(raw_settings="[1, 2, 3]"), ["must be a JSON object, not a list"]),
    "a_string": (dict(raw_settings='"unet"'), ["must be a JSON object, not a string"]),
    "huge_width": (dict(settings={**TINY, "width": 100000}), ["'width'", "between 1 and 512", "100000"]),
    "width_as_text": (dict(settings={**TINY, "width": "4"}), ["'width'", "an integer"]),
    "nan_setting": (dict(raw_settings='{"width_mult": NaN}'), ["'width_mult'", "a number, not NaN"]),
    "bad_scale": (dict(settings={**TINY, "scale": 7}), ["'scale'", "one of 1, 2, 3, 4"]),
    "deep_json": (dict(raw_settings="[" * 100_000 + "]" * 100_000), ["not JSON"]),
    "unknown_arch": (dict(arch="evil", settings={}), ["unknown architecture 'evil'"]),
    "passwd": (dict(arch="opencv-espcn", settings={"algo": "espcn", "scale": 2, "model_path": "/etc/passwd"}),
               ["opencv-espcn reads its network from a separate file", "cannot name"]),
    "path_in_unet": (dict(settings={**TINY, "model_path": "/etc/passwd"}), ["unknown setting 'model_path'"]),
    "nested_huge": (dict(arch="coord-mlp", settings={"mlp": {"hidden": 100000}}), ["'mlp.hidden'", "between 1 and 1024"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_crafted_metadata_is_one_line(case, tmp_path, unet_state, monkeypatch):
    import upscale_cli.models.opencv_sr as opencv_sr
    import upscale_cli.models.unet as unet

    def never(*args, **kwargs):
        raise AssertionError("a model was built from refused settings")

    monkeypatch.setattr(opencv_sr, "OpenCVSuperRes", never)  # OpenCV must never see the metadata's path
    if case != "wrong_arch":
        monkeypatch.setattr(unet, "UNetSR", never)  # refused before any module is built
    damage, fragments = CASES[case]
    model_file = write(tmp_path / f"{case}.safetensors", unet_state, **damage)
    result, out = run_cli(tmp_path, model_file)
    assert_one_line(result, out, model_file, *fragments)


def test_wrong_tensor_shape_names_the_tensor(tmp_path, unet_state):
    unet_state["head.weight"] = torch.zeros(5, 3, 3, 3)
    model_file = write(tmp_path / "shapes.safetensors", unet_state, settings=TINY)
    result, out = run_cli(tmp_path, model_file)
    assert_one_line(result, out, model_file, "'head.weight' has shape (5, 3, 3, 3), expected (4, 3, 3, 3)")


def test_extra_tensor_is_named(tmp_path, unet_state):
    unet_state["smuggled"] = torch.zeros(3)
    model_file = write(tmp_path / "extra.safetensors", unet_state, settings=TINY)
    result, out = run_cli(tmp_path, model_file)
    assert_one_line(result, out, model_file, "tensor 'smuggled' that the model does not")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_at_load(bad, tmp_path, unet_state):
    unet_state["tail.conv.weight"][0, 0, 0, 0] = bad
    model_file = write(tmp_path / "nan.safetensors", unet_state, settings=TINY)
    result, out = run_cli(tmp_path, model_file)
    assert_one_line(result, out, model_file, "tensor 'tail.conv.weight' holds NaN or infinite values")


def test_non_finite_half_tensor_in_a_pth(tmp_path):
    path = tmp_path / "nan.pth"
    torch.save({"w": torch.tensor([1.0, float("-inf")], dtype=torch.float16)}, path)
    with pytest.raises(WeightsError, match="tensor 'w' holds NaN or infinite"):
        read_weights(path)


class _Payload:
    """Unpickling this runs a command: what a hostile .pth carries."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_pth_is_one_line_and_never_run(tmp_path):
    marker = tmp_path / "payload-ran"
    model_file = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(1), "x": _Payload(marker)}, model_file)
    result, out = run_cli(tmp_path, model_file)
    assert_one_line(result, out, model_file, "contains code or objects that are not plain tensors", "not loaded")
    assert not marker.exists()


def test_not_a_weights_file_is_one_line(tmp_path):
    model_file = tmp_path / "text.pth"
    model_file.write_text("hello\nworld\n")
    result, out = run_cli(tmp_path, model_file)
    assert_one_line(result, out, model_file)


# ---------------------------------------------------------------- what still works


def test_own_exported_weights_still_load(tmp_path):
    model = build_model("unet", **TINY)
    save_weights(model, tmp_path / "mine.safetensors", "unet", TINY)
    loaded = model_from_weights(tmp_path / "mine.safetensors")
    assert loaded.info.scale == 2
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    result, out = run_cli(tmp_path, tmp_path / "mine.safetensors")
    assert result.exit_code == 0, result.output
    assert out.is_file()


def test_user_opencv_pb_is_the_file_itself(tmp_path, opencv_graph):
    pb = tmp_path / "ESPCN_x2.pb"
    shutil.copy(opencv_graph, pb)  # an ESPCN x2 graph written by conftest.py, named as the published file
    model = load_model(str(pb))
    assert model.info.scale == 2 and model.model_path == str(pb)
    with pytest.raises(UnsupportedScaleError):
        load_model(str(pb), scale=3)
    renamed = tmp_path / "mystery.pb"
    shutil.copy(pb, renamed)
    result, out = run_cli(tmp_path, renamed)
    assert_one_line(result, out, renamed, "must keep its published name")


@pytest.mark.parametrize("version", ["5.0.0", "5.1.0", "6.0.0-dev"])
def test_opencv_without_the_tensorflow_importer_is_one_clear_line(tmp_path, opencv_graph, monkeypatch, version):
    """OpenCV 5 cannot read dnn_superres .pb graphs at all: a user who has it installed gets the fix,
    not OpenCV's own assertion from its ONNX parser; the graph is not handed to OpenCV."""
    import cv2

    pb = tmp_path / "ESPCN_x2.pb"
    shutil.copy(opencv_graph, pb)
    monkeypatch.setattr(cv2, "__version__", version)
    result, out = run_cli(tmp_path, pb)
    assert_one_line(result, out, pb, f"OpenCV {version}", "opencv-contrib-python-headless>=4.8,<5")


@pytest.mark.parametrize("version, major", [("4.8.0", 4), ("4.13.0-dev", 4), (" 5.1.0", 5), ("10.0", 10), ("", 0), ("dev", 0)])
def test_opencv_major(version, major):
    from upscale_cli.models.opencv_sr import opencv_major

    assert opencv_major(version) == major


# ---------------------------------------------------------------- the checks themselves


def test_in_bounds_settings_too_big_together_are_refused_on_the_meta_device():
    from upscale_cli.errors import ModelSettingsError
    from upscale_cli.models import MAX_PARAMETERS

    settings = {"scale": 2, "width": 512, "levels": 2, "width_mult": 2.0, "blocks": 32, "decoder_blocks": 32,
                "bottleneck_blocks": 32}
    with pytest.raises(ModelSettingsError, match=f"the limit is {MAX_PARAMETERS:,}"):
        build_model("unet", **settings)


def test_skeleton_allocates_nothing():
    from upscale_cli.models import model_skeleton

    skeleton = model_skeleton("unet", {"scale": 4})
    assert {t.device.type for t in skeleton.state_dict().values()} == {"meta"}


def test_scale_out_of_set_stays_an_unsupported_scale_error():
    with pytest.raises(UnsupportedScaleError, match="'scale' of upsampler must be one of 2, 4, 8"):
        build_model("upsampler", scale=3)


def test_fit_single_settings_are_checked_against_fitconfig():
    from upscale_cli.errors import ModelSettingsError

    build_model("coord-mlp", steps=5, hidden=8, depth=1)
    with pytest.raises(ModelSettingsError, match="'steps' of coord-mlp must be between 1 and 1000000"):
        build_model("coord-mlp", steps=10**12)
    with pytest.raises(ModelSettingsError, match="unknown setting 'evil' for coord-mlp .*mlp"):
        build_model("coord-mlp", evil=1)


# ---------------------------------------------------------------- declared sizes, checked before torch reads (issue 30.4)

import subprocess  # noqa: E402
import sys  # noqa: E402

import community_factory as cf  # noqa: E402

from upscale_cli import weights_guard  # noqa: E402


@pytest.fixture
def torch_never_reads(monkeypatch):
    """torch.load fails the test: a refused file must be refused from its zip directory and tensor list alone."""
    def never(*args, **kwargs):
        raise AssertionError("torch.load read a file that should have been refused first")

    monkeypatch.setattr(torch, "load", never)


def test_compressed_pth_bomb_is_refused_before_any_record_is_read(tmp_path, torch_never_reads):
    """The issue's recipe at 1/100 scale: 40 MB of zeros deflated to a few kB (the 4 GB one took 11.3 GB)."""
    bomb = cf.zip_bomb(tmp_path / "bomb.pth", 40_000_000)
    assert bomb.stat().st_size < 400_000
    result, out = run_cli(tmp_path, bomb)
    assert_one_line(result, out, bomb, "unpack to 40,000,", f"more than {weights_guard.MAX_COMPRESSION_RATIO}x",
                    "compression bomb")


def test_a_training_checkpoint_bomb_is_refused_before_any_record_is_read(tmp_path, torch_never_reads):
    """`upscale train --resume RUN` / `--init FILE.pt` read checkpoints through the same guard."""
    from upscale_cli.errors import UpscaleError
    from upscale_cli.train.checkpoint import load_checkpoint

    run = tmp_path / "run"
    run.mkdir()
    cf.zip_bomb(run / "checkpoint.pt", 40_000_000)
    for source in (run, run / "checkpoint.pt"):
        with pytest.raises(UpscaleError, match="compression bomb"):
            load_checkpoint(source)


def test_a_raised_size_limit_does_not_let_the_bomb_through(tmp_path, torch_never_reads, monkeypatch):
    monkeypatch.setenv(weights_guard.MAX_WEIGHTS_ENV, str(10**12))
    bomb = cf.zip_bomb(tmp_path / "bomb.pth", 40_000_000)
    assert_one_line(*run_cli(tmp_path, bomb), bomb, "compression bomb")


def _compact_as(folder, kind):
    """The Compact model saved as a zip .pth, an old-format .pth or a .safetensors."""
    from safetensors.torch import save_file as save_safetensors

    _, model = cf.compact(folder, "made.pth")
    state = model.state_dict()
    path = folder / {"zip": "m.pth", "legacy": "m_old.pth", "safetensors": "m.safetensors"}[kind]
    if kind == "safetensors":
        save_safetensors({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path, _use_new_zipfile_serialization=kind == "zip")
    return path


@pytest.mark.parametrize("kind", ["zip", "legacy", "safetensors"])
def test_total_size_limit_is_named_with_its_variable(tmp_path, kind, monkeypatch):
    path = _compact_as(tmp_path, kind)
    result, out = run_cli(tmp_path, path)
    assert result.exit_code == 0, result.output  # under the default limit it runs
    out.unlink()
    monkeypatch.setenv("UPSCALE_MAX_WEIGHTS_BYTES", "1000")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load read a file over the limit"))
    assert_one_line(*run_cli(tmp_path, path), path, "over the limit of 1,000", "set UPSCALE_MAX_WEIGHTS_BYTES")


def test_a_bad_limit_value_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("UPSCALE_MAX_WEIGHTS_BYTES", "lots")
    path = _compact_as(tmp_path, "zip")
    result, out = run_cli(tmp_path, path)
    assert result.exit_code == 1 and "UPSCALE_MAX_WEIGHTS_BYTES must be a whole number of bytes" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


STORAGE_LIES = {  # case: (tensors, storage type, declared numel overrides, record bytes, fragments)
    "billion_elements_small_record": ({"weight": (10**9,)}, torch.FloatStorage, None, {"0": 16},
                                      ["declares 4,000,000,000 bytes but the file has a record of 16 bytes"]),
    "short_record": ({"weight": (4,)}, torch.FloatStorage, None, {"0": 8}, ["declares 16 bytes", "record of 8 bytes"]),
    "long_record": ({"weight": (4,)}, torch.FloatStorage, None, {"0": 64}, ["declares 16 bytes", "record of 64 bytes"]),
    "missing_record": ({"weight": (4,)}, torch.FloatStorage, None, {}, ["declares 16 bytes but the file has no record"]),
    "negative_count": ({"weight": (4,)}, torch.FloatStorage, {"weight": -4}, {"0": 16}, ["without a valid element count"]),
    "quantised_storage": ({"weight": (4,)}, torch.QInt8Storage, None, {"0": 4},
                          ["unknown type 'torch QInt8Storage'"]),
}


@pytest.mark.parametrize("case", STORAGE_LIES)
def test_storage_sizes_in_the_pickle_must_match_their_records(tmp_path, case, torch_never_reads):
    tensors, storage_type, numel, records, fragments = STORAGE_LIES[case]
    data_pkl, _ = cf.checkpoint_pickle(tensors, storage_type, numel)
    path = cf.zip_checkpoint(tmp_path / "lies.pth", data_pkl, records, deflate=False)
    assert_one_line(*run_cli(tmp_path, path), path, *fragments)


def test_an_old_format_pth_declaring_more_than_it_holds_is_refused(tmp_path, torch_never_reads):
    path = _compact_as(tmp_path, "legacy")
    path.write_bytes(path.read_bytes()[:-200])  # the last storage's bytes cut short
    assert_one_line(*run_cli(tmp_path, path), path, "its tensors declare", "the file holds")


def test_a_tensor_list_over_its_limit_is_refused_unread(tmp_path, monkeypatch, torch_never_reads):
    monkeypatch.setattr(weights_guard, "MAX_PICKLE_BYTES", 64)
    path = _compact_as(tmp_path, "zip")
    assert_one_line(*run_cli(tmp_path, path), path, "its tensor list (data.pkl) is", "over the limit of 64")
    old = _compact_as(tmp_path, "legacy")
    assert_one_line(*run_cli(tmp_path, old), old, "runs past 64 bytes, the limit")


def test_the_opcode_walk_finds_every_storage_and_runs_nothing(tmp_path):
    """The walk sees the storages torch.save wrote (shared ones by memo) and never calls a payload."""
    marker = tmp_path / "payload-ran"
    shared = torch.arange(6.0)
    torch.save({"a": shared, "b": shared[2:], "c": torch.zeros(2, dtype=torch.int64), "x": _Payload(marker)},
               tmp_path / "mixed.pth")
    import io
    import zipfile

    with zipfile.ZipFile(tmp_path / "mixed.pth") as archive:
        data_pkl = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
        _, pids = weights_guard._walk(io.BytesIO(archive.read(data_pkl)), tmp_path)
    assert sorted({(pid[1], pid[2], pid[4]) for pid in pids}) == [("torch FloatStorage", "0", 6),
                                                                   ("torch LongStorage", "1", 2)]
    assert not marker.exists()


# ---------------------------------------------------------------- a model path that is no regular file (issue 30.15)


def _special(tmp_path, kind):
    path = tmp_path / "x.pth"
    if kind == "folder":
        path.mkdir()
    elif kind == "dev_zero_link":
        path.symlink_to("/dev/zero")
    else:
        os.mkfifo(path)
    return path


@pytest.mark.parametrize("kind, fragment", [("folder", "is a folder, not a model file"),
                                            ("dev_zero_link", "is not a regular file (a character device); it was not read"),
                                            ("fifo", "is not a regular file (a pipe); it was not read")])
def test_a_model_path_that_is_no_regular_file_is_named_for_what_it_is(tmp_path, kind, fragment):
    """Exit 2, as every -m that names no model (ModelNotFoundError); never opened, so nothing blocks."""
    path = _special(tmp_path, kind)
    result, out = run_cli(tmp_path, path)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == f"error: {path}: {fragment}"
    assert not out.exists()


@pytest.mark.parametrize("kind", ["folder", "dev_zero_link"])
def test_the_loader_refuses_what_is_no_regular_file(tmp_path, kind):
    """A cached or packaged path reaches read_weights without the CLI's check: refused the same way."""
    path = _special(tmp_path, kind)
    with pytest.raises(WeightsError, match="is a folder|is not a regular file"):
        read_weights(path)


def test_a_link_to_dev_zero_as_a_user_runs_it_returns_at_once(tmp_path):
    path = _special(tmp_path, "dev_zero_link")
    png = image_factory.make_rgb_png(tmp_path, "photo.png", size=(8, 8))
    done = subprocess.run([sys.executable, "-m", "upscale_cli", str(png), "-m", str(path), "-o", str(tmp_path / "o.png")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "is not a regular file (a character device)" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "o.png").exists()
