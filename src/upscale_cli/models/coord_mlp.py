"""The any-size "coord-mlp" architecture: an upscaler that fits a coordinate MLP to each image at
run time and renders it at the asked size, or renders a fitted one saved by `fit-single
--save-model`. The network, the fit and the render are the fit_single package's; this file is
what the registry builds and what a weights file's settings are checked against.
"""
from __future__ import annotations

import torch
from torch import nn

from upscale_cli.fit_single import fitting
from upscale_cli.fit_single.fitting import FitConfig, fit
from upscale_cli.fit_single.network import ENCODINGS, MAX_PALETTE, CoordMLP, render
from upscale_cli.models.base import Between, KeywordsOf, OneOf
from upscale_cli.models.descriptor import Fitting

SEEDS = Between(fitting.MIN_SEED, fitting.MAX_SEED)  # what torch.Generator.manual_seed takes
# the fit's own bounds (fitting.py), so a file cannot hold what `fit-single` refuses
_NETWORK_LIMITS = {"encoding": OneOf(ENCODINGS), "hidden": Between(1, fitting.MAX_HIDDEN),
                   "depth": Between(1, fitting.MAX_DEPTH), "features": Between(1, fitting.MAX_FEATURES),
                   "freq_scale": Between(0.0, fitting.MAX_FREQ_SCALE), "seed": SEEDS}
# Checked before anything is built (models.check_settings): a file saved by fit-single carries
# the fitted network's settings ("mlp") and the fit's (FitConfig fields, through **fit_settings).
ARCH = "coord-mlp"  # its id in the registry (models/__init__.py): what fit-single saves
BYTES_PER_INPUT_PIXEL = 64  # bytes per input pixel of a render (research/memory_per_pixel.md)
SETTING_LIMITS = {
    "mlp": KeywordsOf("upscale_cli.fit_single.network:CoordMLP",
                      {**_NETWORK_LIMITS, "channels": Between(1, 4), "long_side": Between(1, 1 << 20),
                       "palette_size": Between(0, MAX_PALETTE), "palette_gain": Between(0.0, 1e4)}),
    "**": KeywordsOf("upscale_cli.fit_single.fitting:FitConfig",
                     {**_NETWORK_LIMITS, "steps": Between(1, fitting.MAX_STEPS), "lr": Between(0.0, fitting.MAX_LR),
                      "consistency_scale": Between(0.0, 16.0), "point_weight": Between(0.0, 1e6),
                      "consistency_weight": Between(0.0, 1e6), "target_psnr": Between(0.0, 200.0),
                      "palette_colours": Between(0, MAX_PALETTE)}),
}


class CoordMLPUpscaler(nn.Module):
    """Any-size upscaler: forward(x (1, C, H, W), size=(h, w)) fits an MLP to x and renders it.

    Built with `mlp=` settings (a model saved by `fit-single --save-model`), it holds that
    fitted MLP and renders it at the asked size instead, whatever x is.
    """

    def __init__(self, fit_settings: dict, mlp: dict | None = None) -> None:
        super().__init__()
        self.config = FitConfig.for_encoding(**fit_settings)
        self.mlp = CoordMLP(**mlp) if mlp is not None else None
        channels = self.mlp.channels if self.mlp is not None else 3
        self.info = Fitting(in_channels=min(channels, 3), supports_half=False,  # the engine keeps autograd on
                            bytes_per_input_pixel=BYTES_PER_INPUT_PIXEL)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        height, width = int(size[0]), int(size[1])
        if self.mlp is not None:
            return render(self.mlp, height, width).to(x.device).expand(x.shape[0], -1, -1, -1)
        outputs = []
        with torch.inference_mode(False), torch.enable_grad():
            for image in x.detach().float().cpu().clone().split(1, dim=0):  # (1, C, H, W) each
                result = fit(image, config=self.config, target_size=(height, width))
                outputs.append(render(result.mlp, height, width))
        return torch.cat(outputs, dim=0).to(device=x.device, dtype=x.dtype)


def build_coord_mlp_upscaler(mlp: dict | None = None, source: dict | None = None, **fit_settings) -> CoordMLPUpscaler:
    """Registry builder "coord-mlp": keyword FitConfig fields; `mlp` = a fitted CoordMLP's settings
    (a file saved by fit-single), `source` = what that file says about its image (unused here)."""
    return CoordMLPUpscaler(fit_settings, mlp)
