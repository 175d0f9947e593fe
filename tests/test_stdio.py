"""stdin and stdout under hostile conditions: every write to stdout checked (a full disk,
/dev/full, a short write near the end of a file, a reader that closes the pipe), and stdin read
in chunks up to a named limit (an endless or huge stream, zeros, garbage after a signature).

The end-to-end cases run the real CLI in a subprocess: /dev/full and the file-size limit
(RLIMIT_FSIZE, which makes a regular file take a short write, exactly as a nearly full disk does)
need a real stdout, not Typer's CliRunner.
"""
from __future__ import annotations

import errno
import io
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import image_factory as f
from upscale_cli.cli.stdout import PartialWriteError, write_all
from upscale_cli.errors import ImageReadError, UsageError
from upscale_cli.images import read as image_read
from upscale_cli.images.read import STREAM_LIMIT_ENV, read_image, read_stream

SRC = str(Path(__file__).parents[1] / "src")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SHORT_FILE_BYTES = 45_056  # the issue's: what fit on a nearly full disk
needs_posix = pytest.mark.skipif(os.name != "posix", reason="needs POSIX pipes, /dev/full and RLIMIT_FSIZE")
needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="/dev/full exists on Linux only")


def _noise_png(folder: Path, size=(80, 60)) -> Path:
    """Incompressible pixels: its x4 output (about 170 KB) is bigger than a pipe holds (64 KiB)."""
    path = folder / "noise.png"
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _env(**extra: str) -> dict:
    env = {key: value for key, value in os.environ.items() if key != STREAM_LIMIT_ENV}
    return {**env, "PYTHONPATH": SRC, **extra}


def _upscale(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("env", _env())
    kwargs.setdefault("timeout", 120)
    return subprocess.run([sys.executable, "-m", "upscale_cli", *args], **kwargs)


def _one_clean_error(stderr: bytes, expected: str) -> str:
    """The one `error:` line (a batch adds its count line), and no traceback or exit-time noise."""
    text = stderr.decode()
    assert "Traceback" not in text and "Exception ignored" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], text
    return errors[0]


# ----------------------------------------------------------- the write loop


class _Fd:
    """A file descriptor's writes: each takes at most `most` bytes, and those past `room` fail."""

    def __init__(self, most: int, room: int | None = None, error: int = errno.ENOSPC) -> None:
        self.most, self.room, self.error, self.got = most, room, error, bytearray()

    def write(self, fd: int, view: memoryview) -> int:
        if self.room is not None and len(self.got) >= self.room:
            raise OSError(self.error, os.strerror(self.error))
        take = min(len(view), self.most, len(view) if self.room is None else self.room - len(self.got))
        self.got += view[:take]
        return take


@pytest.mark.parametrize("most", [1, 7, 4096, 1 << 30])
def test_write_all_goes_on_after_short_writes(most):
    data = os.urandom(50_000)
    fd = _Fd(most)
    assert write_all(3, data, fd.write) == len(data) and bytes(fd.got) == data


@pytest.mark.parametrize("room,error", [(0, errno.ENOSPC), (45_056, errno.ENOSPC), (10, errno.EIO), (99, errno.EPIPE)])
def test_write_all_reports_how_much_got_through(room, error):
    fd = _Fd(most=4096, room=room, error=error)
    with pytest.raises(PartialWriteError) as caught:
        write_all(3, os.urandom(100_000), fd.write)
    assert caught.value.written == room == len(fd.got) and caught.value.error.errno == error


def test_write_all_stops_on_a_write_that_takes_nothing():
    with pytest.raises(PartialWriteError) as caught:
        write_all(3, b"abc", lambda fd, view: 0)
    assert caught.value.written == 0


@needs_posix
def test_write_all_to_a_pipe_whose_reader_left():
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        with pytest.raises(PartialWriteError) as caught:
            write_all(write_end, b"x" * 100_000)
    finally:
        os.close(write_end)
    assert caught.value.error.errno == errno.EPIPE and caught.value.written == 0


# ------------------------------------------------------------- stdout, end to end


@needs_dev_full
@pytest.mark.parametrize("command", ["image", "json rows", "models", "models --json", "models search --json",
                                     "models search"])
def test_dev_full_is_one_line_and_exit_1(tmp_path, command):
    image = _noise_png(tmp_path)
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(image.read_bytes())
    args, stdin = {
        "image": (["-", "-m", "bicubic", "-x", "4", "-o", "-"], image.open("rb")),
        "json rows": ([str(folder), "-m", "bicubic", "-x", "2", "-o", str(tmp_path / "out"), "--json"], None),
        "models": (["models"], None),
        "models --json": (["models", "--json"], None),
        "models search --json": (["models", "search", "--json"], None),
        "models search": (["models", "search"], None),
    }[command]
    with open("/dev/full", "wb") as full:
        proc = _upscale(args, stdin=stdin, stdout=full, stderr=subprocess.PIPE)
    assert proc.returncode == 1
    _one_clean_error(proc.stderr, "cannot write to stdout: disk full")
    if command == "json rows":  # what was written is whole, and no temp file is left
        for path in (tmp_path / "out").iterdir():
            assert path.suffix == ".png" and Image.open(path).size == (160, 120)


def _hr_folder(tmp_path: Path) -> Path:
    """Two HR images for a benchmark of bicubic (no weights needed)."""
    folder = tmp_path / "hr"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(_noise_png(tmp_path).read_bytes())
    return folder


# Every other command that writes data to stdout (paths, summaries, the version, a table); each but
# benchmark imports no torch. The old code gave a traceback (OSError: No space left on device).
MORE_STDOUT_COMMANDS = {
    "--version": ["--version"],
    "models path": ["models", "path", "unet", "-x", "2"],
    "models download": ["models", "download", "upsampler", "-x", "2", "-q"],  # packaged: no network
    "models verify": ["models", "verify"],
    "models clear": ["models", "clear"],
    "benchmark": ["benchmark", "HR", "-x", "2", "-m", "bicubic", "--no-lpips", "-o", "REPORT"],
    "train export": ["train", "export", "SHIPPED", "-o", "EXPORTED", "--half"],
}
SHIPPED_WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "upscale_cli" / "weights" / "unet_x2.safetensors"


@needs_dev_full
@pytest.mark.parametrize("command", list(MORE_STDOUT_COMMANDS))
def test_dev_full_is_one_line_and_exit_1_for_every_command(tmp_path, command):
    cache = tmp_path / "cache"  # never the user's cache: `models clear` empties it
    (cache / "weights").mkdir(parents=True)
    report = tmp_path / "report"
    exported = tmp_path / "exported.safetensors"
    stand_ins = {"REPORT": str(report), "SHIPPED": str(SHIPPED_WEIGHTS), "EXPORTED": str(exported)}
    args = [str(_hr_folder(tmp_path)) if a == "HR" else stand_ins.get(a, a) for a in MORE_STDOUT_COMMANDS[command]]
    with open("/dev/full", "wb") as full:
        proc = _upscale(args, stdout=full, stderr=subprocess.PIPE,
                        env=_env(UPSCALE_CACHE_DIR=str(cache), UPSCALE_OFFLINE="1"))
    assert proc.returncode == 1, proc.stderr.decode()
    _one_clean_error(proc.stderr, "cannot write to stdout: disk full")
    if command == "benchmark":  # the report is written before the table: nothing lost with stdout
        assert {"report.md", "results.json", "results.csv"} <= {p.name for p in report.iterdir()}
    if command == "train export":  # the file is whole before its path is printed
        from safetensors.torch import load_file

        assert set(load_file(exported)) == set(load_file(SHIPPED_WEIGHTS))


@needs_posix
@pytest.mark.parametrize("command", ["image to stdout", "folder"])
def test_progress_stays_off_stdout_when_stderr_is_a_terminal(tmp_path, command):
    """With stderr a terminal, the bar and each file's line went to rich's default console, stdout:
    after the PNG of `-o -` (a corrupt file: text after IEND) or into `> list.txt`."""
    import pty

    image = _noise_png(tmp_path, size=(12, 10))
    args = {"image to stdout": [str(image), "-m", "bicubic", "-x", "2", "-o", "-"],
            "folder": [str(image), str(f.make_rgb_png(tmp_path)), "-m", "bicubic", "-x", "2",
                       "-o", str(tmp_path / "out")]}[command]
    leader, terminal = pty.openpty()
    try:
        with (tmp_path / "stdout").open("wb") as out:
            proc = _upscale(args, stdout=out, stderr=terminal)
    finally:
        os.close(terminal)
        os.close(leader)
    assert proc.returncode == 0
    data = (tmp_path / "stdout").read_bytes()
    if command == "image to stdout":
        assert data.endswith(b"IEND\xaeB`\x82") and Image.open(io.BytesIO(data)).size == (24, 20)
    else:
        assert data == b""


@needs_posix
def test_fit_single_progress_follows_stderr(tmp_path):
    """fit-single chose its bar by stdout: with stdout a terminal and stderr a log, the bar went to
    the terminal and the log had no progress. Now, as every command, the plain lines go to a stderr
    that is not a terminal."""
    import pty

    leader, terminal = pty.openpty()
    try:
        proc = _upscale(["fit-single", str(_noise_png(tmp_path, size=(12, 10))), "-x", "2", "--steps", "3",
                         "--hidden", "8", "--depth", "1", "-o", str(tmp_path / "fit.png")],
                        stdout=terminal, stderr=subprocess.PIPE)
    finally:
        os.close(terminal)
        os.close(leader)
    assert proc.returncode == 0 and "step 3/3: " in proc.stderr.decode(), proc.stderr.decode()


@needs_posix
def test_short_write_to_a_nearly_full_file_is_not_exit_0(tmp_path):
    """The issue's recipe: 45,056 bytes fit, the image is bigger. RLIMIT_FSIZE gives the same short
    write a full disk does (SIGXFSZ ignored, as a full disk sends no signal)."""
    import resource

    def small_file_limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (SHORT_FILE_BYTES, SHORT_FILE_BYTES))

    image = _noise_png(tmp_path)
    out = tmp_path / "out.png"
    with image.open("rb") as stdin, out.open("wb") as stdout:
        proc = _upscale(["-", "-m", "bicubic", "-x", "4", "-o", "-"], stdin=stdin, stdout=stdout,
                        stderr=subprocess.PIPE, preexec_fn=small_file_limit)
    assert out.stat().st_size == SHORT_FILE_BYTES
    assert proc.returncode == 1
    line = _one_clean_error(proc.stderr, "cannot write to stdout")
    assert f"({SHORT_FILE_BYTES:,} of " in line


@needs_posix
@pytest.mark.parametrize("command", ["image", "models search --json"])
def test_reader_that_closes_the_pipe_early(tmp_path, command):
    """`... | head -c 10`: an exit that is not 0 (the output was cut), at most one line, no traceback
    and no "Exception ignored" at exit."""
    image = _noise_png(tmp_path)
    args = ["-", "-m", "bicubic", "-x", "4", "-o", "-"] if command == "image" else ["models", "search", "--json"]
    proc = subprocess.Popen([sys.executable, "-m", "upscale_cli", *args], env=_env(),
                            stdin=image.open("rb"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = proc.stdout.read(10)
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=120) == 1 and len(head) == 10
    text = stderr.decode()
    assert "Traceback" not in text and "Exception ignored" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot write to stdout: the reader closed the pipe" in errors[0], text


# ------------------------------------------------------------- stdin, bounded


class _Endless(io.RawIOBase):
    """A stream that never ends: `head`, then zeros; counts what was read from it."""

    def __init__(self, head: bytes) -> None:
        self.head, self.taken = head, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer)
        start = self.head[self.taken:self.taken + len(view)]
        view[:len(start)] = start
        view[len(start):] = bytes(len(view) - len(start))
        self.taken += len(view)
        return len(view)


@pytest.mark.parametrize("head", [b"", b"\x00" * 16, b"hello, this is text\n", b"{\"a\": 1}", b"GIF"])
def test_a_stream_that_does_not_start_like_an_image_is_refused_at_once(head):
    stream = _Endless(head)
    with pytest.raises(ImageReadError, match="not an image") as caught:
        read_stream(io.BufferedReader(stream, 64))
    assert caught.value.path == "<stdin>" and stream.taken <= 1024


@pytest.mark.parametrize("signature", [PNG_SIGNATURE, b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"II*\x00", b"MM\x00+",
                                       b"RIFF\x00\x00\x00\x00WEBPVP8 "])
def test_an_endless_stream_that_starts_like_an_image_stops_at_the_limit(monkeypatch, signature):
    monkeypatch.setenv(STREAM_LIMIT_ENV, str(3 * 2**20))
    stream = _Endless(signature)
    with pytest.raises(ImageReadError) as caught:
        read_stream(io.BufferedReader(stream))
    assert STREAM_LIMIT_ENV in str(caught.value) and "3 MiB (3,145,728 bytes)" in str(caught.value)
    assert stream.taken <= 3 * 2**20 + 2 * image_read.STREAM_CHUNK_BYTES  # held at most the limit and a read


def test_the_default_limit_holds_without_the_variable(monkeypatch):
    monkeypatch.delenv(STREAM_LIMIT_ENV, raising=False)
    monkeypatch.setattr(image_read, "MAX_STREAM_BYTES", 2**20)
    with pytest.raises(ImageReadError, match="1 MiB"):
        read_stream(io.BufferedReader(_Endless(PNG_SIGNATURE)))


@pytest.mark.parametrize("limit", ["", "0", "999999999999"])
def test_an_image_within_the_limit_reads_whole(tmp_path, monkeypatch, limit):
    monkeypatch.setenv(STREAM_LIMIT_ENV, limit)
    data = f.make_rgb_png(tmp_path).read_bytes()
    one_byte_reads = io.BufferedReader(io.BytesIO(data), 1)
    assert read_stream(one_byte_reads) == data
    assert read_image(read_stream(io.BytesIO(data))).width == f.SIZE[0]


@pytest.mark.parametrize("extra", [0, 1])
def test_the_limit_is_exact(tmp_path, monkeypatch, extra):
    data = f.make_rgb_png(tmp_path).read_bytes()
    monkeypatch.setenv(STREAM_LIMIT_ENV, str(len(data) - extra))
    if extra:
        with pytest.raises(ImageReadError, match=f"more than {len(data) - 1:,} bytes"):
            read_stream(io.BytesIO(data))
    else:
        assert read_stream(io.BytesIO(data)) == data


@pytest.mark.parametrize("value", ["-1", "1e9", "lots", "1.5", "١٢"])
def test_a_bad_limit_names_the_variable(monkeypatch, value):
    monkeypatch.setenv(STREAM_LIMIT_ENV, value)
    with pytest.raises(UsageError, match=STREAM_LIMIT_ENV):
        read_stream(io.BytesIO(PNG_SIGNATURE))


@needs_posix
def test_a_named_pipe_is_bounded_too(tmp_path, monkeypatch):
    """A FIFO given by path is a stream like stdin: the same limit."""
    monkeypatch.setenv(STREAM_LIMIT_ENV, str(2**20))
    fifo = tmp_path / "endless.png"
    os.mkfifo(fifo)

    def feed():
        try:
            with open(fifo, "wb") as out:
                out.write(PNG_SIGNATURE)
                while True:
                    out.write(bytes(65536))
        except BrokenPipeError:
            pass

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    with pytest.raises(ImageReadError, match=STREAM_LIMIT_ENV):
        read_image(fifo)
    feeder.join(timeout=30)
    assert not feeder.is_alive()


def _feed(fd: int, data: bytes, repeat: int) -> tuple[threading.Thread, list[int]]:
    """Write `data` `repeat` times to `fd` (then close it) until the reader stops; how much went in."""
    written = [0]

    def feed():
        try:
            for _ in range(repeat):
                view = memoryview(data)
                while view:
                    count = os.write(fd, view)
                    written[0] += count
                    view = view[count:]
        except BrokenPipeError:
            pass
        finally:
            os.close(fd)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread, written


@needs_posix
@pytest.mark.parametrize("head", [b"", PNG_SIGNATURE])
def test_cli_stops_reading_stdin(head):
    """`head -c N /dev/zero | upscale - -o -`, and the same after a PNG signature: the process stops
    reading early (at once for zeros, at the limit after a signature) and says so in one line. On a
    stdin read whole, all 64 MiB would go in and the message would not name the limit."""
    total, chunk, limit = 64 * 2**20, 2**20, 4 * 2**20
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "upscale_cli", "-", "-m", "bicubic", "-x", "2", "-o", "-"],
                            env=_env(**{STREAM_LIMIT_ENV: str(limit)}),
                            stdin=read_end, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(read_end)
    feeder, written = _feed(write_end, head + bytes(chunk - len(head)), total // chunk)
    stdout, stderr = proc.communicate(timeout=120)
    feeder.join(timeout=30)
    assert proc.returncode == 1 and stdout == b""
    _one_clean_error(stderr, STREAM_LIMIT_ENV if head else "<stdin>: not an image")
    assert written[0] <= (limit + 2 * chunk if head else chunk)


@needs_posix
def test_cli_refuses_dev_zero_on_stdin():
    """`upscale - < /dev/zero` grew until the machine ran out; now one line at once."""
    with open("/dev/zero", "rb") as zeros:
        proc = _upscale(["-", "-m", "bicubic", "-x", "2", "-o", "-"], stdin=zeros, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, timeout=60)
    assert proc.returncode == 1 and proc.stdout == b""
    _one_clean_error(proc.stderr, "<stdin>: not an image")


class _Failing(io.RawIOBase):
    """A stream whose reads fail (a device error, a vanished mount) after `good` bytes of PNG."""

    def __init__(self, good: int) -> None:
        self.left = good

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.left <= 0:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        take = min(len(buffer), self.left)
        buffer[:take] = (PNG_SIGNATURE * (take // 8 + 1))[:take]
        self.left -= take
        return take


@pytest.mark.parametrize("good", [0, 8, 100_000])
def test_a_failing_read_is_one_line(good):
    with pytest.raises(ImageReadError, match="<stdin>: cannot read: Input/output error"):
        read_stream(_Failing(good))


@needs_posix
def test_cli_with_stdin_closed():
    """`upscale - <&-`: Python starts with no sys.stdin; one line, not an AttributeError."""
    proc = _upscale(["-", "-m", "bicubic", "-x", "2", "-o", "-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    preexec_fn=lambda: os.close(0))
    assert proc.returncode == 1
    _one_clean_error(proc.stderr, "<stdin>: nothing to read: stdin is closed")


@needs_posix
@pytest.mark.parametrize("command", ["image", "models search --json"])
def test_cli_with_stdout_closed(tmp_path, command):
    """`upscale ... >&-`: Python starts with no sys.stdout; one line and exit 1, not silence."""
    image = _noise_png(tmp_path)
    args = ["-", "-m", "bicubic", "-x", "2", "-o", "-"] if command == "image" else ["models", "search", "--json"]
    with image.open("rb") as stdin:
        proc = _upscale(args, stdin=stdin, stderr=subprocess.PIPE, preexec_fn=lambda: os.close(1))
    assert proc.returncode == 1
    _one_clean_error(proc.stderr, "cannot write to stdout: it is closed")
