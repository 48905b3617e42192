"""FLOPs of a training step, a forward pass, a prefill and a decoding step, by layer and by
component, under a named convention (accounting spec; conventions in `conventions.py`).

Every term is written for the tokens of one sequence (batch 1: FLOPs scale with the batch)
as a pair (forward, training step = forward + backward). A multiply-add is 2 FLOPs.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from glmlab.accounting.conventions import Convention, get_convention
from glmlab.accounting.params import main_layer_kinds
from glmlab.chunking import scored_pairs
from glmlab.config import Config, ModelConfig

COMPONENTS = [
    "mla_projections", "core_attention", "indexer_projections", "indexer_scoring", "norms", "router",
    "routed_experts", "shared_experts", "dense_mlp", "mtp_projection", "lm_head",
]  # fmt: skip
MODES = ("train", "forward", "prefill", "decode")

Terms = dict[str, tuple[float, float]]  # component -> (forward, training step)


@dataclass
class Pass:
    """Which tokens one application of a layer sees: `n` queries over `T` keys (the first
    query at key position T - n), with or without a latent cache, with or without labels."""

    n: int
    T: int
    cache: bool
    labels: bool
    fused_sdpa: bool = True  # SDPA runs a fused causal kernel (else the math path: full n x T bmm)
    device: str = "cpu"  # device type: how the indexer chunks its scoring

    @property
    def causal_pairs(self) -> int:
        """(query, key) pairs with key <= query."""
        return self.n * (self.T - self.n) + self.n * (self.n + 1) // 2


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


def attention_pair_flops(m: ModelConfig, form: str) -> int:
    """QK^T and PV per (query, key) pair: expanded 2H(d_qk + d_v), absorbed 2H(2 r_kv + d_rope)."""
    H = m.num_attention_heads
    if form == "expanded":
        return 2 * H * (m.qk_head_dim + m.v_head_dim)
    return 2 * H * (2 * m.kv_lora_rank + m.qk_rope_head_dim)


def sdpa_value_width(m: ModelConfig) -> int:
    """Value width SDPA runs with: mla.py pads v with zeros up to d_qk so fused kernels apply."""
    return max(m.qk_head_dim, m.v_head_dim)


def sdpa_pair_flops(m: ModelConfig) -> tuple[int, int]:
    """A fused SDPA kernel per (query, key) pair: forward QK^T and PV over the padded values;
    backward recomputes QK^T, then dP, dV, dQ, dK."""
    H, qk, v = m.num_attention_heads, m.qk_head_dim, sdpa_value_width(m)
    return 2 * H * (qk + v), 2 * H * (3 * qk + 2 * v)


def gathered_backward_pair_flops(m: ModelConfig) -> int:
    """Backward of dsa.gathered_attention per (query, selected key): dP against the latents
    (r_kv), dQ against [c_kv; k_pe], and one stacked product for the latents' gradient (2x)."""
    R = m.kv_lora_rank + m.qk_rope_head_dim
    return 2 * m.num_attention_heads * (m.kv_lora_rank + 3 * R)


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


def _executed_attention(m: ModelConfig, p: Pass, indexer: bool) -> Terms:
    """What MultiHeadLatentAttention.forward runs (mla.py): the branch taken decides the form
    and the pairs; the indexer scores when the top-k selects (T > k) or its loss runs
    (labels), each chunk of queries against the keys up to the chunk's last query
    (`chunking.score_chunks`), and otherwise only computes its keys."""
    out: Terms = {"mla_projections": _gemm(p.n * mla_projection_flops(m))}
    sparse = m.use_dsa and p.T > m.index_topk
    if indexer:
        scoring = sparse or p.labels
        proj = p.n * indexer_projection_flops(m, scoring)
        out["indexer_projections"] = _gemm(proj, 2.0)  # detached inputs: weight gradients only
        if scoring:
            pairs = scored_pairs(p.n, p.T, m.index_n_heads, p.device)
            out["indexer_scoring"] = _gemm(pairs * indexer_pair_flops(m))
    expanded, absorbed = attention_pair_flops(m, "expanded"), attention_pair_flops(m, "absorbed")
    if p.cache:
        keys = min(m.index_topk, p.T) if sparse else p.T
        out["core_attention"] = _gemm(p.n * keys * absorbed)
    elif sparse and m.dsa_impl == "gather":
        pairs = p.n * min(m.index_topk, p.T)
        out["core_attention"] = (pairs * absorbed, pairs * (absorbed + gathered_backward_pair_flops(m)))
    elif sparse or (p.labels and indexer):  # explicit probabilities over the full n x T scores
        out["core_attention"] = _gemm(p.n * p.T * expanded)
    elif not p.fused_sdpa:  # SDPA's math fallback: two bmm over the full square
        out["core_attention"] = _gemm(p.n * p.T * expanded)
    else:  # a fused causal SDPA kernel skips the masked half
        pairs = p.causal_pairs
        forward, backward = sdpa_pair_flops(m)
        out["core_attention"] = (pairs * forward, pairs * (forward + backward))
    return out


def _convention_attention(m: ModelConfig, conv: Convention, p: Pass, seq: int, indexer: bool) -> Terms:
    """Megatron-LM / Megatron-Bridge arithmetic: average keys per query from the context
    length `seq` (training) or the position (decoding)."""
    out: Terms = {"mla_projections": _gemm(p.n * mla_projection_flops(m))}
    if conv.count_latent_norms:
        out["norms"] = _gemm(p.n * 2 * ((m.q_lora_rank or 0) + m.kv_lora_rank))
    decoding = p.cache and p.n == 1
    if decoding:
        dense_keys = p.T
    elif conv.name == "megatron":
        dense_keys = seq / 2
    else:
        dense_keys = (seq + 1) / 2
    keys = dense_keys
    K = m.index_topk
    if conv.sparse and m.use_dsa:
        if decoding:
            keys = min(K, p.T)
        elif seq > K:
            keys = K - K * (K - 1) / (2 * seq)
    out["core_attention"] = _gemm(p.n * keys * attention_pair_flops(m, conv.attention_form))
    if conv.count_indexer and indexer:
        out["indexer_projections"] = _gemm(p.n * indexer_projection_flops(m), 2.0)
        out["indexer_scoring"] = _gemm(p.n * dense_keys * indexer_pair_flops(m))
    return out


def layer_terms(m: ModelConfig, conv: Convention, p: Pass, seq: int, moe: bool, indexer: bool) -> Terms:
    """One decoder layer: attention (+ indexer on a `full` DSA layer) and its FFN."""
    if conv.executed:
        out = _executed_attention(m, p, indexer)
    else:
        out = _convention_attention(m, conv, p, seq, indexer)
    out.update(ffn_terms(m, p.n, moe, conv))
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
        return {c: out[c] for c in COMPONENTS if out.get(c)}

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


def _kind(m: ModelConfig, moe: bool, indexer: bool) -> str:
    attention = "MLA"
    if m.use_dsa:
        attention += " + indexer" if indexer else " (shared top-k)"
    return f"{attention}, {'MoE' if moe else 'dense'}"


def flops_report(
    cfg: Config | ModelConfig,
    seq_len: int,
    mode: str = "train",
    convention: str = "glmlab",
    mtp: bool = True,
    position: int | None = None,
    attention_form: str | None = None,
    device: str = "cpu",
) -> FlopsReport:
    """FLOPs of one sequence of `seq_len` tokens.

    Modes: `train` (forward + backward of a step with labels: MTP and the indexer loss run),
    `forward` (the forward part of that step), `prefill` (an inference forward over
    `seq_len` tokens into an empty cache, logits for the last token only, no MTP), `decode`
    (one token at `position`, default seq_len - 1, after that many cached tokens; with MTP,
    each depth drafts one token too). `device` matters to the `glmlab` convention only:
    CUDA runs a fused causal SDPA kernel; CPU does too when the (padded) value width equals
    d_qk, else torch falls back to its math path over the full square.
    """
    m = cfg.model if isinstance(cfg, Config) else cfg
    conv = get_convention(convention, attention_form)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    S = seq_len
    dev = torch_device_type(device)
    fused = dev != "cpu" or sdpa_value_width(m) == m.qk_head_dim
    train = mode == "train"
    pick = (lambda t: t[1]) if train else (lambda t: t[0])  # noqa: E731
    depths = m.num_nextn_predict_layers if (mtp and m.num_mtp_modules) else 0
    if mode == "decode":
        pos = S - 1 if position is None else position
        main = Pass(1, pos + 1, cache=True, labels=False, fused_sdpa=fused, device=dev)
        tokens, head_tokens = 1, 1
    else:
        pos = None
        main = Pass(S, S, cache=mode == "prefill", labels=mode != "prefill", fused_sdpa=fused, device=dev)
        tokens, head_tokens = S, (1 if mode == "prefill" else S)
        if mode == "prefill":
            depths = 0
    report = FlopsReport(conv.name, mode, S, pos, bool(depths), tokens)
    d, V = m.hidden_size, m.vocab_size
    for i, (moe, indexer) in enumerate(main_layer_kinds(m)):
        terms = layer_terms(m, conv, main, S, moe, indexer)
        report.rows.append((str(i), _kind(m, moe, indexer), {c: pick(t) for c, t in terms.items()}))
    report.rows.append(("head", "final norm, LM head", {"lm_head": pick(_gemm(head_tokens * 2 * d * V))}))
    mtp_moe = m.mtp_uses_moe if conv.executed else main_layer_kinds(m)[-1][0]
    for depth in range(1, depths + 1):
        if mode == "decode":
            p = main
        elif conv.executed:
            n = S - depth
            if n < 2:
                break
            p = Pass(n, n, cache=False, labels=True, fused_sdpa=fused, device=dev)
        else:
            p = main
        terms = layer_terms(m, conv, p, S, mtp_moe, m.use_dsa)
        terms["mtp_projection"] = _gemm(p.n * 2 * 2 * d * d)
        if conv.count_latent_norms:
            terms["norms"] = _gemm(terms["norms"][0] + p.n * 2 * 3 * d)  # enorm, hnorm, final norm
        terms["lm_head"] = _gemm(p.n * 2 * d * V)
        report.rows.append(
            (f"mtp{depth}", "MTP: " + _kind(m, mtp_moe, m.use_dsa), {c: pick(t) for c, t in terms.items()})
        )
    return report
