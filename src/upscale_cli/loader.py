"""Catalogue name or weights file -> a ready nn.Module (eval mode, `.info` set).

Weights of our architectures are safetensors files whose metadata names the
architecture and its builder settings, so a file alone is enough to rebuild the model.
A file without that metadata is a community model (Real-ESRGAN, SwinIR, HAT, ...): spandrel
recognises its architecture from the tensors (models/spandrel_model.py).
`.pth`/`.pt` files load only through `torch.load(..., weights_only=True)`: never unpickle.
A file is data from anyone: its metadata is checked against the architecture before anything
is built, it can never name another file to read, and its tensors must be finite.
"""
from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import torch
from torch import nn

from upscale_cli.catalog import resolve
from upscale_cli.model_spec import ModelSpec, WeightsFile
from upscale_cli.weights_cache import packaged_weights_path
from upscale_cli.errors import UnsupportedScaleError, UpscaleError, WeightsError
from upscale_cli.models import ARCHITECTURES, build_model, model_skeleton
from upscale_cli.models.descriptor import native_scale
from upscale_cli.models.opencv_sr import GRAPH_SUFFIX, graph_model
from upscale_cli.weights_guard import ACCEPTED_FLOAT_DTYPES, ACCEPTED_FLOAT_TEXT, check_weights_file

META_ARCH = "arch"
META_SETTINGS = "settings"
PICKLE_REFUSED = ("contains code or objects that are not plain tensors (a pickle that could run code when "
                  "loaded); it was not loaded")
_WEIGHTS_ONLY_REFUSAL = "Weights only load failed"  # how torch.load(weights_only=True) refuses a pickle
_SHOWN_CHARS = 60  # a name from a file is quoted up to this many characters


def save_weights(model: nn.Module, path: str | Path, arch: str, settings: dict) -> None:
    """Write a model's weights with the metadata that rebuilds it (atomic rename)."""
    from safetensors.torch import save

    path = Path(path)
    tmp = path.with_name(f".{path.name}.part")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {META_ARCH: arch, META_SETTINGS: json.dumps(settings, sort_keys=True)}
    try:
        # serialised here and written with open(), so the file gets the umask's mode
        # (safetensors' save_file creates it 0600: unreadable to anyone else)
        tmp.write_bytes(save(tensors, metadata=metadata))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state_dict, metadata) from a .safetensors, or a .pth/.pt checkpoint loaded safely.

    The file's declared sizes are checked before any tensor is read (weights_guard). Keys must be
    names, floating-point tensors one of ACCEPTED_FLOAT_DTYPES and finite: NaN weights would only
    give black images.
    """
    path = Path(path)
    try:
        check_weights_file(path)
        if path.suffix.lower() == ".safetensors":
            state, metadata = _read_safetensors(path)
        else:
            state, metadata = _read_torch_file(path)
    except WeightsError:
        raise
    except pickle.UnpicklingError as err:
        if _WEIGHTS_ONLY_REFUSAL in str(err):
            raise WeightsError(PICKLE_REFUSED, path=path) from None
        raise WeightsError(f"not a weights file ({_first_line(err)})", path=path) from None
    except Exception as err:  # corrupt files raise anything from struct errors to zip errors
        raise WeightsError(f"cannot read weights ({type(err).__name__}: {_first_line(err)})", path=path) from None
    _check_tensors(state, path)
    return state, metadata


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata() or {})
        state = {key: handle.get_tensor(key) for key in handle.keys()}
    return state, metadata


def _read_torch_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with warnings.catch_warnings():  # torch's warnings about a file (a pickle protocol) would break the one line
        warnings.simplefilter("ignore")
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(obj, dict):
        raise WeightsError("not a state dict", path=path)
    metadata = {k: v for k, v in obj.items() if k in (META_ARCH, META_SETTINGS) and isinstance(v, str)}
    for key in ("state_dict", "model", "params_ema", "params"):  # common checkpoint layouts
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    return state, metadata


def _check_tensors(state: dict, path: Path) -> None:
    """Named tensors, dense, floating point of ACCEPTED_FLOAT_DTYPES and finite. Integer and bool
    tensors pass here only as buffers (index tables, counters), which the model built from them
    must have (_check_tensors_fit, spandrel_model)."""
    for name, tensor in state.items():
        if not isinstance(name, str):
            raise WeightsError(f"a tensor is keyed by {_quoted(name)}, not by a name; not a model's state dict",
                               path=path)
        if tensor.layout != torch.strided:
            raise WeightsError(f"tensor {_quoted(name)} is {str(tensor.layout).removeprefix('torch.')}, "
                               "not a dense tensor; it was not loaded", path=path)
        dtype = str(tensor.dtype).removeprefix("torch.")
        if (tensor.is_floating_point() or tensor.is_complex()) and dtype not in ACCEPTED_FLOAT_DTYPES:
            raise WeightsError(f"tensor {_quoted(name)} is {dtype}; weights must be {ACCEPTED_FLOAT_TEXT} "
                               "(convert the file); it was not loaded", path=path)
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise WeightsError(f"tensor {name!r} holds NaN or infinite values; the weights are damaged and were not loaded",
                               path=path)


def model_from_weights(path: str | Path) -> nn.Module:
    """Rebuild one of our models from a weights file that carries its metadata, or an OpenCV
    .pb graph from the file itself.

    The metadata's settings are checked and the model is laid out on the meta device first,
    so a crafted file can neither allocate memory nor name another file; the file's tensors
    must then be exactly the model's (names and shapes) before the real model is built.
    """
    path = Path(path)
    if path.suffix.lower() == GRAPH_SUFFIX:
        return graph_model(path)
    state, metadata = read_weights(path)
    if META_ARCH not in metadata:  # not one of ours: a community model, recognised by its tensors
        from upscale_cli.models.spandrel_model import from_state_dict

        return from_state_dict(state, label=str(path))
    return _our_model(state, metadata, path)[0]


def our_model_from_weights(path: str | Path) -> tuple[nn.Module, str, dict]:
    """(model, arch, settings) from one of our weights files (`upscale train export` writes them
    again), checked as model_from_weights checks them; WeightsError for any other file."""
    path = Path(path)
    state, metadata = read_weights(path)
    if META_ARCH not in metadata:
        raise WeightsError("not one of our weights files (no 'arch' metadata)", path=path)
    return _our_model(state, metadata, path)


def _our_model(state: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> tuple[nn.Module, str, dict]:
    """Build our model from its file's metadata, layout first on the meta device (model_from_weights)."""
    arch, settings = _recipe(metadata, path)
    try:
        skeleton = model_skeleton(arch, settings, from_file=True)
    except UpscaleError as err:
        raise WeightsError(f"bad model settings in its metadata: {err.message}", path=path) from None
    _check_tensors_fit(skeleton.state_dict(), state, arch, path)
    model = build_model(arch, **settings)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # not expected once the shapes fit; one line all the same
        raise WeightsError(f"weights do not fit the {arch} architecture: {_first_line(err)}", path=path) from None
    return model.eval(), arch, settings


def _recipe(metadata: dict[str, str], path: Path) -> tuple[str, object]:
    """(arch, settings) from a weights file's metadata; settings are checked by the caller."""
    arch = metadata.get(META_ARCH)
    if arch is None:
        raise WeightsError("weights file has no 'arch' metadata; export it with `upscale train export`", path=path)
    if arch not in ARCHITECTURES:
        raise WeightsError(f"its metadata names an unknown architecture {_quoted(arch)}; known: "
                           f"{', '.join(sorted(ARCHITECTURES))}", path=path)
    try:
        return arch, json.loads(metadata.get(META_SETTINGS, "{}"))
    except (ValueError, RecursionError) as err:
        raise WeightsError(f"its {META_SETTINGS!r} metadata is not JSON ({_first_line(err)})", path=path) from None


def _check_tensors_fit(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], arch: str, path: Path) -> None:
    """The file's tensors must be the model's: the first one out of place is named."""
    def refuse(what: str) -> WeightsError:
        return WeightsError(f"weights do not fit the {arch} architecture: {what}", path=path)

    for name, want in expected.items():
        have = found.get(name)
        if have is None:
            raise refuse(f"tensor {name!r} (shape {_shape(want)}) is missing")
        if have.shape != want.shape:
            raise refuse(f"tensor {name!r} has shape {_shape(have)}, expected {_shape(want)}")
        if want.is_floating_point() and not have.is_floating_point():
            raise refuse(f"tensor {name!r} is {str(have.dtype).removeprefix('torch.')}, expected floating point")
    extra = next((name for name in found if name not in expected), None)
    if extra is not None:
        raise refuse(f"the file has a tensor {_quoted(extra)} that the model does not")


def _shape(tensor: torch.Tensor) -> str:
    return str(tuple(tensor.shape))


def _quoted(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def weights_path(file: WeightsFile, progress: bool = True) -> Path:
    """Local path of a catalogue weights file: inside the package, or cached (downloading once)."""
    if file.packaged:
        path = packaged_weights_path(file.filename)
        if not path.is_file():
            raise WeightsError(f"packaged weights {file.filename} are missing; reinstall upscale-cli")
        return path
    from upscale_cli.download import ensure_weights

    return ensure_weights(file, progress=progress)


def pick_scale(spec: ModelSpec, scale: int | None) -> int | None:
    """The native scale to load: the one asked for, or the only/largest one."""
    if not spec.scales:
        return None
    if scale is None:
        return max(spec.scales)
    if scale not in spec.scales:
        have = ", ".join(f"x{s}" for s in spec.scales)
        raise UnsupportedScaleError(f"model {spec.name!r} has no x{scale} weights (it has {have})")
    return scale


def load_model(name_or_path: str, scale: int | None = None, progress: bool = True) -> nn.Module:
    """Catalogue name or weights path (+ native scale for multi-scale entries) -> model in eval mode."""
    return load_spec(resolve(name_or_path), scale, progress)


def load_spec(spec: ModelSpec, scale: int | None = None, progress: bool = True) -> nn.Module:
    """A resolved catalogue entry or weights file (+ native scale) -> model in eval mode."""
    if spec.local_path is not None:
        model = model_from_weights(spec.local_path)
        own = native_scale(model.info)
        if scale is not None and own not in (None, scale):
            raise UnsupportedScaleError(f"{spec.local_path} is a x{own} model, not x{scale}")
        return model
    native = pick_scale(spec, scale)
    settings = dict(spec.options)
    if native is None:
        return build_model(spec.arch, **settings).eval()
    path = weights_path(spec.files[native], progress=progress)
    if path.suffix == GRAPH_SUFFIX:  # OpenCV dnn_superres graphs are loaded by OpenCV itself
        return graph_model(path, native, spec.arch, **settings)
    return model_from_weights(path)
