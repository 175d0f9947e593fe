"""A compiled CPU runtime (OpenVINO) for the model call on one tile, beside PyTorch eager.

Measured on a 2-core AVX2 CPU (research/runtime_speed.md), OpenVINO ran our unet, the Compact
community model and a DAT transformer 1.3x to 3x faster than PyTorch eager at float32, with
outputs within 0.002/255 of it. The tiler is unchanged: `CompiledRunner` only replaces the model's
forward on a tile, so tiled output still equals untiled.

Shapes are static: a traced model bakes its Python shape arithmetic (padding, attention reshapes)
into the graph, so a dynamic-shape conversion computes wrong numbers or fails at other sizes
(measured: unet's attention MatMul refused 40x24). Each distinct (1, C, H, W) is converted once;
a batch runs image by image through the same (1, C, H, W) model, so a folder of same-size images
and the equal tiles of a pass need one conversion. A new conversion is checked against eager on
the tile it was made for (within 1/255, else PyTorch, said once).

The converted model (OpenVINO IR: model.xml + model.bin) is cached on disk under
`<cache dir>/compiled/<key>/` (next to the weights cache; `upscale models clear` removes it), the key
being the sha256 of the model's weights and structure, the OpenVINO version, the shape and the
precision. The second run reads the IR and compiles it (about 0.3 s for unet) instead of tracing
the model (about 4 s). `meta.json` holds the files' sha256: an entry that fails it, or fails to
load, is rebuilt, with one note.

`runtime=auto` converts a shape only once it is seen a second time in a process (or is on disk
already): a one-off image size would pay a conversion that costs more than its PyTorch run.
`runtime=openvino` converts every shape. Nothing fails because of the runtime: a model that does
not convert, a shape the runtime refuses, an inference error, all run in PyTorch with one note.
OpenVINO is imported only when a compiled model is built or loaded (`--runtime torch` never does).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from upscale_cli.choices import Runtime

if TYPE_CHECKING:  # torch is imported where a model runs: `upscale models clear` needs none of it
    import torch
    from torch import nn

COMPILED_SUBDIR = "compiled"
MAX_DIFF = 1.0 / 255  # a conversion further than one 8-bit step from eager on its own tile is not used
AUTO_MIN_CALLS = 2  # runtime=auto converts a shape on its second call in a process (unless on disk)
ENGINE_NAME = "OpenVINO"


def available() -> bool:
    """OpenVINO is installed (found without importing it)."""
    return importlib.util.find_spec("openvino") is not None


def compiled_dir() -> Path:
    """Where converted models are cached: beside the weights cache (UPSCALE_CACHE_DIR moves both)."""
    from upscale_cli.weights_cache import cache_dir

    return cache_dir() / COMPILED_SUBDIR


def clear_compiled() -> tuple[int, int]:
    """Remove every cached compiled model; (entries removed, bytes freed)."""
    root = compiled_dir()
    if not root.is_dir():
        return 0, 0
    entries = [p for p in root.iterdir() if p.is_dir() and not p.is_symlink()]
    freed = sum(f.lstat().st_size for p in entries for f in p.rglob("*") if f.is_file() and not f.is_symlink())
    shutil.rmtree(root, ignore_errors=True)
    return len(entries), freed


def threads() -> int:
    """The cores this process may use: OMP_NUM_THREADS when set (as torch reads it), else the CPU
    affinity mask (which container CPU sets narrow), else os.cpu_count()."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


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

    @staticmethod
    def version() -> str:
        import openvino as ov

        return ov.get_version()


class CompiledRunner:
    """model(tile) through OpenVINO, shape by shape; PyTorch where the runtime cannot.

    `notes` is the engine's list of things to tell the user (fallbacks, a rebuilt cache entry).
    `conversions` counts the models traced in this process (the tests read it: a cached run traces none).
    """

    conversions = 0

    def __init__(self, model: nn.Module, mode: Runtime, notes: list[str], precision: str = "f32") -> None:
        self.model = model
        self.mode = mode
        self.notes = notes
        self.precision = precision
        self._requests: dict[tuple, object] = {}
        self._torch_shapes: set[tuple] = set()  # converted badly or refused: PyTorch for good
        self._seen: Counter = Counter()
        self._identity: str | None = None
        self._broken = False  # the runtime itself failed to import or start: PyTorch for everything

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._broken:
            return self.model(x)
        shape = (1, *x.shape[1:])
        if shape in self._torch_shapes:
            return self.model(x)
        if shape not in self._requests:
            self._seen[shape] += 1
            if self.mode == "auto" and self._seen[shape] < AUTO_MIN_CALLS and not self._on_disk(shape):
                return self.model(x)
            return self._first_call(x, shape)
        return self._infer(x, shape)

    # -- one shape --------------------------------------------------------------
    def _first_call(self, x: torch.Tensor, shape: tuple) -> torch.Tensor:
        """Load or convert the model for `shape`; this tile's output comes from it (or from eager)."""
        try:
            if self._load(shape):
                return self._infer(x, shape)
            return self._convert(x, shape)
        except Exception as err:  # nothing fails because of the runtime
            if isinstance(err, ImportError):
                self._broken = True
            self._torch_shapes.add(shape)
            self._note(f"--runtime: {ENGINE_NAME} could not run {_size(shape)} tiles ({_first_line(err)}); "
                       "ran them in PyTorch")
            return self.model(x)

    def _infer(self, x: torch.Tensor, shape: tuple) -> torch.Tensor:
        import torch

        request = self._requests[shape]
        try:
            outs = [torch.from_numpy(request.infer([x[k : k + 1].float().contiguous().numpy()])[0].copy())
                    for k in range(x.shape[0])]
        except Exception as err:
            del self._requests[shape]
            self._torch_shapes.add(shape)
            self._note(f"--runtime: {ENGINE_NAME} failed on {_size(shape)} tiles ({_first_line(err)}); "
                       "ran them in PyTorch")
            return self.model(x)
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _convert(self, x: torch.Tensor, shape: tuple) -> torch.Tensor:
        """Trace the model at `shape`, check it against eager on this tile, cache it; eager's output."""
        import openvino as ov
        import torch

        example = x[:1].float().contiguous()
        reference = self.model(x)
        with torch.no_grad(), warnings.catch_warnings():  # tracing's warnings are about other shapes: static here
            warnings.simplefilter("ignore")
            converted = ov.convert_model(_float_output(self.model), example_input=example)
        CompiledRunner.conversions += 1
        request = self._compile(converted)
        got = torch.from_numpy(request.infer([example.numpy()])[0].copy())
        diff = float((got - reference[:1].float()).abs().max()) if got.shape == reference[:1].shape else float("inf")
        if not diff <= MAX_DIFF:
            self._torch_shapes.add(shape)
            self._note(f"--runtime: {ENGINE_NAME}'s {_size(shape)} model differs from PyTorch's by "
                       f"{diff * 255:.2g}/255; ran it in PyTorch")
            return reference
        self._requests[shape] = request
        self._save(converted, shape)
        return reference

    def _compile(self, ov_model):
        config = {"INFERENCE_PRECISION_HINT": self.precision, "INFERENCE_NUM_THREADS": threads(),
                  "PERFORMANCE_HINT": "LATENCY"}
        return _Engine.core().compile_model(ov_model, "CPU", config).create_infer_request()

    # -- the disk cache -----------------------------------------------------------
    def _entry(self, shape: tuple) -> Path:
        if self._identity is None:
            self._identity = weights_identity(self.model)
        key = f"{self._identity}|{ENGINE_NAME} {_Engine.version()}|{shape}|{self.precision}"
        return compiled_dir() / hashlib.sha256(key.encode()).hexdigest()[:32]

    def _on_disk(self, shape: tuple) -> bool:
        try:
            return (self._entry(shape) / "meta.json").is_file()
        except Exception:
            return False

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
            self._requests[shape] = self._compile(_Engine.core().read_model(str(entry / "model.xml")))
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
            meta = {"shape": list(shape), "precision": self.precision, "runtime": f"{ENGINE_NAME} {_Engine.version()}",
                    "weights": self._identity, "made": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "sha256": {name: _file_sha256(work / name) for name in ("model.xml", "model.bin")}}
            (work / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
            try:
                os.rename(work, entry)
            except OSError:  # another process saved it first
                shutil.rmtree(work, ignore_errors=True)
        except OSError:
            pass

    def _note(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)


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


def runner_for(model: nn.Module, mode: Runtime, device: torch.device, dtype: torch.dtype, notes: list[str]):
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
        return CompiledRunner(model, mode, notes)
    if mode == "openvino" and f"--runtime openvino: {why}" not in notes:
        notes.append(f"--runtime openvino: {why}")
    return model
