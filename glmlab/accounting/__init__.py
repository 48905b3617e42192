"""Analytic accounting of parameters, FLOPs and memory, mirroring glmlab/model/ term by term
(accounting spec). Nothing here builds a model: the full GLM-5 computes instantly."""

from __future__ import annotations

from glmlab.accounting.conventions import CONVENTIONS, get_convention
from glmlab.accounting.flops import COMPONENTS, FlopsReport, flops_report
from glmlab.accounting.memory import activation_bytes, kv_cache_bytes_per_token, state_bytes, training_memory
from glmlab.accounting.params import parameter_counts
from glmlab.config import Config, ModelConfig


def training_flops_per_token(
    cfg: Config | ModelConfig, seq_len: int, convention: str = "glmlab", mtp: bool = True, device: str = "cpu"
) -> float:
    """Model FLOPs of one training step per token (forward + backward), for MFU."""
    return flops_report(cfg, seq_len, "train", convention, mtp, device=device).per_token


def forward_flops_per_token(
    cfg: Config | ModelConfig, seq_len: int, convention: str = "glmlab", mtp: bool = True, device: str = "cpu"
) -> float:
    """FLOPs of the forward part of a training step, per token."""
    return flops_report(cfg, seq_len, "forward", convention, mtp, device=device).per_token


__all__ = [
    "COMPONENTS", "CONVENTIONS", "FlopsReport", "activation_bytes", "flops_report",
    "forward_flops_per_token", "get_convention", "kv_cache_bytes_per_token", "parameter_counts",
    "state_bytes", "training_flops_per_token", "training_memory",
]  # fmt: skip
