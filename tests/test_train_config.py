"""`upscale train` settings: every TrainConfig setting is checked when the config is read, from a
TOML recipe or from the command line, and a bad value ends in one line naming it (exit 2; a missing
input exits 1), with no traceback and nothing created. Issue #30 item 10's recipes are in the grid."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from image_factory import make_rgb_png
from upscale_cli.cli import app
from upscale_cli.errors import TrainingError
from upscale_cli.train import TrainConfig
from upscale_cli.train.config import _RULES, SettingError, check_out, check_paths

# A valid tiny recipe, one TOML line per setting; each case replaces one line. If a bad value
# slipped through, this would train (2 steps of a tiny U-Net) and the test would see the run folder.
BASE = {
    "data": '["{hr}"]',
    "out": '"{run}"',
    "scale": "2",
    "steps": "2",
    "batch": "1",
    "crop": "8",
    "every": "2",
    "threads": "1",
    "device": '"cpu"',
    "settings": "{width = 8, levels = 1, blocks = 1, decoder_blocks = 1, bottleneck_blocks = 1}",
}
LONG_NAME = "n" * 300

# (setting, TOML value, exit code, words the line must hold): every setting, types, NaN, inf,
# negative, huge, wrong paths
RECIPE_CASES = [
    ("data", '"{hr}"', 2, "must be a list"),  # a string: it walked "/" character by character
    ("data", "[]", 2, "at least 1"),
    ("data", "[1]", 2, "must be a list"),
    ("data", '[""]', 2, "non-empty"),
    ("data", '["{tmp}/missing"]', 1, "no such folder"),
    ("out", '"/dev/null"', 2, "not a folder"),
    ("out", '"/proc/x"', 2, "creating a folder in /proc fails"),
    ("out", '"{tmp}/afile/run"', 2, "afile is not a folder"),
    ("out", f'"{{tmp}}/{LONG_NAME}"', 2, "300 bytes, over the file system's 255-byte limit of a file name"),
    ("out", "5", 2, "non-empty string"),
    ("out", '""', 2, "non-empty string"),
    ("arch", '"interpolate"', 2, '"unet", "upsampler", "pixelrec"'),
    ("arch", '"banana"', 2, "must be one of"),
    ("arch", "1", 2, "must be one of"),
    ("arch", '["unet"]', 2, "must be one of"),
    ("scale", '"2"', 2, "must be an integer"),
    ("scale", "0", 2, "must be an integer >= 1"),
    ("scale", "-1", 2, "must be an integer >= 1"),
    ("scale", "true", 2, "must be an integer"),
    ("scale", "2.0", 2, "must be an integer"),
    ("scale", "5", 2, "cannot train unet at x5"),
    ("scale", "99999999999999999999", 2, "below 2**63"),
    ("settings", "5", 2, "must be a table"),
    ("settings", '{width = "x"}', 2, "setting 'width' of unet must be an integer"),
    ("settings", "{nonsense = 1}", 2, "unknown setting 'nonsense'"),
    ("val", '"{hr}"', 2, "must be a list"),
    ("val", "[3]", 2, "must be a list"),
    ("val", '["{tmp}/missing"]', 1, "no such folder"),
    ("steps", '"10"', 2, "must be an integer"),
    ("steps", "0", 2, ">= 1"),
    ("steps", "-1", 2, ">= 1"),
    ("steps", "true", 2, "must be an integer"),
    ("steps", "1.5", 2, "must be an integer"),
    ("steps", "99999999999999999999", 2, "below 2**63"),
    ("minutes", "-5.0", 2, "minutes > 0"),
    ("minutes", "nan", 2, "finite"),
    ("minutes", "inf", 2, "finite"),
    ("minutes", "0", 2, "minutes > 0"),
    ("minutes", '"5"', 2, "finite number"),
    ("minutes", "true", 2, "finite number"),
    ("batch", "0", 2, "from 1 to 4096"),
    ("batch", "-1", 2, "from 1 to 4096"),
    ("batch", "4097", 2, "from 1 to 4096"),
    ("batch", '"16"', 2, "integer"),
    ("batch", "1.0", 2, "integer"),
    ("crop", "3", 2, "from 4 to 1024"),
    ("crop", "0", 2, "from 4 to 1024"),
    ("crop", "1025", 2, "from 4 to 1024"),
    ("crop", '"8"', 2, "integer"),
    ("crop", "9", 2, "multiple of"),  # the model's size multiple, known once it is built: still before any data
    ("lr", "nan", 2, "finite number > 0"),
    ("lr", "inf", 2, "finite number > 0"),
    ("lr", "-inf", 2, "finite number > 0"),
    ("lr", "-1", 2, "finite number > 0"),
    ("lr", "0", 2, "finite number > 0"),
    ("lr", '"0.1"', 2, "finite number > 0"),
    ("lr", "true", 2, "finite number > 0"),
    ("lr", "1e400", 2, "finite number > 0"),
    ("weight_decay", "nan", 2, ">= 0"),
    ("weight_decay", "-1", 2, ">= 0"),
    ("weight_decay", "inf", 2, ">= 0"),
    ("warmup", "1.0", 2, "[0, 1)"),
    ("warmup", "2.0", 2, "[0, 1)"),
    ("warmup", "-0.5", 2, "[0, 1)"),
    ("warmup", "nan", 2, "[0, 1)"),
    ("loss", '"l2"', 2, '"l1", "mse"'),
    ("loss", "1", 2, "must be one of"),
    ("loss_region", '"mask"', 2, "inpainting"),
    ("loss_region", '"all"', 2, '"image", "mask"'),
    ("feature_weight", "-1", 2, ">= 0"),
    ("feature_weight", "nan", 2, ">= 0"),
    ("gram_weight", "inf", 2, ">= 0"),
    ("gram_weight", "-0.5", 2, ">= 0"),
    ("vgg_weights", '""', 2, "non-empty string"),
    ("vgg_weights", "5", 2, "non-empty string"),
    ("vgg_weights", '"{tmp}/missing.pth"', 1, "no such file"),
    ("ema", "1.0", 2, "[0, 1)"),
    ("ema", "-0.1", 2, "[0, 1)"),
    ("ema", "nan", 2, "[0, 1)"),
    ("clip", "-1", 2, ">= 0"),  # it trained by gradient ascent to a loss of millions, exit 0
    ("clip", "nan", 2, ">= 0"),
    ("clip", "inf", 2, "finite"),
    ("progressive", "1", 2, "true or false"),
    ("degrade", '"yes"', 2, "true or false"),
    ("amp", "0", 2, "true or false"),
    ("cpu_bf16", '"false"', 2, "true or false"),
    ("damage_mix", '"everything"', 2, '"exclusive"'),
    ("damage_mix", "2", 2, "must be one of"),
    ("device", '"banana"', 2, "auto, cpu, cuda"),
    ("device", '"cuda:x"', 2, "auto, cpu, cuda"),
    ("device", "5", 2, "auto, cpu, cuda"),
    ("every", "0", 2, ">= 1"),
    ("every", "-1", 2, ">= 1"),
    ("every", '"10"', 2, "integer"),
    ("seed", "99999999999999999999", 2, "from 0 to 9007199254740991"),
    ("seed", "-1", 2, "from 0 to"),
    ("seed", '"1"', 2, "integer"),
    ("seed", "true", 2, "integer"),
    ("init", '""', 2, "non-empty string"),
    ("init", "5", 2, "non-empty string"),
    ("init", '"{tmp}/missing.safetensors"', 1, "no such run folder or weights file"),
    ("threads", "-4", 2, "from 0 to 1024"),
    ("threads", "1025", 2, "from 0 to 1024"),
    ("threads", '"2"', 2, "integer"),
    ("threads", "true", 2, "integer"),
    ("stepz", "10", 2, "unknown setting 'stepz' (did you mean 'steps'?)"),
]

# (options, exit code, the start of the line after "error: "): the same checks from the command line
CLI_CASES = [
    (["--lr", "nan"], 2, "--lr nan: must be a finite number > 0"),
    (["--lr", "inf"], 2, "--lr inf: "),
    (["--lr", "-1"], 2, "--lr -1.0: "),
    (["--steps", "0"], 2, "--steps 0: "),
    (["--steps", "99999999999999999999"], 2, "--steps 99999999999999999999: "),
    (["--minutes", "-5"], 2, "--minutes -5.0: "),
    (["--minutes", "nan"], 2, "--minutes nan: "),
    (["--batch", "0"], 2, "--batch 0: "),
    (["--batch", "100000"], 2, "--batch 100000: "),
    (["--crop", "3"], 2, "--crop 3: "),
    (["--weight-decay", "-1"], 2, "--weight-decay -1.0: "),
    (["--feature-weight", "nan"], 2, "--feature-weight nan: "),
    (["--gram-weight", "inf"], 2, "--gram-weight inf: "),
    (["--ema", "1"], 2, "--ema 1.0: "),
    (["--clip", "-1"], 2, "--clip -1.0: "),
    (["--seed", "99999999999999999999"], 2, "--seed 99999999999999999999: "),
    (["--seed", "-1"], 2, "--seed -1: "),
    (["--threads", "-4"], 2, "--threads -4: must be an integer from 0 to 1024"),
    (["--threads", "100000"], 2, "--threads 100000: "),
    (["--every", "0"], 2, "--every 0: "),
    # a word outside --device, --loss, --damage-mix or --arch's set is refused by the option's type
    # before any check here (Typer's usage error, one Error: line): tests/test_cli_choices.py
    (["--loss-region", "mask"], 2, "--loss-region mask: needs the inpainting recipe's masks"),
    (["--scale", "0"], 2, "--scale 0: "),
    (["--scale", "5"], 2, "--scale 5: cannot train unet at x5"),
    (["--out", "/dev/null"], 2, "--out /dev/null: must be a folder this run can create and write"),
    (["--out", "/proc/x"], 2, "--out /proc/x: "),
    (["--vgg-weights", "{tmp}/missing.pth", "--feature-weight", "0.1"], 1, "{tmp}/missing.pth: no such file"),
    (["--init", "{tmp}/missing"], 1, "{tmp}/missing: no such run folder"),
    (["--val", "{tmp}/missing"], 1, "{tmp}/missing: no such folder"),
]


@pytest.fixture()
def place(tmp_path) -> dict:
    hr = tmp_path / "hr"
    hr.mkdir()
    for i in range(2):
        make_rgb_png(hr, f"hr{i}.png", size=(40, 40))
    (tmp_path / "afile").write_text("a file, not a folder")
    return {"hr": str(hr), "run": str(tmp_path / "run"), "tmp": str(tmp_path)}


def _fill(text: str, place: dict) -> str:
    """{hr}, {run} and {tmp} replaced by this test's paths (str.format would read TOML's braces)."""
    for name, value in place.items():
        text = text.replace("{" + name + "}", value)
    return text


def _recipe(path: Path, place: dict, **lines: str) -> Path:
    text = "\n".join(f"{key} = {value}" for key, value in {**BASE, **lines}.items())
    path.write_text(_fill(text, place) + "\n")
    return path


def _refused(result, code: int, place: dict) -> str:
    """The one line of a refused run; nothing was created."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output, result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert not Path(place["run"]).exists()  # nothing trained
    assert not list(Path(place["tmp"]).glob(".upscale-train-probe-*"))
    return lines[0].removeprefix("error: ")


def test_the_base_recipe_trains(place, tmp_path):
    """The grid's recipe is valid as it stands: each refusal below is its one changed line."""
    result = CliRunner().invoke(app, ["train", "--config", str(_recipe(tmp_path / "ok.toml", place)), "--plain"])
    assert result.exit_code == 0, result.output
    assert (Path(place["run"]) / "checkpoint.pt").is_file()


@pytest.mark.parametrize("key, value, code, words", RECIPE_CASES,
                         ids=[f"{key}={value}" for key, value, _, _ in RECIPE_CASES])
def test_a_bad_setting_in_a_recipe_is_one_line(place, tmp_path, key, value, code, words):
    recipe = _recipe(tmp_path / "bad.toml", place, **{key: value})
    line = _refused(CliRunner().invoke(app, ["train", "--config", str(recipe), "--plain"]), code, place)
    assert _fill(words, place) in line, line
    if code == 2 and key in _RULES and key != "settings":
        assert line.startswith(f"{recipe}: {key} = "), line  # the file, the setting, its value


@pytest.mark.parametrize("options, code, start", CLI_CASES, ids=[" ".join(o) for o, _, _ in CLI_CASES])
def test_a_bad_option_is_one_line(place, tmp_path, options, code, start):
    recipe = _recipe(tmp_path / "ok.toml", place)
    options = [_fill(o, place) for o in options]
    line = _refused(CliRunner().invoke(app, ["train", "--config", str(recipe), "--plain", *options]), code, place)
    assert line.startswith(_fill(start, place)), line


def test_every_setting_has_a_check():
    assert set(_RULES) == {f.name for f in fields(TrainConfig)}


def test_a_resumed_run_checks_what_it_may_change(place, tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, ["train", "--config", str(_recipe(tmp_path / "ok.toml", place))]).exit_code == 0
    before = (Path(place["run"]) / "checkpoint.pt").read_bytes()
    for options in (["--threads", "-4"], ["--minutes", "nan"], ["--steps", "0"]):
        result = runner.invoke(app, ["train", "--resume", place["run"], *options])
        assert result.exit_code == 2 and result.stderr.startswith(f"error: {options[0]} {options[1]}"), result.output
        assert len(result.stderr.strip().splitlines()) == 1
    result = runner.invoke(app, ["train", "--resume", place["run"], "--device", "banana"])  # refused by its type
    assert result.exit_code == 2 and "error: Invalid value for '--device'" in result.stderr, result.output
    assert (Path(place["run"]) / "checkpoint.pt").read_bytes() == before


def test_a_checkpoint_from_another_version_still_resumes(place, tmp_path):
    """Unknown keys are refused in a recipe, not in a checkpoint's stored config."""
    from upscale_cli.train import resume_config

    runner = CliRunner()
    assert runner.invoke(app, ["train", "--config", str(_recipe(tmp_path / "ok.toml", place))]).exit_code == 0
    path = Path(place["run"]) / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"]["a_setting_of_another_version"] = 1
    torch.save(ckpt, path)
    assert resume_config(place["run"]).steps == 2


def test_out_is_probed_without_leaving_anything(tmp_path):
    check_out(str(tmp_path / "new" / "run"))
    check_out(str(tmp_path))
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    with pytest.raises(SettingError, match="is not a folder"):  # a dangling link: mkdir would fail on it later
        check_out(str(tmp_path / "link"))


def test_the_settings_are_typed_when_built(tmp_path):
    config = TrainConfig(data=[tmp_path], out=tmp_path / "run", lr=1, minutes=3, val=[str(tmp_path)])
    assert config.data == (str(tmp_path),) and config.val == (str(tmp_path),) and config.out == str(tmp_path / "run")
    assert type(config.lr) is float and type(config.minutes) is float
    check_paths(config)  # all there
    assert list(tmp_path.iterdir()) == []


def test_a_pickle_as_vgg_weights_is_refused_never_run(place, tmp_path):
    marker = tmp_path / "ran"
    pickled = tmp_path / "vgg.pth"
    pickled.write_bytes(_code_running_pickle(marker))
    recipe = _recipe(tmp_path / "r.toml", place, vgg_weights=f'"{pickled}"', feature_weight="0.1")
    line = _refused(CliRunner().invoke(app, ["train", "--config", str(recipe), "--plain"]), 1, place)
    assert line.startswith(f"{pickled}: ") and "(vgg_weights)" in line, line
    assert not marker.exists()


def _code_running_pickle(marker: Path) -> bytes:
    import pickle

    class Run:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    return pickle.dumps(Run(), protocol=4)


@pytest.mark.parametrize("state, words", [
    ({"foo": torch.zeros(1)}, "do not fit"),  # a name that is no layer number: it was int("foo"), a traceback
    ({"features.0.weight": torch.zeros(2, 2)}, "do not fit"),
])
def test_vgg_weights_that_do_not_fit_are_one_line(tmp_path, state, words):
    from safetensors.torch import save_file

    from upscale_cli.train.losses import load_vgg16_features

    path = tmp_path / "vgg.safetensors"
    save_file(state, str(path))
    with pytest.raises(TrainingError, match=words):
        load_vgg16_features(path)


def test_vgg_weights_in_torchvisions_layout_load(tmp_path):
    from upscale_cli.train.losses import build_vgg16_features, load_vgg16_features

    state = {f"features.{k}": v for k, v in build_vgg16_features().state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "vgg.pth")
    net = load_vgg16_features(tmp_path / "vgg.pth")
    assert all(torch.equal(net.state_dict()[k.removeprefix("features.")], v)
               for k, v in state.items() if k.startswith("features."))


# two sets of options, every one away from its default (the mask loss needs scale 1, which the upsampler lacks)
OPTION_SETS = [
    {"arch": "upsampler", "scale": 2, "steps": 7, "minutes": 2.5, "batch": 3, "crop": 12, "lr": 0.01,
     "weight_decay": 0.5, "loss": "mse", "feature_weight": 0.25, "gram_weight": 0.125, "vgg_weights": "{vgg}",
     "ema": 0.5, "clip": 2.0, "progressive": True, "degrade": True, "damage_mix": "jpeg", "amp": False,
     "cpu_bf16": True, "device": "cpu", "every": 9, "seed": 11, "init": "{tmp}", "threads": 3},
    {"arch": "unet", "scale": 1, "loss_region": "mask", "degrade": True, "damage_mix": "inpaint", "threads": 0},
]


@pytest.mark.parametrize("options", OPTION_SETS, ids=["most", "mask"])
def test_every_option_reaches_the_config_by_its_own_name(monkeypatch, tmp_path, options):
    """The command names each option it hands to TrainConfig (no dict(locals())): every setting but
    warmup (recipe only) has an option, and each one given arrives."""
    import inspect

    from upscale_cli.cli import train as train_cli

    params = set(inspect.signature(train_cli.run_command).parameters)
    assert {f.name for f in fields(TrainConfig)} - params - set(train_cli._SET_APART) == {"warmup"}
    (tmp_path / "hr").mkdir()
    make_rgb_png(tmp_path / "hr", "a.png", size=(40, 40))
    (tmp_path / "vgg.pth").write_bytes(b"")
    options = {k: v.format(tmp=tmp_path, vgg=tmp_path / "vgg.pth") if isinstance(v, str) else v
               for k, v in options.items()}
    args = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        args += [flag if value else f"--no-{flag[2:]}"] if isinstance(value, bool) else [flag, str(value)]
    seen = {}
    monkeypatch.setattr("upscale_cli.train.train", lambda config, **_: seen.setdefault("config", config) and tmp_path)
    result = CliRunner().invoke(app, ["train", str(tmp_path / "hr"), "--out", str(tmp_path / "run"), *args])
    assert result.exit_code == 0, result.output
    assert {name: getattr(seen["config"], name) for name in options} == options


def test_recipe_refusal_through_a_real_process(place, tmp_path):
    """Once end to end in a subprocess: item 10's `data = "/path"` (a string, which walked "/")."""
    recipe = _recipe(tmp_path / "data.toml", place, data='"{hr}"')
    proc = subprocess.run([sys.executable, "-m", "upscale_cli", "train", "--config", str(recipe), "--plain"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: {recipe}: data = ") and proc.stderr.count("\n") == 1, proc.stderr
    assert not Path(place["run"]).exists()
