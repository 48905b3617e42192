"""Grouped-query attention (GQA) and multi-head attention (MHA), the baselines MLA is compared
with (docs/architecture.md, "Attention types").

H query heads share `kv` key/value heads, H / kv query heads per group; MHA is the case
kv = H. Every head is `head_dim` wide. Rotary position: the first `qk_rope_head_dim` dims of
each q and k head are rotated with the model's rotary tables (the ones MLA uses), the rest
are not (partial rotary, as GLM-4 does). The cache stores K (rotated) and V of every kv head:
2 * kv * head_dim values per token and layer, against MLA's kv_lora_rank + qk_rope_head_dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glmlab.config import ModelConfig
from glmlab.model.dsa import TopK
from glmlab.model.layers import apply_rotary
from glmlab.model.mla import AttentionOutput
from glmlab.plan import AttentionPlan


class KVCache:
    """One layer's decoding cache: K and V [B, capacity, kv, head_dim], preallocated; `length`
    says how many positions are valid (a rejected speculative draft is undone by `truncate`)."""

    def __init__(
        self, cfg: ModelConfig, batch: int, capacity: int, device: torch.device | str, dtype: torch.dtype
    ) -> None:
        self.length = 0
        shape = (batch, capacity, cfg.resolved_kv_heads, cfg.resolved_head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)

    @property
    def capacity(self) -> int:
        return self.k.shape[1]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Write n new positions' keys and values [B,n,kv,hd] after the valid ones."""
        n = k.shape[1]
        if self.length + n > self.capacity:
            raise ValueError(f"cache full: {self.length} + {n} > capacity {self.capacity}")
        end = self.length + n
        self.k[:, self.length : end] = k
        self.v[:, self.length : end] = v
        self.length = end

    def truncate(self, length: int) -> None:
        self.length = min(self.length, length)


class GroupedQueryAttention(nn.Module):
    """`o_proj(softmax(q k^T / sqrt(hd) + causal) v)` with each K/V head read by a group of query
    heads. Same call and output as MultiHeadLatentAttention, so a decoder layer holds either."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d, bias = cfg.hidden_size, cfg.attention_bias
        self.n_heads, self.n_kv = cfg.num_attention_heads, cfg.resolved_kv_heads
        self.head_dim, self.d_rope = cfg.resolved_head_dim, cfg.qk_rope_head_dim
        self.interleave, self.scale = cfg.rope_interleave, cfg.softmax_scale
        self.q_proj = nn.Linear(d, self.n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, d, bias=bias)
        self.indexer = None  # DSA is MLA-only (config validation refuses use_dsa with gqa/mha)

    def forward(
        self,
        xn: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        positions: torch.Tensor,
        *,
        plan: AttentionPlan,
        cache: KVCache | None = None,
        shared_topk: TopK | None = None,
    ) -> AttentionOutput:
        """xn [B,S,d] normed input at positions [S]. Without a cache: causal attention of the
        sequence over itself (plan path `dense`); with one, the new K/V are appended and the
        queries attend to every cached position up to their own (path `cached`). `plan` and
        `shared_topk` are MLA's (DSA) inputs: GQA's path follows from the cache alone."""
        B, S, _ = xn.shape
        q, k, v = self.project(xn, cos, sin)
        if cache is None:
            o = self.attend(q, k, v, None)
        else:
            cache.append(k, v)
            T = cache.length
            visible = torch.arange(T, device=xn.device)[None, :] <= positions[:, None]  # [S,T]
            o = self.attend(q, cache.k[:, :T], cache.v[:, :T], visible[None])
        return AttentionOutput(self.o_proj(o.reshape(B, S, -1)), None)

    def project(
        self, xn: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q [B,S,H,hd], k and v [B,S,kv,hd], with q and k rotated on their first d_rope dims."""
        B, S, _ = xn.shape
        q = self.q_proj(xn).view(B, S, self.n_heads, self.head_dim)
        k = self.k_proj(xn).view(B, S, self.n_kv, self.head_dim)
        v = self.v_proj(xn).view(B, S, self.n_kv, self.head_dim)
        return self._rotate(q, cos, sin), self._rotate(k, cos, sin), v

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        if self.d_rope == self.head_dim:
            return apply_rotary(x, cos, sin, self.interleave)
        rot, rest = x.split([self.d_rope, self.head_dim - self.d_rope], dim=-1)
        return torch.cat([apply_rotary(rot, cos, sin, self.interleave), rest], dim=-1)

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """q [B,S,H,hd] over k, v [B,T,kv,hd]; mask [B|1,S,T] (True = attend) or None for causal
        over equal-length q and k. Each K/V head is repeated for its group of query heads, then
        one SDPA call (a fused kernel where the device has one; K/V read from a cache are cast to the
        queries' dtype, as under autocast). Returns o [B,S,H,hd]."""
        group = self.n_heads // self.n_kv
        k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        attn_mask = None if mask is None else mask[:, None]
        o = F.scaled_dot_product_attention(
            q, k.to(q.dtype), v.to(q.dtype), attn_mask=attn_mask, is_causal=mask is None, scale=self.scale
        )
        return o.transpose(1, 2)

    def step(
        self, xn: torch.Tensor, pos: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor], cache: KVCache,
        context: int,
    ) -> torch.Tensor:  # fmt: skip
        """The fixed-shape decoding step (glmlab/generate/step.py): xn [B,S,d] at positions pos [B,S]
        (rotary tables for pos flattened); writes K/V at those positions and attends over the
        first `context` slots, those at or before each query. Returns out [B,S,d]."""
        B, S, d = xn.shape
        q, k, v = self.project(xn.reshape(1, B * S, d), *rotary)  # per token: rows as one sequence
        rows = torch.arange(B, device=xn.device)[:, None].expand(B, S)
        cache.k.index_put_((rows, pos), k.view(B, S, self.n_kv, -1).to(cache.k.dtype))
        cache.v.index_put_((rows, pos), v.view(B, S, self.n_kv, -1).to(cache.v.dtype))
        visible = torch.arange(context, device=xn.device)[None, None, :] <= pos[:, :, None]  # [B,S,C]
        o = self.attend(q.view(B, S, self.n_heads, -1), cache.k[:, :context], cache.v[:, :context], visible)
        return self.o_proj(o.reshape(B, S, -1))
