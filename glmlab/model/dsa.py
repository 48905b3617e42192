"""DeepSeek Sparse Attention: the lightning indexer, top-k selection, the indexer's KL loss (spec 2.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glmlab.config import ModelConfig
from glmlab.model.layers import apply_rotary


class Indexer(nn.Module):
    """Scores every (query, earlier key) pair cheaply; attention then reads only the top k.

    `I[t,s] = sum_j w[t,j] * ReLU(qI[t,j] . kI[s]) / sqrt(d_I)`, with qI from the query latent
    c_q, one key head kI from the normed input, per-head weights w from the input. The
    layout per head is [rope | nope], the reverse of MLA's.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.head_dim = cfg.index_n_heads, cfg.index_head_dim
        self.rope_dim, self.interleave = cfg.qk_rope_head_dim, cfg.indexer_rope_interleave
        q_in = cfg.q_lora_rank or cfg.hidden_size
        self.wq_b = nn.Linear(q_in, self.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(cfg.hidden_size, self.head_dim, bias=False)
        self.k_norm = nn.LayerNorm(self.head_dim, eps=1e-6)
        self.weights_proj = nn.Linear(cfg.hidden_size, self.n_heads, bias=False)

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        rot, rest = x.split([self.rope_dim, self.head_dim - self.rope_dim], dim=-1)
        return torch.cat([apply_rotary(rot, cos, sin, self.interleave), rest], dim=-1)

    def keys(self, xn: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """xn [B,S,d] -> kI [B,S,d_I] (what the indexer key cache stores)."""
        return self._rope(self.k_norm(self.wk(xn)), cos, sin)

    def scores(
        self,
        xn: torch.Tensor,
        q_latent: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        keys: torch.Tensor,
        causal: torch.Tensor,
    ) -> torch.Tensor:
        """Index scores [B,S,T] in fp32; -inf where `causal` [S,T] is False."""
        B, S, _ = xn.shape
        q = self._rope(self.wq_b(q_latent).view(B, S, self.n_heads, self.head_dim), cos, sin)
        dots = torch.einsum("bshd,btd->bsht", q.float(), keys.float()).relu_()
        w = self.weights_proj(xn).float() * (self.n_heads**-0.5 * self.head_dim**-0.5)
        index = torch.einsum("bsht,bsh->bst", dots, w)
        return index.masked_fill(~causal, float("-inf"))


def select_topk(index: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k keys per query from index scores [B,S,T]: indices [B,S,k'] and a validity mask.

    k' = min(k, T). Early queries have fewer than k causal keys; their extra picks point at
    masked keys and are marked invalid, so the set is top min(k, t+1) (spec 2.2, step 5).
    """
    top = index.topk(min(k, index.shape[-1]), dim=-1)
    return top.indices, torch.isfinite(top.values)


def indexer_kl(
    attn_probs: torch.Tensor, index: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Mean over queries of KL(p || softmax(I)) over one key set (spec 2.2).

    attn_probs [B,H,S,K]: main attention probabilities (detached here); index [B,S,K]: the
    indexer's scores on the same keys; valid [B,S,K] (or broadcastable) marks real keys.
    """
    target = attn_probs.detach().float().sum(1)
    target = target / target.sum(-1, keepdim=True).clamp_min(1e-12)
    log_q = F.log_softmax(index.masked_fill(~valid, float("-inf")), dim=-1)
    log_p = target.clamp_min(1e-12).log()
    kl = torch.where(valid & (target > 0), target * (log_p - log_q), torch.zeros_like(target))
    return kl.sum(-1).mean()


def recall_at_k(attn_probs: torch.Tensor, index: torch.Tensor, k: int) -> torch.Tensor:
    """Share of dense attention probability [B,H,S,T] that falls on the indexer's top-k keys."""
    idx, valid = select_topk(index.detach(), k)
    p = attn_probs.detach().float().sum(1)
    p = p / p.sum(-1, keepdim=True).clamp_min(1e-12)
    return (p.gather(-1, idx) * valid).sum(-1).mean()
