"""`upscale train HR_FOLDER... --arch unet --scale 4 --out RUN_DIR` and `upscale train export RUN_DIR -o FILE`.

The group's default subcommand is `run`, so `upscale train photos/ ...` trains and
`upscale train export ...` exports. Training options may come from a TOML recipe
(`--config configs/unet_x4.toml`); options given on the command line win.
Several processes: `torchrun --nproc-per-node 2 -m upscale_cli train ...`.
"""
from __future__ import annotations

import functools
import json
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, make_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Iterator, List, Optional

import typer

from upscale_cli.choices import TRAINABLE_ARCHS, Arch, DamageMix, Loss, LossRegion
from upscale_cli.cli import DefaultCommandGroup, options, stdout
from upscale_cli.errors import UsageError, printable_path

if TYPE_CHECKING:
    from upscale_cli.train import TrainConfig


# a resumed run's budget and resources
RESUME_CAN_CHANGE = ("steps", "minutes", "every", "threads", "device", "cpu_bf16")


class TrainGroup(DefaultCommandGroup):
    """`upscale train FOLDER ...` means `upscale train run FOLDER ...`."""

    default_command = "run"
    usage = None  # `upscale train [OPTIONS] FOLDERS...`, from the run command


train_app = typer.Typer(
    cls=TrainGroup,
    help="Train our own models on folders of high-resolution images, and export their weights.",
    no_args_is_help=True,
    **options.APP_SETTINGS,
)

RUN_HELP = """Train a model: random HR crops, LR made on the fly, AdamW + one-cycle, EMA, checkpoints.

Example: upscale train data/DIV2K --arch unet --scale 4 --val data/val --out runs/x4 --minutes 60
Resume:  upscale train --resume runs/x4
"""


def _parse_settings(pairs: List[str]) -> dict:
    """--set width=48 --set residual=bicubic -> {"width": 48, "residual": "bicubic"} (JSON values)."""
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--set wants KEY=VALUE, not {pair!r}")
        try:
            settings[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            settings[key.strip().replace("-", "_")] = value
    return settings


def _read_recipe(path: Path) -> dict:
    """A TOML training recipe: TrainConfig fields at the top level, builder settings in [settings]."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    from upscale_cli.train.config import check_known

    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise UsageError(f"cannot read training recipe: {err}", path=path) from None
    try:
        check_known(raw)  # a misspelt setting is refused, not trained past with its default
    except UsageError as err:
        raise UsageError(err.message, path=path) from None
    return raw


def _plain_line(event) -> None:
    """One training event as a plain line on stderr (not a terminal)."""
    stamp = time.strftime("%H:%M:%S")
    if event.kind == "step":
        typer.echo(f"{stamp} step {event.step} ({event.progress:.1%}) loss {event.loss:.5f} lr {event.lr:.2e} "
                   f"{event.it_s:.2f} it/s, {event.eta_s / 60:.1f} min left", err=True)
    elif event.kind == "val" and event.psnr is not None:
        typer.echo(f"{stamp} step {event.step} {event.message or 'validation'} PSNR {event.psnr:.2f} dB", err=True)
    elif event.kind == "warning":
        typer.echo(f"warning: {event.message}", err=True)
    elif event.kind == "checkpoint":
        typer.echo(f"{stamp} checkpoint {event.path}", err=True)
    elif event.message:
        typer.echo(f"{stamp} {event.message}", err=True)


def _printer(plain: bool):
    """An event callback: rich progress on a terminal, plain lines otherwise; and a closer. Both go to
    stderr (they are for people); stdout holds only what the run made, through the checked writer."""
    if plain:
        return _plain_line, lambda: None
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    progress = Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                        TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console)
    task = progress.add_task("train", total=1.0, info="")
    state = {"psnr": None}

    def show(event) -> None:
        if not progress.live.is_started:  # at the run's first event: a run refused before it draws nothing
            progress.start()
        if event.kind == "step":
            psnr = f" val {state['psnr']:.2f} dB" if state["psnr"] is not None else ""
            progress.update(task, completed=event.progress,
                            info=f"step {event.step} loss {event.loss:.4f}{psnr} {event.it_s:.2f} it/s "
                                 f"~{event.eta_s / 60:.0f} min left")
        elif event.kind == "val" and event.psnr is not None:
            state["psnr"] = event.psnr
            progress.console.print(f"step {event.step}: {event.message or 'validation'} PSNR {event.psnr:.2f} dB")
        elif event.kind == "warning":
            progress.console.print(f"[yellow]warning:[/] {event.message}")
        elif event.kind in ("start", "done") and event.message:
            progress.console.print(event.message)
    return show, lambda: progress.stop() if progress.live.is_started else None


# TrainConfig fields the command sets in its own way (positional folders, --out, --val, --set).
_SET_APART = ("data", "out", "val", "settings")


def _setting(kind: type, help: str, **parsing) -> object:
    """A TrainConfig setting as an option of type `kind`: named --FIELD after its field (a yes/no one
    --FIELD/--no-FIELD), None when not given, so that the recipe's value or the default applies."""
    return Annotated[Optional[kind], typer.Option(help=help, **parsing)]


_whole, _number, _yes_no, _path = (functools.partial(_setting, kind) for kind in (int, float, bool, Path))

# The TrainConfig settings `upscale train` takes as options besides --arch and --scale, in --help order.
SETTING_OPTIONS = {
    "steps": _whole("Training steps (default 10000)."),
    "minutes": _number("Time budget; the schedule ends when it is spent."),
    "batch": _whole("Crops per step (per process)."),
    "crop": _whole("LR crop side in pixels (HR crop = crop x scale)."),
    "lr": _number("Peak learning rate of the one-cycle schedule."),
    "weight_decay": _number("AdamW weight decay."),
    "loss": _setting(Loss, "Pixel loss: l1 (default) or mse."),
    "loss_region": _setting(LossRegion, "image (default), or mask: loss and validation inside the mask only "
                                        "(inpainting)."),
    "feature_weight": _number("VGG-16 feature loss weight."),
    "gram_weight": _number("Gram-matrix (style) loss weight."),
    "vgg_weights": _path("VGG-16 ImageNet weights file."),
    "ema": _number("EMA decay of the weights (0 = off; default 0.999)."),
    "clip": _number("Gradient-norm clip (0 = off)."),
    "progressive": _yes_no("Grow crops from half size."),
    "degrade": _yes_no("Random blur/noise/JPEG/downscaler mix; at --scale 1, restoration damage (JPEG, noise, "
                       "holes, text)."),
    "damage_mix": _setting(DamageMix, "Restoration damage with --scale 1 --degrade: exclusive (default), "
                                      "independent, jpeg (a JPEG specialist) or inpaint (holes and text, the mask "
                                      "as a 4th channel)."),
    "amp": _yes_no("Mixed precision on CUDA: bfloat16 where the GPU has it, else float16 (default on)."),
    "cpu_bf16": _yes_no("bfloat16 mixed precision on a CPU with native bf16 (AVX-512 BF16 or AMX): about 2x "
                        "faster there; without it, float32 and a warning (default off)."),
    "device": _setting(str, "auto: CUDA, else the CPU (Apple MPS only when named); cuda:1 picks the second GPU.",
                       **options.DEVICE_PARSING),
    "every": _whole("Steps between validation/checkpoint/sample."),
    "seed": _whole("Random seed."),
    "init": _path("Start from a run dir or weights file (matching tensors)."),
    "threads": _whole("CPU threads (torch.set_num_threads)."),
}
# One value of those options: the command hands on the ones given (options.with_groups builds it).
TrainSettings = make_dataclass("TrainSettings", [(name, kind, None) for name, kind in SETTING_OPTIONS.items()],
                               frozen=True)


@train_app.command("run", help=RUN_HELP)
@options.with_groups
def run_command(
    folders: List[Path] = typer.Argument(None, help="Folders (or files) of high-resolution training images."),
    arch: Optional[Arch] = typer.Option(None, "--arch", help=f"Architecture: {', '.join(TRAINABLE_ARCHS)} (the first is the default)."),
    scale: Optional[int] = typer.Option(None, "--scale", "-x", help="Upscaling factor (unet: 1, 2, 3, 4)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (checkpoints, samples, log)."),
    val: List[Path] = typer.Option([], "--val", help="Folder of held-out HR images for validation PSNR."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="TOML training recipe (see configs/)."),
    settings: List[str] = typer.Option([], "--set", help="Model setting KEY=VALUE (width=48, levels=2 ...)."),
    spade: bool = typer.Option(False, "--spade", help="pixelrec: SPADE blocks instead of batch norm (= --set spade=true)."),
    training: TrainSettings = TrainSettings(),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this directory."),
    plain: bool = typer.Option(False, "--plain", help="Plain log lines even on a terminal."),
) -> None:
    from upscale_cli.train import train

    given = _given(arch=arch, scale=scale, **asdict(training))
    resumed = resume is not None
    if resumed and (folders or out):
        raise UsageError("--resume takes the run directory only (its data and options come from the checkpoint)")
    named = given if resumed else {**given, **_given(data=folders or None, out=out, val=val or None)}
    show, close = _printer(plain or not sys.stderr.isatty())
    try:
        with _as_given(named, source=resume if resumed else config_file):
            config = (_resumed_config(resume, given, config_file, val, settings, spade) if resumed
                      else _new_config(given, config_file, folders, out, val, settings, spade))
            run = train(config, resume=resumed, on_event=show)  # what the settings name on disk: checked first
    finally:
        close()
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one closing line for the run
        stdout.echo(f"trained: {run} (export with `upscale train export {run} -o model.safetensors`)")


def _given(**options) -> dict:
    """The options given on the command line (None: not given), paths as strings."""
    def plain(value):
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return str(value) if isinstance(value, Path) else value
    return {name: plain(value) for name, value in options.items() if value is not None}


@contextmanager
def _as_given(given: dict, *, source: Path | None) -> Iterator[None]:
    """A setting refused while the config is built (every setting) or while train() checks what it
    names on disk, before it creates anything, is named as the user wrote it: `--lr nan` when it came
    from the command line, `recipe.toml: lr = nan` from a recipe (or the run's checkpoint)."""
    from upscale_cli.train.config import SettingError

    try:
        yield
    except SettingError as err:
        if err.setting in given:
            raise UsageError(f"{_flag(err.setting)} {_typed(given[err.setting])}: {err.allowed}") from None
        if source is not None:
            raise UsageError(err.message, path=source) from None
        raise


def _flag(setting: str) -> str:
    return {"data": "FOLDERS"}.get(setting, "--" + setting.replace("_", "-"))


def _typed(value: object) -> str:
    """An option's value as it was typed (Click has made it a float: --lr -1 reads -1.0)."""
    if isinstance(value, list):
        return " ".join(map(_typed, value))
    return printable_path(value) if isinstance(value, str) else str(value)


def _new_config(given: dict, config_file: Path | None, folders: List[Path], out: Path | None, val: List[Path],
                settings: List[str], spade: bool) -> "TrainConfig":
    """A new run's settings: the recipe's, then the command line's (which win)."""
    from upscale_cli.train import TrainConfig
    from upscale_cli.train.config import arch_defaults

    raw = _read_recipe(config_file) if config_file else {}
    raw.update(given)
    raw = {**arch_defaults(raw.get("arch") or TRAINABLE_ARCHS[0]), **raw}  # e.g. pixelrec's RMSProp lr and batch
    model_settings = raw.get("settings", {})
    if isinstance(model_settings, dict):  # anything else: TrainConfig refuses it, naming the recipe
        raw["settings"] = {**model_settings, **_parse_settings(settings), **({"spade": True} if spade else {})}
    if folders:
        raw["data"] = [str(f) for f in folders]
    if val:
        raw["val"] = [str(v) for v in val]
    if out:
        raw["out"] = str(out)
    if raw.get("data") is None:  # given but empty or of the wrong type: TrainConfig names it and its source
        raise UsageError("give at least one folder of HR training images")
    if raw.get("out") is None:
        raise UsageError("give a run directory with --out")
    return TrainConfig.from_dict(raw)


def _resumed_config(resume: Path, given: dict, config_file: Path | None, val: List[Path], settings: List[str],
                    spade: bool) -> "TrainConfig":
    """The checkpoint's settings, with the budget and resources the command line may change."""
    from dataclasses import replace

    from upscale_cli.train import resume_config

    fixed = sorted(k for k in given if k not in RESUME_CAN_CHANGE)
    fixed += [name for name, value in (("config", config_file), ("val", val), ("set", settings), ("spade", spade))
              if value]
    if fixed:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in fixed)
        raise UsageError(f"--resume continues the run as its checkpoint says; {flags} cannot change it "
                         f"(only {', '.join('--' + k.replace('_', '-') for k in RESUME_CAN_CHANGE)} can; start a new run "
                         f"with --init {resume} to change the rest)")
    config = resume_config(resume)
    return replace(config, out=str(resume), **{k: given[k] for k in RESUME_CAN_CHANGE if k in given})


@train_app.command("export", help="Write a run's EMA weights as a .safetensors file usable with `upscale -m FILE`.")
def export_command(
    run: Path = typer.Argument(..., help="Run directory (or its checkpoint.pt), or one of our .safetensors "
                                          "files to write again (e.g. --half)."),
    output: Path = typer.Option(..., "--output", "-o", help="Weights file to write (.safetensors)."),
    no_ema: bool = typer.Option(False, "--no-ema", help="Export the raw weights instead of their EMA."),
    half: bool = typer.Option(False, "--half", help="Store float16 tensors (half the size)."),
) -> None:
    from upscale_cli.train import export

    if output.suffix != ".safetensors":
        raise UsageError("export writes .safetensors files; name the output *.safetensors")
    path = export(run, output, use_ema=not no_ema, half=half)
    stdout.echo(f"wrote {path} ({path.stat().st_size:,} bytes)")


def register(app: typer.Typer) -> None:
    """Add the `train` group (default subcommand `run`, plus `export`)."""
    app.add_typer(train_app, name="train")
