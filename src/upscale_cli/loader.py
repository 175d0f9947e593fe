"""Catalogue name or weights file -> a ready nn.Module (eval mode, `.info` set).

Weights of our architectures are safetensors files whose metadata names the
architecture and its builder settings, so a file alone is enough to rebuild the model.
`.pth`/`.pt` files load only through `torch.load(..., weights_only=True)`: never unpickle.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from upscale_cli.catalog import ModelSpec, WeightsFile, packaged_weights_path, resolve
from upscale_cli.errors import UnsupportedScaleError, WeightsError
from upscale_cli.models import build_model

META_ARCH = "arch"
META_SETTINGS = "settings"


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
    """(state_dict, metadata) from a .safetensors, or a .pth/.pt checkpoint loaded safely."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            return _read_safetensors(path)
        return _read_torch_file(path)
    except WeightsError:
        raise
    except Exception as err:  # corrupt files raise anything from struct errors to pickle errors
        raise WeightsError(f"cannot read weights ({type(err).__name__}: {err})", path=path) from None


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata() or {})
        state = {key: handle.get_tensor(key) for key in handle.keys()}
    return state, metadata


def _read_torch_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
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


def model_from_weights(path: str | Path) -> nn.Module:
    """Rebuild one of our models from a weights file that carries its metadata."""
    state, metadata = read_weights(path)
    if META_ARCH not in metadata:
        raise WeightsError("weights file has no 'arch' metadata; export it with `upscale train export`", path=path)
    settings = json.loads(metadata.get(META_SETTINGS, "{}"))
    model = build_model(metadata[META_ARCH], **settings)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise WeightsError(f"weights do not fit the {metadata[META_ARCH]} architecture: {first}", path=path) from None
    return model.eval()


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
    spec = resolve(name_or_path)
    if spec.local_path is not None:
        model = model_from_weights(spec.local_path)
        if scale is not None and model.info.scale not in (None, scale):
            raise UnsupportedScaleError(f"{spec.local_path} is a x{model.info.scale} model, not x{scale}")
        return model
    native = pick_scale(spec, scale)
    settings = dict(spec.options)
    if native is None:
        return build_model(spec.arch, **settings).eval()
    path = weights_path(spec.files[native], progress=progress)
    if path.suffix == ".pb":  # OpenCV dnn_superres graphs are loaded by OpenCV itself
        algo = spec.arch.removeprefix("opencv-")
        return build_model(spec.arch, algo=algo, scale=native, model_path=str(path), **settings).eval()
    return model_from_weights(path)
