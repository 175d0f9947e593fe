"""Training our own models: data (HR folders -> crops), degradations, losses and the loop
(config, schedule, validation, checkpoint and distributed are its parts).

`train(TrainConfig(...))` runs or resumes a run; `export(run_dir, path)` writes its weights.
"""
from upscale_cli.train.checkpoint import export, resume_config
from upscale_cli.train.config import TrainConfig, TrainEvent
from upscale_cli.train.loop import train

__all__ = ["TrainConfig", "TrainEvent", "export", "resume_config", "train"]
