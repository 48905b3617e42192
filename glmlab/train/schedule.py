"""Training stages and the learning rate at each optimiser step (docs/architecture.md,
"DeepSeek Sparse Attention" for the two DSA stages).

With DSA and `dsa_warmup_steps > 0`, steps [0, dsa_warmup_steps) are stage 1 (dense attention,
only the indexer trains, constant `dsa_warmup_lr`); the rest is the main stage, whose schedule
(linear warm-up, then cosine or warm-up/stable/decay down to `min_lr_ratio * lr`) spans its own
steps up to the schedule's horizon: the run's `train.steps` when it started. A run extended past
its horizon (`glmlab train RUN --resume --steps N`) keeps that schedule, and its extra steps run
at the final `min_lr_ratio * lr`.
"""

from __future__ import annotations

import math

from glmlab.config import Config

DENSE_WARMUP = "dense-warmup"  # DSA stage 1
SPARSE = "sparse"  # DSA stage 2
MAIN = "main"  # a model without DSA


def stage_at(step: int, cfg: Config) -> str:
    if not cfg.model.use_dsa:
        return MAIN
    return DENSE_WARMUP if step < cfg.train.dsa_warmup_steps else SPARSE


def lr_at(step: int, cfg: Config, *, horizon: int | None = None) -> float:
    """Learning rate for optimiser step `step` (0-based) of a schedule spanning `horizon` steps
    (default `train.steps`); steps past the horizon get the schedule's final value."""
    t = cfg.train
    if stage_at(step, cfg) == DENSE_WARMUP:
        return t.dsa_warmup_lr
    start = t.dsa_warmup_steps if cfg.model.use_dsa else 0
    s, n = step - start, max(1, (t.steps if horizon is None else horizon) - start)
    low = t.lr * t.min_lr_ratio
    if s >= n:
        return low
    warm = min(t.warmup_steps, n)
    if s < warm:
        return t.lr * (s + 1) / warm
    if t.schedule == "wsd":
        decay = round(n * t.decay_fraction)
        into = s - (n - decay)
        return t.lr if into < 0 else t.lr + (low - t.lr) * (into + 1) / decay
    progress = (s - warm) / max(1, n - warm)
    return low + (t.lr - low) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
