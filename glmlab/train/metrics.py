"""What a training run records beside its losses: expert load imbalance (per expert, and per rank
under expert parallelism) and the metrics log
(MFU is `glmlab.measure.mfu`, shared with `glmlab profile`)."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def load_imbalance(counts: torch.Tensor) -> list[float]:
    """Max over mean tokens per expert, one value per router row of `expert_counts`."""
    c = counts.float()
    return (c.max(-1).values / c.mean(-1).clamp_min(1e-9)).tolist()


def rank_imbalance(counts: torch.Tensor, ranks: int) -> list[float]:
    """Max over mean routed pairs per rank when the experts are split over `ranks` in contiguous
    blocks (glmlab/parallel/expert_parallel.py), one value per router row: with expert
    parallelism every MoE layer waits for its busiest rank."""
    return load_imbalance(counts.view(counts.shape[0], ranks, -1).sum(-1))


class MetricsLog:
    """`metrics.jsonl`: one JSON object per line, appended and flushed as it is written. A `sink`
    (glmlab.viz.tensorboard.TensorBoardLog) receives each record as well."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sink = None  # the trainer sets it when train.tensorboard is on

    def truncate_after(self, step: int) -> None:
        """Drop records beyond `step` (written after the checkpoint a resumed run starts from)."""
        if not self.path.is_file():
            return
        lines = self.path.read_text().splitlines()
        kept = [line for line in lines if line and json.loads(line)["step"] <= step]
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.sink is not None:
            self.sink.write(record)

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()
