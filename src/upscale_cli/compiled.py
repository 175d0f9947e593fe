"""A compiled CPU runtime (OpenVINO) for the model call on one tile, beside PyTorch eager.

Measured on a 2-core AVX2 CPU (research/runtime_speed.md), OpenVINO ran our unet, the Compact
community model and a DAT transformer 1.3x to 3x faster than PyTorch eager at float32, with
outputs within 0.002/255 of it. The tiler is unchanged: `CompiledRunner` only replaces the model's
call on a tile, so tiled output still equals untiled.

Shapes are static: a traced model bakes its Python shape arithmetic (padding, attention reshapes)
into the graph, so a dynamic-shape conversion computes wrong numbers or fails at other sizes
(measured: unet's attention MatMul refused 40x24). Each distinct (1, C, H, W) is converted once;
a batch runs image by image through the same (1, C, H, W) model, so a folder of same-size images
and the equal tiles of a pass need one conversion. A conversion is checked against PyTorch on the
tile it was made for and on a second input of its shape (within 1/255, else PyTorch, said once and
remembered in a `.refused.json`, so no later run spends the conversion again).

The converted model (OpenVINO IR: model.xml + model.bin) is cached under `<cache dir>/compiled/<key>/`
(next to the weights cache; `upscale models clear` removes it), the key being what the model is made
from (`source_identity`: the weights file's sha256, architecture, settings and code versions, known
without building the model), the OpenVINO version, the shape, the precision and CONVERSION_RULES.
Beside the entries, `<hash>.descriptor.json` records the model's descriptor, so a later run plans
its tiles and runs every cached shape on NumPy arrays without importing torch (`run_array`; the
engine's array route). A later process compiles the IR from OpenVINO's own cache in the entry
(`blobs/`: unet 0.1 s, DAT-light 0.8 s instead of 4.4 s). `meta.json` holds the files' sha256: an
entry that fails it, or fails to load, is rebuilt, with one note.

`runtime=auto` (the default) converts a shape once it is seen a second time in a process (or is on
disk already): a one-off image size would pay a conversion that costs more than its PyTorch run.
`runtime=openvino` converts every shape. Nothing fails because of the runtime: a model that does
not convert, a shape the runtime refuses, an inference error, all run in PyTorch. OpenVINO is
imported only when a compiled model is built or loaded (`--runtime torch` never does).
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from upscale_cli.choices import Runtime
from upscale_cli.models.descriptor import FixedScale, ModelDescriptor, SizeRequirements

if TYPE_CHECKING:  # torch is imported where a model runs: `upscale models clear` needs none of it
    import torch
    from torch import nn

    from upscale_cli.model_spec import ModelSpec

COMPILED_SUBDIR = "compiled"
COMPILED_CACHE_MAX_BYTES = 2 << 30  # the compiled models kept: least recently used go first beyond it
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: the CPU time a container may use per period
MAX_DIFF = 1.0 / 255  # a conversion further than one 8-bit step from eager on its own tile is not used
CONVERSION_RULES = 2  # part of every key: raised when what a conversion does or checks changes (2: two probes)
BLOBS_SUBDIR = "blobs"  # in an entry: the model compiled for this CPU by OpenVINO's own cache
REFUSED_SUFFIX = ".refused.json"  # beside an entry's folder: this shape did not convert (why, as JSON)
AUTO_MIN_CALLS = 2  # runtime=auto converts a shape on its second call in a process (unless on disk)
ENGINE_NAME = "OpenVINO"
# A compiled model's working memory per input pixel against the PyTorch figure its descriptor gives
# (bytes_per_input_pixel), for the tile planner: OpenVINO allocates a tile's intermediate buffers up
# front. Measured as the slope of peak memory between 256x256 and 512x512 tiles, x4, float32, 2 threads:
# unet 3.3 KB a pixel (PyTorch 1.06 KB), Compact 1.01 KB (0.50 KB): 2.0-3.1x, with headroom.
WORKING_SET_FACTOR = 3.5


def available() -> bool:
    """OpenVINO is installed (found without importing it)."""
    return importlib.util.find_spec("openvino") is not None


def compiled_dir() -> Path:
    """Where converted models are cached: beside the weights cache (UPSCALE_CACHE_DIR moves both)."""
    from upscale_cli.weights_cache import cache_dir

    return cache_dir() / COMPILED_SUBDIR


def _folder_bytes(folder: Path) -> int:
    return sum(f.lstat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


def _touch(entry: Path) -> None:
    try:
        os.utime(entry)
    except OSError:
        pass


def prune_compiled(keep: Path | None = None, limit: int = COMPILED_CACHE_MAX_BYTES) -> int:
    """Remove the least recently used compiled models until the cache holds at most `limit` bytes
    (`keep`, the one just made, stays); the bytes freed. Each image size used twice adds a model of a
    few MB (DAT-light with its blob: 13 MB), so without a bound `auto` would fill the disk over time."""
    root = compiled_dir()
    try:
        entries = [(p.stat().st_mtime, p) for p in root.iterdir()
                   if p.is_dir() and not p.is_symlink() and not p.name.startswith(".part-")]
        sizes = {p: _folder_bytes(p) for _, p in entries}
    except OSError:
        return 0
    total, freed = sum(sizes.values()), 0
    for _, path in sorted(entries, key=lambda e: e[0]):
        if total <= limit:
            break
        if path == keep:
            continue
        shutil.rmtree(path, ignore_errors=True)
        total, freed = total - sizes[path], freed + sizes[path]
    return freed


def clear_compiled() -> tuple[int, int]:
    """Remove every cached compiled model; (entries removed, bytes freed)."""
    root = compiled_dir()
    if not root.is_dir():
        return 0, 0
    entries = [p for p in root.iterdir() if p.is_dir() and not p.is_symlink()]
    freed = sum(_folder_bytes(p) for p in entries)
    shutil.rmtree(root, ignore_errors=True)
    return len(entries), freed


def threads() -> int:
    """The cores this process may use: OMP_NUM_THREADS when set (as torch reads it), else the CPU
    affinity mask (which container CPU sets narrow), else os.cpu_count(); never more than a cgroup's
    CPU quota allows (a container limited to 2 CPUs on a 64-core host gets 2 threads, not 64)."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = max(1, os.cpu_count() or 1)
    quota = cgroup_cpu_quota()
    return min(cores, quota) if quota else cores


def cgroup_cpu_quota(path: Path = CGROUP_CPU_MAX) -> int | None:
    """The CPUs a cgroup v2 quota allows (`cpu.max`: "QUOTA PERIOD", rounded up), or None (no quota,
    "max", or no cgroup v2 here)."""
    try:
        quota, period = path.read_text(encoding="ascii").split()[:2]
        if quota == "max":
            return None
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError, ZeroDivisionError):
        return None


def weights_identity(model: nn.Module) -> str:
    """sha256 of the model's structure (its repr: layers and their settings) and every tensor of
    its state dict (name, dtype, shape, bytes): the same file, bundled or downloaded, gives the same
    key; other weights or another configuration, another."""
    import torch

    digest = hashlib.sha256(repr(model).encode())
    digest.update(repr(getattr(model, "info", None)).encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        if tensor.numel():  # flat copy: channels-last (and size-1 dims) leave strides a byte view refuses
            digest.update(tensor.detach().cpu().reshape(-1).clone().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class _Engine:
    """OpenVINO's Core and version, imported on first use."""

    _core = None

    @classmethod
    def core(cls):
        if cls._core is None:
            import openvino as ov

            cls._core = ov.Core()
        return cls._core


class CompiledRunner:
    """model(tile) through OpenVINO, shape by shape; PyTorch where the runtime cannot.

    The model itself is built only when something needs it (`load_model`: a shape to convert, or
    PyTorch for a shape the runtime cannot run), so a run whose shapes are all cached never imports
    torch (`run_array`). `source` names what the compiled models are made from (`source_identity`);
    None keys them by the model's own tensors instead.
    `notes` is the engine's list of things to tell the user (fallbacks, a rebuilt cache entry).
    `conversions` counts the models traced in this process (the tests read it: a cached run traces none).
    """

    conversions = 0

    def __init__(self, load_model: Callable[[], nn.Module], mode: Runtime, notes: list[str],
                 source: str | None = None, precision: str = "f32") -> None:
        self._load_model = load_model
        self._model: nn.Module | None = None
        self.mode = mode
        self.notes = notes
        self.source = source
        self.precision = precision
        self._requests: dict[tuple, object] = {}
        self._torch_shapes: set[tuple] = set()  # converted badly or refused: PyTorch for good
        self._seen: Counter = Counter()
        self._broken = False  # the runtime itself failed to import or start: PyTorch for everything

    @property
    def model(self) -> nn.Module:
        if self._model is None:
            self._model = self._load_model()
        return self._model

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The tiler's call on a torch tile (the PyTorch engine's route)."""
        import torch

        if self._broken or (1, *x.shape[1:]) in self._torch_shapes:
            return self.model(x)
        array = x.float().contiguous().numpy()
        request = self._request(array)
        if request is None:
            return self.model(x)
        return torch.from_numpy(self._infer(request, array))

    def run_array(self, x: np.ndarray) -> np.ndarray:
        """model(x) on a float32 (B, C, h, w) NumPy tile: compiled where it can be, else PyTorch."""
        request = None if self._broken else self._request(x)
        return self._eager(x) if request is None else self._infer(request, x)

    # -- one shape --------------------------------------------------------------
    def _request(self, x: np.ndarray):
        """The compiled model for x's shape: made already, loaded from the cache, or converted now
        (checked against PyTorch on this tile); None where PyTorch runs it (auto's first call of a
        shape, a shape the runtime cannot run)."""
        shape = (1, *x.shape[1:])
        if shape in self._torch_shapes:
            return None
        if shape in self._requests:
            return self._requests[shape]
        self._seen[shape] += x.shape[0]  # images of the shape: a batch of same-size files counts each
        refused = self._refused(shape)
        if refused:  # an earlier run found it does not convert (or not exactly): not tried again
            self._torch_shapes.add(shape)
            if self.mode == "openvino":  # auto uses the runtime where it works, and says nothing where not
                self._note(f"--runtime: {ENGINE_NAME} cannot run {_size(shape)} tiles of this model ({refused}; "
                           "found by an earlier run); ran them in PyTorch")
            return None
        if self.mode == "auto" and self._seen[shape] < AUTO_MIN_CALLS and not self._on_disk(shape):
            return None
        try:
            if not self._load(shape):
                self._convert(x[:1], shape)
        except Exception as err:  # nothing fails because of the runtime
            if isinstance(err, ImportError):
                self._broken = True
            else:
                self._refuse(shape, _first_line(err))
            self._torch_shapes.add(shape)
            self._note(f"--runtime: {ENGINE_NAME} could not run {_size(shape)} tiles ({_first_line(err)}); "
                       "ran them in PyTorch")
        return self._requests.get(shape)

    def _infer(self, request, x: np.ndarray) -> np.ndarray:
        shape = (1, *x.shape[1:])
        out = None
        try:
            for k in range(x.shape[0]):  # the request's own output buffer is copied once, into place
                result = request.infer([np.ascontiguousarray(x[k : k + 1], dtype=np.float32)],
                                       share_inputs=True, share_outputs=True)[0]
                if out is None:
                    out = np.empty((x.shape[0], *result.shape[1:]), dtype=np.float32)
                out[k : k + 1] = result
        except Exception as err:
            self._requests.pop(shape, None)
            self._torch_shapes.add(shape)
            self._note(f"--runtime: {ENGINE_NAME} failed on {_size(shape)} tiles ({_first_line(err)}); "
                       "ran them in PyTorch")
            return self._eager(x)
        return out

    def _eager(self, x: np.ndarray) -> np.ndarray:
        """PyTorch's own call on a NumPy tile."""
        import torch

        with torch.no_grad():
            return self.model(torch.from_numpy(np.ascontiguousarray(x))).float().numpy()

    def _convert(self, example: np.ndarray, shape: tuple) -> None:
        """Trace the model at `shape`, check it against PyTorch on this tile and on a second input of
        the shape (the tile turned half round), cache it. The second input catches a trace that baked
        the example's values in as constants (an operation outside torch, such as a NumPy step),
        which agrees with PyTorch on the example alone."""
        import openvino as ov
        import torch

        with torch.no_grad(), warnings.catch_warnings():  # tracing's warnings are about other shapes: static here
            warnings.simplefilter("ignore")
            converted = ov.convert_model(_float_output(self.model), example_input=torch.from_numpy(example.copy()))
        CompiledRunner.conversions += 1
        request = self._compile(converted)
        diff = 0.0
        for probe in (example, np.ascontiguousarray(example[..., ::-1, ::-1])):
            reference = self._eager(probe)
            got = request.infer([np.ascontiguousarray(probe)])[0]
            diff = max(diff, float(np.abs(got - reference).max()) if got.shape == reference.shape else float("inf"))
        if not diff <= MAX_DIFF:
            self._refuse(shape, f"differs from PyTorch by {diff * 255:.2g}/255")
            self._torch_shapes.add(shape)
            self._note(f"--runtime: {ENGINE_NAME}'s {_size(shape)} model differs from PyTorch's by "
                       f"{diff * 255:.2g}/255; ran it in PyTorch")
            return
        self._requests[shape] = request
        self._save(converted, shape)
        if self.source is not None:
            save_descriptor(self.source, self.model.info)

    def _compile(self, ov_model, blobs: Path | None = None):
        """An infer request for the model (an ov.Model, or the path of a saved one). `blobs`: where
        OpenVINO keeps the model compiled for this CPU, which a later process loads instead of
        compiling again (DAT-light: 4.4 s to compile, 0.8 s to load)."""
        config = {"INFERENCE_PRECISION_HINT": self.precision, "INFERENCE_NUM_THREADS": threads(),
                  "PERFORMANCE_HINT": "LATENCY"}
        if blobs is not None:
            config["CACHE_DIR"] = str(blobs)
        return _Engine.core().compile_model(ov_model, "CPU", config).create_infer_request()

    # -- the disk cache -----------------------------------------------------------
    def _entry(self, shape: tuple) -> Path:
        if self.source is None:
            self.source = "tensors " + weights_identity(self.model)
        key = f"{self.source}|{ENGINE_NAME} {openvino_version()}|{shape}|{self.precision}|rules {CONVERSION_RULES}"
        return compiled_dir() / hashlib.sha256(key.encode()).hexdigest()[:32]

    def _on_disk(self, shape: tuple) -> bool:
        try:
            return (self._entry(shape) / "meta.json").is_file()
        except Exception:
            return False

    def _refused(self, shape: tuple) -> str | None:
        """Why an earlier run could not use this shape's conversion, or None."""
        try:
            return json.loads(self._entry(shape).with_suffix(REFUSED_SUFFIX).read_text(encoding="utf-8"))["why"]
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def _refuse(self, shape: tuple, why: str) -> None:
        """Remember that this shape does not convert (or not exactly), so no later run spends the
        conversion again (DAT: a minute); `upscale models clear` forgets it with the rest."""
        try:
            path = self._entry(shape).with_suffix(REFUSED_SUFFIX)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"why": why, "runtime": f"{ENGINE_NAME} {openvino_version()}",
                                        "source": self.source}), encoding="utf-8")
        except Exception:
            pass

    def _load(self, shape: tuple) -> bool:
        """The cached model for `shape`, compiled, if its files are whole; a damaged entry is removed
        (and rebuilt by the caller) with one note. False when there is none."""
        entry = self._entry(shape)
        if not entry.exists():
            return False
        try:
            meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
            for name in ("model.xml", "model.bin"):
                if _file_sha256(entry / name) != meta["sha256"][name]:
                    raise ValueError(f"{name} does not match its checksum")
            self._requests[shape] = self._compile(str(entry / "model.xml"), blobs=entry / BLOBS_SUBDIR)
            _touch(entry)  # used now: the last to go when the cache is over its bound
            return True
        except Exception as err:
            shutil.rmtree(entry, ignore_errors=True)
            self._note(f"--runtime: the cached {ENGINE_NAME} model in {entry} was damaged ({_first_line(err)}); rebuilt it")
            return False

    def _save(self, ov_model, shape: tuple) -> None:
        """Write the IR into a private folder, then rename it into place (a killed run leaves no
        half entry; two processes racing keep the first). A cache that cannot be written only costs
        the next run a conversion."""
        import openvino as ov

        entry = self._entry(shape)
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=".part-", dir=entry.parent))
            ov.save_model(ov_model, str(work / "model.xml"), compress_to_fp16=False)
            meta = {"shape": list(shape), "precision": self.precision, "runtime": f"{ENGINE_NAME} {openvino_version()}",
                    "source": self.source, "made": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "sha256": {name: _file_sha256(work / name) for name in ("model.xml", "model.bin")}}
            (work / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
            try:
                os.rename(work, entry)
            except OSError:  # another process saved it first
                shutil.rmtree(work, ignore_errors=True)
            prune_compiled(keep=entry)
        except OSError:
            pass

    def _note(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)


# -- what a compiled model is made from, known without PyTorch ----------------------------------


def openvino_version() -> str:
    """The installed OpenVINO's version, from its package metadata (no import): part of every key."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("openvino")
    except PackageNotFoundError:
        return ""


def source_identity(spec: ModelSpec, native: int | None) -> str | None:
    """What the compiled models of one model are made from, without building it: its weights file's
    sha256 (the catalogue's, or a user's file hashed), its architecture and settings, and the
    versions of the code that builds it. None for a model without a weights file."""
    from importlib.metadata import PackageNotFoundError, version

    from upscale_cli import __version__
    from upscale_cli.weights_cache import hash_file

    if spec.local_path is not None:
        try:
            weights = hash_file(Path(spec.local_path))
        except OSError:
            return None
    elif getattr(spec.files.get(native), "sha256", None):
        weights = spec.files[native].sha256
    else:
        return None
    try:
        builders = f"upscale-cli {__version__}, spandrel {version('spandrel')}"
    except PackageNotFoundError:
        builders = f"upscale-cli {__version__}"
    options = json.dumps(dict(spec.options), sort_keys=True, default=str)
    return f"weights {weights} | {spec.arch} {options} | {builders}"


def _descriptor_path(source: str) -> Path:
    return compiled_dir() / f"{hashlib.sha256(source.encode()).hexdigest()[:32]}.descriptor.json"


def save_descriptor(source: str, info: ModelDescriptor) -> None:
    """Record the model's descriptor beside its compiled models, so a later run can plan its tiles
    without building the model (atomic rename; a cache that cannot be written costs only that)."""
    path = _descriptor_path(source)
    text = json.dumps({"source": source, "kind": type(info).__name__, "fields": dataclasses.asdict(info)}, indent=1)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            return
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".part-", delete=False, encoding="utf-8") as f:
            f.write(text)
        os.replace(f.name, path)
    except OSError:
        pass


def load_descriptor(source: str | None) -> FixedScale | None:
    """The recorded descriptor of a fixed-scale model (not masked, not sampling), or None: none
    recorded, another kind, or a file that does not read back as one (then it is made again)."""
    if source is None:
        return None
    try:
        record = json.loads(_descriptor_path(source).read_text(encoding="utf-8"))
        if record["source"] != source or record["kind"] != FixedScale.__name__:
            return None
        fields = dict(record["fields"])
        fields["size"] = SizeRequirements(**fields["size"])
        return FixedScale(**fields)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _float_output(model: nn.Module) -> nn.Module:
    """The model as traced: its output as float32 whatever dtype it computes in."""
    from torch import nn

    class FloatOutput(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x).float()

    return FloatOutput()


def _file_sha256(path: Path) -> str:
    """The weights cache's bounded hash of a regular file (NotARegularFile for a link or a folder:
    the entry is then damaged and rebuilt, as for a wrong checksum)."""
    from upscale_cli.weights_cache import hash_file

    return hash_file(path)


def _size(shape: tuple) -> str:
    return f"{shape[-1]}x{shape[-2]}"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160]}" if text else type(err).__name__


def planning_info(info: ModelDescriptor) -> ModelDescriptor:
    """The descriptor the tiler sizes a compiled model's tiles by: its memory per pixel times
    WORKING_SET_FACTOR, so that an automatic tile fits free memory as it does under PyTorch."""
    return dataclasses.replace(info, bytes_per_input_pixel=math.ceil(info.bytes_per_input_pixel * WORKING_SET_FACTOR))


def runner_for(model: nn.Module, mode: Runtime, device: torch.device, dtype: torch.dtype, notes: list[str],
               source: str | None = None):
    """The callable the engine gives the tiler for `model`: a CompiledRunner where the runtime
    applies (the CPU, float32, a model with weights that takes one input), else the model itself.
    `mode=openvino` where it cannot apply says why, once."""
    import torch
    if mode == "torch":
        return model
    why = None
    if device.type != "cpu":
        why = f"{ENGINE_NAME} runs on the CPU here; ran PyTorch on {device.type}"
    elif dtype != torch.float32:
        why = f"{ENGINE_NAME} runs float32 here; ran PyTorch in {str(dtype).removeprefix('torch.')}"
    elif next(iter(model.parameters()), None) is None or getattr(model.info, "device_bound", None):
        why = "this model is not a PyTorch network; ran it as it is"
    elif not available():
        why = f"{ENGINE_NAME} is not installed (pip install openvino); ran PyTorch"
    if why is None:
        return CompiledRunner(lambda: model, mode, notes, source)
    if mode == "openvino" and f"--runtime openvino: {why}" not in notes:
        notes.append(f"--runtime openvino: {why}")
    return model
