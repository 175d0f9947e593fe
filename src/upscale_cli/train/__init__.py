"""Training our own models: data (HR folders -> crops), degradations, losses and the loop.

`train(TrainConfig(...))` runs or resumes a run; `export(run_dir, path)` writes its weights.
"""
from upscale_cli.train.loop import TrainConfig, TrainEvent, export, resume_config, train

__all__ = ["TrainConfig", "TrainEvent", "export", "resume_config", "train"]
