"""`upscale tiny.png -m pixel-recursive --samples 4 --temperature 0.8 --seed 1`: several answers per input.

Reached from the default command when the model samples (pixel-recursive) or --samples,
--temperature or --seed is given. Sampling is a converter (sample_converter.SampleConverter) that
the one batch runner drives, as every upscale: planned by batch.plan_jobs (never an input, existing
outputs skipped unless --overwrite, --shard), the answers of a file named photo_x4_s1.png ... for
several (answers.py), all drawn before the first is written, written all or none; each answer's
line goes to stderr, and with --json, stdout has one report.ReportRow per answer written (a skipped
or failed input: one row).
"""
from __future__ import annotations

import os

from upscale_cli.cli.options import BatchOptions
from upscale_cli.errors import UpscaleError, UsageError
from upscale_cli.sample_converter import SAMPLING_SCALE


def wants_sampling(model: str, samples: int | None, temperature: float | None, seed: int | None) -> bool:
    """Whether the default command hands over to this one: a sampling option, or a sampling model."""
    if samples is not None or temperature is not None or seed is not None:
        return True
    return _model_samples(model)


def _model_samples(model: str) -> bool:
    """From the catalogue entry's architecture, or a weights file's metadata, without building it."""
    from upscale_cli.catalog import resolve
    from upscale_cli.models import sampling_arch

    try:
        spec = resolve(model)
    except UpscaleError:
        return False  # the normal path says what is wrong with the name
    if spec.local_path is None:
        return sampling_arch(spec.arch)
    if spec.local_path.suffix.lower() != ".safetensors":
        return False
    try:
        from safetensors import safe_open

        with safe_open(str(spec.local_path), framework="pt") as handle:
            arch = (handle.metadata() or {}).get("arch")
    except Exception:  # not readable as safetensors: the normal path reports it in one line
        return False
    return isinstance(arch, str) and sampling_arch(arch)


def sample_command(paths: list[str], model: str, scale: float | None, output: str | None, recursive: bool,
                   batch: BatchOptions, quiet: bool, samples: int | None, temperature: float | None,
                   seed: int | None, others: dict, as_json: bool, max_output_pixels: int | None = None) -> None:
    """`others`: the default command's options that sampling does not take (refused when given)."""
    from upscale_cli.batch import expand_inputs
    from upscale_cli.cli.batch_run import BatchRun
    from upscale_cli.ray_batch import SampleRecipe
    from upscale_cli.report import RowDefaults
    from upscale_cli.sample_converter import SampleConverter, load_sampler
    from upscale_cli.sampling import DEFAULT_TEMPERATURE, SampleConfig, sample_paths

    _refuse(model, scale, output, others)
    run = BatchRun.start(batch, output, quiet, as_json)
    config = SampleConfig(samples=1 if samples is None else samples, seed=seed if seed is not None else int.from_bytes(os.urandom(4), "big"),
                          temperature=DEFAULT_TEMPERATURE if temperature is None else temperature,
                          max_output_pixels=max_output_pixels)
    net = load_sampler(model, batch.device)
    sources = expand_inputs(paths, recursive=recursive)
    if any(source.path is None for source in sources):
        raise UsageError("sampling reads image files; - (stdin) is not supported with it")
    # every answer's own name is checked against every input, other answers and existing files
    jobs = run.plan(sources, f"x{SAMPLING_SCALE}", answers=lambda target: sample_paths(target, config.samples))
    # --ray: each worker loads the model and draws with the same seed, so the same answers
    run.run(jobs, SampleConverter(net, config), RowDefaults(model=model),
            recipe=lambda: SampleRecipe(model, config, batch.device), notes=lambda: ())


def _refuse(model: str, scale: float | None, output: str | None, others: dict) -> None:
    """The options sampling does not take, an -x other than x4, -o - (stdout): usage errors."""
    given = [name for name, value in others.items() if value not in (None, False, 0)]
    if given:
        raise UsageError(f"{', '.join(given)} cannot be used with a sampling model ({model}); "
                         "it generates whole images pixel by pixel, one file at a time")
    if scale is not None and scale != SAMPLING_SCALE:
        raise UsageError(f"{model} samples x{SAMPLING_SCALE} answers only; leave out -x or give -x {SAMPLING_SCALE}")
    if output == "-":
        raise UsageError("sampling writes files; -o - (stdout) is not supported with it")
