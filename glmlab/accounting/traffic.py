"""Bytes one decoding step must read from memory: the roofline of decoding (docs/accounting.md,
"Decoding is bound by bytes").

A decoding step does little arithmetic per byte: each weight it uses is read once per step, shared
by the batch's rows, and each cached value it attends to is read once per row. On a GPU its time is
at least these bytes over the memory bandwidth, so the ratio of two steps' bytes, not of their
FLOPs, bounds the ratio of their times. Counted per step of the main model (no MTP), each byte read
once, as a fused kernel would read it (glmlab's own torch paths read some more: dense MLA's scores
pass over [B,H,T] several times, and autocast re-casts fp32 weights):

- `weights`: every parameter the step uses: the LM head's V x d (the embedding table when tied) and
  one embedding row per token; of a MoE layer's routed experts, those the batch's B*k picks reach,
  E * (1 - (1 - k/E)^B) under uniform routing (all of them once B*k is well past E); of a `full` DSA
  layer's indexer, only the key projection and its norm while the context is within index_topk (no
  selection runs);
- `cache`: attention's reads of the cache, per row: every cached latent (MLA) or K and V (GQA/MHA)
  up to the context without DSA or within index_topk keys; with DSA, the index_topk selected
  latents of each layer;
- `indexer`: a `full` DSA layer's scan of its cached keys and its fp32 scores, written once and
  read once by the selection (glmlab/kernels/indexer.py). With `index_dtype: fp8` the keys, cached
  in the cache's dtype, are quantised again every step: read, written as fp8 with a 4-byte scale a
  key, then read by the scoring.
"""

from __future__ import annotations

from glmlab.accounting.memory import cache_values_per_layer, dtype_bytes
from glmlab.accounting.params import attention_params, ffn_params, indexer_params
from glmlab.config import Config, ModelConfig
from glmlab.plan import layer_kinds

SCORE_BYTES = 4 + 4  # one fp32 score a key, written by the scoring, read by the selection
FP8_SCALE_BYTES = 4 + 4  # one fp32 scale a quantised key, written, then read by the scoring


def experts_reached(experts: int, k: int, rows: int) -> float:
    """Expected distinct experts among `rows` tokens' k picks each, routed uniformly."""
    return experts * (1.0 - (1.0 - k / experts) ** rows)


def index_key_bytes(m: ModelConfig, cache_bytes: int) -> int:
    """Bytes a `full` DSA layer's scoring moves per cached key and row: the key (in fp8: read in the
    cache's dtype, written and read as e4m3, with its scale) and its score."""
    if m.index_dtype == "fp8":
        return m.index_head_dim * (cache_bytes + 2) + FP8_SCALE_BYTES + SCORE_BYTES
    return m.index_head_dim * cache_bytes + SCORE_BYTES


def decode_step_bytes(
    cfg: Config | ModelConfig, context: int, batch: int = 1, *, weight_dtype: str = "bf16",
    cache_dtype: str = "bf16",
) -> dict[str, float]:  # fmt: skip
    """Bytes a decoding step of `batch` rows must read, each row attending over `context` cached
    positions: weights, cache, indexer and their total (see the module docstring)."""
    m = cfg.model if isinstance(cfg, Config) else cfg
    wb, cb = dtype_bytes(weight_dtype), dtype_bytes(cache_dtype)
    d = m.hidden_size
    weights = (m.vocab_size * d + d + batch * d) * wb  # the head, the final norm, the embedding rows
    cache = indexer = 0.0
    sparse = m.use_dsa and context > m.index_topk
    keys_only = d * m.index_head_dim + 2 * m.index_head_dim  # wk and k_norm: they fill the key cache
    attention = sum(attention_params(m).values()) + 2 * d  # with the layer's two pre-norms
    for kind in layer_kinds(m):
        ffn = ffn_params(m, kind.moe)
        routed = ffn.pop("routed_experts", 0)
        if routed:
            routed *= experts_reached(m.n_routed_experts, m.num_experts_per_tok, batch) / m.n_routed_experts
        layer = attention + sum(ffn.values()) + routed
        if kind.indexer:
            layer += indexer_params(m) if sparse else keys_only
            if sparse:
                indexer += batch * context * index_key_bytes(m, cb)
        weights += layer * wb
        keys = m.index_topk if sparse and kind.dsa else context
        cache += batch * keys * cache_values_per_layer(m) * cb
    return {"weights": weights, "cache": cache, "indexer": indexer, "total": weights + cache + indexer}
