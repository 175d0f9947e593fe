"""Group durability (images/atomic.DurableGroup): written temp files are made durable together
(one syncfs per file system instead of an fsync each) and only then renamed into place, so a target
is always either as it was or the complete new file; a failed sync fails its files alone and leaves
no temp file; an interrupted run (a real process, Ctrl-C) leaves whole outputs only and its inputs
untouched."""
from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from upscale_cli.errors import ImageWriteError
from upscale_cli.images import atomic

SRC = Path(__file__).resolve().parents[1] / "src"


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


@pytest.fixture
def durable_log(monkeypatch):
    """Records what each sync made durable and each rename, in order (both still do their real work)."""
    log: list[tuple[str, object]] = []
    make_durable, replace = atomic._make_durable, os.replace

    def logged_durable(first, temps):
        make_durable(first, temps)
        log.append(("durable", set(map(str, temps))))

    def logged_replace(src, dst):
        log.append(("rename", str(src)))
        replace(src, dst)

    monkeypatch.setattr(atomic, "_make_durable", logged_durable)
    monkeypatch.setattr(atomic.os, "replace", logged_replace)
    return log


def test_a_group_renames_each_file_only_after_its_sync(tmp_path, durable_log):
    group = atomic.DurableGroup(linger_s=60.0, most=1000)  # nothing goes before close()
    payloads = {tmp_path / f"f{i}.bin": os.urandom(100 + i) for i in range(20)}
    (tmp_path / "f3.bin").write_bytes(b"old")
    futures = [atomic.write_atomically(target, data, group) for target, data in payloads.items()]
    assert all(not f.done() for f in futures)
    assert (tmp_path / "f3.bin").read_bytes() == b"old"  # not replaced before it is durable
    assert not (tmp_path / "f0.bin").exists()
    assert len(hidden(tmp_path)) == 20  # the written temp files wait for their sync
    group.close()
    assert all(f.result() is None for f in futures)
    for target, data in payloads.items():
        assert target.read_bytes() == data
    assert hidden(tmp_path) == []
    syncs = [entry for entry in durable_log if entry[0] == "durable"]
    assert len(syncs) == 1  # one sync for the 20 files (one file system)
    synced: set[str] = set()
    for kind, what in durable_log:
        if kind == "durable":
            synced |= what
        else:
            assert what in synced, f"{what} renamed before it was durable"


def test_a_group_commits_when_full_and_when_asked(tmp_path, durable_log):
    group = atomic.DurableGroup(linger_s=60.0, most=4)
    try:
        futures = [atomic.write_atomically(tmp_path / f"f{i}.bin", b"x" * i, group) for i in range(9)]
        for f in futures[:8]:
            f.result(timeout=30)  # two full groups of 4 went without waiting
        assert not futures[8].done()
        group.flush()
        futures[8].result(timeout=30)
    finally:
        group.close()
    assert len([e for e in durable_log if e[0] == "durable"]) == 3


def test_files_wait_for_company_at_most_the_linger_time(tmp_path):
    group = atomic.DurableGroup(linger_s=0.05, most=1000)
    try:
        future = atomic.write_atomically(tmp_path / "one.bin", b"data", group)
        future.result(timeout=30)
        assert (tmp_path / "one.bin").read_bytes() == b"data"
    finally:
        group.close()


def test_a_failed_sync_fails_its_files_and_leaves_no_temp_file(tmp_path, monkeypatch):
    def failing(first, temps):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(atomic, "_make_durable", failing)
    (tmp_path / "a.png").write_bytes(b"old")
    group = atomic.DurableGroup(linger_s=60.0)
    futures = [atomic.write_atomically(tmp_path / name, b"new", group) for name in ("a.png", "b.png")]
    group.close()
    for future, name in zip(futures, ("a.png", "b.png")):
        err = future.exception()
        assert isinstance(err, ImageWriteError)
        assert "b.png" in str(err) or "a.png" in str(err)
        assert "Input/output error" in str(err)
    assert (tmp_path / "a.png").read_bytes() == b"old"
    assert not (tmp_path / "b.png").exists()
    assert hidden(tmp_path) == []


def test_a_failed_rename_fails_that_file_alone(tmp_path):
    group = atomic.DurableGroup(linger_s=60.0)
    ok = atomic.write_atomically(tmp_path / "ok.png", b"fine", group)
    blocked = tmp_path / "blocked.png"
    bad = atomic.write_atomically(blocked, b"new", group)
    blocked.mkdir()  # a folder appears where the file goes: the rename fails
    (blocked / "inside").write_text("x")
    group.close()
    assert ok.result() is None and (tmp_path / "ok.png").read_bytes() == b"fine"
    assert isinstance(bad.exception(), ImageWriteError) and "blocked.png" in str(bad.exception())
    assert hidden(tmp_path) == []


def test_without_syncfs_each_file_is_fsynced_before_its_rename(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_syncfs", lambda: None)
    synced: list[int] = []
    fsync = os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (synced.append(fd), fsync(fd)))
    group = atomic.DurableGroup(linger_s=60.0)
    futures = [atomic.write_atomically(tmp_path / f"f{i}.bin", b"abc", group) for i in range(3)]
    assert synced == []  # written, not yet made durable
    group.close()
    assert all(f.result() is None for f in futures) and len(synced) == 3
    assert [p.read_bytes() for p in sorted(tmp_path.glob("f*.bin"))] == [b"abc"] * 3


def test_a_write_after_close_is_durable_at_once(tmp_path):
    group = atomic.DurableGroup()
    group.close()
    future = atomic.write_atomically(tmp_path / "late.bin", b"late", group)
    assert future.result(timeout=30) is None and (tmp_path / "late.bin").read_bytes() == b"late"


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


COUNT = 2400


@pytest.mark.skipif(os.name != "posix", reason="SIGINT to a child process")
def test_ctrl_c_on_a_real_run_leaves_whole_outputs_and_untouched_inputs(tmp_path):
    """A real `upscale` process on 2,400 small PNGs (grouped writes), interrupted once some outputs
    exist: exit 130, no temp file anywhere, every output a whole image, every input as it was; the
    output folder also holds a hard link to an input, which --overwrite must not replace."""
    folder = tmp_path / "in"
    rng = np.random.default_rng(1)
    for i in range(COUNT):  # enough that the run is still going when the signal lands, even on a fast machine
        sub = folder / f"d{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(sub / f"i{i:04d}.png")
    out = tmp_path / "out"
    (out / "d0").mkdir(parents=True)
    os.link(folder / "d0" / "i0000.png", out / "d0" / "i0000.png")  # the target of i0000 is i0000 itself
    before = _digest(folder)
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1")
    child = subprocess.Popen([sys.executable, "-m", "upscale_cli", str(folder), "-r", "-x", "2", "-m", "nearest",
                              "-o", str(out), "-q", "--overwrite"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             # a test run started in the background (`pytest &`, nohup) ignores SIGINT, and
                             # children inherit that: give the child Ctrl-C as a terminal user has it
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        if sum(1 for _ in out.rglob("*.png")) > 30:
            break
        time.sleep(0.01)
    assert child.poll() is None, "the run ended before it could be interrupted"
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130, err.decode()
    assert b"Traceback" not in err
    assert hidden(out) == [] and hidden(folder) == []
    assert _digest(folder) == before
    written = [p for p in out.rglob("*.png") if p != out / "d0" / "i0000.png"]
    assert 0 < len(written) < COUNT - 1
    for path in written:
        with Image.open(path) as im:
            im.load()
            assert im.size == (64, 48)


def test_a_group_never_closed_still_commits_and_lets_the_program_end(tmp_path):
    """Its thread is not a daemon (a write in progress is finished at exit), so it must end by
    itself once the main thread has: the file is renamed into place and the process exits."""
    target = tmp_path / "late.bin"
    code = ("from pathlib import Path\nfrom upscale_cli.images import atomic\n"
            "group = atomic.DurableGroup(linger_s=600.0)\n"
            f"atomic.write_atomically(Path({str(target)!r}), b'kept', group)\n")
    start = time.monotonic()
    subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(SRC)), check=True, timeout=60)
    assert time.monotonic() - start < 30  # not the 600 s linger
    assert target.read_bytes() == b"kept" and hidden(tmp_path) == []


def test_one_sync_per_file_system(tmp_path, durable_log):
    other = Path("/dev/shm")
    if not other.is_dir() or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second file system to write to")
    there = Path(os.path.join(other, f"upscale-durable-test-{os.getpid()}"))
    there.mkdir()
    try:
        group = atomic.DurableGroup(linger_s=60.0)
        futures = [atomic.write_atomically(folder / f"f{i}.bin", b"data", group)
                   for i in range(3) for folder in (tmp_path, there)]
        group.close()
        assert all(f.result() is None for f in futures)
        syncs = [what for kind, what in durable_log if kind == "durable"]
        assert len(syncs) == 2 and all(len(files) == 3 for files in syncs)
        assert {Path(next(iter(files))).parent for files in syncs} == {tmp_path, there}
        assert hidden(tmp_path) == [] and hidden(there) == []
    finally:
        for path in there.iterdir():
            path.unlink()
        there.rmdir()


def test_an_unexpected_error_in_a_commit_fails_its_files_instead_of_hanging(tmp_path, monkeypatch):
    def broken(first, temps):
        raise RuntimeError("a bug")

    monkeypatch.setattr(atomic, "_make_durable", broken)
    group = atomic.DurableGroup(linger_s=0.01)
    try:
        future = atomic.write_atomically(tmp_path / "a.png", b"new", group)
        err = future.exception(timeout=30)
        assert isinstance(err, ImageWriteError) and "a bug" in str(err) and "a.png" in str(err)
        monkeypatch.setattr(atomic, "_make_durable", lambda first, temps: None)  # the thread still works
        assert atomic.write_atomically(tmp_path / "b.png", b"b", group).result(timeout=30) is None
    finally:
        group.close()
    assert not (tmp_path / "a.png").exists() and (tmp_path / "b.png").read_bytes() == b"b"
    assert hidden(tmp_path) == []
