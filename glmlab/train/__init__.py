"""Training: optimisers, schedule, the loop and its run folder (`glmlab train`)."""

from glmlab.train.loop import Trainer, TrainResult, train
from glmlab.train.rundir import resolve_run

__all__ = ["TrainResult", "Trainer", "resolve_run", "train"]
