"""Bytes one decoding step reads from memory: the roofline of decoding (docs/accounting.md,
"Decoding is bound by bytes").

A decoding step does little arithmetic per byte: each weight it uses is read once per step, shared
by the batch's rows, and each cached value it attends to is read once per row. On a GPU its time is
close to these bytes over the memory bandwidth, so the ratio of two steps' bytes, not of their
FLOPs, predicts the ratio of their times. Counted per step of the main model (no MTP):

- `weights`: every parameter but the embedding table, of which the batch reads one row per token;
  of a MoE layer's routed experts, those the batch's B*k picks reach, E * (1 - (1 - k/E)^B) under
  uniform routing (all of them once B*k is well past E);
- `cache`: attention's reads of the cache, per row: every cached latent (MLA) or K and V (GQA/MHA)
  up to the context without DSA or within index_topk keys; with DSA, the index_topk selected
  latents of each layer;
- `indexer`: a `full` DSA layer's scan of its cached keys (`index_dtype`: one byte a value in fp8)
  and its fp32 scores, written once and read once by the selection (glmlab/kernels/indexer.py).
"""

from __future__ import annotations

from glmlab.accounting.memory import cache_values_per_layer, dtype_bytes
from glmlab.accounting.params import attention_params, ffn_params, indexer_params
from glmlab.config import Config, ModelConfig
from glmlab.plan import layer_kinds

SCORE_BYTES = 4 + 4  # one fp32 score a key, written by the scoring, read by the selection


def experts_reached(experts: int, k: int, rows: int) -> float:
    """Expected distinct experts among `rows` tokens' k picks each, routed uniformly."""
    return experts * (1.0 - (1.0 - k / experts) ** rows)


def decode_step_bytes(
    cfg: Config | ModelConfig, context: int, batch: int = 1, *, weight_dtype: str = "bf16",
    cache_dtype: str = "bf16",
) -> dict[str, float]:  # fmt: skip
    """Bytes a decoding step of `batch` rows reads, each row attending over `context` cached
    positions: weights, cache, indexer and their total (see the module docstring)."""
    m = cfg.model if isinstance(cfg, Config) else cfg
    wb, cb = dtype_bytes(weight_dtype), dtype_bytes(cache_dtype)
    ib = 1 if m.index_dtype == "fp8" else cb
    d = m.hidden_size
    weights = ((0 if m.tie_word_embeddings else m.vocab_size) * d + d + batch * d) * wb  # head, norm, rows
    cache = indexer = 0.0
    sparse = m.use_dsa and context > m.index_topk
    attention = sum(attention_params(m).values()) + 2 * d  # with the layer's two pre-norms
    for kind in layer_kinds(m):
        ffn = ffn_params(m, kind.moe)
        routed = ffn.pop("routed_experts", 0)
        reached = experts_reached(m.n_routed_experts, m.num_experts_per_tok, batch) if routed else 0.0
        layer = attention + sum(ffn.values()) + routed * reached / max(m.n_routed_experts, 1)
        if kind.indexer:
            layer += indexer_params(m)
            if sparse:
                indexer += batch * context * (m.index_head_dim * ib + SCORE_BYTES)
        weights += layer * wb
        keys = m.index_topk if sparse and kind.dsa else context
        cache += batch * keys * cache_values_per_layer(m) * cb
    return {"weights": weights, "cache": cache, "indexer": indexer, "total": weights + cache + indexer}
