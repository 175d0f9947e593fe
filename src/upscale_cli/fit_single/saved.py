"""A fitted network as a file: safetensors written by `fit-single --save-model`, which also
loads as the "coord-mlp" model (`upscale x.png -m f.safetensors`), and read back."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from torch import nn

from upscale_cli.errors import WeightsError
from upscale_cli.fit_single.fitting import FitConfig
from upscale_cli.fit_single.network import CoordMLP

ARCH = "coord-mlp"


def save_fitted(mlp: CoordMLP, path: str | Path, config: FitConfig, source: dict | None = None) -> None:
    """Write a fitted MLP as safetensors (atomically); the file rebuilds a "coord-mlp" model that
    renders it, so `upscale x.png -m f.safetensors` works too. source: the image's height, width, bit_depth."""
    from upscale_cli.loader import save_weights

    settings = {**_fit_settings(config), "mlp": mlp.settings, "source": source or {}}
    save_weights(nn.ModuleDict({"mlp": mlp}), path, ARCH, settings)  # "mlp.*": the keys of CoordMLPUpscaler


def load_fitted(path: str | Path) -> tuple[CoordMLP, dict]:
    """(fitted MLP, source info) saved by save_fitted; WeightsError for anything else or a damaged file."""
    from upscale_cli.loader import META_ARCH, META_SETTINGS, read_weights

    if not Path(path).is_file():
        raise WeightsError("no such model file", path=path)
    state, metadata = read_weights(path)
    try:
        settings = json.loads(metadata.get(META_SETTINGS, "{}"))
        if metadata.get(META_ARCH) != ARCH or "mlp" not in settings:
            raise ValueError("not a fitted coord-mlp model")
        mlp = CoordMLP(**settings["mlp"])
        mlp.load_state_dict({k.removeprefix("mlp."): v for k, v in state.items()})
        source = dict(settings.get("source") or {})
    except (ValueError, TypeError, KeyError, RuntimeError, AttributeError) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise WeightsError(f"not a fit-single model ({reason})", path=path) from None
    return mlp.eval(), source


def _fit_settings(config: FitConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(config).items() if v is not None}
