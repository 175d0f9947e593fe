"""A write killed half-way leaves a hidden temp file; the next write of the same target removes
it, and only it: not a live run's file in progress, not another target's, not anyone else's."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import image_factory as factory
from upscale_cli.images import DecodedImage, atomic
from upscale_cli.images.read import read_image
from upscale_cli.images.write import write_image

pytestmark = pytest.mark.skipif(os.name != "posix", reason="leftovers are found by pid only on POSIX")

SRC = Path(__file__).resolve().parents[1] / "src"
KILLED_WRITE_WAIT_S = 60  # the child imports NumPy, Pillow and OpenCV before it starts writing


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def dead_pid() -> int:
    """The pid of a process that has ended and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def temp_name(target: str, pid: int, owner: str | None = None, rand: str = "0123abcd") -> str:
    return f".{target}.{owner or atomic._owner_tag()}-{pid}-{rand}{atomic.TEMP_SUFFIX}"


def small_image() -> DecodedImage:
    return DecodedImage(np.random.default_rng(0).random((1, 3, 8, 12), dtype=np.float32))


def test_temp_file_name_says_whose_it_is(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(Path(src).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    write_image(small_image(), tmp_path / "out.png")
    assert atomic.LEFTOVER_NAME.fullmatch(seen[0])
    assert seen[0].startswith(f".out.png.{atomic._owner_tag()}-{os.getpid()}-")
    assert hidden(tmp_path) == []


def test_write_removes_only_a_dead_runs_leftover_for_that_target(tmp_path):
    gone = dead_pid()
    dead = temp_name("out.png", gone)
    live = temp_name("out.png", os.getpid(), rand="feedbeef")  # a concurrent run still writing
    other_target = temp_name("other.png", gone)
    other_machine = temp_name("out.png", gone, owner="00000000" if atomic._owner_tag() != "00000000" else "11111111")
    old_style = ".out.png.0123abcd.part"  # written before names carried a pid: whose, nobody can say
    unrelated = [".out.png", ".out.png.swp", f"{dead}.bak"]
    for name in [dead, live, other_target, other_machine, old_style, *unrelated]:
        (tmp_path / name).write_bytes(b"partial")
    (tmp_path / temp_name("out.png", gone, rand="5555aaaa")).mkdir()  # a folder is never ours

    write_image(small_image(), tmp_path / "out.png")

    assert read_image(tmp_path / "out.png").width == 12
    left = hidden(tmp_path)
    assert dead not in left
    assert sorted(left) == sorted([live, other_target, other_machine, old_style, *unrelated,
                                   temp_name("out.png", gone, rand="5555aaaa")])
    assert all((tmp_path / name).is_dir() or (tmp_path / name).read_bytes() == b"partial" for name in left)


def test_leftover_of_a_very_long_name_is_found_too(tmp_path):
    name = "n" * 240 + ".png"  # its temp name must be shortened to stay under 255 bytes
    stem = atomic.temp_stem(name)
    assert stem != name and len(stem) < 20
    leftover = temp_name(stem, dead_pid())
    (tmp_path / leftover).write_bytes(b"partial")
    write_image(small_image(), tmp_path / name)
    assert read_image(tmp_path / name).width == 12
    assert hidden(tmp_path) == []


def test_a_leftover_symlink_is_not_followed_or_removed(tmp_path):
    precious = tmp_path / "precious.txt"
    precious.write_text("keep")
    link = tmp_path / temp_name("out.png", dead_pid())
    link.symlink_to(precious)
    write_image(small_image(), tmp_path / "out.png")
    assert link.is_symlink() and precious.read_text() == "keep"


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit, RuntimeError])
def test_an_exception_during_the_write_removes_the_temp_file(tmp_path, monkeypatch, interrupt):
    target = tmp_path / "out.png"
    target.write_bytes(b"old contents")

    def interrupted_fsync(fd):
        raise interrupt()

    monkeypatch.setattr(os, "fsync", interrupted_fsync)
    with pytest.raises(interrupt):
        write_image(small_image(), target)
    assert target.read_bytes() == b"old contents"
    assert hidden(tmp_path) == []


# The child writes a real image through write_image, with an fsync that stands for a slow disk
# (encoding happens in memory before the temp file exists, so a slow encoder would not help).
KILLED_WRITER = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    from upscale_cli.images import DecodedImage
    from upscale_cli.images.write import write_image

    os.fsync = lambda fd: time.sleep(600)
    write_image(DecodedImage(np.random.default_rng(0).random((1, 3, 600, 800), dtype=np.float32)), sys.argv[1])
""")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_rerun_cleans_what_a_killed_run_left(tmp_path, sig):
    target = tmp_path / "big.png"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], env=env)
    try:
        deadline = time.monotonic() + KILLED_WRITE_WAIT_S
        while not hidden(tmp_path) and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert child.poll() is None, "the writer ended before it was killed"
        partial = hidden(tmp_path)
        assert len(partial) == 1 and atomic.LEFTOVER_NAME.fullmatch(partial[0])
        child.send_signal(sig)
    finally:
        child.kill()
        child.wait()
    assert hidden(tmp_path) == partial and not target.exists()  # what the issue saw

    write_image(small_image(), target)  # the rerun

    assert hidden(tmp_path) == []
    assert read_image(target).width == 12


def test_a_rerun_that_skips_an_existing_output_still_removes_its_dead_leftover(tmp_path):
    """A killed --overwrite run leaves the old output and a temp file; the rerun skips the output
    (it exists) and must still tidy what the killed run of its own left beside it."""
    from typer.testing import CliRunner

    from upscale_cli.cli import app

    src = factory.make_rgb_png(tmp_path, "a.png")
    (tmp_path / "a_x2.png").write_bytes(src.read_bytes())  # the output the killed run was replacing
    leftover = temp_name("a_x2.png", dead_pid())
    (tmp_path / leftover).write_bytes(b"partial")
    result = CliRunner().invoke(app, [str(src), "-x", "2", "-m", "nearest"])
    assert result.exit_code == 0 and "skipped" in result.stderr
    assert hidden(tmp_path) == []
