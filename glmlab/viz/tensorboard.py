"""TensorBoard logging of a training run (`train.tensorboard: true`): every number of a
metrics.jsonl record as a scalar, the per-layer load imbalance per router, and histograms of
each router's expert load and bias. Events go to `<run>/tensorboard`."""

from __future__ import annotations

from pathlib import Path

import torch

from glmlab.errors import GlmlabError
from glmlab.viz.routers import router_labels

TENSORBOARD_DIR = "tensorboard"


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise GlmlabError("train.tensorboard needs tensorboard: pip install 'glmlab[tensorboard]'") from None
    return SummaryWriter


def scalar_tag(key: str, record: dict) -> str:
    """'train/lm_loss' for a training record's field, 'val/loss' for a validation one's val_loss."""
    return f"train/{key}" if "loss" in record else f"val/{key.removeprefix('val_')}"


class TensorBoardLog:
    """A `MetricsLog` sink: writes each record it receives; router biases are read from `model`
    at the time of the record. `start_step` > 0 (a resumed run) drops events logged after it."""

    def __init__(self, run_dir: Path, model, *, start_step: int = 0) -> None:
        writer = _summary_writer()
        self.model = model
        self.routers = router_labels(model.config)
        purge = start_step + 1 if start_step else None
        self.writer = writer(str(Path(run_dir) / TENSORBOARD_DIR), purge_step=purge)

    def write(self, record: dict) -> None:
        step = record["step"]
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(scalar_tag(key, record), value, step)
        if "expert_load" in record:
            per_layer = zip(
                self.routers, record["expert_imbalance_per_layer"], record["expert_load"], strict=True
            )
            for name, imbalance, load in per_layer:
                self.writer.add_scalar(f"expert_imbalance/{name}", imbalance, step)
                self.writer.add_histogram(
                    f"expert_load/{name}", torch.tensor(load, dtype=torch.float64), step
                )
        if "loss" in record:
            for name, router in zip(self.routers, self.model.routers(), strict=True):
                bias = router.e_score_correction_bias.detach().double().cpu()
                self.writer.add_histogram(f"router_bias/{name}", bias, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
