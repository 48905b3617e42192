"""Analytic parameter counts by component, total and active per token (docs/accounting.md).

Mirrors `glmlab.build.parameter_report` key for key without building a model, so the
calculator can size the full GLM-5 instantly; a test checks the two agree on every preset.
"""

from __future__ import annotations

from collections import defaultdict

from glmlab.config import ModelConfig
from glmlab.plan import layer_kinds, mtp_layer_kind

PARAM_COMPONENTS = [
    "embedding", "lm_head", "attention", "indexer", "norms", "dense_mlp", "router",
    "routed_experts", "shared_experts", "mtp_projection",
]  # fmt: skip


def attention_params(m: ModelConfig) -> dict[str, int]:
    """One attention block: MLA's projections ('attention') and its two latent norms ('norms'),
    or GQA/MHA's q, k, v and o projections (glmlab/model/gqa.py)."""
    d, H, bias = m.hidden_size, m.num_attention_heads, int(m.attention_bias)
    if m.attention_type != "mla":
        q_width, kv_width = H * m.resolved_head_dim, m.resolved_kv_heads * m.resolved_head_dim
        qkv = d * (q_width + 2 * kv_width) + bias * (q_width + 2 * kv_width)
        return {"attention": qkv + q_width * d + bias * d, "norms": 0}
    r_kv, rope = m.kv_lora_rank, m.qk_rope_head_dim
    if m.q_lora_rank is None:
        q, q_norm = d * H * m.qk_head_dim, 0
    else:
        q = d * m.q_lora_rank + bias * m.q_lora_rank + m.q_lora_rank * H * m.qk_head_dim
        q_norm = m.q_lora_rank
    kv = d * (r_kv + rope) + bias * (r_kv + rope) + r_kv * H * (m.qk_nope_head_dim + m.v_head_dim)
    out = H * m.v_head_dim * d + bias * d
    return {"attention": q + kv + out, "norms": q_norm + r_kv}


def indexer_params(m: ModelConfig) -> int:
    """The lightning indexer of a `full` DSA layer: wq_b, wk, k_norm (weight and bias), weights_proj."""
    d, H_I, d_I = m.hidden_size, m.index_n_heads, m.index_head_dim
    return (m.q_lora_rank or d) * H_I * d_I + d * d_I + 2 * d_I + d * H_I


def joined_input_params(m: ModelConfig) -> int:
    """The copies decoding makes of each MLA layer's input products, joined into one product
    (glmlab/generate/joined.py): q_a_proj (q_proj without a query latent), kv_a_proj_with_mqa, and an
    indexer's wk and weights_proj, with their biases (zeros for the indexer's, which have none, where
    MLA's have them); MTP modules included."""
    if m.attention_type != "mla":
        return 0
    d, bias = m.hidden_size, int(m.attention_bias)
    q = m.q_lora_rank or m.num_attention_heads * m.qk_head_dim
    mla = (d + bias) * (q + m.kv_lora_rank + m.qk_rope_head_dim)
    index = (d + bias) * (m.index_head_dim + m.index_n_heads)
    kinds = [*layer_kinds(m), *[mtp_layer_kind(m)] * m.num_mtp_modules]
    return sum(mla + index * kind.indexer for kind in kinds)


def ffn_params(m: ModelConfig, moe: bool) -> dict[str, int]:
    """A dense SwiGLU MLP, or router (+ selection bias), routed and shared experts."""
    d = m.hidden_size
    if not moe:
        return {"dense_mlp": 3 * d * m.intermediate_size}
    E, inter = m.n_routed_experts, m.moe_intermediate_size
    return {
        "router": E * d + E,
        "routed_experts": E * 3 * d * inter,
        "shared_experts": 3 * d * m.n_shared_experts * inter,
    }


def layer_params(m: ModelConfig, moe: bool, indexer: bool) -> dict[str, int]:
    """One decoder layer by component: its two pre-norms, MLA, the indexer if any, the FFN."""
    out: dict[str, int] = defaultdict(int)
    for comp, n in attention_params(m).items():
        out[comp] += n
    out["norms"] += 2 * m.hidden_size
    if indexer:
        out["indexer"] += indexer_params(m)
    for comp, n in ffn_params(m, moe).items():
        out[comp] += n
    return dict(out)


def parameter_counts(m: ModelConfig) -> dict:
    """The same report as `build.parameter_report`, computed from the config alone."""
    d, V = m.hidden_size, m.vocab_size
    main: dict[str, int] = defaultdict(int)
    main["embedding"] = V * d
    if not m.tie_word_embeddings:
        main["lm_head"] = V * d
    main["norms"] += d  # final norm
    for kind in layer_kinds(m):
        for comp, n in layer_params(m, kind.moe, kind.indexer).items():
            main[comp] += n
    mtp: dict[str, int] = defaultdict(int)
    mtp_kind = mtp_layer_kind(m)
    for _ in range(m.num_mtp_modules):
        mtp["norms"] += 3 * d  # enorm, hnorm, shared_head_norm
        mtp["mtp_projection"] += 2 * d * d
        for comp, n in layer_params(m, mtp_kind.moe, mtp_kind.indexer).items():
            mtp[comp] += n
    return summarize(main, mtp, m)


def summarize(main: dict[str, int], mtp: dict[str, int], m: ModelConfig) -> dict:
    """Totals from per-component counts of the main model and the MTP modules. `active` is per
    token: all but the (E - k) routed experts a token skips; embedding and LM head included."""
    total = sum(main.values())
    routed_active = round(main["routed_experts"] * m.num_experts_per_tok / m.n_routed_experts)
    active = total - main["routed_experts"] + routed_active
    head = main["embedding"] + (0 if m.tie_word_embeddings else main["lm_head"])
    return {
        "total": total,
        "active": active,
        "active_non_embedding": active - head,
        "total_with_mtp": total + sum(mtp.values()),
        "mtp": sum(mtp.values()),
        "by_component": {c: main[c] for c in PARAM_COMPONENTS if main[c]},
        "active_by_component": {
            c: (routed_active if c == "routed_experts" else main[c]) for c in PARAM_COMPONENTS if main[c]
        },
        "mtp_by_component": {c: mtp[c] for c in PARAM_COMPONENTS if mtp[c]},
    }
