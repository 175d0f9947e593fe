"""`upscale ... --ray auto` on a local Ray instance with 2 CPUs: the same files, names and bytes as a
local run, --json rows in input order on the caller, per-file errors and exit code 1 as locally.

Ray is an optional extra. When it is not installed, this test installs it on demand (pip, about
80 MB and 20 s) into a cache folder (UPSCALE_TEST_RAY_DIR, default ~/.cache/upscale-cli-test/ray)
that is appended to sys.path, so CI runs it without adding Ray to the test extra. If that install
fails, the test fails and says why; UPSCALE_TEST_RAY=skip skips it, visibly, on purpose.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import image_factory as f
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from upscale_cli.cli import app
from upscale_cli.report import ReportRow

RAY_REQUIREMENT = "ray>=2.9"
runner = CliRunner()


def _ray_on_demand():
    if os.environ.get("UPSCALE_TEST_RAY") == "skip":
        pytest.skip("UPSCALE_TEST_RAY=skip")
    try:
        import ray
        return ray, None
    except ImportError:
        pass
    default = Path.home() / ".cache" / "upscale-cli-test" / f"ray-py{sys.version_info[0]}{sys.version_info[1]}"
    target = Path(os.environ.get("UPSCALE_TEST_RAY_DIR", default))
    if not (target / "ray" / "__init__.py").exists():
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(target), RAY_REQUIREMENT],
                              capture_output=True, text=True, timeout=900)
        if done.returncode:
            pytest.fail(f"Ray is not installed and `pip install --target {target} {RAY_REQUIREMENT}` failed:\n"
                        f"{done.stderr[-2000:]}")
    sys.path.append(str(target))  # after the virtualenv's own packages: nothing of ours is shadowed
    import ray
    return ray, target


@pytest.fixture(scope="module")
def local_ray():
    ray, target = _ray_on_demand()
    saved = os.environ.get("PYTHONPATH")
    if target is not None:  # Ray's worker processes must import ray too
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (saved, str(target)) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "") + os.pathsep
                                       + str(Path(__file__).resolve().parents[1] / "src")}})
    yield ray
    ray.shutdown()
    if saved is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = saved


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    for i in range(11):
        sub = folder / f"d{i % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        f.make_rgb_png(sub, f"img{i:02d}.png")
    (folder / "d1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_ray_matches_a_local_run(local_ray, tmp_path):
    folder = _folder(tmp_path)
    args = [str(folder), "-r", "-x", "2", "-m", "bicubic", "--json"]
    here = runner.invoke(app, [*args, "-o", str(tmp_path / "local")])
    there = runner.invoke(app, [*args, "-o", str(tmp_path / "ray"), "--ray", "auto"])
    assert here.exit_code == there.exit_code == 1, there.output  # the broken file, as locally
    rows_here = [json.loads(line) for line in here.stdout.splitlines()]
    rows_there = [json.loads(line) for line in there.stdout.splitlines()]
    schema = [field.name for field in dataclasses.fields(ReportRow)]  # the documented fields, in order
    assert all(list(row) == schema for row in rows_there + rows_here), rows_there
    assert [r["input"] for r in rows_there] == [r["input"] for r in rows_here]  # input order
    assert [r["status"] for r in rows_there] == [r["status"] for r in rows_here]
    for a, b in zip(rows_here, rows_there):
        assert {k: v for k, v in a.items() if k not in ("seconds", "output", "error")} == \
               {k: v for k, v in b.items() if k not in ("seconds", "output", "error")}
    broken = [r for r in rows_there if r["status"] == "failed"]
    assert len(broken) == 1 and "broken.png" in broken[0]["error"] and "corrupt" in broken[0]["error"]
    assert "error:" in there.stderr and "broken.png" in there.stderr
    local_files = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*.png"))
    ray_files = sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray").rglob("*.png"))
    assert ray_files == local_files and len(ray_files) == 11
    for name in ray_files:  # written by the workers, byte for byte what a local run writes
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    again = runner.invoke(app, [*args, "-o", str(tmp_path / "ray"), "--ray", "auto", "--shard", "0/2"])
    assert {json.loads(line)["status"] for line in again.stdout.splitlines()} <= {"skipped", "failed"}


def _rows(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def _assert_same_run(here, there, local: Path, ray: Path, count: int) -> None:
    """The same exit code, rows (input order, schema, statuses, every field but time and paths) and
    files (pixel for pixel) from a local run and a --ray run of one command."""
    assert here.exit_code == there.exit_code == 1, there.output  # the broken file, as locally
    rows_here, rows_there = _rows(here), _rows(there)
    schema = [field.name for field in dataclasses.fields(ReportRow)]
    assert all(list(row) == schema for row in rows_here + rows_there), rows_there
    for a, b in zip(rows_here, rows_there, strict=True):
        assert {k: v for k, v in a.items() if k not in ("seconds", "output", "error")} == \
               {k: v for k, v in b.items() if k not in ("seconds", "output", "error")}, b["error"]
    assert [r["status"] for r in rows_there].count("ok") == count
    failed = [r for r in rows_there if r["status"] == "failed"]
    assert len(failed) == 1 and "broken" in failed[0]["error"] and "broken" in there.stderr
    files = sorted(p.relative_to(local) for p in local.rglob("*.png"))
    assert sorted(p.relative_to(ray) for p in ray.rglob("*.png")) == files and len(files) == count
    for name in files:
        with Image.open(local / name) as a, Image.open(ray / name) as b:
            assert a.mode == b.mode and a.size == b.size and a.tobytes() == b.tobytes(), name


def test_restore_ray_matches_a_local_run(local_ray, tmp_path, monkeypatch):
    """`upscale restore --ray`: unet-jpeg, then the inpainting model inside a mask the workers read
    themselves; given as relative paths, from the folder the caller runs in."""
    monkeypatch.chdir(tmp_path)
    Path("in").mkdir()
    for i in range(5):
        f.make_rgb_jpeg(Path("in"), f"img{i}.jpg")
    (Path("in") / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    mask = np.zeros(f.SIZE[::-1], np.uint8)
    mask[4:10, 4:12] = 255
    Image.fromarray(mask).save("mask.png")
    args = ["restore", "in", "--task", "jpeg", "--mask", "mask.png", "--format", "png", "--json"]
    here = runner.invoke(app, [*args, "-o", "local"])
    there = runner.invoke(app, [*args, "-o", "ray", "--ray", "auto"])
    _assert_same_run(here, there, tmp_path / "local", tmp_path / "ray", 5)
    assert {r["model"] for r in _rows(there) if r["status"] == "ok"} == {"unet-jpeg+unet-inpaint"}


def test_fit_single_ray_matches_a_local_run(local_ray, tmp_path):
    """`upscale fit-single --ray`: each worker fits its files; a seeded fit is the same there (the fit
    runs on a fixed number of threads, fitting.FIT_THREADS, whatever the process)."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        f.make_rgb_png(folder, f"img{i}.png", size=(12, 8))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    args = ["fit-single", str(folder), "-x", "2", "--steps", "5", "--hidden", "8", "--seed", "3", "--json"]
    here = runner.invoke(app, [*args, "-o", str(tmp_path / "local")])
    there = runner.invoke(app, [*args, "-o", str(tmp_path / "ray"), "--ray", "auto"])
    _assert_same_run(here, there, tmp_path / "local", tmp_path / "ray", 3)
    assert all(r["size"] == [24, 16] and r["notes"] for r in _rows(there) if r["status"] == "ok")


@pytest.mark.parametrize("command", [["-m", "nearest"], ["restore", "--task", "jpeg"], ["fit-single", "--steps", "5"]])
def test_ray_refuses_stdin(local_ray, tmp_path, command):
    args = [*command[:1], "-", *command[1:]] if command[0] in ("restore", "fit-single") else ["-", *command]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "a.png"), "--ray", "auto"], input=b"")
    assert result.exit_code == 2 and "--ray takes files and folders, not stdin" in result.output, result.output


def test_fit_single_ray_refuses_from_model(tmp_path):
    result = runner.invoke(app, ["fit-single", "--from-model", str(tmp_path / "m.safetensors"), "--ray", "auto"])
    assert result.exit_code == 2 and "--ray" in result.output and "--from-model" in result.output


def test_sampling_ray_matches_a_local_run(local_ray, tmp_path, tiny_pixelrec):
    """A sampling model's --ray (-m pixel-recursive): each worker loads the weights file and draws
    with the caller's seed, so the same answers, rows (one per answer) and files as a local run."""
    weights = tiny_pixelrec
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        f.make_rgb_png(folder, f"img{i}.png", size=(3, 2))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    args = [str(folder), "-m", str(weights), "--samples", "2", "--seed", "4", "--json"]
    here = runner.invoke(app, [*args, "-o", str(tmp_path / "local")])
    there = runner.invoke(app, [*args, "-o", str(tmp_path / "ray"), "--ray", "auto"])
    _assert_same_run(here, there, tmp_path / "local", tmp_path / "ray", 6)
    assert [r["notes"] for r in _rows(there) if r["status"] == "ok"] == [
        [f"answer {k} of 2: temperature 0.5, seed 4"] for _ in range(3) for k in (1, 2)]
