"""A name over the file system's limit is said in one wording wherever it is refused (images/atomic.
over_name_limit): an -o folder or an input argument whose path holds one, an output name the
planner would make too long, and `upscale train --out` (it once said `longer than the file
system's 255 bytes` there)."""
import re

import pytest
from typer.testing import CliRunner

import image_factory as f
from upscale_cli.cli import app

runner = CliRunner()
WORDING = r"(\d+) bytes, over the file system's 255-byte limit of a file name"


@pytest.mark.parametrize("case,length", [("-o folder", 300), ("-o name", 256), ("input", 300), ("train --out", 300),
                                         ("train --out", 256)])
def test_a_name_over_the_limit_is_said_in_one_wording(tmp_path, case, length):
    image = f.make_rgb_png(tmp_path, "a.png", size=(16, 16))
    long = str(tmp_path / ("n" * length))
    args = {
        "-o folder": [str(image), "-m", "nearest", "-x", "2", "-o", f"{long}/out.png"],
        "-o name": [str(image), "-m", "nearest", "-x", "2", "-o", f"{long[:-4]}.png"],
        "input": [str(image), f"{long}.png", "-m", "nearest", "-x", "2"],
        "train --out": ["train", str(tmp_path), "--out", f"{long}/run", "--steps", "1"],
    }[case]
    result = runner.invoke(app, args)
    assert result.exit_code == (2 if case.startswith("train") else 1), result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    said = re.search(WORDING, errors[0])
    assert said, errors[0]
    assert int(said[1]) == length + (4 if case == "input" else 0)
