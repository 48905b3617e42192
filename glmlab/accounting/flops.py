"""FLOPs of a training step, a forward pass, a prefill and a decoding step, by layer and by
component, under a named convention (docs/accounting.md; conventions in `conventions.py`).

Every term is written for the tokens of one sequence (batch 1: FLOPs scale with the batch)
as a pair (forward, training step = forward + backward). A multiply-add is 2 FLOPs.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace

from glmlab.accounting.conventions import Convention, get_convention
from glmlab.config import Config, ModelConfig
from glmlab.plan import (
    AttentionPlan,
    Call,
    LayerKind,
    attention_plan,
    causal_pairs,
    layer_kinds,
    mtp_layer_kind,
    scored_pairs,
)

FLOP_COMPONENTS = [
    "mla_projections", "gqa_projections", "core_attention", "indexer_projections", "indexer_scoring",
    "norms", "router", "routed_experts", "shared_experts", "dense_mlp", "mtp_projection", "lm_head",
]  # fmt: skip
MODES = ("train", "forward", "prefill", "decode")

Terms = dict[str, tuple[float, float]]  # component -> (forward, training step)


def _gemm(flops: float, times: float = 3.0) -> tuple[float, float]:
    """A GEMM whose inputs and weights both take gradients: training = 3 x forward."""
    return flops, times * flops


# ---- one module at a time, mirroring glmlab/model/ ----------------------------------------


def mla_projection_flops(m: ModelConfig) -> int:
    """Per token: q (through the query latent when there is one), kv_a, kv_b (as the expanded
    K/V of a token or, absorbed, W_UK and W_UV applied to its query: the same count), o."""
    d, H = m.hidden_size, m.num_attention_heads
    q = d * H * m.qk_head_dim if m.q_lora_rank is None else m.q_lora_rank * (d + H * m.qk_head_dim)
    kv = d * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank * H * (m.qk_nope_head_dim + m.v_head_dim)
    return 2 * (q + kv + H * m.v_head_dim * d)


def gqa_projection_flops(m: ModelConfig) -> int:
    """Per token, GQA/MHA (glmlab/model/gqa.py): q (H heads), k and v (kv heads each), o."""
    H, kv, hd = m.num_attention_heads, m.resolved_kv_heads, m.resolved_head_dim
    return 2 * m.hidden_size * hd * (2 * H + 2 * kv)


def projection_terms(m: ModelConfig, n: float) -> Terms:
    """The attention block's projections for n tokens, named by attention type."""
    if m.attention_type == "mla":
        return {"mla_projections": _gemm(n * mla_projection_flops(m))}
    return {"gqa_projections": _gemm(n * gqa_projection_flops(m))}


def attention_pair_flops(m: ModelConfig, form: str) -> int:
    """QK^T and PV per (query, key) pair: expanded 2H(d_qk + d_v), absorbed 2H(2 r_kv + d_rope);
    GQA/MHA has one form, 2H(2 head_dim) (each query head reads its group's K/V head)."""
    H = m.num_attention_heads
    if m.attention_type != "mla":
        return 2 * H * 2 * m.resolved_head_dim
    if form == "expanded":
        return 2 * H * (m.qk_head_dim + m.v_head_dim)
    return 2 * H * (2 * m.kv_lora_rank + m.qk_rope_head_dim)


def sdpa_pair_flops(m: ModelConfig) -> tuple[int, int]:
    """A fused SDPA kernel per (query, key) pair: forward QK^T and PV over the values padded to
    d_qk (mla.py pads them so fused kernels apply; GQA's are all head_dim wide); backward recomputes
    QK^T, then dP, dV, dQ, dK."""
    H, qk, v = m.num_attention_heads, m.qk_head_dim, max(m.qk_head_dim, m.v_head_dim)
    if m.attention_type != "mla":
        qk = v = m.resolved_head_dim
    return 2 * H * (qk + v), 2 * H * (3 * qk + 2 * v)


def gathered_backward_pair_flops(m: ModelConfig) -> int:
    """Backward of dsa.gathered_attention per (query, selected key): dP against the latents
    (r_kv), dQ against [c_kv; k_pe], and one stacked product for the latents' gradient (2x)."""
    R = m.kv_lora_rank + m.qk_rope_head_dim
    return 2 * m.num_attention_heads * (m.kv_lora_rank + 3 * R)


def triton_sparse_backward_pair_flops(m: ModelConfig, *, recompute: bool = True) -> int:
    """Backward of the Triton sparse MLA kernel per (query, selected key): it recomputes q.k (R)
    unless the forward kept the probabilities, then dP (r), dQ (R) and the latents' gradient
    dS^T q (R) + P^T dO (r)."""
    R = m.kv_lora_rank + m.qk_rope_head_dim
    return 2 * m.num_attention_heads * ((3 if recompute else 2) * R + 2 * m.kv_lora_rank)


def _indexer_scoring(m: ModelConfig, plan: AttentionPlan, n: int, T: int) -> tuple[float, float]:
    """The indexer's scoring and, on the Triton path, its loss's own work. Torch scores [S,T] in
    chunks, with gradients; Triton selects without gradient, then scores the picked keys again
    with gradient for the KL, or (dense warm-up) builds the KL target per chunk from the absorbed
    queries (no gradient) while scoring every visible key with gradient."""
    pair = indexer_pair_flops(m)
    scored = scored_pairs(plan, n, T) * pair
    if plan.kernel == "torch":
        return _gemm(scored)
    if plan.sparse:
        picked = n * plan.selected_keys * pair if plan.index_loss else 0
        return scored + picked, scored + 3 * picked
    H, r = m.num_attention_heads, m.kv_lora_rank
    target_pairs = sum((b - a) * end for a, b, end in plan.kl_chunks)
    target = target_pairs * 2 * H * (r + m.qk_rope_head_dim) + n * 2 * H * m.qk_nope_head_dim * r
    return scored + target, 3 * scored + target


def indexer_projection_flops(m: ModelConfig, scoring: bool = True) -> int:
    """Per token: wk from the normed input (the keys, always computed) and, when the indexer
    scores, wq_b from the query latent and weights_proj from the normed input."""
    d, H_I, d_I = m.hidden_size, m.index_n_heads, m.index_head_dim
    query = (m.q_lora_rank or d) * H_I * d_I + d * H_I
    return 2 * (d * d_I + (query if scoring else 0))


def indexer_pair_flops(m: ModelConfig) -> int:
    """Per scored (query, key) pair: H_I dot products of d_I plus the per-head weighting."""
    return 2 * m.index_n_heads * (m.index_head_dim + 1)


def ffn_terms(m: ModelConfig, n: float, moe: bool, conv: Convention) -> Terms:
    d = m.hidden_size
    if not moe:
        return {"dense_mlp": _gemm(n * 6 * d * m.intermediate_size)}
    inter = m.moe_intermediate_size
    out = {
        "routed_experts": _gemm(n * 6 * d * inter * m.num_experts_per_tok),
        "shared_experts": _gemm(n * 6 * d * inter * m.n_shared_experts),
    }
    if conv.count_router:
        out["router"] = _gemm(n * 2 * d * m.n_routed_experts)
    return out


def _executed_attention(m: ModelConfig, kind: LayerKind, call: Call) -> Terms:
    """What the attention module's forward runs for this call: the path and the indexer's work
    both come from `glmlab.plan.attention_plan`, the plan the model dispatches on. GQA/MHA runs
    the `dense` (fused causal SDPA) or `cached` path, with its own pair count."""
    plan = attention_plan(m, kind, call)
    n, T = call.queries, call.context
    out: Terms = projection_terms(m, n)
    if kind.indexer:
        proj = n * indexer_projection_flops(m, plan.score)
        out["indexer_projections"] = _gemm(proj, 2.0)  # detached inputs: weight gradients only
        if plan.score:
            out["indexer_scoring"] = _indexer_scoring(m, plan, n, T)
    expanded, absorbed = attention_pair_flops(m, "expanded"), attention_pair_flops(m, "absorbed")
    if plan.path == "cached":
        keys = plan.selected_keys if plan.sparse else T
        out["core_attention"] = _gemm(n * keys * absorbed)
    elif plan.path == "sparse":
        pairs = n * plan.selected_keys
        triton = plan.kernel == "triton"
        if triton:
            backward = triton_sparse_backward_pair_flops(m, recompute=not plan.keep_probs)
        else:
            backward = gathered_backward_pair_flops(m)
        out["core_attention"] = (pairs * absorbed, pairs * (absorbed + backward))
    elif plan.full_square:
        out["core_attention"] = _gemm(n * T * expanded)
    else:  # a fused causal kernel (SDPA, or Flex under the top-k mask) skips the masked half
        forward, backward = sdpa_pair_flops(m)
        pairs = causal_pairs(n, T)
        # Flex's key mass for the indexer's KL: QK^T again per chunk of queries, no gradient
        mass_pairs = sum((b - a) * end for a, b, end in plan.kl_chunks) if plan.flex else 0
        mass = mass_pairs * 2 * m.num_attention_heads * m.qk_head_dim
        out["core_attention"] = (pairs * forward + mass, pairs * (forward + backward) + mass)
    return out


def _convention_attention(m: ModelConfig, conv: Convention, call: Call, seq: int, indexer: bool) -> Terms:
    """Megatron-LM / Megatron-Bridge arithmetic: average keys per query from the context
    length `seq` (training) or the position (decoding); dense during DSA's warm-up."""
    n = call.queries
    out: Terms = projection_terms(m, n)
    if conv.count_latent_norms and m.attention_type == "mla":
        out["norms"] = _gemm(n * 2 * ((m.q_lora_rank or 0) + m.kv_lora_rank))
    decoding = call.cache and n == 1
    if decoding:
        dense_keys = call.context
    elif conv.name == "megatron":
        dense_keys = seq / 2
    else:
        dense_keys = (seq + 1) / 2
    keys = dense_keys
    K = m.index_topk
    if conv.sparse and m.use_dsa and not call.dsa_dense:
        if decoding:
            keys = min(K, call.context)
        elif seq > K:
            keys = K - K * (K - 1) / (2 * seq)
    out["core_attention"] = _gemm(n * keys * attention_pair_flops(m, conv.attention_form))
    if conv.count_indexer and indexer:
        out["indexer_projections"] = _gemm(n * indexer_projection_flops(m), 2.0)
        out["indexer_scoring"] = _gemm(n * dense_keys * indexer_pair_flops(m))
    return out


def layer_terms(m: ModelConfig, conv: Convention, call: Call, seq: int, kind: LayerKind) -> Terms:
    """One decoder layer: attention (+ indexer on a `full` DSA layer) and its FFN."""
    if conv.executed:
        out = _executed_attention(m, kind, call)
    else:
        out = _convention_attention(m, conv, call, seq, kind.indexer)
    out.update(ffn_terms(m, call.queries, kind.moe, conv))
    return out


# ---- a whole pass ---------------------------------------------------------------------------


@dataclass
class FlopsReport:
    """FLOPs of one pass of one sequence, by layer (rows) and component."""

    convention: str
    mode: str
    seq_len: int
    position: int | None
    mtp: bool
    tokens: int  # what `per_token` divides by
    rows: list[tuple[str, str, dict[str, float]]] = field(default_factory=list)  # (layer, kind, flops)

    @property
    def total(self) -> float:
        return sum(sum(f.values()) for _, _, f in self.rows)

    @property
    def per_token(self) -> float:
        return self.total / self.tokens

    def by_component(self) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for _, _, flops in self.rows:
            for comp, n in flops.items():
                out[comp] += n
        return {c: out[c] for c in FLOP_COMPONENTS if out.get(c)}

    def to_dict(self) -> dict:
        return {
            "convention": self.convention, "mode": self.mode, "seq_len": self.seq_len,
            "position": self.position, "mtp": self.mtp, "total": self.total, "per_token": self.per_token,
            "by_component_per_token": {c: n / self.tokens for c, n in self.by_component().items()},
            "by_layer_per_token": [
                {"layer": label, "kind": kind, "flops": sum(f.values()) / self.tokens,
                 "by_component": {c: n / self.tokens for c, n in f.items()}}
                for label, kind, f in self.rows
            ],
        }  # fmt: skip


def torch_device_type(device: str) -> str:
    """'cuda:1' -> 'cuda'."""
    return str(device).split(":")[0]


def flops_report(
    cfg: Config | ModelConfig,
    seq_len: int,
    mode: str = "train",
    convention: str = "glmlab",
    mtp: bool = True,
    position: int | None = None,
    attention_form: str | None = None,
    device: str = "cpu",
    *,
    dsa_dense: bool = False,
    labels: bool = True,
) -> FlopsReport:
    """FLOPs of one sequence of `seq_len` tokens.

    Modes: `train` (forward + backward of a step with labels: MTP and the indexer loss run),
    `forward` (the forward part of that step), `prefill` (an inference forward over
    `seq_len` tokens into an empty cache, logits for the last token only, no MTP), `decode`
    (one token at `position`, default seq_len - 1, after that many cached tokens; with MTP,
    each depth drafts one token too). `device` matters to the `glmlab` convention only: it
    decides the plan's kernels and chunks. `dsa_dense` counts DSA's dense warm-up stage;
    `labels=False` a train or forward step without labels (no indexer KL: a plain cross-entropy
    on the logits, as benchmarks/bench_gpu_train.py runs against transformers).
    """
    m = cfg.model if isinstance(cfg, Config) else cfg
    conv = get_convention(convention, attention_form)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    S = seq_len
    dev = torch_device_type(device)
    train = mode == "train"
    pick = (lambda t: t[1]) if train else (lambda t: t[0])  # noqa: E731
    depths = m.num_nextn_predict_layers if (mtp and m.num_mtp_modules) else 0
    if mode == "decode":
        pos = S - 1 if position is None else position
        main = Call(1, pos + 1, cache=True, labels=False, dsa_dense=dsa_dense, device=dev)
        tokens, head_tokens = 1, 1
    else:
        pos = None
        main = Call(S, S, cache=mode == "prefill", labels=labels and mode != "prefill", dsa_dense=dsa_dense,
                    device=dev)  # fmt: skip
        tokens, head_tokens = S, (1 if mode == "prefill" else S)
        if mode == "prefill":
            depths = 0
    report = FlopsReport(conv.name, mode, S, pos, bool(depths), tokens)
    d, V = m.hidden_size, m.vocab_size
    kinds = layer_kinds(m)
    for i, kind in enumerate(kinds):
        terms = layer_terms(m, conv, main, S, kind)
        report.rows.append((str(i), kind.label, {c: pick(t) for c, t in terms.items()}))
    report.rows.append(("head", "final norm, LM head", {"lm_head": pick(_gemm(head_tokens * 2 * d * V))}))
    # Megatron's conventions count an MTP layer like the last main layer.
    mtp_kind = mtp_layer_kind(m) if conv.executed else replace(kinds[-1], indexer=m.use_dsa)
    for depth in range(1, depths + 1):
        call = main
        if mode != "decode" and conv.executed:
            n = S - depth
            if n < 2:
                break
            call = Call(n, n, cache=False, labels=labels, dsa_dense=dsa_dense, device=dev)
        terms = layer_terms(m, conv, call, S, mtp_kind)
        terms["mtp_projection"] = _gemm(call.queries * 2 * 2 * d * d)
        if conv.count_latent_norms:
            terms["norms"] = _gemm(terms["norms"][0] + call.queries * 2 * 3 * d)  # enorm, hnorm, final norm
        terms["lm_head"] = _gemm(call.queries * 2 * d * V)
        report.rows.append((f"mtp{depth}", "MTP: " + mtp_kind.label, {c: pick(t) for c, t in terms.items()}))
    return report
