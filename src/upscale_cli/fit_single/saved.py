"""A fitted network as a file: safetensors written by `fit-single --save-model`, which also
loads as the "coord-mlp" model (`upscale x.png -m f.safetensors`), and read back."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from torch import nn

from upscale_cli.errors import WeightsError
from upscale_cli.fit_single.fitting import FitConfig
from upscale_cli.fit_single.network import CoordMLP
from upscale_cli.models.coord_mlp import ARCH

MAX_SOURCE_SIDE = 1 << 20  # pixels: a recorded input side beyond this is ignored (the aspect comes from the network)


def save_fitted(mlp: CoordMLP, path: str | Path, config: FitConfig, source: dict | None = None) -> None:
    """Write a fitted MLP as safetensors (atomically); the file rebuilds a "coord-mlp" model that
    renders it, so `upscale x.png -m f.safetensors` works too. source: the image's height, width, bit_depth."""
    from upscale_cli.loader import save_weights

    settings = {**_fit_settings(config), "mlp": mlp.settings, "source": source or {}}
    save_weights(nn.ModuleDict({"mlp": mlp}), path, ARCH, settings)  # "mlp.*": the keys of CoordMLPUpscaler


def load_fitted(path: str | Path) -> tuple[CoordMLP, dict]:
    """(fitted MLP, source info) saved by save_fitted; WeightsError for anything else or a damaged file.

    Through the checked loader `-m` uses (loader.our_model_from_weights): the file's declared sizes,
    then its settings against models/coord_mlp.py's limits on the meta device, then its tensors
    against that layout, before anything real is built; a crafted hidden size allocates nothing."""
    from upscale_cli.loader import our_model_from_weights

    if not Path(path).is_file():
        raise WeightsError("no such model file", path=path)
    model, arch, settings = our_model_from_weights(path)
    mlp = getattr(model, "mlp", None)
    if arch != ARCH or mlp is None:
        raise WeightsError(f"not a fit-single model (a {arch} model; save one with fit-single --save-model)",
                           path=path)
    return mlp.eval(), _source(settings.get("source"))


def _source(found: object) -> dict:
    """What a file says about its image, kept only where it is sensible (a name for an output and a
    size to keep its aspect): whole sides of 1 to MAX_SOURCE_SIDE pixels, a bit depth of 8 or 16."""
    if not isinstance(found, dict):
        return {}
    kept = {key: found[key] for key in ("height", "width")
            if type(found.get(key)) is int and 1 <= found[key] <= MAX_SOURCE_SIDE}
    if found.get("bit_depth") in (8, 16) and type(found["bit_depth"]) is int:
        kept["bit_depth"] = found["bit_depth"]
    return kept


def _fit_settings(config: FitConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(config).items() if v is not None}
