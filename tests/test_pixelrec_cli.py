"""pixelrec through the real CLI: `upscale train --arch pixelrec [--spade]` (a few steps, resume, export)
and `upscale FILE -m MODEL --samples N --temperature T --seed S` with a random-initialised weights file."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from upscale_cli.cli import app
from upscale_cli.loader import save_weights
from upscale_cli.models import build_model

TINY = {"scale": 4, "width": 6, "blocks": 1, "prior_width": 9, "prior_layers": 2}
TRAIN_SETTINGS = ["--set", "width=4", "--set", "blocks=0", "--set", "prior_width=3", "--set", "prior_layers=1"]


@pytest.fixture()
def weights(tmp_path):
    torch.manual_seed(0)
    model = build_model("pixelrec", **TINY)
    with torch.no_grad():  # an untrained prior is near uniform: make the answers visibly differ
        model.conditioning.out.bias.add_(torch.randn_like(model.conditioning.out.bias))
    path = tmp_path / "pixelrec.safetensors"
    save_weights(model, path, "pixelrec", TINY)
    return path


def write_png(path, height, width, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_samples_are_named_seeded_and_different(tmp_path, weights):
    tiny = write_png(tmp_path / "tiny.png", 4, 3)
    result = run(tiny, "-m", weights, "-x", "4", "--samples", "3", "--temperature", "0.8", "--seed", "1")
    assert result.exit_code == 0, result.output
    outputs = [tmp_path / f"tiny_x4_s{k}.png" for k in (1, 2, 3)]
    assert all(p.is_file() for p in outputs) and not (tmp_path / "tiny_x4.png").exists()
    jpeg = run(tiny, "-m", weights, "--seed", "1", "-o", tmp_path / "q.jpg", "--quality", "50")
    assert jpeg.exit_code == 0 and Image.open(tmp_path / "q.jpg").format == "JPEG"
    first = [np.asarray(Image.open(p)) for p in outputs]
    assert first[0].shape == (16, 12, 3)
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[1], first[2])
    assert "seed 1" in result.output and "tiny_x4_s3.png" in result.output
    again = run(tiny, "-m", weights, "--samples", "3", "--temperature", "0.8", "--seed", "1", "-o", tmp_path / "b.png")
    assert again.exit_code == 0, again.output
    assert all(np.array_equal(a, np.asarray(Image.open(tmp_path / f"b_s{k}.png"))) for k, a in zip((1, 2, 3), first))
    other = run(tiny, "-m", weights, "--samples", "3", "--temperature", "0.8", "--seed", "2", "-o", tmp_path / "c.png")
    assert other.exit_code == 0
    assert not np.array_equal(first[0], np.asarray(Image.open(tmp_path / "c_s1.png")))


def test_temperature_zero_is_deterministic_whatever_the_seed(tmp_path, weights):
    tiny = write_png(tmp_path / "tiny.png", 3, 3)
    for seed in ("1", "2"):
        result = run(tiny, "-m", weights, "--temperature", "0", "--seed", seed, "--samples", "2",
                     "-o", tmp_path / f"g{seed}.png")
        assert result.exit_code == 0, result.output
    images = [np.asarray(Image.open(tmp_path / name)) for name in ("g1_s1.png", "g1_s2.png", "g2_s1.png")]
    assert np.array_equal(images[0], images[1]) and np.array_equal(images[0], images[2])


def test_a_sampling_model_samples_without_the_options(tmp_path, weights):
    tiny = write_png(tmp_path / "tiny.png", 2, 2)
    result = run(tiny, "-m", weights, "--seed", "3")
    assert result.exit_code == 0, result.output
    assert np.asarray(Image.open(tmp_path / "tiny_x4.png")).shape == (8, 8, 3)
    plain = run(write_png(tmp_path / "t2.png", 2, 2), "-m", weights)  # no option at all: still the sampler
    assert plain.exit_code == 0 and "temperature 0.5" in plain.output  # the default


def test_too_large_input_is_one_line_and_writes_nothing(tmp_path, weights):
    big = write_png(tmp_path / "big.png", 17, 5)
    result = run(big, "-m", weights, "--samples", "2", "--seed", "1")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()  # the file's error line, then the batch's count, as every upscale
    assert len(lines) == 2 and lines[0].startswith("error: ") and "16x16" in lines[0], result.output
    assert lines[1] == "0 done, 0 skipped, 1 failed"
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.png", "pixelrec.safetensors"]  # no output, no temp


def test_max_output_pixels_is_honoured_before_any_drawing(tmp_path, weights):
    """--max-output-pixels bounds sampled answers as it bounds any output (it was ignored): an image
    whose x4 answers are over it fails in one line, nothing written; 0 lifts it; a negative is usage."""
    tiny = write_png(tmp_path / "tiny.png", 4, 3)  # answers of 16 x 12 = 192 pixels
    result = run(tiny, "-m", weights, "--samples", "2", "--seed", "1", "--max-output-pixels", "100")
    assert result.exit_code == 1 and "over the limit of 100" in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pixelrec.safetensors", "tiny.png"]
    free = run(tiny, "-m", weights, "--seed", "1", "--max-output-pixels", "0")
    assert free.exit_code == 0 and (tmp_path / "tiny_x4.png").is_file(), free.output
    wrong = run(tiny, "-m", weights, "--seed", "1", "--max-output-pixels", "-1", "-o", tmp_path / "w.png")
    assert wrong.exit_code == 2 and "--max-output-pixels" in wrong.output


def test_usage_errors_exit_2(tmp_path, weights):
    tiny = write_png(tmp_path / "tiny.png", 2, 2)
    for args, words in (([ "--samples", "0"], "--samples"), (["--temperature", "-1"], "--temperature"),
                        (["-x", "2"], "x4"), (["-o", "-"], "stdout")):
        result = run(tiny, "-m", weights, *args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.strip().startswith("error:") and words in result.output
    for args in (["--width", "40"], ["--ensemble"], ["--tile", "8"]):  # --json: one schema (test_json_rows.py)
        result = run(tiny, "-m", weights, "--seed", "1", *args)
        assert result.exit_code == 2 and args[0] in result.output and "sampling model" in result.output, result.output
    result = run(tiny, "-m", "bicubic", "--samples", "2")
    assert result.exit_code == 2 and "need a model that samples" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pixelrec.safetensors", "tiny.png"]


def test_existing_outputs_are_kept_unless_overwrite(tmp_path, weights):
    tiny = write_png(tmp_path / "tiny.png", 2, 2)
    (tmp_path / "tiny_x4_s2.png").write_bytes(b"keep")
    result = run(tiny, "-m", weights, "--samples", "2", "--seed", "1")
    assert result.exit_code == 0 and "output exists" in result.output  # as every upscale says it
    assert (tmp_path / "tiny_x4_s2.png").read_bytes() == b"keep" and not (tmp_path / "tiny_x4_s1.png").exists()
    result = run(tiny, "-m", weights, "--samples", "2", "--seed", "1", "--overwrite")
    assert result.exit_code == 0 and (tmp_path / "tiny_x4_s2.png").read_bytes() != b"keep"


def test_train_a_few_steps_resume_and_export(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for k in range(3):
        write_png(data / f"{k}.png", 36 + 4 * k, 40, seed=k)
    run_dir = tmp_path / "run"
    result = run("train", data, "--val", data / "0.png", "--arch", "pixelrec", "--spade", "--out", run_dir,
                 "--steps", "2", "--every", "2", "--batch", "2", "--threads", "1", "--plain", *TRAIN_SETTINGS)
    assert result.exit_code == 0, result.output
    assert "bits/sub-pixel" in result.output
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 2 and ckpt["config"]["settings"]["spade"] is True
    assert ckpt["config"]["lr"] == 4e-4 and ckpt["config"]["crop"] == 8  # the arch's own defaults
    assert type(ckpt["optimizer"]["param_groups"][0].get("alpha")) is float  # RMSProp's state
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert {"nll_bits", "nll_cond_bits", "ssim", "psnr_t08"} <= set(log[-1]) and log[-1]["nll_bits"] > 0
    result = run("train", "--resume", run_dir, "--steps", "3", "--plain")
    assert result.exit_code == 0, result.output
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["step"] == 3
    out = tmp_path / "model.safetensors"
    assert run("train", "export", run_dir, "-o", out).exit_code == 0
    tiny = write_png(tmp_path / "tiny.png", 2, 2)
    result = run(tiny, "-m", out, "--temperature", "0")
    assert result.exit_code == 0, result.output


def test_one_real_process_reports_a_refusal_without_traceback(tmp_path, weights):
    big = write_png(tmp_path / "big.png", 20, 20)
    proc = subprocess.run([sys.executable, "-m", "upscale_cli", str(big), "-m", str(weights), "--samples", "2"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert proc.stderr.endswith("\n0 done, 0 skipped, 1 failed\n")


def test_answers_go_into_a_new_output_folder_and_their_own_names_decide_skips(tmp_path, weights):
    """-o NEW_FOLDER/ is made as for every upscale; a file under the plain output name is not one of
    the answers (no skip), an existing answer is (skipped, kept), --overwrite replaces answers."""
    tiny = write_png(tmp_path / "tiny.png", 5, 4)
    out = tmp_path / "new" / "deeper"
    result = run(tiny, "-m", weights, "--samples", "2", "--seed", "3", "-o", f"{out}/")
    assert result.exit_code == 0, result.output
    answers = [out / "tiny_s1.png", out / "tiny_s2.png"]
    assert all(p.is_file() for p in answers) and not (out / "tiny.png").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "tiny.png").write_bytes(b"not one of the answers")
    result = run(tiny, "-m", weights, "--samples", "2", "--seed", "3", "-o", other)
    assert result.exit_code == 0 and (other / "tiny_s1.png").is_file(), result.output
    before = answers[1].read_bytes()
    answers[0].unlink()
    result = run(tiny, "-m", weights, "--samples", "2", "--seed", "4", "-o", f"{out}/")
    assert result.exit_code == 0 and "output exists" in result.output, result.output
    assert not answers[0].exists() and answers[1].read_bytes() == before  # skipped as a whole: nothing written
    result = run(tiny, "-m", weights, "--samples", "2", "--seed", "4", "-o", f"{out}/", "--overwrite")
    assert result.exit_code == 0 and answers[0].is_file() and answers[1].read_bytes() != before


def test_an_answer_never_replaces_another_input_even_with_overwrite(tmp_path, weights):
    a = write_png(tmp_path / "a.png", 4, 4, seed=1)
    victim = write_png(tmp_path / "a_x4_s2.png", 6, 5, seed=2)  # an input named like a.png's second answer
    kept = victim.read_bytes()
    result = run(a, victim, "-m", weights, "--samples", "2", "--seed", "1", "--overwrite")
    assert result.exit_code == 1
    assert "would overwrite the input" in result.output and "a_x4_s2.png" in result.output
    assert victim.read_bytes() == kept and not (tmp_path / "a_x4_s1.png").exists()
    assert (tmp_path / "a_x4_s2_x4_s1.png").is_file()  # the other input still ran


def test_earlier_answers_in_a_folder_input_are_not_taken_as_inputs(tmp_path, weights):
    folder = tmp_path / "in"
    folder.mkdir()
    write_png(folder / "t.png", 4, 4)
    first = run(folder, "-m", weights, "--samples", "2", "--seed", "1")
    assert first.exit_code == 0, first.output
    again = run(folder, "-m", weights, "--samples", "2", "--seed", "1")
    assert again.exit_code == 0, again.output  # t_x4_s1.png (16x16, over the limit) is not an input
    assert sorted(p.name for p in folder.iterdir()) == ["t.png", "t_x4_s1.png", "t_x4_s2.png"]
