"""The training loop's seam (train/recipes.py): the shipped recipes (pixel loss, pixel-recursive)
implement the TrainingRecipe protocol and the loop drives them; a recipe written here, with its own
synthetic data, optimiser, loss and figures, trains, checkpoints and resumes exactly through the
same loop, which is not changed for it. And the loop's module stays in short named phases."""
from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from image_factory import gradient_rgb
from upscale_cli.train import TrainConfig, train
from upscale_cli.train.checkpoint import load_checkpoint
from upscale_cli.train.pixelrec import PixelRecRecipe
from upscale_cli.train.recipes import PixelLossRecipe, TrainingRecipe, Validation, recipe_for

UNET = {"width": 8, "levels": 1, "blocks": 1, "decoder_blocks": 1, "bottleneck_blocks": 1}
SHIPPED = {  # arch -> (its recipe, tiny settings, TrainConfig changes)
    "unet": (PixelLossRecipe, UNET, {"scale": 2, "crop": 8}),
    "upsampler": (PixelLossRecipe, {"width": 4, "depth": 1}, {"scale": 2, "crop": 8}),
    "pixelrec": (PixelRecRecipe, {"width": 4, "blocks": 0, "prior_width": 3, "prior_layers": 1},
                 {"scale": 4, "crop": 8, "lr": 4e-4, "weight_decay": 0.0}),
}
MAX_FUNCTION_LINES = 40  # docs/ARCHITECTURE.md: functions stay short, long pipelines split into phases


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hr")
    for i, size in enumerate([(48, 40), (40, 44), (36, 36)]):
        Image.fromarray(gradient_rgb(size)).save(root / f"img{i}.png")
    return root


class Stop(Exception):
    pass


@pytest.mark.parametrize("arch", list(SHIPPED))
def test_each_shipped_recipe_is_a_training_recipe_the_loop_drives(arch, folder, tmp_path):
    """Two real steps each (stopped at the last step's event, before the validation: pixelrec's
    sampling takes seconds, and its checkpoints are tested through the CLI in test_pixelrec_cli)."""
    kind, settings, changes = SHIPPED[arch]
    built, steps = [], []

    def spy(config, device):  # the default choice, kept to look at
        built.append(recipe_for(config, device))
        return built[-1]

    def stop_after_the_steps(event):
        if event.kind == "step":
            steps.append(event)
            raise Stop

    config = TrainConfig(data=(str(folder),), val=(str(folder),), out=str(tmp_path / "run"), arch=arch,
                         settings=settings, steps=2, every=2, batch=2, threads=1, seed=1, **changes)
    with pytest.raises(Stop):
        train(config, make_recipe=spy, on_event=stop_after_the_steps)
    assert len(built) == 1 and type(built[0]) is kind and isinstance(built[0], TrainingRecipe)
    assert [e.step for e in steps] == [2] and math.isfinite(steps[0].loss) and steps[0].loss > 0


def test_something_that_lacks_a_method_is_not_a_recipe():
    class NoValidation:
        def setup(self, model, emit): ...
        def load_data(self, on_skip): ...
        def baseline(self): ...
        def batch(self, progress, gen): ...
        def loss(self, net, inputs, target): ...

    assert not isinstance(NoValidation(), TrainingRecipe)


# ---------------------------------------------------------------- a third recipe, defined here
def smooth_images(count: int, gen: torch.Generator, side: int = 16) -> torch.Tensor:
    """Random smooth colour fields (a 4x4 grid of colours, upsampled): a synthetic dataset."""
    return F.interpolate(torch.rand(count, 3, 4, 4, generator=gen), size=side, mode="bilinear", align_corners=False)


class Denoise:
    """Remove Gaussian noise from smooth images: its own data, SGD, MSE loss and validation figures."""

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        self.config, self.device = config, device
        self.val = torch.empty(0)

    def setup(self, model, emit):
        return model, torch.optim.SGD(model.parameters(), lr=self.config.lr, momentum=0.9)

    def load_data(self, on_skip):
        self.val = smooth_images(4, torch.Generator().manual_seed(99))
        return 0, len(self.val)

    def baseline(self):
        return None

    def batch(self, progress, gen):
        clean = smooth_images(self.config.batch, gen)
        return clean + 0.1 * torch.randn(clean.shape, generator=gen), clean

    def loss(self, net, inputs, target):
        return F.mse_loss(net(inputs), target)

    def validate(self, model):
        noisy = self.val + 0.1 * torch.randn(self.val.shape, generator=torch.Generator().manual_seed(7))
        with torch.no_grad():
            mse = float(F.mse_loss(model(noisy), self.val))
        return Validation(psnr=-10 * math.log10(mse), figures={"mse": mse}, message=f"denoising MSE {mse:.5f}")


def test_a_recipe_defined_here_trains_checkpoints_and_resumes_through_the_loop(tmp_path):
    assert isinstance(Denoise(None, torch.device("cpu")), TrainingRecipe)
    (tmp_path / "unused").mkdir()  # the recipe makes its own data; the run still names a data folder

    def config(name: str) -> TrainConfig:
        return TrainConfig(data=(str(tmp_path / "unused"),), out=str(tmp_path / name), arch="unet", scale=1,
                           settings=UNET, steps=6, every=3, batch=2, lr=0.05, threads=1, seed=5)

    events = []
    straight = train(config("straight"), make_recipe=Denoise, on_event=events.append)
    vals = [e.message for e in events if e.kind == "val"]
    assert len(vals) == 2 and all(message.startswith("denoising MSE") for message in vals)
    assert [e.step for e in events if e.kind == "checkpoint"] == [3, 6]
    log = [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()]
    assert [sorted(row) for row in log] == [["elapsed", "mse", "step", "val_psnr"]] * 2
    assert "momentum_buffer" in load_checkpoint(straight)["optimizer"]["state"][0]  # the recipe's SGD

    def stop_at_first_checkpoint(event):
        if event.kind == "checkpoint":
            raise Stop

    with pytest.raises(Stop):
        train(config("split"), make_recipe=Denoise, on_event=stop_at_first_checkpoint)
    train(config("split"), resume=True, make_recipe=Denoise)
    a, b = load_checkpoint(straight), load_checkpoint(tmp_path / "split")
    assert a["step"] == b["step"] == 6 and a["val_psnr"] == b["val_psnr"]
    for key in ("model", "ema"):
        assert all(torch.equal(a[key][name], b[key][name]) for name in a[key]), key
    assert torch.equal(a["optimizer"]["state"][0]["momentum_buffer"], b["optimizer"]["state"][0]["momentum_buffer"])


# ---------------------------------------------------------------- the loop's shape
def _body_lines(function: ast.FunctionDef) -> int:
    body = function.body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    return body[-1].end_lineno - body[0].lineno + 1 if body else 0


def test_train_functions_are_short_and_the_loop_names_no_architecture():
    import upscale_cli.train as package

    long = {}
    for path in Path(package.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _body_lines(node) > MAX_FUNCTION_LINES:
                long[f"{path.name}:{node.name}"] = _body_lines(node)
    assert long == {}
    loop = (Path(package.__file__).parent / "loop.py").read_text()
    assert not any(arch in loop for arch in ("pixelrec", "unet", "upsampler", "arch_training"))
