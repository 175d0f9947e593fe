"""Sampling as a converter the batch runner drives (pipeline.run_converted), as fit-single and
restore are: each decoded image gives its N answers (sampling.draw_samples) as one answers.Answers,
which the runner writes to the job's planned names (sampling.sample_paths: photo_x4_s1.png ...),
all or none, with a report row each: `answer k of N: temperature T, seed S`.

Also loading the sampling model, once per run (or once per Ray worker: ray_batch.SampleRecipe).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from upscale_cli.answers import Answers
from upscale_cli.errors import UsageError

if TYPE_CHECKING:  # torch loads when a model does, not when the default command asks whether it samples
    from upscale_cli.sampling import SampleConfig

SAMPLING_SCALE = 4
# Thousands of steps on a few dozen pixels each: threads cost more than they give. Measured on a
# busy 2-core machine, four 8x8 -> 32x32 answers: 4.5 s on one thread, 183 s on two.
SAMPLING_THREADS = 1


def load_sampler(model: str, device: str, progress: bool = True):
    """The sampling model on its device, torch on SAMPLING_THREADS; a model that gives one answer is
    a usage error."""
    import torch

    from upscale_cli.device import select_device
    from upscale_cli.loader import load_model
    from upscale_cli.models.descriptor import Sampling

    net = load_model(model, SAMPLING_SCALE, progress=progress)
    if not isinstance(net.info, Sampling):
        raise UsageError(f"--samples, --temperature and --seed need a model that samples (pixel-recursive); "
                         f"{model} gives one answer")
    torch.set_num_threads(SAMPLING_THREADS)
    return net.to(select_device(device))


class SampleConverter:
    """Draws `config.samples` answers of each image at x4 (an alpha plane is resized bicubic to each);
    the rows being generated are its progress (on_tile(done, total))."""

    def __init__(self, net, config: SampleConfig) -> None:
        self.net, self.config = net, config
        self.progress_label = f"sampling {config.samples} x rows"  # the batch bar's line for on_tile

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """The answers' size, refused before any drawing when it is over --max-output-pixels."""
        from upscale_cli.scale_plan import DEFAULT_MAX_OUTPUT_PIXELS, check_output_size

        size = height * SAMPLING_SCALE, width * SAMPLING_SCALE
        limit = self.config.max_output_pixels
        check_output_size(size, DEFAULT_MAX_OUTPUT_PIXELS if limit is None else limit)
        return size

    def passes_for(self, height: int, width: int) -> tuple[int, ...]:
        return (SAMPLING_SCALE,)

    def upscale_image(self, image, on_tile=None) -> Answers:
        import torch

        from upscale_cli.images.arrays import tensor_to_array
        from upscale_cli.resize import resize
        from upscale_cli.sampling import check_input_size, draw_samples

        check_input_size(self.net, image.height, image.width)
        given = torch.from_numpy(image.pixels)  # the image's NumPy array as a tensor: no copy
        drawn = tensor_to_array(draw_samples(self.net, given, self.config, on_tile))  # (N, C, 4H, 4W), before any write
        size = tuple(drawn.shape[-2:])
        alpha = None if image.alpha is None else tensor_to_array(resize(torch.from_numpy(image.alpha), size, "bicubic"))
        count, config = len(drawn), self.config
        return Answers(tuple(image.replace(pixels=drawn[k : k + 1], alpha=alpha) for k in range(count)),
                       tuple((f"answer {k} of {count}: temperature {config.temperature:g}, seed {config.seed}",)
                             for k in range(1, count + 1)))
