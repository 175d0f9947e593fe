"""`train(config)`: the training loop of our models, reading top to bottom in phases
(after nanoGPT's train.py): setup -> data -> model and optimiser -> resume -> loop
(schedule, batch, step, EMA, validate, checkpoint) -> final checkpoint.

The loop never prints: it reports `TrainEvent`s to a callback (the CLI draws them).
A run directory holds config.json, checkpoint.pt (model, optimiser, EMA, step, config,
RNG states, elapsed time; written atomically), log.jsonl (one line per validation) and
samples/ (one validation image per checkpoint). `train(config, resume=True)` continues
exactly where the checkpoint stopped: same step, weights, optimiser moments and data draws.

The learning rate follows a one-cycle schedule (cosine warm-up from lr/25 to lr, cosine
decay to lr/1000) over the run's progress. Progress is step/steps, or, with a time budget
(`minutes`), the larger of that and elapsed/budget: on a shared CPU the budget is the
reliable quantity, and the schedule still ends annealed when the time is up.
"""
from __future__ import annotations

import copy
import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from upscale_cli.errors import TrainingError, UnsupportedScaleError, UsageError
from upscale_cli.train import data as train_data
from upscale_cli.train import degrade
from upscale_cli.train.losses import PerceptualLoss, load_vgg16_features, pixel_loss, psnr_y

CHECKPOINT = "checkpoint.pt"
CONFIG_FILE = "config.json"
LOG_FILE = "log.jsonl"
WARMUP_START_DIV = 25.0  # one-cycle: start at lr/25
FINAL_DIV = 1000.0  # one-cycle: end at lr/1000
PROGRESSIVE_START = 0.5  # progressive resizing: crops start at half size ...
PROGRESSIVE_UNTIL = 0.6  # ... and reach full size at 60% of the run
LOG_EVERY = 10  # steps between "step" events
MAX_VAL_IMAGES = 16
# Architectures trained with their own data, loss, optimiser and validation: arch -> a module with
# DEFAULTS (TrainConfig values that differ), load_data, make_batch, loss, make_optimizer, validate.
# Every other architecture is the pixel-loss SR recipe below.
ARCH_TRAINING = {"pixelrec": "upscale_cli.train.pixelrec"}


def arch_training(arch: str):
    """The module that trains `arch` its own way, or None for the pixel-loss recipe."""
    from importlib import import_module

    return import_module(ARCH_TRAINING[arch]) if arch in ARCH_TRAINING else None


def arch_defaults(arch: str) -> dict:
    """TrainConfig values an architecture's recipe changes (pixelrec: RMSProp's lr, batch 32 ...)."""
    hooks = arch_training(arch)
    return dict(hooks.DEFAULTS) if hooks else {}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs; stored in the checkpoint so `--resume` needs only the run dir."""

    data: tuple[str, ...]
    out: str
    arch: str = "unet"
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
    loss: str = "l1"
    feature_weight: float = 0.0  # VGG-16 feature loss weight (0 = off)
    gram_weight: float = 0.0  # gram-matrix loss weight (0 = off)
    vgg_weights: str | None = None
    ema: float = 0.999  # 0 = no EMA
    clip: float = 1.0  # gradient-norm clip (0 = off)
    progressive: bool = False
    degrade: bool = False
    damage_mix: str = "exclusive"  # restoration (scale 1) with degrade: degrade.DAMAGE_MIXES
    amp: bool = True  # mixed precision, CUDA only
    device: str = "auto"
    every: int = 500  # steps between validation, checkpoint and sample
    seed: int = 0
    init: str | None = None  # initialise from a checkpoint or weights file (matching tensors only)
    threads: int | None = None

    @classmethod
    def from_dict(cls, raw: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        raw = {k: v for k, v in raw.items() if k in known}
        for key in ("data", "val"):
            raw[key] = tuple(raw.get(key, ()))
        return cls(**raw)

    @property
    def model_settings(self) -> dict:
        return {**self.settings, "scale": self.scale}


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


# ---------------------------------------------------------------- setup helpers
@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    owns_group: bool = False  # this run initialised the process group (and destroys it)

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device: torch.device) -> _Dist:
    """torchrun sets WORLD_SIZE/RANK; gloo on CPU, NCCL on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    owns_group = not dist.is_initialized()  # a group the caller made is the caller's to destroy
    if owns_group:
        _import_group_capturing_modules()
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Dist(rank=dist.get_rank(), world=dist.get_world_size(), owns_group=owns_group)


def _import_group_capturing_modules() -> None:
    """Import, before the process group exists, the modules that would otherwise keep it alive.

    torch.distributed.nn.functional declares its collectives with `group=group.WORLD` as a
    default argument, evaluated when the module is first imported. DistributedDataParallel's
    constructor imports torch._dynamo, which imports that module; after init_process_group the
    default is the world ProcessGroup itself, held by those functions for the life of the
    interpreter. destroy_process_group() then only drops torch's own references, the group is
    never freed, and gloo's threads (gloo_tcp_loop, pt_gloo_runloop) run on into interpreter
    teardown and exit(), where a rank now and then aborted ("terminate called without an active
    exception"). Imported first, the defaults are None and destroy_process_group() really stops
    the threads. torch._dynamo is what DDP imports anyway, so this costs no extra time.
    """
    import torch._dynamo  # noqa: F401  (DDP's constructor imports it; it brings torch.distributed.nn)
    import torch.distributed.nn  # noqa: F401  (the module whose defaults capture group.WORLD)


def _pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError("--device cuda asked for, but no CUDA device is available")
        if name == "cuda" and "LOCAL_RANK" in os.environ:
            name = f"cuda:{os.environ['LOCAL_RANK']}"
    return torch.device(name)


def _build(config: TrainConfig) -> nn.Module:
    from upscale_cli.models import build_model

    try:
        return build_model(config.arch, **config.model_settings)
    except UnsupportedScaleError as err:
        raise UnsupportedScaleError(f"cannot train {config.arch} at x{config.scale}: {err}") from None
    except TypeError as err:
        raise UsageError(f"bad settings for {config.arch}: {err}") from None


def _check_config(config: TrainConfig) -> None:
    if config.steps < 1 or config.batch < 1 or config.crop < 4 or config.every < 1:
        raise UsageError("steps, batch and every must be >= 1 and crop >= 4")
    if config.loss not in ("l1", "mse"):
        raise UsageError(f"unknown loss {config.loss!r}; choose l1 or mse")
    if not 0.0 <= config.ema < 1.0:
        raise UsageError("ema must be in [0, 1)")
    if not config.data:
        raise UsageError("give at least one folder of HR training images")
    if config.damage_mix not in degrade.DAMAGE_MIXES:
        raise UsageError(f"unknown damage mix {config.damage_mix!r}; choose from {', '.join(degrade.DAMAGE_MIXES)}")


# ---------------------------------------------------------------- schedule
def lr_at(progress: float, config: TrainConfig) -> float:
    """One-cycle learning rate at a run progress in [0, 1]."""
    peak, start, end = config.lr, config.lr / WARMUP_START_DIV, config.lr / FINAL_DIV
    if config.warmup > 0 and progress < config.warmup:
        t = progress / config.warmup
        return start + (peak - start) * (1 - math.cos(math.pi * t)) / 2
    t = min(1.0, (progress - config.warmup) / max(1e-9, 1.0 - config.warmup))
    return end + (peak - end) * (1 + math.cos(math.pi * t)) / 2


def crop_at(progress: float, config: TrainConfig, multiple: int) -> int:
    """LR crop side; with progressive resizing it grows from half size to full."""
    if not config.progressive:
        return config.crop
    t = min(1.0, progress / PROGRESSIVE_UNTIL)
    side = config.crop * (PROGRESSIVE_START + (1 - PROGRESSIVE_START) * t)
    return max(multiple, int(side) // multiple * multiple)


# ---------------------------------------------------------------- EMA
@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """EMA of the weights with the usual warm-up (short runs still average sensibly)."""
    d = min(decay, (1 + step) / (10 + step))
    for e, p in zip(ema.state_dict().values(), model.state_dict().values()):
        if e.dtype.is_floating_point:
            e.lerp_(p.detach(), 1 - d)
        else:
            e.copy_(p)


# ---------------------------------------------------------------- validation
def forward_padded(model: nn.Module, lr: torch.Tensor) -> torch.Tensor:
    """Run a model on (1, C, h, w), reflect-padding to its size multiple and cropping back."""
    multiple = model.info.size_multiple
    h, w = lr.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        lr = nn.functional.pad(lr, (0, pw, 0, ph), mode=mode)
    scale = model.info.scale or 1
    return model(lr)[..., : h * scale, : w * scale]


def make_lr(hr: torch.Tensor, scale: int, random: bool, generator: torch.Generator,
            damage_mix: str = "exclusive") -> torch.Tensor:
    """HR batch -> LR input: the protocol's bicubic, or (--degrade) the random SR mix; at scale 1
    (restoration) with --degrade, per-crop restoration damage (JPEG, noise, blur, holes, text)."""
    if random and scale == 1:
        return degrade.restoration_degrade(hr, generator, damage_mix)
    if random:
        return degrade.random_degrade(hr, scale, generator)
    return degrade.bicubic_degrade(hr, scale)


VAL_SEED = 1234  # validation degradations are drawn from a fixed seed: comparable across checkpoints


@torch.no_grad()
def validate(model: nn.Module, images: list[torch.Tensor], scale: int, device: torch.device,
             random_degrade: bool = False, damage_mix: str = "exclusive") -> tuple[float, torch.Tensor | None]:
    """Mean protocol PSNR (Y, border = scale) on mod-cropped HR images; also the first output."""
    was_training = model.training
    model.eval()
    scores, first = [], None
    for index, image in enumerate(images):
        hr = train_data.mod_crop(image.float().div(255.0)[None], scale)  # (1, 3, H, W)
        lr = make_lr(hr, scale, random_degrade, torch.Generator().manual_seed(VAL_SEED + index), damage_mix)
        sr = forward_padded(model, lr.to(device)).clamp(0, 1).cpu()
        scores.append(psnr_y(sr, hr, border=scale))
        first = sr.cpu() if first is None else first
    model.train(was_training)
    return (sum(scores) / len(scores) if scores else float("nan")), first


def bicubic_psnr(images: list[torch.Tensor], scale: int) -> float:
    """The bicubic baseline on the validation images (what the model has to beat)."""
    from upscale_cli.resize import resize

    scores = []
    for image in images:
        hr = train_data.mod_crop(image.float().div(255.0)[None], scale)
        up = resize(degrade.bicubic_degrade(hr, scale), tuple(hr.shape[-2:]), "bicubic")
        scores.append(psnr_y(up, hr, border=scale))
    return sum(scores) / len(scores)


# ---------------------------------------------------------------- checkpoints
def _rng_state(gen: torch.Generator, dist: _Dist) -> list:
    state = gen.get_state()
    if dist.world == 1:
        return [state]
    import torch.distributed as tdist

    states: list = [None] * dist.world
    tdist.all_gather_object(states, state)
    return states


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
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise TrainingError(f"cannot read checkpoint ({type(err).__name__}: {err})", path=path) from None


def _init_from(model: nn.Module, source: str) -> tuple[int, int]:
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
    return TrainConfig.from_dict(load_checkpoint(run)["config"])


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norm parameters."""
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr_at(0.0, config), betas=(0.9, 0.99))


def _restore(ckpt: dict, model: nn.Module, optimizer, ema: nn.Module | None, scaler, gen: torch.Generator,
             dist: _Dist) -> tuple[int, float]:
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


# ---------------------------------------------------------------- the run
def train(config: TrainConfig, resume: bool = False, on_event: EventFn | None = None) -> Path:
    """Train (or resume) a run; returns the run directory."""
    _check_config(config)
    device = _pick_device(config.device)
    dist = _setup_distributed(device)
    try:
        return _train(config, resume, on_event or (lambda event: None), device, dist)
    finally:
        if dist.owns_group:  # gloo's threads must stop before the interpreter does (else SIGABRT at exit);
            # _import_group_capturing_modules is what lets this really free the group
            import torch.distributed as tdist

            tdist.destroy_process_group()


def _train(config: TrainConfig, resume: bool, emit: EventFn, device: torch.device, dist: _Dist) -> Path:
    run = Path(config.out)

    # -- setup: threads, seeds
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed * 1000 + dist.rank)
    if not resume and (run / CHECKPOINT).exists():
        raise TrainingError(f"{run} already holds a run; resume it with --resume or pick another --out")

    # -- model, loss, optimiser
    model = _build(config).to(device)
    multiple = model.info.size_multiple
    scale = config.scale
    hr_crop_max = config.crop * scale
    if config.crop % multiple:
        raise UsageError(f"--crop must be a multiple of {multiple} for {config.arch} (its size multiple)")
    if config.init and not resume:
        loaded, total = _init_from(model, config.init)
        emit(TrainEvent("start", message=f"initialised {loaded} of {total} tensors from {config.init}"))
    ema = copy.deepcopy(model).requires_grad_(False) if config.ema else None
    hooks = arch_training(config.arch)
    optimizer = hooks.make_optimizer(model, config) if hooks else _make_optimizer(model, config)
    perceptual = None if hooks else _perceptual_loss(config, device, emit)
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    # -- data (after the model: a scale the arch lacks fails before minutes of decoding)
    def warn_skip(path, reason):
        if dist.main:
            emit(TrainEvent("warning", message=f"{path}: {reason}"))

    if hooks:
        cache, val_images = hooks.load_data(config, warn_skip)
        train_count = len(cache.photos.images)
    else:
        cache = train_data.load_image_cache(config.data, min_size=hr_crop_max, on_skip=warn_skip)
        train_count, val_images = len(cache.images), []
    if config.val and not hooks:
        val_images = train_data.load_image_cache(config.val, min_size=scale * multiple, on_skip=warn_skip).images
        val_images = val_images[:MAX_VAL_IMAGES]

    # -- resume
    step, elapsed = 0, 0.0
    if resume:
        step, elapsed = _restore(load_checkpoint(run), model, optimizer, ema, scaler if use_amp else None, gen, dist)
    elif dist.main:
        run.mkdir(parents=True, exist_ok=True)
        (run / CONFIG_FILE).write_text(json.dumps(asdict(config), indent=2))
    net = model
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    emit(TrainEvent("start", step=step, steps=config.steps,
                    message=f"{config.arch} x{scale}: {sum(p.numel() for p in model.parameters()):,} parameters, "
                            f"{train_count} training images, {len(val_images)} validation images, "
                            f"{dist.world} process(es) on {device}" + (" (resumed)" if resume else "")))

    def progress_now(step_done: int, seconds: float) -> float:
        p = step_done / config.steps
        if config.minutes:
            p = max(p, seconds / (config.minutes * 60.0))
        return _agree(min(p, 1.0), dist)

    def checkpoint(step_done: int, seconds: float) -> None:
        """Validate, save a sample and the checkpoint (rank 0); all ranks gather RNG states."""
        rng_states = _rng_state(gen, dist)
        if not dist.main:
            return
        extra = {}
        if hooks:
            extra = hooks.validate(ema or model, val_images, device)
            score, sample = extra.pop("psnr"), extra.pop("sample")
        else:
            score, sample = (validate(ema or model, val_images, scale, device, config.degrade, config.damage_mix)
                             if len(val_images) else (None, None))
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "ema": ema.state_dict() if ema is not None else None, "step": step_done, "elapsed": seconds,
                 "config": asdict(config), "data_rng": rng_states, "torch_rng": torch.get_rng_state(),
                 "scaler": scaler.state_dict(), "val_psnr": score}
        path = save_checkpoint(run, state)
        if sample is not None:
            train_data.save_sample(sample, run / "samples" / f"step_{step_done:07d}.png")
        with open(run / LOG_FILE, "a") as log:
            log.write(json.dumps({"step": step_done, "elapsed": round(seconds, 1), "val_psnr": score, **extra}) + "\n")
        emit(TrainEvent("val", step=step_done, steps=config.steps, psnr=score, message=_val_message(extra)))
        emit(TrainEvent("checkpoint", step=step_done, steps=config.steps, path=str(path)))

    # -- the loop
    if dist.main and len(val_images) and not resume and not config.degrade and not hooks:
        emit(TrainEvent("val", step=0, steps=config.steps, psnr=bicubic_psnr(val_images, scale),
                        message="bicubic baseline"))
    model.train()
    progress = progress_now(step, elapsed)
    window_start, window_steps, loss_sum = time.perf_counter(), 0, 0.0
    last_tick = time.perf_counter()
    while progress < 1.0:
        # schedule
        lr = lr_at(progress, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        side = crop_at(progress, config, multiple)

        # batch: random HR crops, LR made on the fly
        if hooks:
            lr_img, hr = hooks.make_batch(cache, config, gen)
        else:
            hr = train_data.random_crops(cache, config.batch, side * scale, gen)
            lr_img = make_lr(hr, scale, config.degrade, gen, config.damage_mix)
        hr, lr_img = hr.to(device, non_blocking=True), lr_img.to(device, non_blocking=True)

        # step
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            if hooks:
                loss = hooks.loss(net, lr_img, hr)
            else:
                sr = net(lr_img)
                loss = pixel_loss(sr.float(), hr, config.loss)
                if perceptual is not None:
                    loss = loss + perceptual(sr.float(), hr)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if config.clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        scaler.step(optimizer)
        scaler.update()
        if ema is not None:
            update_ema(ema, model, config.ema, step)
        step += 1

        # bookkeeping: time, progress, events
        now = time.perf_counter()
        elapsed += now - last_tick
        last_tick = now
        window_steps += 1
        loss_sum += float(loss.detach())
        progress = progress_now(step, elapsed)
        if dist.main and (step % LOG_EVERY == 0 or progress >= 1.0):
            it_s = window_steps / max(1e-9, now - window_start)
            eta = _eta(progress, step, elapsed, it_s, config)
            emit(TrainEvent("step", step=step, steps=config.steps, progress=progress, loss=loss_sum / window_steps,
                            lr=lr, it_s=it_s, eta_s=eta))
            window_start, window_steps, loss_sum = now, 0, 0.0
        if step % config.every == 0 or progress >= 1.0:
            checkpoint(step, elapsed)
            last_tick = time.perf_counter()  # validation time does not count against the budget

    emit(TrainEvent("done", step=step, steps=config.steps, progress=1.0, path=str(run)))
    if dist.world > 1:
        import torch.distributed as tdist

        tdist.barrier()
    return run


def _val_message(extra: dict) -> str:
    """The validation line's words for an architecture's own figures (pixelrec: NLL)."""
    if "nll_bits" not in extra:
        return ""
    return (f"validation NLL {extra['nll_bits']:.3f} bits/sub-pixel (conditioning alone "
            f"{extra['nll_cond_bits']:.3f}), greedy")


def _agree(value: float, dist: _Dist) -> float:
    """Every process must stop at the same step: rank 0's progress wins."""
    if dist.world == 1:
        return value
    import torch.distributed as tdist

    t = torch.tensor([value], dtype=torch.float64)
    tdist.broadcast(t, src=0)
    return float(t)


def _eta(progress: float, step: int, elapsed: float, it_s: float, config: TrainConfig) -> float:
    by_steps = (config.steps - step) / max(it_s, 1e-9)
    if config.minutes:
        return max(0.0, min(by_steps, config.minutes * 60.0 - elapsed))
    return by_steps


def _perceptual_loss(config: TrainConfig, device: torch.device, emit: EventFn) -> PerceptualLoss | None:
    if not (config.feature_weight or config.gram_weight):
        return None
    vgg = load_vgg16_features(config.vgg_weights)
    if vgg is None:
        emit(TrainEvent("warning", message="no VGG-16 weights (give --vgg-weights FILE or install torchvision with "
                                           "its cached ImageNet weights): training with the pixel loss only"))
        return None
    return PerceptualLoss(vgg, config.feature_weight, config.gram_weight).to(device)


# ---------------------------------------------------------------- export
def export(run: str | Path, out: str | Path, use_ema: bool = True, half: bool = False) -> Path:
    """Write a run's (EMA) weights as safetensors with {"arch", "settings"} metadata, so
    `upscale -m FILE` and `load_model(FILE)` rebuild the model. half stores float16 tensors
    (half the size; loading casts back to float32)."""
    from upscale_cli.loader import save_weights

    ckpt = load_checkpoint(run)
    config = TrainConfig.from_dict(ckpt["config"])
    model = _build(config)
    state = ckpt["ema"] if use_ema and ckpt.get("ema") is not None else ckpt["model"]
    model.load_state_dict(state)
    if half:
        model = model.half()
    out = Path(out)
    if out.parent and not out.parent.exists():
        raise TrainingError("output folder does not exist", path=out.parent)
    save_weights(model, out, config.arch, config.model_settings)
    return out
