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
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from upscale_cli.device import cpu_has_native_bf16
from upscale_cli.errors import TrainingError, UsageError
from upscale_cli.train import data as train_data
from upscale_cli.train.checkpoint import (CHECKPOINT, CONFIG_FILE, LOG_FILE, init_from, load_checkpoint, restore,
                                          save_checkpoint)
from upscale_cli.train.config import EventFn, TrainConfig, TrainEvent, arch_training, build_model_for, check_paths
from upscale_cli.train.distributed import Dist, agree, rng_states, setup_distributed
from upscale_cli.train.losses import PerceptualLoss, load_vgg16_features, pixel_loss
from upscale_cli.train.schedule import crop_at, lr_at, update_ema
from upscale_cli.train.validation import bicubic_psnr, make_lr, validate

LOG_EVERY = 10  # steps between "step" events


MAX_VAL_IMAGES = 16
MAX_NONFINITE_STEPS = 20  # skipped non-finite steps in a row before the run stops as diverged


def _pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError("--device cuda asked for, but no CUDA device is available")
        if name == "cuda" and "LOCAL_RANK" in os.environ:
            name = f"cuda:{os.environ['LOCAL_RANK']}"
        index = torch.device(name).index
        if index is not None and index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"numbered from 0")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps asked for, but Apple MPS is not available here")
    return torch.device(name)


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norm parameters."""
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr_at(0.0, config), betas=(0.9, 0.99))


def mixed_precision(config: TrainConfig, device: torch.device) -> tuple[torch.dtype | None, str]:
    """(autocast dtype or None for float32, a warning when an asked-for precision cannot be used).
    CUDA: bfloat16 where the GPU has it (Ampere and later: float32's range, no loss scaling),
    else float16 with the loss scaler."""
    if device.type == "cuda":
        if not config.amp:
            return None, ""
        return (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16), ""
    if device.type == "cpu" and config.cpu_bf16:
        if cpu_has_native_bf16():
            return torch.bfloat16, ""
        return None, "--cpu-bf16: this CPU has no native bfloat16 (AVX-512 BF16 or AMX); training in float32"
    return None, ""


def train(config: TrainConfig, resume: bool = False, on_event: EventFn | None = None) -> Path:
    """Train (or resume) a run; returns the run directory. The settings were checked when the
    config was built; what they name on disk is checked here, before anything is created."""
    check_paths(config, resume=resume)
    device = _pick_device(config.device)
    dist = setup_distributed(device)
    try:
        return _train(config, resume, on_event or (lambda event: None), device, dist)
    finally:
        if dist.owns_group:  # gloo's threads must stop before the interpreter does (else SIGABRT at exit);
            # import_group_capturing_modules is what lets this really free the group
            import torch.distributed as tdist

            tdist.destroy_process_group()


def _train(config: TrainConfig, resume: bool, emit: EventFn, device: torch.device, dist: Dist) -> Path:
    run = Path(config.out)

    # -- setup: threads, seeds
    if config.threads:
        torch.set_num_threads(config.threads)
    if device.type == "cuda":  # fixed crop shapes: let cuDNN pick its fastest kernels once
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed * 1000 + dist.rank)
    if not resume and (run / CHECKPOINT).exists():
        raise TrainingError(f"{run} already holds a run; resume it with --resume or pick another --out")

    # -- model, loss, optimiser
    model = build_model_for(config).to(device)
    multiple = model.info.size_multiple
    scale = config.scale
    hr_crop_max = config.crop * scale
    if config.init and not resume:
        loaded, total = init_from(model, config.init)
        if dist.main:
            emit(TrainEvent("start", message=f"initialised {loaded} of {total} tensors from {config.init}"))
    hooks = arch_training(config.arch)
    if not hooks:  # NHWC, the layout oneDNN and cuDNN convolve fastest (4-11% more steps a second on an AVX2 CPU)
        model = model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).requires_grad_(False) if config.ema else None
    optimizer = hooks.make_optimizer(model, config) if hooks else _make_optimizer(model, config)
    perceptual = None if hooks else _perceptual_loss(config, device, emit)
    amp_dtype, amp_note = mixed_precision(config, device)
    if amp_note and dist.main:
        emit(TrainEvent("warning", message=amp_note))
    use_amp = amp_dtype == torch.float16  # float16 needs loss scaling; bfloat16 has float32's range
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
        step, elapsed = restore(load_checkpoint(run), model, optimizer, ema, scaler if use_amp else None, gen, dist)
    elif dist.main:
        run.mkdir(parents=True, exist_ok=True)
        (run / CONFIG_FILE).write_text(json.dumps(asdict(config), indent=2))
    net = model
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if dist.main:  # one start line per run, not one per process
        emit(TrainEvent("start", step=step, steps=config.steps,
                        message=f"{config.arch} x{scale}: {sum(p.numel() for p in model.parameters()):,} parameters, "
                                f"{train_count} training images, {len(val_images)} validation images, "
                                f"{dist.world} process(es) on {device}" + (" (resumed)" if resume else "")))

    def progress_now(step_done: int, seconds: float) -> float:
        p = step_done / config.steps
        if config.minutes:
            p = max(p, seconds / (config.minutes * 60.0))
        return agree(min(p, 1.0), dist)

    def checkpoint(step_done: int, seconds: float) -> None:
        """Validate, save a sample and the checkpoint (rank 0); all ranks gather RNG states."""
        states = rng_states(gen, dist)
        if not dist.main:
            return
        extra = {}
        if hooks:
            extra = hooks.validate(ema or model, val_images, device)
            score, sample = extra.pop("psnr"), extra.pop("sample")
        else:
            score, sample = (validate(ema or model, val_images, scale, device, config.degrade, config.damage_mix,
                                             config.loss_region == "mask")
                             if len(val_images) else (None, None))
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "ema": ema.state_dict() if ema is not None else None, "step": step_done, "elapsed": seconds,
                 "config": asdict(config), "data_rng": states, "torch_rng": torch.get_rng_state(),
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
    bad_steps = 0  # non-finite steps in a row
    last_tick = time.perf_counter()
    while progress < 1.0:
        # schedule
        lr = lr_at(progress, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        side = crop_at(progress, config, multiple)

        # batch: random HR crops, LR made on the fly (the protocol's bicubic on the training device:
        # two small matrix products, which on a GPU would otherwise wait for the CPU)
        if hooks:
            lr_img, hr = hooks.make_batch(cache, config, gen)
        else:
            hr = train_data.random_crops(cache, config.batch, side * scale, gen,
                                         device=None if config.degrade else device)
            lr_img = make_lr(hr, scale, config.degrade, gen, config.damage_mix)
        hr, lr_img = hr.to(device, non_blocking=True), lr_img.to(device, non_blocking=True)
        if not hooks:
            lr_img = lr_img.contiguous(memory_format=torch.channels_last)

        # step
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            if hooks:
                loss = hooks.loss(net, lr_img, hr)
            else:
                sr = net(lr_img)
                mask = lr_img[:, -1:] if config.loss_region == "mask" else None  # the input's last channel
                loss = pixel_loss(sr.float(), hr, config.loss, mask)
                if perceptual is not None:
                    loss = loss + perceptual(sr.float(), hr)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # a no-op without loss scaling
        # (clip_grad_norm_ at max_norm inf leaves the gradients as they are and returns their norm)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip or float("inf"))
        if use_amp or torch.isfinite(grad_norm):  # the float16 scaler skips non-finite steps itself
            scaler.step(optimizer)
            if ema is not None:
                update_ema(ema, model, config.ema, step)
            bad_steps = 0
        else:  # a non-finite step would poison the weights: skip it (under DDP every rank sees the same norm)
            bad_steps += 1
            if bad_steps >= MAX_NONFINITE_STEPS:
                raise TrainingError(f"the gradients were not finite for {bad_steps} steps in a row (step {step}): "
                                    f"training diverged; lower --lr, or resume from the last checkpoint")
        scaler.update()
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

    if dist.main:
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

