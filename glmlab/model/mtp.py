"""Multi-Token Prediction modules (docs/architecture.md, "Multi-Token Prediction"; DeepSeek-V3 eqs. 21-25)."""

from __future__ import annotations

import torch
from torch import nn

from glmlab.config import ModelConfig
from glmlab.model.layers import RMSNorm


class MTPModule(nn.Module):
    """One depth: `h' = eh_proj([enorm(Emb(t_{i+k})) ; hnorm(h^{k-1}_i)])`, then a full decoder
    layer, then `shared_head_norm` before the shared LM head. Embedding first, as the
    public implementations order it.

    The decoder layer is built by the caller (model.py) and passed in, so this file does
    not depend on the layer's definition.
    """

    def __init__(self, cfg: ModelConfig, layer: nn.Module) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.enorm = RMSNorm(d, cfg.rms_norm_eps)
        self.hnorm = RMSNorm(d, cfg.rms_norm_eps)
        self.eh_proj = nn.Linear(2 * d, d, bias=False)
        self.layer = layer
        self.shared_head_norm = RMSNorm(d, cfg.rms_norm_eps)

    def combine(self, token_embeddings: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """[B,S,d] embeddings of t_{i+k} and hidden states h^{k-1}_i -> the layer's input."""
        return self.eh_proj(torch.cat([self.enorm(token_embeddings), self.hnorm(hidden)], dim=-1))
