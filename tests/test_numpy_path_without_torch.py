"""The array steps around a model that needs no PyTorch (tiling, resize, alpha fill) run in a child
process where `import torch` fails, and give the numbers this process gets from the torch path."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

from upscale_cli.alpha import fill_transparent
from upscale_cli.resize import resize
from upscale_cli.tiling import TilePlan, tiled_forward

CHILD = """
import sys
sys.modules["torch"] = None  # any `import torch` (or torch.anything) now raises ImportError
import numpy as np
from upscale_cli.alpha import fill_transparent
from upscale_cli.models.descriptor import FixedScale
from upscale_cli.resize import resize
from upscale_cli.tiling import TilePlan, is_out_of_memory, plan_tiling, tiled_forward

inputs = np.load(sys.argv[1])
x, alpha = inputs["x"], inputs["alpha"]
filled = fill_transparent(x, alpha)
def model(t):
    return resize(np.ascontiguousarray(t), (t.shape[-2] * 3, t.shape[-1] * 3), "bicubic", clamp=False)
tiled = tiled_forward(model, filled, 3, TilePlan(16, 8, 2), on_tile=lambda done, total: None)
plan = plan_tiling(3000, 4000, 3, 4, FixedScale(scale=4, receptive_field=8), device="cpu")
assert plan.tile == 512 and is_out_of_memory(MemoryError())
np.savez(sys.argv[2], filled=filled, tiled=tiled, lanczos=resize(x, (7, 40), "lanczos"))
assert not [name for name, module in sys.modules.items() if name.startswith("torch") and module is not None]
print("ok")
"""


def test_tiling_resize_and_alpha_run_without_torch_and_match_the_torch_path(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((1, 3, 21, 37), dtype=np.float32)
    alpha = (rng.random((1, 1, 21, 37)) > 0.5).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x, alpha=alpha)
    child = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == 0 and child.stdout.strip() == "ok", child.stderr
    got = np.load(tmp_path / "out.npz")

    filled = fill_transparent(torch.from_numpy(x), torch.from_numpy(alpha))
    assert float(np.abs(got["filled"] - filled.numpy()).max()) <= 1e-5  # see test_alpha_numpy
    def tensor_model(t: torch.Tensor) -> torch.Tensor:
        return resize(t.contiguous(), (t.shape[-2] * 3, t.shape[-1] * 3), "bicubic", clamp=False)

    same_input = torch.from_numpy(got["filled"])  # the tiler and resize agree to the bit from equal inputs
    assert np.array_equal(got["tiled"], tiled_forward(tensor_model, same_input, 3, TilePlan(16, 8, 2)).numpy())
    assert np.array_equal(got["lanczos"], resize(torch.from_numpy(x), (7, 40), "lanczos").numpy())
