"""The decoding step on fixed-shape buffers (docs/architecture.md, "Decoding").

It computes what `CausalLM.forward` with a cache computes (absorbed MLA over the latent cache,
DSA top-k, MoE, then MTP depths through `mtp_step`), from the same modules and weights, in a
form whose every shape is fixed by (rows, new tokens per row, capacity):

- each row carries its own positions, so rows of different lengths decode together;
- a cached entry is valid when its position is at most the query's, not below a length: the
  slots past a row's end hold stale entries that are masked and later overwritten, so a
  rejected speculative draft needs no truncation;
- attention reads a given number of leading slots (`context`: the whole capacity in a CUDA
  graph, just past the furthest row otherwise) under that mask; the DSA top-k of them once
  they exceed index_topk (masked slots score -inf and are marked invalid).

Nothing is read back to the host (the routed experts too, on CUDA in bf16: glmlab/model/moe.py),
so one step can be captured in a CUDA graph (graphs.py).
"""

from __future__ import annotations

import torch

from glmlab.generate.joined import JoinedInputs, JoinedLinear
from glmlab.model import CausalLM
from glmlab.model.dsa import TopK, select_topk
from glmlab.model.gqa import GroupedQueryAttention, KVCache
from glmlab.model.mla import LatentCache, MultiHeadLatentAttention, Projections, topk_select
from glmlab.model.moe import MoE
from glmlab.plan import indexer_kernel, resolve_dsa_impl, score_chunks


def attention_step(
    attn: MultiHeadLatentAttention,
    xn: torch.Tensor,
    pos: torch.Tensor,
    rotary: tuple[torch.Tensor, torch.Tensor],
    cache: LatentCache,
    shared_topk: TopK | None,
    context: int,
    *,
    inputs: JoinedLinear | None = None,
) -> tuple[torch.Tensor, TopK | None]:
    """xn [B,S,d] normed input at positions pos [B,S]; writes their latents into `cache` at
    those positions, attends over the first `context` slots, those at or before each query
    (every position must be below `context`, and each row's S positions consecutive, as the Triton
    top-k also bounds query s by slot context - S + s). `inputs`: the layer's input products joined
    (joined.py). Returns (out [B,S,d], the top-k this layer read, for the next IndexShare layer)."""
    cfg = attn.cfg
    B, S, d = xn.shape
    H, C = attn.n_heads, context
    latents = cache.latent[:, :C]
    cos, sin = rotary
    # Projections are per token: the rows go through as one sequence of B*S positions.
    flat = xn.reshape(1, B * S, d)
    first = inputs(flat) if inputs is not None else []
    p = attn.project(flat, cos, sin, inputs=first[:2] or None)
    index_key, index_weights = first[2:] or [None, None]  # the indexer's wk and weights_proj of `flat`
    rows = torch.arange(B, device=xn.device)[:, None].expand(B, S)
    latent = torch.cat([p.c_kv, p.k_pe], dim=-1).view(B, S, -1)
    cache.latent.index_put_((rows, pos), latent.to(cache.latent.dtype))
    if attn.indexer is not None:
        keys = attn.indexer.keys(flat, cos, sin, projected=index_key).view(B, S, -1)
        cache.index_keys.index_put_((rows, pos), keys.to(cache.index_keys.dtype))
    visible = torch.arange(C, device=xn.device)[None, None, :] <= pos[:, :, None]  # [B,S,C]

    dsa = cfg.use_dsa and (attn.indexer is not None or shared_topk is not None)
    kernel = indexer_kernel(resolve_dsa_impl(cfg.dsa_impl, xn.device.type, C))  # as the model's cached calls
    topk = None
    if dsa and C > cfg.index_topk:  # masked slots score -inf: the top-k holds every visible key if few
        if attn.indexer is not None:
            per_row = (cos.view(B, S, 1, -1), sin.view(B, S, 1, -1))
            q_latent = p.q_latent.view(B, S, -1)
            keys = cache.index_keys[:, :C]
            if kernel == "triton":
                # scored and selected as the prefill's top-k is (in fp8 when index_dtype is, so both
                # pick alike), each row seeing the slots up to its position; the fused kernel reads
                # the keys in their dtype (torch's path makes fp32 copies of every key and of their
                # [B,H,C] dots: at 128K slots and batch 8, 0.5 GB a layer)
                from glmlab.kernels.indexer import index_topk

                w_first = None if index_weights is None else index_weights.view(B, S, -1)
                q, w = attn.indexer.queries(xn, q_latent, *per_row, weights=w_first)
                fp8, select = cfg.index_dtype == "fp8", topk_select(C)
                topk = TopK(*index_topk(q, w, keys, topk=cfg.index_topk, select=select, fp8=fp8, last=pos))
            else:
                chunks = tuple(score_chunks(S, C, attn.indexer.n_heads, xn.device.type))
                index = attn.indexer.scores(xn, q_latent, *per_row, keys, visible, chunks=chunks)
                topk = select_topk(index, cfg.index_topk)
        else:
            topk = shared_topk
    if topk is None and kernel == "triton":
        topk = every_slot(visible)
    rows_view = Projections(p.q_latent, p.q_nope.view(B, S, H, -1), p.q_pe.view(B, S, H, -1), p.c_kv, p.k_pe)
    # a top-k reads rows by index: the whole cache, whose [B*capacity,R] rows are a view (the first
    # `context` slots of each row are not, when context < capacity: a copy each layer and step)
    o, _ = attn.attend_cached(
        rows_view, latents if topk is None else cache.latent, topk, visible, kernel=kernel
    )
    return attn.o_proj(o.reshape(B, S, -1)), topk


def every_slot(visible: torch.Tensor) -> TopK:
    """The whole cache as a top-k: slot t of every query, real where `visible` [B,S,C] is True.
    Dense attention over it in the Triton sparse kernel is flash decoding: each query's slots split
    between programs that fill the GPU, where torch's path runs a score product, a softmax and a
    value product over the cache (on an H200 at 128K slots, GLM-5's shapes: about 400 us a layer,
    each product reading at 0.8 TB/s, experiments/results/h200-session17/, call 1)."""
    slots = torch.arange(visible.shape[-1], device=visible.device)
    return TopK(slots.expand(visible.shape), visible)


def layer_step(
    layer: torch.nn.Module, x: torch.Tensor, pos: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor],
    cache: LatentCache | KVCache, shared_topk: TopK | None, context: int,
    *, inputs: JoinedLinear | None = None,
) -> tuple[torch.Tensor, TopK | None]:  # fmt: skip
    """One decoder layer (pre-norm attention, then the FFN) on x [B,S,d]; returns (x, top-k)."""
    xn = layer.input_layernorm(x)
    if isinstance(layer.self_attn, GroupedQueryAttention):  # GQA/MHA: its own step, no DSA
        attn, topk = layer.self_attn.step(xn, pos, rotary, cache, context), None
    else:
        attn, topk = attention_step(
            layer.self_attn, xn, pos, rotary, cache, shared_topk, context, inputs=inputs
        )
    h = x + attn
    ffn_in = layer.post_attention_layernorm(h)
    if isinstance(layer.mlp, MoE):
        return h + layer.mlp(ffn_in, balance=False).out, topk
    return h + layer.mlp(ffn_in), topk


def model_step(
    model: CausalLM, ids: torch.Tensor, pos: torch.Tensor, caches: list[LatentCache | KVCache], context: int,
    *, joined: JoinedInputs | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The main model on ids [B,S] at positions pos [B,S], attending over the first `context`
    cache slots, with the layers' input products `joined` where given: (logits [B,S,V], final
    hidden [B,S,d])."""
    rotary = model.model.rotary_emb(pos.reshape(-1))
    x = model.model.embed_tokens(ids)
    topk = None
    inputs = joined.layers if joined is not None else [None] * len(caches)
    for layer, cache, joint in zip(model.model.layers, caches, inputs, strict=True):
        x, topk = layer_step(layer, x, pos, rotary, cache, topk, context, inputs=joint)
    hidden = model.model.norm(x)
    return model.lm_head(hidden), hidden


def mtp_step(
    model: CausalLM, depth: int, hidden: torch.Tensor, next_ids: torch.Tensor, pos: torch.Tensor,
    cache: LatentCache | KVCache, context: int, *, joined: JoinedInputs | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """MTP depth `depth` (its module) at positions pos [B,S] over the first `context` slots:
    hidden h^{depth-1} and the tokens one step ahead [B,S] -> (logits at the last position
    [B,V], h^{depth} [B,S,d]), as `CausalLM.mtp_step` computes them."""
    module = model.mtp_module(depth)
    rotary = model.model.rotary_emb(pos.reshape(-1))
    x = module.combine(model.model.embed_tokens(next_ids), hidden)
    inputs = joined.mtp[depth - 1] if joined is not None else None
    x, _ = layer_step(module.layer, x, pos, rotary, cache, None, context, inputs=inputs)
    return model.lm_head(module.shared_head_norm(x[:, -1])), x
