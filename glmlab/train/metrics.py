"""What a training run measures: matmul peak and MFU, expert load imbalance, the metrics log."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from glmlab.accounting.flops import flops_report
from glmlab.config import Config
from glmlab.measure import matmul_peak
from glmlab.train.schedule import DENSE_WARMUP


def measure_matmul_peak(device: torch.device) -> float:
    """The MFU denominator: `glmlab.measure.matmul_peak` on this device, run on a forked RNG so
    the training random stream (and so a resumed run) is untouched."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return matmul_peak(device)


def training_flops_per_token(cfg: Config, device: torch.device, stage: str) -> float:
    """Model FLOPs per trained token from glmlab.accounting under its `dsa` convention (causal
    attention, top-k keys on DSA layers, indexer and MTP counted): forward + backward, except in
    the dense warm-up, where the backward pass only reaches the indexer, so forward only."""
    mode = "forward" if stage == DENSE_WARMUP else "train"
    return flops_report(cfg, cfg.train.seq_len, mode=mode, convention="dsa", device=device.type).per_token


def load_imbalance(counts: torch.Tensor) -> list[float]:
    """Max over mean tokens per expert, one value per router row of `expert_counts`."""
    c = counts.float()
    return (c.max(-1).values / c.mean(-1).clamp_min(1e-9)).tolist()


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
