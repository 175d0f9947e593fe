"""What a training run is: TrainConfig (everything a run needs, stored in its checkpoint), the
events the loop reports (TrainEvent), and the module of an architecture trained its own way.

Every setting is checked when a TrainConfig is built, whether from a TOML recipe, the command line
or a checkpoint (one place: `check_config`, which __post_init__ calls): its type (an integer is not
a string, and true is not 1), finite numbers, ranges and choices. A refusal is one line naming the
setting, its value and what it may be (SettingError, a usage error: exit 2). What the settings name
on disk is checked by `check_paths` before a run creates anything: the data folders exist and `out`
is a folder this run can create and write.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field, fields
from difflib import get_close_matches
from pathlib import Path
from typing import Callable

from torch import nn

from upscale_cli.choices import (DAMAGE_MIXES, DEVICE_NAME, DEVICE_WORDS, LOSS_REGIONS, LOSSES, TRAINABLE_ARCHS,
                                 Arch, DamageMix, Loss, LossRegion)
from upscale_cli.errors import DatasetError, TrainingError, UnsupportedScaleError, UsageError, printable_path
from upscale_cli.images.atomic import name_max_bytes, over_name_limit

def arch_training(arch: str):
    """The module that trains `arch` its own way (its model module names it: models.training_module),
    with DEFAULTS (TrainConfig values that differ) and recipe(config, device), its TrainingRecipe
    (train/recipes.py: the loop's protocol); None: the pixel-loss recipe (recipes.PixelLossRecipe)."""
    from importlib import import_module

    from upscale_cli.models import training_module

    name = training_module(arch)
    return import_module(name) if name else None


def arch_defaults(arch: str) -> dict:
    """TrainConfig values an architecture's recipe changes (pixelrec: RMSProp's lr, batch 32 ...)."""
    own = arch_training(arch)
    return dict(own.DEFAULTS) if own else {}


# The settings that take a word are choices' Literals (Arch, Loss, LossRegion, DamageMix): the
# checks below and their messages read the same tuples as the command line's options.

# Limits of the settings
MAX_INT = 2**63 - 1  # any integer setting: what a checkpoint's int64 and torch's counters hold
# The data draws are seeded with seed * 1000 + rank, which must stay within torch's 64-bit seeds
# (torch.manual_seed takes below 2**64); 2**53 - 1 is also the largest integer JSON keeps exactly.
MAX_SEED = 2**53 - 1
MAX_THREADS = 1024  # torch.set_num_threads: more would only oversubscribe any machine there is
MAX_BATCH = 4096  # crops per step per process (4096 HR crops of 192 px are 1.8 GB in float32)
MIN_CROP, MAX_CROP = 4, 1024  # LR crop side in pixels (the HR crop is crop x scale)
_SHOWN_CHARS = 60  # a refused value is quoted up to this many characters


class SettingError(UsageError):
    """A setting with a value it cannot take: one line naming it, the value and what it may be."""

    def __init__(self, setting: str, value: object, allowed: str, *, path: object | None = None) -> None:
        self.setting, self.value, self.allowed = setting, value, allowed
        super().__init__(f"{setting} = {shown_value(value)}: {allowed}", path=path)


def shown_value(value: object) -> str:
    """A value as a TOML recipe writes it (strings quoted, true/false, nan, inf), cut to a line."""
    if isinstance(value, (str, os.PathLike)):
        text = json.dumps(printable_path(value), ensure_ascii=False)
    elif isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = repr(value)  # nan, inf, -inf, 1e-05: TOML spells them so too
    else:
        try:
            text = json.dumps(value, default=str, ensure_ascii=False)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs; stored in the checkpoint so `--resume` needs only the run dir.
    Every setting is checked when it is built or replaced (check_config; SettingError)."""

    data: tuple[str, ...]
    out: str
    arch: Arch = TRAINABLE_ARCHS[0]
    scale: int = 4
    settings: dict = field(default_factory=dict)  # builder settings besides scale (width, levels ...)
    val: tuple[str, ...] = ()
    steps: int = 10_000
    minutes: float | None = None  # time budget; the schedule follows whichever ends first
    batch: int = 16
    crop: int = 48  # LR crop side (the HR crop is crop * scale)
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: float = 0.05  # fraction of the run
    loss: Loss = "l1"
    loss_region: LossRegion = "image"  # "mask": the loss (and validation PSNR) inside the input's mask channel only
    feature_weight: float = 0.0  # VGG-16 feature loss weight (0 = off)
    gram_weight: float = 0.0  # gram-matrix loss weight (0 = off)
    vgg_weights: str | None = None
    ema: float = 0.999  # 0 = no EMA
    clip: float = 1.0  # gradient-norm clip (0 = off)
    progressive: bool = False
    degrade: bool = False
    damage_mix: DamageMix = "exclusive"  # restoration (scale 1) with degrade
    amp: bool = True  # mixed precision, CUDA only
    cpu_bf16: bool = False  # bfloat16 mixed precision on a CPU with native bf16 (AVX-512 BF16 or AMX)
    device: str = "auto"
    every: int = 500  # steps between validation, checkpoint and sample
    seed: int = 0
    init: str | None = None  # initialise from a checkpoint or weights file (matching tensors only)
    threads: int | None = None  # None or 0: torch's own default

    def __post_init__(self) -> None:
        check_config(self)

    @classmethod
    def from_dict(cls, raw: dict, *, ignore_unknown: bool = False) -> "TrainConfig":
        """From a recipe's settings. A key that is no setting is refused, unless ignore_unknown
        (a checkpoint's config, which another version of the program may have written)."""
        if not ignore_unknown:
            check_known(raw)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    @property
    def model_settings(self) -> dict:
        return {**self.settings, "scale": self.scale}


def check_known(raw: dict) -> None:
    """Refuse keys that are not TrainConfig settings: a misspelt one must not be trained past."""
    known = sorted(f.name for f in fields(TrainConfig))
    unknown = [str(key) for key in raw if key not in known]
    if unknown:
        near = get_close_matches(unknown[0], known, n=1)
        hint = f"did you mean {near[0]!r}?" if near else f"the settings are {', '.join(known)}"
        raise UsageError(f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} ({hint})")


# ---------------------------------------------------------------- each setting's check
Rule = Callable[[str, object], object]  # (name, value) -> the value as stored, or SettingError


def _integer(low: int, high: int = MAX_INT, *, optional: bool = False, note: str = "") -> Rule:
    def check(name: str, value: object) -> object:
        if value is None and optional:
            return None
        # bool is an int in Python; `steps = true` is not a number of steps
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            bounds = f">= {low} (and below 2**63)" if high == MAX_INT else f"from {low} to {high}"
            raise SettingError(name, value, f"must be an integer {bounds}{note}")
        return value
    return check


def _number(test: Callable[[float], bool], words: str, *, optional: bool = False) -> Rule:
    def check(name: str, value: object) -> object:
        if value is None and optional:
            return None
        number = math.nan
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an integer beyond any float
                pass
        if not (math.isfinite(number) and test(number)):
            raise SettingError(name, value, f"must be {words}")
        return number
    return check


def _choice(choices: tuple[str, ...]) -> Rule:
    def check(name: str, value: object) -> object:
        if not isinstance(value, str) or value not in choices:
            raise SettingError(name, value, f"must be one of {', '.join(map(json.dumps, choices))}")
        return value
    return check


def _flag(name: str, value: object) -> object:
    if not isinstance(value, bool):
        raise SettingError(name, value, "must be true or false")
    return value


def _path(what: str, *, optional: bool = False) -> Rule:
    def check(name: str, value: object) -> object:
        if value is None and optional:
            return None
        text = os.fspath(value) if isinstance(value, os.PathLike) else value
        if not isinstance(text, str) or not text or "\0" in text:
            raise SettingError(name, value, f"must be {what} (a non-empty string)")
        return text
    return check


def _paths(what: str, *, at_least: int) -> Rule:
    def check(name: str, value: object) -> object:
        # a string is no list of one folder: as a tuple "/data" is "/", "d", ... and "/" is walked whole
        items = [os.fspath(v) if isinstance(v, os.PathLike) else v for v in value] \
            if isinstance(value, (list, tuple)) else None
        if items is None or len(items) < at_least or not all(isinstance(v, str) and v and "\0" not in v for v in items):
            need = f"a list of {what}" + (f", at least {at_least}," if at_least else "")
            raise SettingError(name, value,
                               f"must be {need} each a non-empty string (in a recipe: {name} = [\"folder\"])")
        return tuple(items)
    return check


def _table(name: str, value: object) -> object:
    if not (isinstance(value, dict) and all(isinstance(key, str) for key in value)):
        raise SettingError(name, value, "must be a table of model settings (in a recipe: [settings])")
    return value


def _device(name: str, value: object) -> object:
    if not (isinstance(value, str) and DEVICE_NAME.fullmatch(value)):
        raise SettingError(name, value, f"must be {DEVICE_WORDS}")
    return value


_RULES: dict[str, Rule] = {
    "data": _paths("folders of HR training images", at_least=1),
    "out": _path("the run folder"),
    "arch": _choice(TRAINABLE_ARCHS),
    "scale": _integer(1),  # which scales an architecture has: its builder's limits (_check_model_settings)
    "settings": _table,
    "val": _paths("folders of HR validation images", at_least=0),
    "steps": _integer(1),
    "minutes": _number(lambda v: v > 0, "a finite number of minutes > 0 (leave it out for no time budget)",
                       optional=True),
    "batch": _integer(1, MAX_BATCH),
    "crop": _integer(MIN_CROP, MAX_CROP),
    "lr": _number(lambda v: v > 0, "a finite number > 0"),
    "weight_decay": _number(lambda v: v >= 0, "a finite number >= 0"),
    "warmup": _number(lambda v: 0 <= v < 1, "a fraction of the run in [0, 1)"),
    "loss": _choice(LOSSES),
    "loss_region": _choice(LOSS_REGIONS),
    "feature_weight": _number(lambda v: v >= 0, "a finite number >= 0 (0 = off)"),
    "gram_weight": _number(lambda v: v >= 0, "a finite number >= 0 (0 = off)"),
    "vgg_weights": _path("a VGG-16 weights file", optional=True),
    "ema": _number(lambda v: 0 <= v < 1, "a decay in [0, 1) (0 = no EMA)"),
    "clip": _number(lambda v: v >= 0, "a finite gradient norm >= 0 (0 = no clipping)"),
    "progressive": _flag,
    "degrade": _flag,
    "damage_mix": _choice(DAMAGE_MIXES),
    "amp": _flag,
    "cpu_bf16": _flag,
    "device": _device,
    "every": _integer(1),
    "seed": _integer(0, MAX_SEED),
    "init": _path("a run folder or weights file", optional=True),
    "threads": _integer(0, MAX_THREADS, optional=True, note=" (0: torch's default)"),
}


def check_config(config: TrainConfig) -> None:
    """Check every setting and store it as its field's type (a list as a tuple, an integer
    number as a float); then the settings that go together, and the model's own settings."""
    for f in fields(config):
        object.__setattr__(config, f.name, _RULES[f.name](f.name, getattr(config, f.name)))
    if config.loss_region == "mask" and not (config.degrade and config.scale == 1 and config.damage_mix == "inpaint"):
        raise SettingError("loss_region", config.loss_region, "needs the inpainting recipe's masks: scale 1, degrade "
                           "on and damage_mix \"inpaint\" (--scale 1 --degrade --damage-mix inpaint)")
    _check_model_settings(config)


def _check_model_settings(config: TrainConfig) -> None:
    """The builder's own checks of the scale and settings (types, bounds, size), on PyTorch's meta
    device, which allocates nothing; and the crop against the model's size multiple."""
    from upscale_cli.models import model_skeleton

    try:
        skeleton = model_skeleton(config.arch, config.model_settings)
    except UnsupportedScaleError as err:
        raise SettingError("scale", config.scale, f"cannot train {config.arch} at x{config.scale} ({err})") from None
    multiple = skeleton.info.size.multiple_of
    if config.crop % multiple:
        raise SettingError("crop", config.crop,
                           f"must be a multiple of {multiple} for {config.arch} (its size multiple)")


# ---------------------------------------------------------------- what the settings name on disk
def check_paths(config: TrainConfig, *, resume: bool = False) -> None:
    """Before a run creates anything: the data and val folders exist, so do the files init (a new
    run) and vgg_weights name, and `out` is a folder this run can create and write. A missing
    input exits 1 as it does in every command; an `out` that cannot be a run folder is a SettingError."""
    for name in ("data", "val"):
        for path in getattr(config, name):
            if not os.path.exists(path):
                raise DatasetError(f"no such folder or image ({name})", path=printable_path(path))
    if config.init and not resume and not os.path.exists(config.init):
        raise TrainingError("no such run folder or weights file (init)", path=printable_path(config.init))
    if config.vgg_weights and not os.path.isfile(config.vgg_weights):
        raise TrainingError("no such file (vgg_weights)", path=printable_path(config.vgg_weights))
    check_out(config.out)


def check_out(out: str) -> None:
    """`out` is a folder, or can be made one, in which a file can be created: probed with a
    temporary folder that is removed at once, so a refused run leaves nothing behind."""
    def refuse(why: str) -> SettingError:
        return SettingError("out", out, f"must be a folder this run can create and write; {why}")

    path, missing = Path(out), []
    try:
        while not os.path.lexists(path) and path != path.parent:
            missing.append(path.name)
            path = path.parent
        if not path.is_dir():
            raise refuse(f"{printable_path(path)} is not a folder")
    except OSError as err:  # a loop of links, a name too long for the system
        raise refuse(err.strerror or str(err)) from None
    if over := over_name_limit(missing, name_max_bytes(path)):
        raise refuse(f"a name in it is {over}")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".upscale-train-probe-", dir=path))
    except OSError as err:
        raise refuse(f"creating a folder in {printable_path(path)} fails ({err.strerror or err})") from None


@dataclass
class TrainEvent:
    """What the loop reports: kind is start, warning, step, val, checkpoint or done."""

    kind: str
    step: int = 0
    steps: int = 0
    progress: float = 0.0
    loss: float | None = None
    psnr: float | None = None
    lr: float | None = None
    it_s: float | None = None
    eta_s: float | None = None
    message: str = ""
    path: str | None = None


EventFn = Callable[[TrainEvent], None]


def build_model_for(config: TrainConfig) -> nn.Module:
    from upscale_cli.models import build_model

    # the settings and scale were checked against the builder when the config was made
    # (_check_model_settings builds this model on the meta device)
    return build_model(config.arch, **config.model_settings)
