"""A run directory's files: the checkpoint (written atomically, read back for --resume), the warm
start from another run or weights file (--init), and the export of a run's weights."""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

from upscale_cli.errors import TrainingError, UsageError
from upscale_cli.train.config import TrainConfig, build_model_for
from upscale_cli.train.distributed import Dist

CHECKPOINT = "checkpoint.pt"


CONFIG_FILE = "config.json"


LOG_FILE = "log.jsonl"


def save_checkpoint(run: Path, state: dict) -> Path:
    """Atomic write of the checkpoint (a crash mid-write keeps the previous one)."""
    path, tmp = run / CHECKPOINT, run / f".{CHECKPOINT}.part"
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(run: str | Path) -> dict:
    path = Path(run) / CHECKPOINT if Path(run).is_dir() else Path(run)
    if not path.is_file():
        raise TrainingError(f"no {CHECKPOINT} to resume from", path=run)
    from upscale_cli.weights_guard import check_weights_file

    check_weights_file(path)  # declared sizes against the file and the limits, before torch reads a record
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise TrainingError(f"cannot read checkpoint ({type(err).__name__}: {err})", path=path) from None


def init_from(model: nn.Module, source: str) -> tuple[int, int]:
    """Copy every tensor of a checkpoint/weights file whose name and shape fit (x2 body -> x4)."""
    if Path(source).is_dir() or source.endswith(".pt"):
        ckpt = load_checkpoint(source)
        state = ckpt.get("ema") or ckpt["model"]
    else:
        from upscale_cli.loader import read_weights

        state, _ = read_weights(source)
    own = model.state_dict()
    fit = {}
    for key, value in own.items():
        # a stacked model (upsampler x4/x8) takes every stage from the x2 model's only stage
        source_key = key if key in state else re.sub(r"^stages\.\d+\.", "stages.0.", key)
        if source_key in state and state[source_key].shape == value.shape:
            fit[key] = state[source_key]
    model.load_state_dict(fit, strict=False)
    return len(fit), len(own)


def resume_config(run: str | Path) -> TrainConfig:
    """The config stored in a run's checkpoint (what `--resume RUN_DIR` continues)."""
    return TrainConfig.from_dict(load_checkpoint(run)["config"], ignore_unknown=True)  # maybe another version's


def restore(ckpt: dict, model: nn.Module, optimizer, ema: nn.Module | None, scaler, gen: torch.Generator,
             dist: Dist) -> tuple[int, float]:
    """Put a run back exactly as the checkpoint left it; returns (step, elapsed seconds)."""
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if ema is not None and ckpt.get("ema") is not None:
        ema.load_state_dict(ckpt["ema"])
    rng = ckpt["data_rng"]
    gen.set_state(rng[dist.rank] if dist.rank < len(rng) else rng[0])
    torch.set_rng_state(ckpt["torch_rng"])
    if scaler is not None and "scaler" in ckpt:
        scaler.load_state_dict(ckpt["scaler"])
    return int(ckpt["step"]), float(ckpt["elapsed"])


def export(run: str | Path, out: str | Path, use_ema: bool = True, half: bool = False) -> Path:
    """Write a run's (EMA) weights as safetensors with {"arch", "settings"} metadata, so
    `upscale -m FILE` and `load_model(FILE)` rebuild the model. half stores float16 tensors
    (half the size; loading casts back to float32). `run` may also be one of our .safetensors
    files (the float32 weights a GPU run sends back): it is checked as `upscale -m` checks it and
    written again, e.g. in float16."""
    from upscale_cli.loader import our_model_from_weights, save_weights

    out, weights_file = Path(out), Path(run).suffix.lower() == ".safetensors" and not Path(run).is_dir()
    if out.exists() and out.resolve() == Path(run).resolve():
        raise UsageError("the output is the input file; name another file (an input is never replaced)")
    if weights_file and not use_ema:
        raise UsageError("--no-ema chooses between a run's weights and their EMA; a weights file holds one set")
    if out.parent and not out.parent.exists():
        raise TrainingError("output folder does not exist", path=out.parent)
    if weights_file:
        if not Path(run).is_file():
            raise TrainingError("no such weights file", path=run)
        model, arch, settings = our_model_from_weights(run)  # settings and tensors checked before it is built
    else:
        ckpt = load_checkpoint(run)
        config = TrainConfig.from_dict(ckpt["config"], ignore_unknown=True)
        model = build_model_for(config)
        state = ckpt["ema"] if use_ema and ckpt.get("ema") is not None else ckpt["model"]
        model.load_state_dict(state)
        arch, settings = config.arch, config.model_settings
    if half:
        model = model.half()
    save_weights(model, out, arch, settings)
    return out

