"""scripts/install_torch.sh: the pip command it runs for each build choice (printed by --print,
which runs nothing), and one line with exit 2 for a choice it does not know."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install_torch.sh"
PAIR = "torch==2.14.1 torchvision==0.29.1"
CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash to run scripts/install_torch.sh")


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("UPSCALE_TORCH_")}
    return subprocess.run(["bash", str(SCRIPT), *args], env={**clean, **env}, capture_output=True, text=True,
                          timeout=30)


@pytest.mark.parametrize("build, flags, index", [(None, (), ""), ("default", (), ""), ("cpu", (), CPU_INDEX),
                                                 (None, ("--cpu",), CPU_INDEX), ("default", ("--cpu",), CPU_INDEX)])
def test_each_build_names_its_index(build, flags, index):
    env = {"UPSCALE_TORCH_PAIR": PAIR} | ({"UPSCALE_TORCH_BUILD": build} if build else {})
    result = _run("--print", *flags, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["python", "-m", "pip", "install", "-q", *PAIR.split(), *index.split()]


def test_machine_pair_without_override():
    result = _run("--print")
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        assert "torch==2.14.1 torchvision==0.29.1" in result.stdout
    elif machine in ("aarch64", "arm64"):
        assert "torch==2.9.1 torchvision==0.24.1" in result.stdout
    else:
        assert result.returncode == 2 and "UPSCALE_TORCH_PAIR" in result.stderr


@pytest.mark.parametrize("args, env", [((), {"UPSCALE_TORCH_BUILD": "cuda"}), ((), {"UPSCALE_TORCH_BUILD": "CPU "}),
                                       (("--gpu",), {}), (("--print", "extra"), {})])
def test_unknown_choice_is_one_line_exit_2(args, env):
    result = _run(*args, UPSCALE_TORCH_PAIR=PAIR, **env)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("install_torch.sh: ")


def test_help_says_what_each_build_costs():
    result = _run("--help")
    assert result.returncode == 0
    assert "UPSCALE_TORCH_BUILD" in result.stdout and "GB" in result.stdout and "cpu" in result.stdout
