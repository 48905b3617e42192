"""Memory: weights, gradients, optimiser states, activations saved for backward, and the KV
cache per token (docs/accounting.md, "Memory").

Activations are counted from the tensors glmlab's own modules save for backward (mla.py,
dsa.py, moe.py, layers.py, model.py), in three shapes: per token (widths of saved inputs and
outputs), per (query, key) pair of a score matrix, and per (query, selected key) of DSA's
gather. A test compares the total with `saved_tensors_hooks` on a real step.
"""

from __future__ import annotations

from glmlab.accounting.params import parameter_counts
from glmlab.config import Config, ModelConfig
from glmlab.errors import GlmlabError
from glmlab.plan import (
    Call,
    LayerKind,
    attention_plan,
    layer_kinds,
    mtp_layer_kind,
    scored_pairs,
)

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1}
# bytes per parameter: weights, gradients, optimiser states (AdamW: two fp32 moments, plus an
# fp32 master copy when the weights are bf16)
PRECISIONS = {
    "fp32": (4, 4, 8),
    "bf16-mixed": (2, 2, 12),
}


def dtype_bytes(dtype: str) -> int:
    if dtype not in DTYPE_BYTES:
        raise GlmlabError(f"unknown dtype '{dtype}': choose one of {', '.join(DTYPE_BYTES)}")
    return DTYPE_BYTES[dtype]


def state_bytes(cfg: Config | ModelConfig, precision: str = "fp32", mtp: bool = True) -> dict[str, int]:
    """Weights, gradients and AdamW states of every stored parameter (all experts resident)."""
    m = cfg.model if isinstance(cfg, Config) else cfg
    if precision not in PRECISIONS:
        raise GlmlabError(f"unknown precision '{precision}': choose one of {', '.join(PRECISIONS)}")
    counts = parameter_counts(m)
    P = counts["total_with_mtp"] if mtp else counts["total"]
    w, g, o = PRECISIONS[precision]
    return {"params": P, "weights": P * w, "gradients": P * g, "optimizer": P * o}


def cache_values_per_layer(m: ModelConfig) -> int:
    """Values one layer caches per token for attention: MLA's latent [c_kv; k_pe]
    (kv_lora_rank + qk_rope_head_dim), or GQA/MHA's K and V (2 * kv heads * head_dim)."""
    if m.attention_type == "mla":
        return m.kv_lora_rank + m.qk_rope_head_dim
    return 2 * m.resolved_kv_heads * m.resolved_head_dim


def kv_cache_bytes_per_token(cfg: Config | ModelConfig, dtype: str = "bf16") -> dict[str, int]:
    """Per token of context: the MLA latent [c_kv; k_pe] (`latent`) or GQA/MHA's K and V (`kv`)
    of every main layer, the indexer keys of `full` layers, an expanded per-head K/V cache for
    comparison (one K and V per query head), and MTP's extra layers."""
    m = cfg.model if isinstance(cfg, Config) else cfg
    b = dtype_bytes(dtype)
    L = m.num_hidden_layers
    full = sum(1 for kind in layer_kinds(m) if kind.indexer)
    attention = cache_values_per_layer(m) * L * b
    index_keys = m.index_head_dim * full * b
    per_mtp_layer = (cache_values_per_layer(m) + (m.index_head_dim if m.use_dsa else 0)) * b
    depths = m.num_nextn_predict_layers if m.num_mtp_modules else 0
    mla = m.attention_type == "mla"
    head_widths = m.qk_head_dim + m.v_head_dim if mla else 2 * m.resolved_head_dim
    return {
        "latent": attention if mla else 0,
        "kv": 0 if mla else attention,
        "indexer_keys": index_keys,
        "total": attention + index_keys,
        "expanded": L * m.num_attention_heads * head_widths * b,
        "mtp": per_mtp_layer * depths,
    }


def _attention_activations(m: ModelConfig, kind: LayerKind, call: Call, b: int) -> float:
    """Bytes one MLA block (and its indexer) saves for one sequence, on the plan's path."""
    n, T = call.queries, call.context
    if kind.attention != "mla":
        # GQA/MHA (fused causal SDPA): normed input, rotated q, K and V repeated to H heads, the
        # output (also o_proj's input) and its log-sum-exp
        H = m.num_attention_heads
        return n * (m.hidden_size + 4 * H * m.resolved_head_dim + H) * b
    plan = attention_plan(m, kind, call)
    d, H, r, rope = m.hidden_size, m.num_attention_heads, m.kv_lora_rank, m.qk_rope_head_dim
    qk, v, r_q = m.qk_head_dim, m.v_head_dim, m.q_lora_rank
    # normed input, q latent (norm in/out), kv latent (norm in/out), rotary key, o_proj input
    token = d + (3 * r_q if r_q else 0) + 2 * r + rope + H * v
    pair = 0.0
    extra = 0.0
    K = plan.selected_keys
    if kind.indexer:
        token += 3 * m.index_head_dim + m.index_n_heads * (m.index_head_dim + 1)
        if plan.kernel == "torch":
            pair += 1  # the index scores; the ReLU'd dots cover the pairs each chunk scores
            extra += scored_pairs(plan, n, T) * m.index_n_heads * b
        elif plan.index_loss and plan.sparse:
            extra += n * K * 8  # index_scores_at keeps the picks' indices
        elif plan.index_loss:  # the warm-up KL keeps its gradients: fp32 q, w and k
            extra += n * 4 * (m.index_n_heads * (m.index_head_dim + 1) + m.index_head_dim)
    if plan.path == "sparse":
        # q parts, [q_lat; q_pe], the [c_kv; k_pe] rows, the latent output; per selected key the
        # torch path keeps the row indices and fp32 probabilities (latents re-gathered), the
        # Triton kernel the row indices, the valid mask and a log-sum-exp per (query, head)
        token += H * qk + H * (r + rope) + (r + rope) + H * r
        if plan.kernel == "triton":
            extra += n * K * (8 + 1) + n * 4 * H
        else:
            extra += n * K * (8 + 4 * H)
    elif plan.full_square:
        token += 2 * H * qk + 2 * H * v + r
        pair += 2 * H
    else:  # fused SDPA: q, k, values padded to d_qk, the output and its log-sum-exp
        token += 4 * H * qk + r + H
    return n * token * b + n * T * pair * b + extra


def _ffn_activations(m: ModelConfig, n: int, moe: bool, b: int) -> float:
    d = m.hidden_size
    if not moe:
        return n * (d + 4 * m.intermediate_size) * b
    k, inter = m.num_experts_per_tok, m.moe_intermediate_size
    routed = n * k * (2 * d + 4 * inter + 2)
    shared = n * 4 * inter * m.n_shared_experts
    router = n * (d + 2 * m.n_routed_experts)
    return (routed + shared + router) * b


def activation_bytes(
    cfg: Config | ModelConfig,
    seq_len: int,
    batch: int = 1,
    dtype: str = "fp32",
    mtp: bool = True,
    device: str = "cpu",
) -> dict[str, float]:
    """Bytes saved for backward by one training step's forward (labels given), by part.
    `device` (a type: cpu, cuda) sets how the indexer chunks its scores."""
    m = cfg.model if isinstance(cfg, Config) else cfg
    b = dtype_bytes(dtype)
    d, V, S = m.hidden_size, m.vocab_size, seq_len
    main = Call(S, S, cache=False, labels=True, dsa_dense=False, device=device)
    out = {"layers": 0.0, "mtp": 0.0, "head": 0.0}
    for kind in layer_kinds(m):
        norms = 4 * d * S * b
        out["layers"] += (
            norms + _attention_activations(m, kind, main, b) + _ffn_activations(m, S, kind.moe, b)
        )
    out["head"] = S * (2 * d + V) * b  # final norm, LM-head input, log-softmax of the logits
    depths = m.num_nextn_predict_layers if (mtp and m.num_mtp_modules) else 0
    for depth in range(1, depths + 1):
        n = S - depth
        if n < 2:
            break
        call = Call(n, n, cache=False, labels=True, dsa_dense=False, device=device)
        kind = mtp_layer_kind(m)
        layer = 4 * d * n * b + _attention_activations(m, kind, call, b) + _ffn_activations(m, n, kind.moe, b)
        out["mtp"] += layer + n * (8 * d + V) * b  # enorm, hnorm, eh_proj input, head norm, logits
    return {k: v * batch for k, v in out.items()} | {"total": sum(out.values()) * batch}


def training_memory(
    cfg: Config | ModelConfig,
    seq_len: int,
    batch: int = 1,
    precision: str = "fp32",
    mtp: bool = True,
    activation_dtype: str | None = None,
    device: str = "cpu",
) -> dict[str, float]:
    """Peak of a training step: weights, gradients, optimiser states and saved activations
    (in `activation_dtype`, by default that of the weights: fp32, or bf16 when mixed) on
    `device` (a type: cpu, cuda)."""
    states = state_bytes(cfg, precision, mtp)
    act_dtype = activation_dtype or ("fp32" if precision == "fp32" else "bf16")
    act = activation_bytes(cfg, seq_len, batch, act_dtype, mtp, device)
    total = states["weights"] + states["gradients"] + states["optimizer"] + act["total"]
    return {**states, "activations": act["total"], "activations_by_part": act, "total": total}


def inference_memory(
    cfg: Config | ModelConfig, context: int, batch: int = 1, dtype: str = "bf16"
) -> dict[str, float]:
    """Weights plus the latent cache (and indexer keys) for `batch` sequences of `context` tokens."""
    m = cfg.model if isinstance(cfg, Config) else cfg
    P = parameter_counts(m)["total_with_mtp"]
    kv = kv_cache_bytes_per_token(m, dtype)
    cache = (kv["total"] + kv["mtp"]) * context * batch
    weights = P * dtype_bytes(dtype)
    return {"weights": weights, "kv_cache": cache, "total": weights + cache}
