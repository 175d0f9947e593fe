"""A weights file's declared sizes, checked before any tensor is read (issue 30.4).

torch.load reads each record of a checkpoint into memory at the size the file declares, and a zip
can declare gigabytes in a few compressed megabytes: a 3.9 MB .pth holding 4 GB of deflated zeros
took 11.3 GB and 110 s before it was found not to be a model. Here only the zip's directory and the
small pickle that lists the tensors are read, the pickle by a walk over its opcodes that builds
nothing and runs nothing, and every size is compared with the file and with a named limit before
torch sees the file. safetensors checks its own header against the file (offsets, shapes, a
header over 100 MB); only the total limit is added for it.

Also here: a path given as a model file must be a regular file (a folder or a device is named as
such; a symlink to /dev/zero is never opened).
"""
from __future__ import annotations

import io
import os
import pickletools
import stat
import zipfile
from pathlib import Path

from upscale_cli.env import env_whole_number
from upscale_cli.errors import WeightsError

DEFAULT_MAX_WEIGHTS_BYTES = 2_000_000_000  # tensors in one file; the largest community SR models are a few hundred MB
MAX_WEIGHTS_ENV = "UPSCALE_MAX_WEIGHTS_BYTES"
MAX_COMPRESSION_RATIO = 10  # declared bytes per stored byte: torch.save stores records, floats deflate ~1.1x
MAX_PICKLE_BYTES = 4_000_000  # the pickle that lists the tensors: 100-200 bytes a tensor (large models: ~5,000)
TORCH_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # the first pickle of torch.save's older (non-zip) format
LEGACY_STORAGE_HEADER_BYTES = 8  # each storage's element count, before its bytes, in the older format

# Element sizes of the storage classes torch.save names (module and class, as the pickle gives them).
STORAGE_ITEM_BYTES = {
    **{f"torch {name}": size for name, size in (
        ("DoubleStorage", 8), ("FloatStorage", 4), ("HalfStorage", 2), ("BFloat16Storage", 2),
        ("LongStorage", 8), ("IntStorage", 4), ("ShortStorage", 2), ("CharStorage", 1), ("ByteStorage", 1),
        ("BoolStorage", 1), ("ComplexDoubleStorage", 16), ("ComplexFloatStorage", 8))},
    "torch.storage UntypedStorage": 1,  # counted in bytes (float8 and other newer dtypes)
}
MODEL_FILE_NOT_FOUND = "model file not found"
# Floating-point weights the models compute in; anything else (float8, complex) is refused, not
# cast: a cast would run a model whose weights are not the file's (loader, models/spandrel_model).
ACCEPTED_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
ACCEPTED_FLOAT_TEXT = "float16, bfloat16, float32 or float64"
_OPAQUE = object()  # a pickle value the walk does not need to know
_MARK = object()


def not_a_regular_file(path: Path) -> str | None:
    """Why `path` cannot be a model file (missing, a folder, a device or pipe), or None for a
    regular file. Only stat is used: nothing is opened, so a symlink to /dev/zero is never read."""
    try:
        mode = os.stat(path).st_mode  # follows symlinks: what the name leads to
    except FileNotFoundError:
        return MODEL_FILE_NOT_FOUND
    except OSError as err:
        return f"cannot be read ({err.strerror or type(err).__name__})"
    if stat.S_ISDIR(mode):
        return "is a folder, not a model file"
    if not stat.S_ISREG(mode):
        return f"is not a regular file (a {_file_kind(mode)}); it was not read"
    return None


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISFIFO, "pipe"),
             (stat.S_ISSOCK, "socket"))
    return next((name for test, name in kinds if test(mode)), "special file")


def max_weights_bytes() -> int:
    """The limit on the tensor bytes one weights file may declare: UPSCALE_MAX_WEIGHTS_BYTES or the default."""
    return env_whole_number(MAX_WEIGHTS_ENV, DEFAULT_MAX_WEIGHTS_BYTES, "of bytes above 0", low=1, error=WeightsError)


def check_weights_file(path: Path) -> None:
    """WeightsError, naming the limit, when `path` declares more than it may; reads only the zip
    directory and the tensor list. A file in no format torch.load reads is refused here too."""
    problem = not_a_regular_file(path)
    if problem is not None:
        raise WeightsError(problem, path=path)
    size = path.stat().st_size
    if path.suffix.lower() == ".safetensors":
        _check_total(max(size - 8, 0), path)  # the header: safetensors checks it against the file itself
    elif zipfile.is_zipfile(path):
        _check_torch_zip(path, size)
    else:
        _check_legacy_torch(path, size)


def _check_total(declared: int, path: Path) -> None:
    limit = max_weights_bytes()
    if declared > limit:
        raise WeightsError(f"declares {declared:,} bytes of tensors, over the limit of {limit:,} "
                           f"(set {MAX_WEIGHTS_ENV} to allow more); it was not read", path=path)


def _check_torch_zip(path: Path, size: int) -> None:
    """torch.save's zip: every record's declared size within the limits, and each tensor storage the
    pickle declares exactly the size of its record."""
    with zipfile.ZipFile(path) as archive:
        records = archive.infolist()
        declared = sum(record.file_size for record in records)
        _check_total(declared, path)
        if declared > MAX_COMPRESSION_RATIO * max(size, 1):
            raise WeightsError(f"its records unpack to {declared:,} bytes from a {size:,}-byte file, more than "
                               f"{MAX_COMPRESSION_RATIO}x (a compression bomb); it was not read", path=path)
        sizes = {record.filename: record.file_size for record in records}
        prefix = records[0].filename.split("/", 1)[0] + "/" if records else ""  # as torch finds the archive
        if f"{prefix}data.pkl" not in sizes:
            raise WeightsError("a zip without data.pkl: not a PyTorch checkpoint", path=path)
        _check_pickle_size(sizes[f"{prefix}data.pkl"], path)
        _, storages = _walk(io.BytesIO(archive.read(f"{prefix}data.pkl")), path)
    for pid in storages:
        key, nbytes = _storage_bytes(pid, 5, path)
        record = sizes.get(f"{prefix}data/{key}")
        if record != nbytes:
            held = "no record" if record is None else f"a record of {record:,} bytes"
            raise WeightsError(f"tensor storage {key[:40]!r} declares {nbytes:,} bytes but the file has {held}; "
                               "it was not read", path=path)


def _check_legacy_torch(path: Path, size: int) -> None:
    """torch.save's older format: pickles (magic number, version, system, object, storage keys)
    followed by each storage's bytes, which must fit in what the file holds after the pickles."""
    with open(path, "rb") as file:
        head = io.BytesIO(file.read(min(size, MAX_PICKLE_BYTES)))
    try:
        magic, _ = _walk(head, path)
    except WeightsError:
        magic = None
    if magic != TORCH_MAGIC_NUMBER:
        raise WeightsError("not a PyTorch checkpoint (neither torch.save's zip format nor its older one) "
                           "nor a .safetensors file", path=path)
    for _ in range(2):  # protocol version, system info
        _walk(head, path)
    _, storages = _walk(head, path)
    _walk(head, path)  # the storage keys, in the order their bytes follow
    roots = dict(_storage_bytes(pid, 6, path) for pid in storages)
    declared = sum(roots.values()) + LEGACY_STORAGE_HEADER_BYTES * len(roots)
    _check_total(declared, path)
    held = size - head.tell()
    if declared > held:
        raise WeightsError(f"its tensors declare {declared:,} bytes but the file holds {held:,} after their "
                           "description; it was not read", path=path)


def _storage_bytes(pid: object, fields: int, path: Path) -> tuple[str, int]:
    """(storage key, declared bytes) from a persistent id ('storage', class, key, location, numel, ...)."""
    if not (isinstance(pid, tuple) and len(pid) == fields and pid[0] == "storage" and isinstance(pid[2], str)):
        raise WeightsError("its pickle refers to something other than tensor storage (not a weights file); it was not read", path=path)
    item = STORAGE_ITEM_BYTES.get(pid[1]) if isinstance(pid[1], str) else None
    numel = pid[4]
    if item is None:
        raise WeightsError(f"a tensor storage of unknown type {str(pid[1])[:60]!r}; it was not read", path=path)
    if not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
        raise WeightsError("a tensor storage without a valid element count; it was not read", path=path)
    return pid[2], numel * item


def _check_pickle_size(nbytes: int, path: Path) -> None:
    if nbytes > MAX_PICKLE_BYTES:
        raise WeightsError(f"its tensor list (data.pkl) is {nbytes:,} bytes, over the limit of "
                           f"{MAX_PICKLE_BYTES:,}; it was not read", path=path)


def _walk(stream: io.BytesIO, path: Path) -> tuple[object, list[object]]:
    """(top value, persistent ids) of the next pickle in `stream`, from its opcodes alone:
    pickletools decodes them and its table gives each one's stack effect; values are kept only
    for what a storage id is made of (text, numbers, globals, tuples). Nothing is imported,
    called or built."""
    stack: list[object] = []
    memo: dict[int, object] = {}
    persistent: list[object] = []
    try:
        for op, arg, _ in pickletools.genops(stream):
            kind = _KINDS.get(op.name, _OTHER)
            if kind is _VALUE:
                stack.append(arg)  # GLOBAL's argument is "module name", as STORAGE_ITEM_BYTES keys it
            elif kind is _PUT:
                memo[arg] = stack[-1]
            elif kind is _OTHER:
                _generic_step(op.name, stack)
            elif kind is _STOP:
                return (stack[-1] if stack else _OPAQUE), persistent
            else:
                kind(arg, stack, memo, persistent)
    except (ValueError, IndexError, KeyError, TypeError, OverflowError) as err:
        # genops raises ValueError for bytes that are no opcode and for a pickle cut short
        if stream.tell() >= MAX_PICKLE_BYTES:  # cut short by the bytes read for it
            raise WeightsError(f"its tensor list runs past {MAX_PICKLE_BYTES:,} bytes, the limit; "
                               "it was not read", path=path) from None
        raise WeightsError(f"its tensor list is not a valid pickle ({str(err)[:80]})", path=path) from None
    raise WeightsError("its tensor list is not a valid pickle (it ends before its STOP)", path=path)


def _mark(arg, stack, memo, persistent) -> None:
    stack.append(_MARK)


def _memoize(arg, stack, memo, persistent) -> None:
    memo[len(memo)] = stack[-1]


def _get(arg, stack, memo, persistent) -> None:
    stack.append(memo[arg])


def _tuple(arg, stack, memo, persistent) -> None:
    stack.append(tuple(_pop_to_mark(stack)))


def _small_tuple(count: int):
    def build(arg, stack, memo, persistent) -> None:
        items = tuple(stack[len(stack) - count:]) if count else ()
        if len(items) != count:
            raise IndexError("stack underflow")
        del stack[len(stack) - count:]
        stack.append(items)
    return build


def _stack_global(arg, stack, memo, persistent) -> None:
    attr, module = stack.pop(), stack.pop()
    stack.append(f"{module} {attr}" if isinstance(module, str) and isinstance(attr, str) else _OPAQUE)


def _binpersid(arg, stack, memo, persistent) -> None:
    persistent.append(stack.pop())
    stack.append(_OPAQUE)


def _persid(arg, stack, memo, persistent) -> None:
    persistent.append(arg)
    stack.append(_OPAQUE)


_VALUE, _PUT, _STOP, _OTHER = "value", "put", "stop", "other"
_KINDS = {
    **dict.fromkeys(("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "STRING", "BINSTRING",
                     "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "GLOBAL"), _VALUE),
    **dict.fromkeys(("PUT", "BINPUT", "LONG_BINPUT"), _PUT),
    **dict.fromkeys(("GET", "BINGET", "LONG_BINGET"), _get),
    "STOP": _STOP, "MARK": _mark, "MEMOIZE": _memoize, "TUPLE": _tuple, "STACK_GLOBAL": _stack_global,
    "BINPERSID": _binpersid, "PERSID": _persid,
    **{name: _small_tuple(count) for name, count in (("EMPTY_TUPLE", 0), ("TUPLE1", 1), ("TUPLE2", 2), ("TUPLE3", 3))},
}
# Every other opcode: (takes the items down to a MARK, items it takes besides, items it leaves),
# from pickletools' own table of stack effects.
_EFFECTS = {
    op.name: (pickletools.markobject in op.stack_before,
              op.stack_before.index(pickletools.markobject) if pickletools.markobject in op.stack_before
              else len(op.stack_before),
              len(op.stack_after))
    for op in pickletools.opcodes
}


def _generic_step(name: str, stack: list) -> None:
    """Pop what the opcode takes, push unknowns for what it leaves."""
    to_mark, taken, left = _EFFECTS[name]
    if to_mark:
        _pop_to_mark(stack)
    if taken > len(stack):
        raise IndexError("stack underflow")
    if taken:
        del stack[len(stack) - taken:]
    stack.extend([_OPAQUE] * left)


def _pop_to_mark(stack: list) -> list:
    for index in range(len(stack) - 1, -1, -1):
        if stack[index] is _MARK:
            items = stack[index + 1:]
            del stack[index:]
            return items
    raise IndexError("no MARK on the stack")
