"""`train(config)`: the training loop of our models, reading top to bottom in phases
(after nanoGPT's train.py): setup -> model and optimiser -> data -> resume -> loop
(schedule, batch, step, EMA, validate, checkpoint) -> done.

What differs between kinds of training (the model's layout and optimiser, the data, the batch,
the loss, the validation) is the run's recipe (train/recipes.py: the pixel-loss recipe, or the one
an architecture brings); the loop drives every recipe the same way, with no branch on which one
it is. `train(..., make_recipe=...)` trains with another.

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
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from upscale_cli.device import cpu_has_native_bf16
from upscale_cli.errors import TrainingError, UsageError
from upscale_cli.train import data as train_data
from upscale_cli.train.checkpoint import (CHECKPOINT, CONFIG_FILE, LOG_FILE, init_from, load_checkpoint, restore,
                                          save_checkpoint)
from upscale_cli.train.config import EventFn, TrainConfig, TrainEvent, build_model_for, check_paths
from upscale_cli.train.distributed import Dist, agree, rng_states, setup_distributed
from upscale_cli.train.recipes import RecipeFactory, TrainingRecipe, Validation, recipe_for
from upscale_cli.train.schedule import lr_at, update_ema

LOG_EVERY = 10  # steps between "step" events
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


def train(config: TrainConfig, resume: bool = False, on_event: EventFn | None = None,
          make_recipe: RecipeFactory = recipe_for) -> Path:
    """Train (or resume) a run; returns the run directory. The settings were checked when the
    config was built; what they name on disk is checked here, before anything is created.
    `make_recipe(config, device)` builds the run's recipe (by default, the architecture's)."""
    check_paths(config, resume=resume)
    device = _pick_device(config.device)
    dist = setup_distributed(device)
    try:
        return _train(config, resume, on_event or (lambda event: None), device, dist, make_recipe)
    finally:
        if dist.owns_group:  # gloo's threads must stop before the interpreter does (else SIGABRT at exit);
            # import_group_capturing_modules is what lets this really free the group
            import torch.distributed as tdist

            tdist.destroy_process_group()


@dataclass(frozen=True)
class _Run:
    """What every phase reads: the settings, where the run lives and what it runs on."""

    config: TrainConfig
    path: Path
    device: torch.device
    dist: Dist
    emit: EventFn
    gen: torch.Generator  # this process's data draws (saved and restored with the checkpoint)
    recipe: TrainingRecipe

    def warn_skip(self, path: Path, reason: str) -> None:
        if self.dist.main:
            self.emit(TrainEvent("warning", message=f"{path}: {reason}"))

    def progress(self, step_done: int, seconds: float) -> float:
        """step/steps, or the larger of that and elapsed/budget; every process agrees on it."""
        p = step_done / self.config.steps
        if self.config.minutes:
            p = max(p, seconds / (self.config.minutes * 60.0))
        return agree(min(p, 1.0), self.dist)


@dataclass(frozen=True)
class _Parts:
    """What the run trains and saves."""

    model: nn.Module
    ema: nn.Module | None
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None  # autocast's dtype; None: float32

    @property
    def scaled(self) -> bool:
        """float16 needs loss scaling; bfloat16 has float32's range."""
        return self.amp_dtype == torch.float16


def _train(config: TrainConfig, resume: bool, emit: EventFn, device: torch.device, dist: Dist,
           make_recipe: RecipeFactory) -> Path:
    # -- setup: threads, seeds, the recipe
    gen = _setup(config, resume, device, dist)
    run = _Run(config, Path(config.out), device, dist, emit, gen, make_recipe(config, device))
    # -- model, loss, optimiser (before the data: a model that cannot be built fails before minutes of decoding)
    parts = _model_and_optimiser(run, resume)
    # -- data
    counts = run.recipe.load_data(run.warn_skip)
    # -- resume, or start the run directory
    step, elapsed = _resume_or_start(run, parts, resume)
    net = _distributed(parts.model, run)
    _announce(run, parts, counts, step, resume)
    # -- the loop
    step = _loop(run, parts, net, step, elapsed)
    # -- done
    if dist.main:
        emit(TrainEvent("done", step=step, steps=config.steps, progress=1.0, path=str(run.path)))
    if dist.world > 1:
        import torch.distributed as tdist

        tdist.barrier()
    return run.path


def _setup(config: TrainConfig, resume: bool, device: torch.device, dist: Dist) -> torch.Generator:
    """Threads and seeds; refuses to start a new run over an old one. Returns the data generator."""
    if config.threads:
        torch.set_num_threads(config.threads)
    if device.type == "cuda":  # fixed crop shapes: let cuDNN pick its fastest kernels once
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed * 1000 + dist.rank)
    run = Path(config.out)
    if not resume and (run / CHECKPOINT).exists():
        raise TrainingError(f"{run} already holds a run; resume it with --resume or pick another --out")
    return gen


def _model_and_optimiser(run: _Run, resume: bool) -> _Parts:
    """The model (initialised from --init on a new run), as its recipe trains it, with its EMA,
    optimiser and mixed precision."""
    config = run.config
    model = build_model_for(config).to(run.device)
    if config.init and not resume:
        loaded, total = init_from(model, config.init)
        if run.dist.main:
            run.emit(TrainEvent("start", message=f"initialised {loaded} of {total} tensors from {config.init}"))
    model, optimizer = run.recipe.setup(model, run.emit)
    ema = copy.deepcopy(model).requires_grad_(False) if config.ema else None
    amp_dtype, amp_note = mixed_precision(config, run.device)
    if amp_note and run.dist.main:
        run.emit(TrainEvent("warning", message=amp_note))
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    return _Parts(model, ema, optimizer, scaler, amp_dtype)


def _resume_or_start(run: _Run, parts: _Parts, resume: bool) -> tuple[int, float]:
    """(step, elapsed seconds): the checkpoint's, put back exactly; or a new run's, with its config.json."""
    if resume:
        return restore(load_checkpoint(run.path), parts.model, parts.optimizer, parts.ema,
                       parts.scaler if parts.scaled else None, run.gen, run.dist)
    if run.dist.main:
        run.path.mkdir(parents=True, exist_ok=True)
        (run.path / CONFIG_FILE).write_text(json.dumps(asdict(run.config), indent=2))
    return 0, 0.0


def _distributed(model: nn.Module, run: _Run) -> nn.Module:
    """What the steps call: the model, or its DDP wrapper when there are several processes."""
    if run.dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    return model


def _announce(run: _Run, parts: _Parts, counts: tuple[int, int], step: int, resume: bool) -> None:
    """One start line per run (not one per process), then a new run's baseline score."""
    if not run.dist.main:
        return
    config, (train_count, val_count) = run.config, counts
    run.emit(TrainEvent("start", step=step, steps=config.steps,
                        message=f"{config.arch} x{config.scale}: "
                                f"{sum(p.numel() for p in parts.model.parameters()):,} parameters, "
                                f"{train_count} training images, {val_count} validation images, "
                                f"{run.dist.world} process(es) on {run.device}" + (" (resumed)" if resume else "")))
    baseline = None if resume else run.recipe.baseline()
    if baseline is not None:
        run.emit(TrainEvent("val", step=0, steps=config.steps, psnr=baseline, message="bicubic baseline"))


class _Clock:
    """The run's training time: checkpoints (validation, saving) do not count against the budget."""

    def __init__(self, elapsed: float) -> None:
        self.elapsed, self.last = elapsed, time.perf_counter()

    def tick(self) -> float:
        now = time.perf_counter()
        self.elapsed += now - self.last
        self.last = now
        return now

    def pause_ended(self) -> None:
        self.last = time.perf_counter()


class _Window:
    """The steps since the last "step" event: their mean loss and speed."""

    def __init__(self) -> None:
        self.start, self.steps, self.loss_sum = time.perf_counter(), 0, 0.0

    def add(self, loss: torch.Tensor) -> None:
        self.steps += 1
        self.loss_sum += float(loss.detach())

    def event(self, now: float, step: int, progress: float, lr: float, clock: _Clock,
              config: TrainConfig) -> TrainEvent:
        """The "step" event for the window, which starts again at `now`."""
        it_s = self.steps / max(1e-9, now - self.start)
        event = TrainEvent("step", step=step, steps=config.steps, progress=progress, loss=self.loss_sum / self.steps,
                           lr=lr, it_s=it_s, eta_s=_eta(progress, step, clock.elapsed, it_s, config))
        self.start, self.steps, self.loss_sum = now, 0, 0.0
        return event


def _loop(run: _Run, parts: _Parts, net: nn.Module, step: int, elapsed: float) -> int:
    """Steps until the run's progress reaches 1; returns the last step."""
    config = run.config
    parts.model.train()
    progress = run.progress(step, elapsed)
    window, bad_steps = _Window(), 0  # bad_steps: non-finite steps in a row
    clock = _Clock(elapsed)
    while progress < 1.0:
        # schedule
        lr = lr_at(progress, config)
        for group in parts.optimizer.param_groups:
            group["lr"] = lr
        # batch, step
        inputs, target = run.recipe.batch(progress, run.gen)
        loss, bad_steps = _step(run, parts, net, (inputs, target), step, bad_steps)
        step += 1
        # bookkeeping: time, progress, events
        now = clock.tick()
        window.add(loss)
        progress = run.progress(step, clock.elapsed)
        if run.dist.main and (step % LOG_EVERY == 0 or progress >= 1.0):
            run.emit(window.event(now, step, progress, lr, clock, config))
        if step % config.every == 0 or progress >= 1.0:
            _checkpoint(run, parts, step, clock.elapsed)
            clock.pause_ended()  # validation time does not count against the budget
    return step


def _step(run: _Run, parts: _Parts, net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], step: int,
          bad_steps: int) -> tuple[torch.Tensor, int]:
    """One optimiser step on the recipe's loss (and the EMA's); returns the loss and the count of
    non-finite steps in a row, which skip the update."""
    amp_dtype, optimizer, scaler = parts.amp_dtype, parts.optimizer, parts.scaler
    with torch.autocast(run.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        loss = run.recipe.loss(net, *batch)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)  # a no-op without loss scaling
    # (clip_grad_norm_ at max_norm inf leaves the gradients as they are and returns their norm)
    grad_norm = torch.nn.utils.clip_grad_norm_(parts.model.parameters(), run.config.clip or float("inf"))
    if parts.scaled or torch.isfinite(grad_norm):  # the float16 scaler skips non-finite steps itself
        scaler.step(optimizer)
        if parts.ema is not None:
            update_ema(parts.ema, parts.model, run.config.ema, step)
        bad_steps = 0
    else:  # a non-finite step would poison the weights: skip it (under DDP every rank sees the same norm)
        bad_steps += 1
        if bad_steps >= MAX_NONFINITE_STEPS:
            raise TrainingError(f"the gradients were not finite for {bad_steps} steps in a row (step {step}): "
                                f"training diverged; lower --lr, or resume from the last checkpoint")
    scaler.update()
    return loss, bad_steps


def _checkpoint(run: _Run, parts: _Parts, step: int, seconds: float) -> None:
    """Validate, save a sample and the checkpoint (rank 0); all ranks gather RNG states."""
    states = rng_states(run.gen, run.dist)
    if not run.dist.main:
        return
    result = run.recipe.validate(parts.ema or parts.model)
    path = save_checkpoint(run.path, _state(run, parts, step, seconds, states, result))
    if result.sample is not None:
        train_data.save_sample(result.sample, run.path / "samples" / f"step_{step:07d}.png")
    with open(run.path / LOG_FILE, "a") as log:
        log.write(json.dumps({"step": step, "elapsed": round(seconds, 1), "val_psnr": result.psnr,
                              **result.figures}) + "\n")
    run.emit(TrainEvent("val", step=step, steps=run.config.steps, psnr=result.psnr, message=result.message))
    run.emit(TrainEvent("checkpoint", step=step, steps=run.config.steps, path=str(path)))


def _state(run: _Run, parts: _Parts, step: int, seconds: float, data_rng: list, result: Validation) -> dict:
    """What checkpoint.pt holds (restore() puts it back)."""
    return {"model": parts.model.state_dict(), "optimizer": parts.optimizer.state_dict(),
            "ema": parts.ema.state_dict() if parts.ema is not None else None, "step": step, "elapsed": seconds,
            "config": asdict(run.config), "data_rng": data_rng, "torch_rng": torch.get_rng_state(),
            "scaler": parts.scaler.state_dict(), "val_psnr": result.psnr}


def _eta(progress: float, step: int, elapsed: float, it_s: float, config: TrainConfig) -> float:
    by_steps = (config.steps - step) / max(it_s, 1e-9)
    if config.minutes:
        return max(0.0, min(by_steps, config.minutes * 60.0 - elapsed))
    return by_steps
