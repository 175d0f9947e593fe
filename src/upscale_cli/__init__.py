"""upscale-cli: upscale and restore images from Python as from the shell.

    from upscale_cli import upscale_image
    upscale_image("photo.jpg", "photo_x4.png", scale=4)

Heavy modules (torch) are imported on first use, so `import upscale_cli` stays cheap.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["available_models", "load_model", "upscale_image", "__version__"]


def load_model(name_or_path: str, scale: int | None = None):
    """A catalogue model (or one of our weights files) as an nn.Module in eval mode, with `.info`."""
    from upscale_cli.loader import load_model as _load

    return _load(name_or_path, scale)


def available_models() -> list[str]:
    """Names of every model in the catalogue."""
    from upscale_cli.catalog import load_catalog

    return list(load_catalog())


def upscale_image(source, destination=None, *, model: str = "unet", scale: float | None = None, **options):
    """Upscale one image file (or bytes). Writes `destination` when given; returns the DecodedImage.

    Extra keyword options are those of engine.UpscaleConfig (width, height, device, half, tile, ...).
    """
    from upscale_cli.engine import UpscaleConfig, Upscaler
    from upscale_cli.images.read import read_image
    from upscale_cli.images.write import write_image

    upscaler = Upscaler(UpscaleConfig(model=model, scale=scale, **options), progress=False)
    result = upscaler.upscale_image(read_image(source))
    if destination is not None:
        write_image(result, destination)
    return result
