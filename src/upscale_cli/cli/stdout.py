"""Checked writes to stdout: an image (`-o -`), `--json` rows and listings.

A write to stdout can fail (a full disk, /dev/full, a reader that closed the pipe) or take only
part of the bytes (a short write near the end of a disk). Either ends in StdoutWriteError, one
line and exit 1, never an exit 0 over a truncated file. After a failure stdout is pointed at
os.devnull, so the interpreter's last flush of what is still buffered cannot fail again (no
"Exception ignored" noise at exit).
"""
from __future__ import annotations

import errno
import io
import os
import stat
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

import typer

from upscale_cli.errors import UpscaleError

WRITE_CHUNK_BYTES = 2**20  # one os.write at most: a pipe takes what it can, the loop goes on


class StdoutWriteError(UpscaleError):
    """stdout refused some or all of what was written to it."""


def echo(line: str) -> None:
    """`line` and a newline on stdout (typer.echo), flushed; StdoutWriteError if it fails."""
    _check_open()
    with checked():
        typer.echo(line)


@contextmanager
def checked() -> Iterator[None]:
    """Whatever writes to stdout inside (rich, typer.echo): an OSError becomes StdoutWriteError."""
    try:
        yield
    except OSError as err:
        raise _failed(err) from None


def write_bytes(data: bytes) -> None:
    """All of `data` on stdout (an encoded image), durable where stdout is a file; StdoutWriteError
    naming how much got there otherwise."""
    _check_open()
    with checked():
        out = sys.stdout.buffer
        out.flush()  # anything written before goes first
        fd = _fileno(out)
        if fd is None:  # an in-memory stream (Typer's CliRunner): no short writes there
            out.write(data)
            out.flush()
            return
    try:
        write_all(fd, data)
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fsync(fd)  # a file's write-back errors (ENOSPC, EIO) show here, not at exit
    except PartialWriteError as err:
        raise _failed(err.error, f" ({err.written:,} of {len(data):,} bytes written)") from None
    except OSError as err:
        raise _failed(err, f" (all {len(data):,} bytes written, not made durable)") from None


class PartialWriteError(Exception):
    """write_all's failure: the OSError and how many bytes got through before it."""

    def __init__(self, error: OSError, written: int) -> None:
        super().__init__(str(error))
        self.error, self.written = error, written


def write_all(fd: int, data: bytes, write: Callable[[int, memoryview], int] = os.write) -> int:
    """Every byte of `data` to `fd` however many calls it takes (each `write` may take only part);
    PartialWriteError with the count written when a call fails or takes nothing."""
    view, written = memoryview(data), 0
    while written < len(view):
        try:
            count = write(fd, view[written: written + WRITE_CHUNK_BYTES])
        except OSError as err:
            raise PartialWriteError(err, written) from err
        if count <= 0:  # no progress and no errno: stop rather than spin
            raise PartialWriteError(OSError(errno.EIO, "the write took no bytes"), written)
        written += count
    return written


def _check_open() -> None:
    """`upscale ... >&-` starts Python without sys.stdout, and typer.echo would drop the text silently."""
    if sys.stdout is None:
        raise StdoutWriteError("cannot write to stdout: it is closed")


def _fileno(stream: io.BufferedIOBase) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, io.UnsupportedOperation, ValueError):
        return None


def _failed(err: OSError, detail: str = "") -> StdoutWriteError:
    """The one-line error, after pointing stdout at os.devnull (what is still buffered goes there)."""
    from upscale_cli.images.atomic import write_error_message  # its imports are not needed for --help

    _silence_stdout()
    reason = "the reader closed the pipe" if err.errno == errno.EPIPE else write_error_message(err)
    reason = reason.removeprefix("cannot write: ")
    return StdoutWriteError(f"cannot write to stdout: {reason}{detail}")


def _silence_stdout() -> None:
    fd = _fileno(sys.stdout)
    if fd is None:
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
