"""The committed training campaign (campaign/unet_x4, issue #18) is what the next session resumes:
a real checkpoint (not a pointer or a truncated file), of the recipe's model, consistent with its
log, and accepted by `upscale train --resume` up to the point where training would start."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import torch

from upscale_cli.models import build_model
from upscale_cli.train.checkpoint import load_checkpoint, resume_config

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "campaign" / "unet_x4"
RECIPE = ROOT / "configs" / "unet_x4_campaign.toml"


def test_the_campaign_checkpoint_is_complete_and_matches_its_recipe_and_log():
    assert (RUN / "checkpoint.pt").is_file(), "campaign/unet_x4/checkpoint.pt must be committed"
    ckpt = load_checkpoint(RUN)
    config = resume_config(RUN)
    recipe = tomllib.loads(RECIPE.read_text())
    assert config.out == recipe["out"] == "campaign/unet_x4"
    assert (config.arch, config.scale, config.settings) == (recipe["arch"], recipe["scale"], recipe["settings"])
    assert (config.minutes, config.lr, config.seed) == (recipe["minutes"], recipe["lr"], recipe["seed"])
    model = build_model(config.arch, **config.model_settings)
    model.load_state_dict(ckpt["model"])  # every tensor present, of the right shape
    ema = build_model(config.arch, **config.model_settings)
    ema.load_state_dict(ckpt["ema"])
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values())
    moments = ckpt["optimizer"]["state"]
    assert len(moments) == sum(1 for p in model.parameters())  # Adam's moments for every parameter
    log = [json.loads(line) for line in (RUN / "log.jsonl").read_text().splitlines() if line.strip()]
    assert log and log[-1]["step"] == ckpt["step"] and log[-1]["elapsed"] == pytest.approx(ckpt["elapsed"], abs=0.1)
    assert 0 < ckpt["elapsed"] <= config.minutes * 60 + 60  # within the schedule the recipe sets
    assert all(26.0 < row["val_psnr"] < 40.0 for row in log)


def test_resume_refuses_to_change_the_campaign_recipe(tmp_path):
    """The command a new session runs is accepted; one that would change the recipe is refused
    before anything is read or written."""
    from typer.testing import CliRunner

    from upscale_cli.cli import app

    before = (RUN / "checkpoint.pt").stat().st_mtime_ns
    result = CliRunner().invoke(app, ["train", "--resume", str(RUN), "--lr", "0.01"])
    assert result.exit_code == 2 and "--lr" in result.stderr
    assert (RUN / "checkpoint.pt").stat().st_mtime_ns == before
