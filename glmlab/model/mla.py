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
from glmlab.model.dsa import (
    Indexer,
    TopK,
    gathered_attention,
    indexer_kl,
    recall_at_k,
    select_topk,
    topk_mask,
)
from glmlab.model.layers import RMSNorm, apply_rotary, compute_dtype
from glmlab.plan import KL_TARGET_BYTES, AttentionPlan

# How the Triton path selects each scored chunk: the radix select (exact, ties to the lower key)
# from RADIX_FROM_KEYS keys, torch.topk per chunk below. On the H200 the radix select of dd670a4 was
# faster at 64K-128K, level at 32K and 8K, slower at 16K (5.43 against 4.98 ms;
# experiments/results/h200-kernels-indexer-3/); the fused collect pass since is not timed.
# TOPK_SELECT ("radix" or "torch") overrides the rule (the DSA benchmark). The chunks are scored into a
# buffer of TOPK_BUFFER_BYTES (the DSA benchmark's --topk-buffer-mb sets it): 1 GB, whose chunks of
# about 1,900 queries at 128K keys took the prefill of GLM-5's slice from 0.735 to 0.727 s (64K: 0.311
# to 0.303 s) against 256 MB, with the same peak memory (experiments/results/h200-session14/, call 3).
RADIX_FROM_KEYS = 32768
TOPK_SELECT: str | None = None
TOPK_BUFFER_BYTES = 1 << 30


def topk_select(keys: int) -> str:
    """How the Triton path selects among `keys` keys (the rule above, read at each call)."""
    return TOPK_SELECT or ("radix" if keys >= RADIX_FROM_KEYS else "torch")


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

    def __init__(
        self, cfg: ModelConfig, batch: int, capacity: int, device: torch.device | str, dtype: torch.dtype,
        with_index_keys: bool,
    ) -> None:  # fmt: skip
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
    scores: torch.Tensor | None = None  # torch path: index scores [B,S,T] of every visible key
    picked: torch.Tensor | None = None  # index scores [B,S,K] at the top-k (the sparse KL reads them)
    queries: tuple | None = None  # Triton dense warm-up: the indexer's (q, w, keys) for its KL


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
        causal = (
            torch.arange(T, device=xn.device)[None, :] <= query_pos[:, None] if plan.visible_mask else None
        )

        with torch.set_grad_enabled(grad_indexer):
            sel = self.score_and_select(xn, p.q_latent, cos, sin, index_keys, causal, plan, shared_topk)

        if plan.path == "cached":
            visible = None if causal is None else causal[None]
            o, mass = self.attend_cached(p, latent, sel.topk, visible, kernel=plan.kernel)
        elif plan.path == "sparse":
            o, mass = self.attend_gathered(
                p, sel.topk, kernel=plan.kernel, need_mass=plan.key_mass, keep_probs=plan.keep_probs
            )
        elif plan.path == "masked":
            o, mass = self.attend_masked(p, sel.topk, causal, plan=plan)
        else:
            o, mass = self.attend_dense(p, need_mass=plan.key_mass)

        loss = recall = None
        if plan.index_loss:
            with torch.set_grad_enabled(grad_indexer):
                loss = self.index_loss(p, sel, mass, causal, plan)
        if plan.recall:
            recall = recall_at_k(mass, sel.scores, self.cfg.index_topk)
        out = self.o_proj(o.reshape(B, S, -1))
        return AttentionOutput(out, sel.topk, loss, recall)

    # ---- project ---------------------------------------------------------------------------

    def input_projections(self) -> list[nn.Linear]:
        """The products of the normed input that start the queries and the latents (`project`)."""
        return [self.q_proj if self.cfg.q_lora_rank is None else self.q_a_proj, self.kv_a_proj_with_mqa]

    def project(
        self,
        xn: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        *,
        inputs: list[torch.Tensor] | None = None,
    ) -> Projections:
        """Queries (through the query latent when there is one) and the new key/value latents.
        `inputs`: the `input_projections` of xn, where the caller ran them (decoding runs them as
        one product: glmlab/generate/joined.py)."""
        B, S, _ = xn.shape
        q_first, kv_first = inputs or [linear(xn) for linear in self.input_projections()]
        if self.cfg.q_lora_rank is None:
            q_latent = xn
            q = q_first
        else:
            q_latent = self.q_a_layernorm(q_first)
            q = self.q_b_proj(q_latent)
        q_nope, q_pe = q.view(B, S, self.n_heads, -1).split([self.d_nope, self.d_rope], dim=-1)
        q_pe = apply_rotary(q_pe, cos, sin, self.cfg.rope_interleave)
        c_kv, k_pe = kv_first.split([self.r_kv, self.d_rope], dim=-1)
        c_kv = self.kv_a_layernorm(c_kv)
        k_pe = apply_rotary(k_pe, cos, sin, self.cfg.rope_interleave)
        return Projections(q_latent, q_nope, q_pe, c_kv, k_pe)

    # ---- score and select --------------------------------------------------------------------

    def score_and_select(self, xn, q_latent, cos, sin, index_keys, causal: torch.Tensor | None,
                         plan: AttentionPlan, shared_topk: TopK | None) -> Selection:  # fmt: skip
        """The indexer scores when the plan says so; a sparse call takes the top-k of those
        scores, or the previous layer's top-k on an IndexShare layer without an indexer.
        Torch scores every visible key into [B,S,T]; the Triton kernels select from bounded
        chunks and score again only the picked keys (what the KL reads)."""
        if not plan.score:
            return Selection(shared_topk if plan.sparse else None)
        if plan.kernel == "triton":
            from glmlab.kernels.indexer import index_scores_at, index_topk

            q, w = self.indexer.queries(xn.detach(), q_latent.detach(), cos, sin)

            if not plan.sparse:
                return Selection(None, queries=(q, w, index_keys))
            select = topk_select(index_keys.shape[1])
            topk = TopK(*index_topk(q, w, index_keys, topk=self.cfg.index_topk, select=select,
                                    fp8=plan.index_fp8, buffer_bytes=TOPK_BUFFER_BYTES))  # fmt: skip
            picked = index_scores_at(q, w, index_keys, topk.indices) if plan.index_loss else None
            return Selection(topk, picked=picked)
        scores = self.indexer.scores(
            xn.detach(), q_latent.detach(), cos, sin, index_keys, causal, chunks=plan.score_chunks
        )
        if not plan.sparse:
            return Selection(None, scores)
        topk = select_topk(scores.detach(), self.cfg.index_topk)
        return Selection(topk, scores, scores.gather(-1, topk.indices))

    def index_loss(self, p: Projections, sel: Selection, mass, causal, plan: AttentionPlan) -> torch.Tensor:
        """The indexer's KL against the attention's key mass: over the picked keys when sparse,
        over every visible key in the dense warm-up (the Triton path there computes the target
        itself, chunk by chunk, from the absorbed queries and the latents)."""
        if plan.sparse:
            return indexer_kl(mass, sel.picked, sel.topk.valid)
        if plan.kernel == "torch":
            return indexer_kl(mass, sel.scores, causal[None])
        from glmlab.kernels.indexer import dense_index_kl

        q, w, keys = sel.queries
        with torch.no_grad():  # the target is detached
            q_abs = self._absorbed_queries(p.q_nope, p.q_pe)  # [B,S,H,R]
            kv = torch.cat([p.c_kv, p.k_pe], dim=-1)
        budget = KL_TARGET_BYTES * q.shape[0]  # plan.kl_target_chunks' rows at any batch size
        return dense_index_kl(q, w, keys, q_abs, kv, scale=self.scale, buffer_bytes=budget)

    # ---- attend: four paths -------------------------------------------------------------------
    # Each returns o [B,S,H,v] and, when asked, the attention's key mass: its probabilities
    # summed over heads, [B,S,T] dense or [B,S,K] over the top-k (the indexer's KL target).

    def attend_dense(self, p: Projections, *, need_mass: bool):
        """Causal attention over equal-length q and k in the expanded form."""
        o, probs = self._expanded(p, None, need_probs=need_mass)
        return o, None if probs is None else probs.sum(1)

    def attend_masked(
        self, p: Projections, topk: TopK, causal: torch.Tensor, *, plan: AttentionPlan
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Expanded attention under the top-k as a mask: the dense reference for sparse paths, or
        FlexAttention over the causal key blocks (`plan.flex`; causal SDPA for the queries that keep
        every key they see).
        The key mass, when the plan asks for it, is [B,S,K] at the top-k's picks."""
        keep = topk_mask(topk, causal.shape[-1]) & causal
        if not plan.flex:
            o, probs = self._expanded(p, keep, need_probs=plan.key_mass)
            return o, None if probs is None else probs.sum(1).gather(-1, topk.indices)
        from glmlab.kernels.flex_masked import flex_masked_attention, key_mass_at

        q, k, v = self._expanded_qkv(p, pad_values=True)
        # the queries that see at most k keys keep them all (the first selected_keys when S = T)
        o = flex_masked_attention(q, k, v, keep, scale=self.scale, whole_rows=plan.selected_keys)
        mass = None
        if plan.key_mass:
            mass = key_mass_at(q, k, keep, topk.indices, scale=self.scale, chunks=plan.kl_chunks)
        return o[..., : self.d_v].transpose(1, 2), mass

    def attend_gathered(
        self, p: Projections, topk: TopK, *, kernel: str, need_mass: bool, keep_probs: bool = False
    ):
        """Absorbed attention of each query over its own gathered top-k latents; `keep_probs` (the
        Triton kernel, under a gradient) keeps the forward's probabilities for the backward."""
        kv = torch.cat([p.c_kv, p.k_pe], dim=-1)
        keep = keep_probs and torch.is_grad_enabled()
        return self._absorbed_sparse(
            p.q_nope, p.q_pe, kv, topk, kernel=kernel, need_mass=need_mass, keep_probs=keep
        )

    def attend_cached(
        self, p: Projections, latent, topk: TopK | None, visible: torch.Tensor | None, *, kernel: str
    ):
        """Absorbed attention over the latent cache [B,T,R]: the top-k, or every position that
        `visible` [B|1,S,T] allows."""
        if topk is not None:
            return self._absorbed_sparse(p.q_nope, p.q_pe, latent, topk, kernel=kernel, need_mass=False)
        return self._absorbed_dense(p.q_nope, p.q_pe, latent, visible), None

    # ---- the two forms of core attention -------------------------------------------------------

    def _absorbed_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """kv_b_proj split per head into W_UK [H,nope,r] and W_UV [H,v,r]."""
        w = self.kv_b_proj.weight.view(self.n_heads, self.d_nope + self.d_v, self.r_kv)
        return w[:, : self.d_nope], w[:, self.d_nope :]

    def _expanded_qkv(self, p: Projections, *, pad_values: bool) -> tuple[torch.Tensor, ...]:
        """Per-head q, k, v [B,H,S|T,d] from the latent. Fused (flash) kernels want one head size
        for q, k and v: `pad_values` pads v with zeros up to d_qk."""
        B, T, _ = p.c_kv.shape
        H = self.n_heads
        k_nope, v = self.kv_b_proj(p.c_kv).view(B, T, H, -1).split([self.d_nope, self.d_v], dim=-1)
        k = _joined(k_nope, p.k_pe[:, :, None, :].expand(B, T, H, self.d_rope))
        q = _joined(p.q_nope, p.q_pe)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        pad = q.shape[-1] - self.d_v
        return q, k, F.pad(v, (0, pad)) if pad_values and pad > 0 else v

    def _expanded(self, p: Projections, mask: torch.Tensor | None, *, need_probs: bool):
        """Expanded attention (training, prefill). mask [B|1,S,T] True = attend; None means plain
        causal over equal-length q and k. Returns o [B,S,H,v], probs."""
        q, k, v = self._expanded_qkv(p, pad_values=not need_probs)
        T = k.shape[2]
        if not need_probs:
            attn_mask = None if mask is None else mask[:, None]
            o = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, is_causal=mask is None, scale=self.scale
            )
            return o[..., : self.d_v].transpose(1, 2), None
        if mask is None:
            S = q.shape[2]
            mask = torch.ones(S, T, dtype=torch.bool, device=q.device).tril(T - S)[None]
        scores = (q @ k.transpose(-1, -2)).float() * self.scale
        probs = scores.masked_fill(~mask[:, None], float("-inf")).softmax(-1)
        o = probs.to(v.dtype) @ v
        return o.transpose(1, 2), probs

    def _absorbed_queries(
        self, q_nope: torch.Tensor, q_pe: torch.Tensor, *, heads_first: bool = False
    ) -> torch.Tensor:
        """[B,S,H,R] queries in latent space: W_UK moved onto q_nope, beside the rotary part (at 128K
        queries the tensor is 9.7 GB in bf16: every extra transposed copy costs milliseconds).
        `heads_first` (for the sparse kernel, which reads any strides): at batch 1 without a
        gradient, the per-head products write straight into a [B,H,S,R] buffer, returned as its
        [B,S,H,R] view: where the Gluon forward takes the call only the rotary part is copied (the
        joined copy took 11 ms a layer of the GLM-5 slice's 128K prefill on an H200,
        experiments/results/h200-session13/); elsewhere `sparse_mla` makes it contiguous, one copy
        as the join was."""
        w_uk, _ = self._absorbed_weights()
        grad = _taking_grad(q_nope, q_pe, w_uk)
        device = q_nope.device.type
        dtype = compute_dtype(q_nope)  # the product's, as torch.bmm requires one dtype without autocast
        one_dtype = torch.promote_types(dtype, q_pe.dtype) == dtype  # the product's is the result's
        # torch.compile cannot trace a product into a strided `out=` (a graph break): it fuses the join
        plain = not heads_first or grad or q_nope.shape[0] != 1 or not one_dtype
        B, S, H, _ = q_nope.shape
        if plain or torch.compiler.is_compiling():
            return _joined(_per_head(q_nope, w_uk), q_pe)
        out = q_nope.new_empty(B, H, S, self.r_kv + self.d_rope, dtype=dtype)
        with torch.autocast(device, enabled=False):  # the inputs cast as autocast casts them
            torch.bmm(q_nope[0].transpose(0, 1).to(dtype), w_uk.to(dtype), out=out[0, :, :, : self.r_kv])
        out[..., self.r_kv :] = q_pe.transpose(1, 2)
        return out.transpose(1, 2)

    def _absorbed_output(self, o_lat: torch.Tensor) -> torch.Tensor:
        """Latent outputs [B,H,S,r] -> o [B,S,H,v]: W_UV applied after the weighted sum."""
        _, w_uv = self._absorbed_weights()
        return _per_head(o_lat.transpose(1, 2), w_uv.transpose(1, 2))

    def _absorbed_dense(self, q_nope, q_pe, kv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Absorbed attention over every latent of kv [B,T,R] = [c_kv ; k_pe] that `mask`
        [B|1,S,T] allows (decoding without DSA, or within k keys)."""
        q_full = self._absorbed_queries(q_nope, q_pe)
        B, S, H, R = q_full.shape
        # Every head reads the same latents (MQA-like): the heads join the query rows of one
        # [B, S*H, R] x [B, R, T] product. Broadcasting kv over a head axis instead makes matmul
        # copy it H times (measured on an H200: 84 GB at batch 8 and 128K cached positions).
        scores = (q_full.view(B, S * H, R) @ kv.transpose(1, 2)).view(B, S, H, -1).float() * self.scale
        probs = scores.masked_fill(~mask[:, :, None], float("-inf")).softmax(-1)
        o_lat = probs.to(kv.dtype).view(B, S * H, -1) @ kv[:, :, : self.r_kv]
        return self._absorbed_output(o_lat.view(B, S, H, -1).transpose(1, 2))

    def _absorbed_sparse(
        self,
        q_nope,
        q_pe,
        kv: torch.Tensor,
        topk: TopK,
        *,
        kernel: str,
        need_mass: bool,
        keep_probs: bool = False,
    ):
        """Absorbed attention of each query over its own K latents of kv [B,T,R], gathered by the
        torch path or read by index in the Triton kernel. Returns o [B,S,H,v], key mass [B,S,K]."""
        (B, S, H, _), (T, R), K = q_nope.shape, kv.shape[1:], topk.indices.shape[-1]
        q_full = self._absorbed_queries(q_nope, q_pe, heads_first=kernel == "triton").view(B * S, H, R)
        rows = topk.indices  # into the flattened [B*T,R] latents (at 128K, 2 GB: no add when B = 1)
        if B > 1:
            rows = rows + torch.arange(B, device=kv.device)[:, None, None] * T
        rows = rows.reshape(B * S, K)
        valid = topk.valid.reshape(B * S, K)
        if kernel == "triton":
            from glmlab.kernels.sparse_mla import sparse_mla

            o_lat, mass = sparse_mla(q_full, kv.reshape(B * T, R), rows, valid, scale=self.scale, r=self.r_kv,
                                     mass=need_mass, keep_probs=keep_probs)  # fmt: skip
        else:
            o_lat, probs = gathered_attention(
                q_full, kv.reshape(B * T, R), rows, valid, self.scale, self.r_kv
            )
            mass = probs.sum(1) if need_mass else None
        o = self._absorbed_output(o_lat.view(B, S, H, -1).transpose(1, 2))
        return o, None if mass is None else mass.view(B, S, K)


def _per_head(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x [B,S,H,a] times each head's w [H,a,b] -> [B,S,H,b], as one product per head over all B*S
    rows (a view of [H,B*S,b]). A product broadcast over the batch, [B,H,S,a] @ [H,a,b], copies w once
    per row of the batch and reads each copy: on an H200 at GLM-5's shapes and 32 decoding rows,
    W_UK's and W_UV's copies and products took about 570 us a layer (experiments/results/h200-session17/,
    call 5)."""
    B, S, H, a = x.shape
    rows = x.permute(2, 0, 1, 3).reshape(H, B * S, a)  # a view where B*S rows share a stride
    return torch.bmm(rows, w).view(H, B, S, w.shape[-1]).permute(1, 2, 0, 3)


def _joined(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torch.cat([a, b], -1) for b with a's leading shape. Without a gradient to take, two copies
    into one new tensor: below 2^31 elements torch.cat takes a batched kernel that is slow on strided
    inputs (on an H200 the GLM-5 slice's four largest cats took 14.7 ms of its 32K prefill,
    experiments/results/h200-session12/, call 1). Under a gradient torch.cat, whose backward only
    slices the gradient where the copies' would copy and zero it whole."""
    if _taking_grad(a, b):
        return torch.cat([a, b], dim=-1)
    n = a.shape[-1]
    out = a.new_empty(*a.shape[:-1], n + b.shape[-1], dtype=torch.promote_types(a.dtype, b.dtype))
    out[..., :n] = a
    out[..., n:] = b
    return out


def _taking_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd records an operation on these tensors."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
