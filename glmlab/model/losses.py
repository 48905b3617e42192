"""The training losses: next-token cross-entropy (used for the LM head and every MTP depth) and the
weighted objective the trainer minimises (docs/architecture.md, "Training objective")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from glmlab.config import TrainConfig

if TYPE_CHECKING:
    from glmlab.model.model import CausalLMOutput


def next_token_loss(
    logits: torch.Tensor, labels: torch.Tensor, shift: int, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy (mean, or `reduction`) of logits [B,S,V] at i against labels [B,S] at i + shift (-100
    ignored). The labels move, not the logits: slicing the logits would copy them and zero-fill
    a full-size gradient in the backward pass."""
    targets = F.pad(labels[:, shift:], (0, shift), value=-100)
    return F.cross_entropy(
        logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100, reduction=reduction
    )


@dataclass
class Losses:
    """One micro-batch's weighted total and its parts (detached 0-d tensors, for logging: reading
    them is left to the logger, so that a training step never waits for the device)."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor]


def total_loss(out: CausalLMOutput, train: TrainConfig, *, dense_warmup: bool) -> Losses:
    """During the DSA dense warm-up, the indexer's KL alone. Otherwise L = L_LM
    + (mtp_lambda / D) * sum_k L_MTP,k + balance_alpha * L_balance + indexer_loss_weight * L_indexer."""
    parts = {"lm_loss": out.loss}
    if out.mtp_losses:
        parts["mtp_loss"] = torch.stack(out.mtp_losses).mean()
    if out.balance_loss is not None:
        parts["balance_loss"] = out.balance_loss
    if out.indexer_loss is not None:
        parts["indexer_loss"] = out.indexer_loss
    if dense_warmup:
        total = out.indexer_loss
    else:
        weights = {"lm_loss": 1.0, "mtp_loss": train.mtp_lambda, "balance_loss": train.balance_alpha,
                   "indexer_loss": train.indexer_loss_weight}  # fmt: skip
        total = sum(weights[k] * v for k, v in parts.items())
    return Losses(total, {k: v.detach() for k, v in parts.items()})
