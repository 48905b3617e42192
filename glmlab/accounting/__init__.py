"""Analytic accounting of parameters, FLOPs and memory, mirroring glmlab/model/ term by term
(docs/accounting.md). Nothing here builds a model: the full GLM-5 computes instantly."""

from __future__ import annotations

from glmlab.accounting.conventions import CONVENTIONS, get_convention
from glmlab.accounting.flops import FLOP_COMPONENTS, FlopsReport, flops_report
from glmlab.accounting.memory import activation_bytes, kv_cache_bytes_per_token, state_bytes, training_memory
from glmlab.accounting.params import parameter_counts
from glmlab.config import Config, ModelConfig


def training_flops_per_token(
    cfg: Config | ModelConfig,
    seq_len: int,
    convention: str = "glmlab",
    mtp: bool = True,
    device: str = "cpu",
    *,
    dsa_dense: bool = False,
) -> float:
    """Model FLOPs of one training step per token (forward + backward): the MFU numerator.
    In DSA's dense warm-up only the indexer trains, so the step is counted as its forward."""
    mode = "forward" if dsa_dense else "train"
    return flops_report(cfg, seq_len, mode, convention, mtp, device=device, dsa_dense=dsa_dense).per_token


__all__ = [
    "CONVENTIONS", "FLOP_COMPONENTS", "FlopsReport", "activation_bytes", "flops_report",
    "get_convention", "kv_cache_bytes_per_token", "parameter_counts", "state_bytes",
    "training_flops_per_token", "training_memory",
]  # fmt: skip
