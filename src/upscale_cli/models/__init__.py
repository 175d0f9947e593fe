"""The explicit registry of architectures: arch id -> builder. No folder scanning.

A builder takes keyword settings (as stored in a weights file's metadata or a catalogue
entry's options) and returns an nn.Module whose `info` is its descriptor (models/descriptor.py).
Builders are named by import path so that importing the registry stays cheap.

Settings are checked before anything is built (`check_settings`): each key must be one of
the builder's own parameters, each value of the parameter's annotated type and within the
limits its module declares (SETTING_LIMITS, see models/base.py); then the model is built on
PyTorch's meta device, which allocates nothing, and refused if it is over MAX_PARAMETERS.
Weights files are written by anyone, so their settings must not be able to allocate the
machine's memory or make a builder read another file.
"""
from __future__ import annotations

import inspect
import json
import math
import types
import typing
from importlib import import_module
from typing import Callable, Literal, Mapping, get_args

from upscale_cli.errors import ModelNotFoundError, ModelSettingsError, UpscaleError
from upscale_cli.models.base import Between, FilePath, KeywordsOf, OneOf

ARCHITECTURES: dict[str, str] = {
    "interpolate": "upscale_cli.models.interpolate:build_interpolate",
    "pixel-art": "upscale_cli.models.pixel_art:build_pixel_art",
    "opencv-espcn": "upscale_cli.models.opencv_sr:build_opencv_sr",
    "opencv-fsrcnn": "upscale_cli.models.opencv_sr:build_opencv_sr",
    "opencv-lapsrn": "upscale_cli.models.opencv_sr:build_opencv_sr",
    "opencv-edsr": "upscale_cli.models.opencv_sr:build_opencv_sr",
    "unet": "upscale_cli.models.unet:build_unet",
    "upsampler": "upscale_cli.models.upsampler:build_upsampler",
    "coord-mlp": "upscale_cli.models.coord_mlp:build_coord_mlp_upscaler",
    "opencv-nlmeans": "upscale_cli.models.opencv_restore:build_nlmeans",
    "opencv-inpaint": "upscale_cli.models.opencv_restore:build_inpaint",
    "pixelrec": "upscale_cli.models.pixelrec:build_pixelrec",
}
# Architectures whose models also run on NumPy arrays with no PyTorch (arch id -> builder of that
# model): the engine runs them so on the CPU, and a run of nothing else never imports torch.
ARRAY_BUILDERS: dict[str, str] = {
    "interpolate": "upscale_cli.models.resample:build_resampler",
}
# Architectures whose models sample their answers (cli/sample.py draws them): known here, so that
# asking about another architecture imports nothing.
SAMPLING_ARCHS: frozenset[str] = frozenset({"pixelrec"})
# The architectures `upscale train` trains (the first is its default).
TrainableArch = Literal["unet", "upsampler", "pixelrec"]
TRAINABLE_ARCHS: tuple[str, ...] = get_args(TrainableArch)
# Parameters and buffers (400 MB in float32): ~200x our largest model, far below what makes
# an allocator fail, so no combination of in-bounds settings can exhaust memory.
MAX_PARAMETERS = 100_000_000
ANY_KEYWORDS = "**"  # the SETTING_LIMITS key that checks what a builder takes through **settings
_SHOWN_CHARS = 40  # a refused value is quoted up to this many characters


def _module_says(arch: object, name: str, default: object) -> object:
    """What an architecture's module declares as `name` (default when it is silent, or the id unknown)."""
    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        return default
    return getattr(import_module(ARCHITECTURES[arch].split(":")[0]), name, default)


def sampling_arch(arch: str) -> bool:
    """Whether an architecture's models sample their answers."""
    return arch in SAMPLING_ARCHS


def training_module(arch: str) -> str | None:
    """The module that trains an architecture its own way (its module says TRAINING = "module"),
    or None: it trains with the pixel-loss recipe (train/recipes.py)."""
    return _module_says(arch, "TRAINING", None)


def array_model(arch: str, settings: Mapping[str, object]):
    """The architecture's model on NumPy arrays (ARRAY_BUILDERS), its settings checked as for
    build_model; None for an architecture that has none."""
    if arch not in ARRAY_BUILDERS:
        return None
    builder = _resolve(ARRAY_BUILDERS[arch])
    settings = dict(settings)
    _check_keywords(builder, settings, _limits_of(builder), arch, "")
    return builder(**settings)


def get_builder(arch: str) -> Callable:
    """The builder function for an architecture id."""
    try:
        module_name, func_name = ARCHITECTURES[arch].split(":")
    except (KeyError, TypeError):
        raise ModelNotFoundError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}") from None
    return getattr(import_module(module_name), func_name)


def build_model(arch: str, **settings):
    """Build an (untrained) model of an architecture, once its settings are checked."""
    builder = get_builder(arch)
    if not _reads_a_file(builder):
        model_skeleton(arch, settings)  # also checks the settings
    else:
        check_settings(arch, settings)
    return builder(**settings)


def model_skeleton(arch: str, settings: object, *, from_file: bool = False):
    """The model built on the meta device: its tensor names, shapes and size, no memory.

    from_file: the settings come from a weights file's metadata, so settings that name a
    file (an OpenCV graph) are refused. ModelSettingsError for anything out of place.
    """
    import torch

    check_settings(arch, settings, from_file=from_file)
    for limit in _limits_of(get_builder(arch)).values():
        if isinstance(limit, KeywordsOf):  # imported outside the meta device: its module constants stay real
            _resolve(limit.target)
    try:
        with torch.device("meta"):
            skeleton = get_builder(arch)(**settings)
    except UpscaleError:
        raise
    except Exception as err:  # in-bounds settings a builder still cannot use
        raise ModelSettingsError(f"cannot build {arch} from these settings ({_first_line(err)})") from None
    count = sum(t.numel() for t in skeleton.state_dict().values())
    if count > MAX_PARAMETERS:
        raise ModelSettingsError(f"these {arch} settings describe {count:,} parameters; the limit is {MAX_PARAMETERS:,}")
    return skeleton


def check_settings(arch: str, settings: object, *, from_file: bool = False) -> None:
    """Refuse settings the builder does not take, of the wrong type or outside its module's limits."""
    builder = get_builder(arch)
    limits = _limits_of(builder)
    if from_file and _reads_a_file(builder):
        raise ModelSettingsError(f"{arch} reads its network from a separate file, which a weights file "
                                 "cannot name; pass that file itself with -m")
    _check_keywords(builder, settings, limits, arch, "")


def _limits_of(target: Callable) -> Mapping[str, object]:
    return getattr(import_module(target.__module__), "SETTING_LIMITS", {})


def _reads_a_file(builder: Callable) -> bool:
    return any(isinstance(limit, FilePath) for limit in _limits_of(builder).values())


def _check_keywords(target: Callable, settings: object, limits: Mapping[str, object], arch: str, prefix: str,
                    also: tuple[str, ...] = ()) -> None:
    """settings (a JSON object) against target's keyword parameters, their types and limits
    (`also`: the names a caller's own parameters took, for the message about an unknown one)."""
    where = f"setting {prefix.rstrip('.')!r} of {arch}" if prefix else f"{arch} settings"
    if not isinstance(settings, dict):
        raise ModelSettingsError(f"{where} must be a JSON object, not {_kind(settings)}")
    params = inspect.signature(target).parameters
    named = {n: p for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    takes_more = any(p.kind is p.VAR_KEYWORD for p in params.values()) and ANY_KEYWORDS in limits
    hints = _hints(target)
    rest = {}
    for key, value in settings.items():
        if key in named:
            _check_value(f"{prefix}{key}", value, hints.get(key), limits.get(key), arch)
        elif takes_more:
            rest[key] = value
        else:
            known = ", ".join(sorted({*named, *also})) or "none"
            raise ModelSettingsError(f"unknown setting {prefix}{key!r} for {arch} (its settings: {known})")
    for name, param in named.items():
        if param.default is param.empty and name not in settings:
            raise ModelSettingsError(f"{arch} needs the setting {prefix}{name!r}")
    if rest:
        more = limits[ANY_KEYWORDS]
        _check_keywords(_resolve(more.target), rest, more.limits, arch, prefix, tuple(named))


def _check_value(name: str, value: object, hint: object, limit: object, arch: str) -> None:
    if isinstance(limit, KeywordsOf) and value is not None:
        _check_keywords(_resolve(limit.target), value, limit.limits, arch, f"{name}.")
        return
    if hint is not None and not _fits(value, hint):
        raise ModelSettingsError(f"setting {name!r} of {arch} must be {_describe(hint)}, not {_shown(value)}")
    if isinstance(limit, Between) and not (_fits(value, float) and limit.low <= value <= limit.high):
        raise ModelSettingsError(f"setting {name!r} of {arch} must be between {_number(limit.low)} and {_number(limit.high)}, "
                                 f"not {_shown(value)}")
    if isinstance(limit, OneOf) and value not in limit.values:
        choices = ", ".join(json.dumps(v) for v in limit.values)
        raise (limit.error or ModelSettingsError)(f"setting {name!r} of {arch} must be one of {choices}, "
                                                  f"not {_shown(value)}")


def _fits(value: object, hint: object) -> bool:
    """Whether a JSON value is of an annotated type (int, float, str, bool, None, dict, list/tuple, unions)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None) or hint is None:
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    if hint in (list, tuple) or origin in (list, tuple):
        return _fits_sequence(value, origin, typing.get_args(hint))
    return True  # a type JSON cannot express: the builder checks it


def _fits_sequence(value: object, origin: object, args: tuple) -> bool:
    if not isinstance(value, (list, tuple)):
        return False
    if origin is tuple and args and args[-1] is not Ellipsis:
        return len(value) == len(args) and all(_fits(v, h) for v, h in zip(value, args))
    return not args or all(_fits(v, args[0]) for v in value)


_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a JSON object",
               list: "a list", tuple: "a list", type(None): "null"}


def _describe(hint: object) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        count = len(typing.get_args(hint)) if origin is tuple else 0
        return f"a list of {count} numbers" if count else "a list"
    return _TYPE_WORDS.get(origin or hint, str(hint))


def _number(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _kind(value: object) -> str:
    return {list: "a list", str: "a string", bool: "true or false", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _shown(value: object) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _hints(target: Callable) -> dict:
    try:
        return typing.get_type_hints(target.__init__ if isinstance(target, type) else target)
    except Exception:  # an annotation that does not evaluate: check names and limits only
        return {}


def _resolve(target: str) -> Callable:
    module_name, attr = target.split(":")
    return getattr(import_module(module_name), attr)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


__all__ = ["ARCHITECTURES", "ARRAY_BUILDERS", "SAMPLING_ARCHS", "array_model", "MAX_PARAMETERS", "TRAINABLE_ARCHS", "TrainableArch", "build_model", "check_settings", "get_builder",
           "model_skeleton", "sampling_arch", "training_module"]
