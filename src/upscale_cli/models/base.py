"""The limits a model module puts on its builder's settings (what a model tells the rest of the
program about itself is its descriptor: models/descriptor.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


# ---- limits on builder settings
# A model module may declare SETTING_LIMITS = {parameter name: limit} for its builder;
# models.check_settings applies them (and the builder's own signature) before anything is
# built, because settings also come from weights files, which anyone can write.


@dataclass(frozen=True)
class Between:
    """A number in [low, high], both included."""

    low: float
    high: float


@dataclass(frozen=True)
class OneOf:
    """One of a few values (scales, method names); `error` is the UpscaleError subclass a refusal
    raises (None: ModelSettingsError), e.g. UnsupportedScaleError for a scale, as builders raise."""

    values: tuple
    error: type | None = None


@dataclass(frozen=True)
class KeywordsOf:
    """A JSON-object setting passed on as keywords to `target` ("module:attribute"), checked
    against that target's own parameters and `limits`. Under the key "**" of SETTING_LIMITS it
    checks the settings a builder takes through **settings."""

    target: str
    limits: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class FilePath:
    """A setting naming a file the builder reads; never taken from a weights file's metadata."""
