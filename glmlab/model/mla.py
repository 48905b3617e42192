"""Multi-head Latent Attention: expanded form, absorbed form, the latent cache, DSA wiring
(docs/architecture.md, "MLA" and "DSA").

Layout rules: per head q and k are [nope | rope]; `kv_a_proj_with_mqa` outputs [c_kv | k_pe];
`kv_b_proj` outputs per head [k_nope | v]. Which path a call takes is decided by
`glmlab.plan.attention_plan`; this file only carries it out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from glmlab.config import ModelConfig
from glmlab.model.dsa import Indexer, TopK, gathered_attention, indexer_kl, recall_at_k, select_topk
from glmlab.model.layers import RMSNorm, apply_rotary
from glmlab.plan import AttentionPlan

# The query and key/value latent norms use a fixed eps, not `rms_norm_eps`: so do DeepSeek's
# reference code and transformers' glm_moe_dsa / deepseek_v3(2) (it matters when rms_norm_eps
# is 1e-5, as in GLM-5).
LATENT_NORM_EPS = 1e-6


class LatentCache:
    """One layer's decoding cache: the latents [c_kv ; k_pe] in one buffer (what the absorbed
    form reads, with no per-step concatenation) and, under DSA, the indexer keys.

    Buffers are preallocated to `capacity`; `length` says how many positions are valid, so a
    rejected speculative draft is undone by `truncate`.
    """

    def __init__(self, cfg: ModelConfig, batch: int, capacity: int, device, dtype, with_index_keys: bool):
        self.length = 0
        width = cfg.kv_lora_rank + cfg.qk_rope_head_dim
        self.latent = torch.zeros(batch, capacity, width, device=device, dtype=dtype)
        self.index_keys = (
            torch.zeros(batch, capacity, cfg.index_head_dim, device=device, dtype=dtype)
            if with_index_keys
            else None
        )

    @property
    def capacity(self) -> int:
        return self.latent.shape[1]

    def append(self, c_kv: torch.Tensor, k_pe: torch.Tensor, index_keys: torch.Tensor | None) -> None:
        """Write n new positions' latents (and the indexer's keys) after the valid ones."""
        n, r = c_kv.shape[1], c_kv.shape[-1]
        if self.length + n > self.capacity:
            raise ValueError(f"cache full: {self.length} + {n} > capacity {self.capacity}")
        end = self.length + n
        self.latent[:, self.length : end, :r] = c_kv
        self.latent[:, self.length : end, r:] = k_pe
        if self.index_keys is not None and index_keys is not None:
            self.index_keys[:, self.length : end] = index_keys
        self.length = end

    def truncate(self, length: int) -> None:
        self.length = min(self.length, length)


@dataclass
class Projections:
    """One call's queries and new latents (`project`)."""

    q_latent: torch.Tensor  # [B,S,q_lora] the query latent (what the indexer's queries read)
    q_nope: torch.Tensor  # [B,S,H,nope]
    q_pe: torch.Tensor  # [B,S,H,rope], rotated
    c_kv: torch.Tensor  # [B,S,r] normed key/value latent
    k_pe: torch.Tensor  # [B,S,rope] rotated shared rope key


@dataclass
class Selection:
    """The indexer's output for one call (`score_and_select`)."""

    topk: TopK | None  # the keys each query reads (None: attention is dense)
    scores: torch.Tensor | None  # index scores [B,S,T] when this layer scored them


@dataclass
class AttentionOutput:
    out: torch.Tensor  # [B,S,d]
    topk: TopK | None  # for IndexShare layers
    index_loss: torch.Tensor | None = None  # this layer's indexer KL
    index_recall: torch.Tensor | None = None  # share of dense attention inside the top-k


class MultiHeadLatentAttention(nn.Module):
    """MLA with an optional lightning indexer (a `full` DSA layer) or top-k reuse (`shared`)."""

    def __init__(self, cfg: ModelConfig, *, has_indexer: bool) -> None:
        super().__init__()
        self.cfg = cfg
        d, H = cfg.hidden_size, cfg.num_attention_heads
        self.n_heads, self.r_kv = H, cfg.kv_lora_rank
        self.d_nope, self.d_rope, self.d_v = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
        self.scale = cfg.softmax_scale
        if cfg.q_lora_rank is None:
            self.q_proj = nn.Linear(d, H * cfg.qk_head_dim, bias=False)
        else:
            self.q_a_proj = nn.Linear(d, cfg.q_lora_rank, bias=cfg.attention_bias)
            self.q_a_layernorm = RMSNorm(cfg.q_lora_rank, LATENT_NORM_EPS)
            self.q_b_proj = nn.Linear(cfg.q_lora_rank, H * cfg.qk_head_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(d, self.r_kv + self.d_rope, bias=cfg.attention_bias)
        self.kv_a_layernorm = RMSNorm(self.r_kv, LATENT_NORM_EPS)
        self.kv_b_proj = nn.Linear(self.r_kv, H * (self.d_nope + self.d_v), bias=False)
        self.o_proj = nn.Linear(H * self.d_v, d, bias=cfg.attention_bias)
        self.indexer = Indexer(cfg) if has_indexer else None

    def forward(
        self,
        xn: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        positions: torch.Tensor,
        *,
        plan: AttentionPlan,
        cache: LatentCache | None = None,
        shared_topk: TopK | None = None,
    ) -> AttentionOutput:
        """xn [B,S,d] (the normed input, read by MLA and the indexer alike); positions [S].

        Without a cache the sequence attends to itself causally; with one, the new latents are
        appended and the queries attend to everything cached up to their position.
        """
        B, S, _ = xn.shape
        p = self.project(xn, cos, sin)
        # The indexer learns only from its own loss: without one, it runs outside autograd.
        grad_indexer = plan.index_loss and torch.is_grad_enabled()
        index_keys = None
        if self.indexer is not None:
            with torch.set_grad_enabled(grad_indexer):
                index_keys = self.indexer.keys(xn.detach(), cos, sin)
        latent = None  # [c_kv ; k_pe] of every cached position, what the absorbed form reads
        if cache is not None:
            cache.append(p.c_kv, p.k_pe, index_keys)
            latent = cache.latent[:, : cache.length]
            if index_keys is not None:
                index_keys = cache.index_keys[:, : cache.length]
        T = cache.length if cache is not None else S
        query_pos = positions if cache is not None else torch.arange(S, device=xn.device)
        causal = torch.arange(T, device=xn.device)[None, :] <= query_pos[:, None]  # [S,T]

        with torch.set_grad_enabled(grad_indexer):
            sel = self.score_and_select(xn, p.q_latent, cos, sin, index_keys, causal, plan, shared_topk)

        loss = recall = None
        if plan.path == "cached":
            o, probs = self.attend_cached(p, latent, sel.topk, causal)
        elif plan.path == "sparse":
            o, probs = self.attend_gathered(p, sel.topk)
        elif plan.path == "masked":
            o, probs = self.attend_masked(p, sel.topk, causal, need_probs=plan.probs)
            if probs is not None:
                probs = probs.gather(-1, sel.topk.indices[:, None].expand(-1, self.n_heads, -1, -1))
        else:
            o, probs = self.attend_dense(p, need_probs=plan.probs)
        if plan.index_loss and plan.sparse:
            loss = indexer_kl(probs, sel.scores.gather(-1, sel.topk.indices), sel.topk.valid)
        elif plan.index_loss:
            loss = indexer_kl(probs, sel.scores, causal[None])
        if plan.recall:
            recall = recall_at_k(probs, sel.scores, self.cfg.index_topk)
        out = self.o_proj(o.reshape(B, S, -1))
        return AttentionOutput(out, sel.topk, loss, recall)

    # ---- project ---------------------------------------------------------------------------

    def project(self, xn: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> Projections:
        """Queries (through the query latent when there is one) and the new key/value latents."""
        B, S, _ = xn.shape
        if self.cfg.q_lora_rank is None:
            q_latent = xn
            q = self.q_proj(xn)
        else:
            q_latent = self.q_a_layernorm(self.q_a_proj(xn))
            q = self.q_b_proj(q_latent)
        q_nope, q_pe = q.view(B, S, self.n_heads, -1).split([self.d_nope, self.d_rope], dim=-1)
        q_pe = apply_rotary(q_pe, cos, sin, self.cfg.rope_interleave)
        c_kv, k_pe = self.kv_a_proj_with_mqa(xn).split([self.r_kv, self.d_rope], dim=-1)
        c_kv = self.kv_a_layernorm(c_kv)
        k_pe = apply_rotary(k_pe, cos, sin, self.cfg.rope_interleave)
        return Projections(q_latent, q_nope, q_pe, c_kv, k_pe)

    # ---- score and select --------------------------------------------------------------------

    def score_and_select(self, xn, q_latent, cos, sin, index_keys, causal, plan: AttentionPlan,
                         shared_topk: TopK | None) -> Selection:  # fmt: skip
        """The indexer scores when the plan says so; a sparse call takes the top-k of those
        scores, or the previous layer's top-k on an IndexShare layer without an indexer."""
        scores = None
        if plan.score:
            scores = self.indexer.scores(
                xn.detach(), q_latent.detach(), cos, sin, index_keys, causal, chunks=plan.score_chunks
            )
        if not plan.sparse:
            return Selection(None, scores)
        topk = select_topk(scores.detach(), self.cfg.index_topk) if scores is not None else shared_topk
        return Selection(topk, scores)

    # ---- attend: four paths -------------------------------------------------------------------

    def attend_dense(self, p: Projections, *, need_probs: bool):
        """Causal attention over equal-length q and k in the expanded form."""
        return self._expanded(p, None, need_probs=need_probs)

    def attend_masked(self, p: Projections, topk: TopK, causal: torch.Tensor, *, need_probs: bool):
        """Expanded attention under the top-k as a mask: the dense reference for sparse paths."""
        B, S, _, _ = p.q_nope.shape
        keep = torch.zeros(B, S, causal.shape[-1], dtype=torch.bool, device=causal.device)
        keep.scatter_(-1, topk.indices, topk.valid)
        return self._expanded(p, keep & causal, need_probs=need_probs)

    def attend_gathered(self, p: Projections, topk: TopK):
        """Absorbed attention of each query over its own gathered top-k latents."""
        return self._absorbed(p.q_nope, p.q_pe, torch.cat([p.c_kv, p.k_pe], dim=-1), topk, None)

    def attend_cached(self, p: Projections, latent: torch.Tensor, topk: TopK | None, causal: torch.Tensor):
        """Absorbed attention over the latent cache: the top-k, or every causal position."""
        return self._absorbed(p.q_nope, p.q_pe, latent, topk, None if topk is not None else causal[None])

    # ---- the two forms of core attention -------------------------------------------------------

    def _absorbed_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """kv_b_proj split per head into W_UK [H,nope,r] and W_UV [H,v,r]."""
        w = self.kv_b_proj.weight.view(self.n_heads, self.d_nope + self.d_v, self.r_kv)
        return w[:, : self.d_nope], w[:, self.d_nope :]

    def _expanded(self, p: Projections, mask: torch.Tensor | None, *, need_probs: bool):
        """Per-head K and V from the latent (training, prefill). mask [B|1,S,T] True = attend;
        None means plain causal over equal-length q and k. Returns o [B,S,H,v], probs."""
        B, T, _ = p.c_kv.shape
        H = self.n_heads
        k_nope, v = self.kv_b_proj(p.c_kv).view(B, T, H, -1).split([self.d_nope, self.d_v], dim=-1)
        k = torch.cat([k_nope, p.k_pe[:, :, None, :].expand(B, T, H, self.d_rope)], dim=-1)
        q = torch.cat([p.q_nope, p.q_pe], dim=-1)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if not need_probs:
            attn_mask = None if mask is None else mask[:, None]
            # Fused (flash) kernels want one head size for q, k and v: pad v with zeros.
            pad = q.shape[-1] - self.d_v
            v = F.pad(v, (0, pad)) if pad > 0 else v
            causal = mask is None
            o = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, is_causal=causal, scale=self.scale
            )
            return o[..., : self.d_v].transpose(1, 2), None
        if mask is None:
            S = q.shape[2]
            mask = torch.ones(S, T, dtype=torch.bool, device=q.device).tril(T - S)[None]
        scores = (q @ k.transpose(-1, -2)).float() * self.scale
        probs = scores.masked_fill(~mask[:, None], float("-inf")).softmax(-1)
        o = probs.to(v.dtype) @ v
        return o.transpose(1, 2), probs

    def _absorbed(self, q_nope, q_pe, kv, topk: TopK | None, mask):
        """Scores against the latents kv [B,T,r+rope] = [c_kv ; k_pe] themselves (decoding,
        sparse DSA). Either `topk` gathers K latents per query, or `mask` [B|1,S,T] attends to
        all of them. Returns o [B,S,H,v] and probs [B,H,S,K|T]."""
        w_uk, w_uv = self._absorbed_weights()
        (B, S, H, _), R = q_nope.shape, kv.shape[-1]
        q_lat = q_nope.transpose(1, 2) @ w_uk  # [B,H,S,r]: W_UK moved onto the query
        q_full = torch.cat([q_lat, q_pe.transpose(1, 2)], dim=-1)  # [B,H,S,R]
        if topk is not None:
            K, T = topk.indices.shape[-1], kv.shape[1]
            rows = (topk.indices + torch.arange(B, device=kv.device)[:, None, None] * T).reshape(B * S, K)
            o_lat, probs = gathered_attention(
                q_full.transpose(1, 2).reshape(B * S, H, R), kv.reshape(B * T, R), rows,
                topk.valid.reshape(B * S, K), self.scale, self.r_kv,
            )  # fmt: skip
            o_lat, probs = o_lat.view(B, S, H, -1).transpose(1, 2), probs.view(B, S, H, K).transpose(1, 2)
        else:
            scores = (q_full @ kv[:, None].transpose(-1, -2)).float() * self.scale  # [B,H,S,T]
            probs = scores.masked_fill(~mask[:, None], float("-inf")).softmax(-1)
            o_lat = probs.to(kv.dtype) @ kv[:, None, :, : self.r_kv]
        return (o_lat @ w_uv.transpose(1, 2)).transpose(1, 2), probs  # W_UV after the sum
