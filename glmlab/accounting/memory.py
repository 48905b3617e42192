"""Memory: weights, gradients, optimiser states, activations saved for backward, and the KV
cache per token (docs/accounting.md, "Memory").

Activations are counted from the tensors glmlab's own modules save for backward (mla.py,
dsa.py, moe.py, layers.py, model.py), in three shapes: per token (widths of saved inputs and
outputs), per (query, key) pair of a score matrix, and per (query, selected key) of DSA's
gather, each in the dtype it has under the step's precision (`StepDtypes`): fp32, bf16, or
under autocast bf16 products beside fp32 norms, probabilities, losses and residual stream, plus
the bf16 copies autocast makes of fp32 inputs and weights. Tests compare the total with
`saved_tensors_hooks` on real steps in every precision (tests/test_memory_precision.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from glmlab.accounting.params import attention_params, ffn_params, joined_input_params, parameter_counts
from glmlab.config import Config, ModelConfig
from glmlab.errors import GlmlabError
from glmlab.plan import (
    SPARSE_BACKWARD_BYTES,
    AttentionPlan,
    Call,
    LayerKind,
    attention_plan,
    layer_kinds,
    mtp_layer_kind,
    scored_pairs,
)

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1}
# bytes per parameter of weights, gradients and AdamW's two moments, by train.precision as glmlab
# trains: bf16-mixed keeps fp32 weights (its master copy) and casts them per product; bf16 stores
# all three in bf16
PRECISION_BYTES = {"fp32": (4, 4, 8), "bf16-mixed": (4, 4, 8), "bf16": (2, 2, 4)}
# each expert's rows in the GPU's grouped-GEMM buffer start at a multiple of this (moe.py)
GROUP_ALIGN = 8
# the grouped GEMMs take widths that are multiples of this; experts are zero-padded to it (moe.py)
WIDTH_ALIGN = 8


@dataclass(frozen=True)
class StepDtypes:
    """Bytes per value of the tensors a training step saves (docs/accounting.md, "Memory"):
    `weights` for parameters, gradients, the residual stream and every norm's output; `compute`
    for the inputs and outputs of matrix products; `autocast`: each matrix product casts its fp32
    operands to bf16, a fresh copy for each product that reads them (cached for weights)."""

    weights: int
    compute: int
    autocast: bool

    def operand(self, width: int, readers: int, element: int) -> int:
        """Bytes per token that `readers` matrix products keep of one input `width` values wide
        with `element` bytes each: the input itself, or under autocast a bf16 copy per reader."""
        if self.autocast and element == 4:
            return readers * width * 2
        return width * element

    def norm(self, width: int, element: int) -> int:
        """Bytes per token an RMSNorm keeps of an input with `element` bytes per value: the fp32
        input (or its normalised values) and the inverse RMS; off the all-fp32 path layers.py
        normalises an fp32 copy and also keeps the normalised values in the input's dtype."""
        return width * 4 + 4 + (width * 2 if element == 2 or self.weights == 2 else 0)

    def copies(self, params: int) -> int:
        """Bytes of the bf16 copies autocast keeps of `params` fp32 weights whose products need
        them for backward (autocast caches one copy per weight for the whole forward)."""
        return 2 * params if self.autocast and self.weights == 4 else 0

    @property
    def scores(self) -> int:
        """The torch indexer's dots and scores: products of fp32 q and keys, bf16 under autocast."""
        return 2 if self.autocast else 4


def _check_precision(precision: str) -> None:
    if precision not in PRECISION_BYTES:
        raise GlmlabError(f"unknown precision '{precision}': choose one of {', '.join(PRECISION_BYTES)}")


def step_dtypes(precision: str, device: str) -> StepDtypes:
    """`train.precision` on `device` (a type) as glmlab.device.autocast applies it: bf16-mixed
    autocasts on a GPU only (on the CPU it trains in fp32); bf16 has bf16 weights, no autocast."""
    _check_precision(precision)
    if precision == "bf16":
        return StepDtypes(2, 2, False)
    if precision == "bf16-mixed" and device == "cuda":
        return StepDtypes(4, 2, True)
    return StepDtypes(4, 4, False)


def dtype_bytes(dtype: str) -> int:
    if dtype not in DTYPE_BYTES:
        raise GlmlabError(f"unknown dtype '{dtype}': choose one of {', '.join(DTYPE_BYTES)}")
    return DTYPE_BYTES[dtype]


def state_bytes(cfg: Config | ModelConfig, precision: str = "fp32", mtp: bool = True) -> dict[str, int]:
    """Weights, gradients and AdamW states of every stored parameter (all experts resident), in
    the dtypes `precision` (a train.precision) stores them."""
    m = cfg.model if isinstance(cfg, Config) else cfg
    _check_precision(precision)
    counts = parameter_counts(m)
    P = counts["total_with_mtp"] if mtp else counts["total"]
    w, g, o = PRECISION_BYTES[precision]
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


def _indexer(m: ModelConfig, plan: AttentionPlan, n: int, T: int, dt: StepDtypes, B: int) -> float:
    """Bytes the lightning indexer saves for its KL loss in one step (its inputs aside)."""
    dI, HI, K, s = m.index_head_dim, m.index_n_heads, plan.selected_keys, dt.scores
    ln = 4 if dt.autocast else dt.compute  # k_norm, a LayerNorm: fp32 under a GPU's autocast
    seq = n * (dI + 2) * ln
    step = 0.0
    if plan.kernel == "torch":
        # fp32 q and keys (under autocast each chunk's product keeps its own bf16 copies), the
        # head weights, the ReLU'd dots of every scored pair, and the causal mask of the scores
        keys = sum(end for _, _, end in plan.score_chunks) * dI * 2 if dt.autocast else T * dI * 4
        seq += keys + n * HI * (dI + 1) * s + scored_pairs(plan, n, T) * HI * s
        step += n * T
        if plan.sparse:  # gathering the picks keeps every score and the picks' indices
            seq += n * T * s + n * K * 8
        elif plan.index_loss:  # the dense KL: fp32 log-softmax and target, a bool mask
            seq += n * T * 9
    else:
        seq += n * (dI * dt.compute + HI * dI * dt.compute + HI * 4)
        if plan.index_loss and plan.sparse:
            seq += n * K * 8  # index_scores_at keeps the picks' indices
        elif plan.index_loss:  # the warm-up KL keeps its gradients: fp32 q, w and k
            seq += n * 4 * (HI * (dI + 1) + dI)
    if plan.index_loss and plan.sparse:
        seq += n * K * 10  # the KL over the picks: fp32 log-softmax and target, two bool masks
    return seq * B + step


def _mla_activations(m: ModelConfig, kind: LayerKind, call: Call, dt: StepDtypes, B: int) -> float:
    """Bytes one MLA block (and its indexer) saves in one step of B sequences, on the plan's
    path, the copies autocast makes of its fp32 inputs included."""
    plan = attention_plan(m, kind, call)
    n, T = call.queries, call.context
    d, H, r, rope = m.hidden_size, m.num_attention_heads, m.kv_lora_rank, m.qk_rope_head_dim
    qk, v, r_q, K = m.qk_head_dim, m.v_head_dim, m.q_lora_rank, plan.selected_keys
    R, w, c = r + rope, dt.weights, dt.compute
    index = kind.indexer and plan.index_loss
    # the normed input read by q_a_proj (or q_proj), kv_a_proj and the indexer's wk and
    # weights_proj (and wq_b without a q latent); the latent norms; the q latent read by q_b_proj
    # and wq_b; o_proj's input
    token = dt.operand(d, 2 + (3 if index and not r_q else 2 if index else 0), w)
    if r_q:
        token += dt.norm(r_q, c) + dt.operand(r_q, 2 if index else 1, w)
    token += dt.norm(r, c) + H * v * c
    seq = 0.0
    step = _indexer(m, plan, n, T, dt, B) if index else 0.0
    # the weights' copies (the indexer reads detached inputs, so its weights need none)
    step += dt.copies(attention_params(m)["attention"])
    if plan.path == "sparse" and plan.kernel == "torch":
        # q (W_UK's per-head product reads q_nope as a view of it), the absorbed queries,
        # [c_kv; k_pe], the picks' rows and fp32 probabilities, the latent output
        token += H * qk * c + H * R * c + R * c + K * (8 + 4 * H) + H * r * c
    elif plan.path == "sparse":  # Triton: the rows, the valid mask and a log-sum-exp per head, and
        # the probabilities when the forward keeps them
        token += H * qk * c + H * R * c + R * c + H * r * c + K * 9 + 4 * H
        token += H * K * c if plan.keep_probs else 0
    else:
        token += dt.operand(r, 1, w)  # kv_b_proj reads c_kv
        if plan.probs:
            # explicit probabilities: q, k and v copied for their products, fp32 probabilities and
            # their copy in the compute dtype (under a top-k mask, the mask too)
            token += 2 * H * qk * c + H * v * c
            seq += n * T * (H * (4 + (c if c == 2 else 0)) + (1 if plan.path == "masked" else 0))
        else:  # SDPA or Flex: q, k, v padded to d_qk, the output, an fp32 log-sum-exp, and a top-k
            token += 4 * H * qk * c + 4 * H  # mask: SDPA's as a bias, Flex's the boolean one
            seq += n * T * (1 if plan.flex else c) if plan.path == "masked" else 0
    return (n * token + seq) * B + step


def _gqa_activations(m: ModelConfig, n: int, dt: StepDtypes, B: int) -> float:
    """GQA/MHA (fused causal SDPA): the normed input read by q, k and v projections, rotated q,
    K and V repeated to H heads, the output (also o_proj's input) and its fp32 log-sum-exp."""
    H, hd = m.num_attention_heads, m.resolved_head_dim
    token = dt.operand(m.hidden_size, 3, dt.weights) + 4 * H * hd * dt.compute + 4 * H
    return n * B * token + dt.copies(attention_params(m)["attention"])


def grouped_width(m: ModelConfig, dt: StepDtypes, device: str) -> int | None:
    """The experts' width in their grouped bf16 products (CUDA, 16-byte rows; glmlab/model/moe.py
    zero-pads the width to a multiple of WIDTH_ALIGN), or None where they run one product per expert."""
    if device != "cuda" or dt.compute != 2 or m.hidden_size % WIDTH_ALIGN:
        return None
    return m.moe_intermediate_size + (-m.moe_intermediate_size % WIDTH_ALIGN)


def routed_activation_bytes(m: ModelConfig, pairs: float, dt: StepDtypes, device: str) -> float:
    """Bytes the routed experts save for `pairs` (token, expert) slots in one step (expert
    parallelism's padded dispatch passes every received row's k slots: glmlab/plan's EP memory)."""
    d, w, c, inter = m.hidden_size, dt.weights, dt.compute, m.moe_intermediate_size
    width = grouped_width(m, dt, device)
    if width is not None:
        # grouped GEMMs over an expert-sorted buffer padded per expert: per row the sorted input,
        # gate/up output, SwiGLU product (one kernel: glmlab/kernels/swiglu.py keeps no SiLU), output
        # (for the gates' gradient) and the row's pair; per pair its row (the gates are the router's)
        rows = pairs + m.n_routed_experts * (GROUP_ALIGN - 1)
        return rows * (c * (2 * d + 3 * width) + 8) + pairs * 8
    # one product per expert: the same per pair, the gates and the combine's fp32 source
    return pairs * (c * (2 * d + 4 * inter) + w * (d + 1) + 16)


def _ffn_activations(m: ModelConfig, n: int, moe: bool, dt: StepDtypes, device: str, B: int) -> float:
    """Bytes the FFN saves in one step of B sequences, its input's copies included."""
    d, w, c = m.hidden_size, dt.weights, dt.compute
    if not moe:  # the input read by gate and up, their outputs, the SiLU and the product
        F = m.intermediate_size
        return n * B * (dt.operand(d, 2, w) + 4 * F * c) + dt.copies(3 * d * F)
    k, inter, E = m.num_experts_per_tok, m.moe_intermediate_size, m.n_routed_experts
    shared = m.n_shared_experts * inter
    # router (fp32, autocast or not): its input (an fp32 copy of bf16), sigmoid affinities, the
    # picks' indices and gates, the normalising and balance-loss sums
    token = 4 * d + E * 4 + k * (8 + 4) + 4 * (2 if m.norm_topk_prob else 1)
    if shared:  # the fp32 input the router keeps serves them too, unless autocast copies it
        token += (0 if w == 4 and not dt.autocast else dt.operand(d, 2, w)) + 4 * shared * c
    routed = routed_activation_bytes(m, n * k * B, dt, device)
    params = ffn_params(m, True)
    copies = dt.copies(params["routed_experts"] + params["shared_experts"])
    if w == 2:  # the router's product runs on an fp32 copy of its bf16 weight
        copies += 4 * E * d
    width = grouped_width(m, dt, device)
    if width is not None and width != inter:  # the products keep zero-padded bf16 weight copies
        copies += 2 * 3 * E * d * (width if w == 2 else width - inter)  # (fp32 weights: autocast's, wider)
    return n * B * token + routed + copies


def _layer_activations(m: ModelConfig, kind: LayerKind, call: Call, dt: StepDtypes, B: int, x: int) -> float:
    """One decoder layer whose input has `x` bytes per value: two norms, attention, FFN."""
    n = call.queries
    attn = (_mla_activations(m, kind, call, dt, B) if kind.attention == "mla"
            else _gqa_activations(m, n, dt, B))  # fmt: skip
    return 2 * n * B * dt.norm(m.hidden_size, x) + attn + _ffn_activations(m, n, kind.moe, dt, call.device, B)


def activation_bytes(
    cfg: Config | ModelConfig,
    seq_len: int,
    batch: int = 1,
    precision: str | StepDtypes = "fp32",
    *,
    mtp: bool = True,
    device: str = "cpu",
) -> dict[str, float]:
    """Bytes saved for backward by one training step's forward (labels given), by part, under
    `precision` (a train.precision, or explicit StepDtypes) on `device` (a type: cpu, cuda),
    which also sets the attention path, the indexer's chunks and the experts' kernels."""
    m = cfg.model if isinstance(cfg, Config) else cfg
    dt = precision if isinstance(precision, StepDtypes) else step_dtypes(precision, device)
    d, V, S, B, w, c = m.hidden_size, m.vocab_size, seq_len, batch, dt.weights, dt.compute
    main = Call(S, S, cache=False, labels=True, dsa_dense=False, device=device)
    out = {"layers": 0.0, "mtp": 0.0, "head": 0.0}
    for kind in layer_kinds(m):  # the residual stream has the weights' dtype
        out["layers"] += _layer_activations(m, kind, main, dt, B, w)
    # input ids, final norm, LM-head input, fp32 log-softmax of the logits, shifted labels; the
    # head's weight copy serves the MTP depths too
    out["head"] = S * B * (8 + dt.norm(d, w) + dt.operand(d, 1, w) + 4 * V + 8) + dt.copies(V * d)
    depths = m.num_nextn_predict_layers if (mtp and m.num_mtp_modules) else 0
    kind = mtp_layer_kind(m)
    for depth in range(1, depths + 1):
        n = S - depth
        if n < 2:
            break
        call = Call(n, n, cache=False, labels=True, dsa_dense=False, device=device)
        # enorm, hnorm, eh_proj's input, the layer (its input is eh_proj's output), the head norm
        # (its input the layer's: the weights' dtype after MoE, else the compute dtype), LM head
        head = 2 * dt.norm(d, w) + dt.operand(2 * d, 1, w) + dt.norm(d, w if kind.moe else c)
        head += dt.operand(d, 1, w) + 4 * V + 8
        # weight copies per depth (a module shared by several depths has its cached ones once)
        out["mtp"] += _layer_activations(m, kind, call, dt, B, c) + n * B * head + dt.copies(2 * d * d)
    return out | {"total": sum(out.values())}


def backward_transient(
    cfg: Config | ModelConfig,
    seq_len: int,
    batch: int = 1,
    precision: str = "fp32",
    device: str = "cpu",
    *,
    mtp: bool = True,
) -> float:
    """Bytes beyond the saved activations at the start of backward: the logits the caller keeps,
    and the larger of the LM head's fp32 gradients (of the log-softmax's input and output) and
    the first layer's attention gradients: over an explicit score square, or the Triton sparse
    kernel's backward (dS and, unless the forward kept it, P of a chunk of queries, dq, dkv in fp32
    and its cast)."""
    m = cfg.model if isinstance(cfg, Config) else cfg
    dt = step_dtypes(precision, device)
    N, S, c = seq_len * batch, seq_len, dt.compute
    depth = bool(mtp and m.num_mtp_modules and m.num_nextn_predict_layers and S - 1 >= 2)
    kind = mtp_layer_kind(m) if depth else layer_kinds(m)[-1]
    n = S - 1 if depth else S
    attention = 0.0
    if kind.attention == "mla":
        plan = attention_plan(m, kind, Call(n, n, cache=False, labels=True, dsa_dense=False, device=device))
        H, R, N_att = m.num_attention_heads, m.kv_lora_rank + m.qk_rope_head_dim, n * batch
        if plan.probs and plan.path in ("dense", "masked"):  # fp32 gradients of explicit probs and scores
            attention = n * n * batch * H * (8 if c == 4 else 6)
        elif plan.path == "sparse" and plan.kernel == "triton":
            buffers = 1 if plan.keep_probs else 2
            chunk = min(buffers * N_att * H * plan.selected_keys * c, SPARSE_BACKWARD_BYTES)
            attention = chunk + N_att * H * R * c + N_att * R * (4 + c)
    return N * m.vocab_size * c + max(8 * N * m.vocab_size, attention)


def training_memory(
    cfg: Config | ModelConfig,
    seq_len: int,
    batch: int = 1,
    precision: str = "fp32",
    *,
    mtp: bool = True,
    device: str = "cpu",
    grad_accum: int = 1,
) -> dict[str, float]:
    """A training step under `precision` on `device` (a type: cpu, cuda): weights, gradients,
    optimiser states, saved activations and their sum (`total`, what glmlab profile measures on a
    CPU), and `peak`, what a GPU's allocator holds at most: at the start of backward the weights,
    optimiser states, activations and the backward's first transients (`backward_transient`),
    gradients only from a previous micro-batch; at the end all gradients and no activations."""
    states = state_bytes(cfg, precision, mtp)
    act = activation_bytes(cfg, seq_len, batch, precision, mtp=mtp, device=device)
    transient = backward_transient(cfg, seq_len, batch, precision, device, mtp=mtp)
    total = states["weights"] + states["gradients"] + states["optimizer"] + act["total"]
    start = act["total"] + transient + (states["gradients"] if grad_accum > 1 else 0)
    peak = states["weights"] + states["optimizer"] + max(start, states["gradients"])
    return {**states, "activations": act["total"], "activations_by_part": act, "transient": transient,
            "total": total, "peak": peak}  # fmt: skip


def inference_memory(
    cfg: Config | ModelConfig, context: int, batch: int = 1, dtype: str = "bf16"
) -> dict[str, float]:
    """Weights plus the latent cache (and indexer keys) for `batch` sequences of `context` tokens,
    plus the joined copies of each layer's input products that decoding reads (`joined_input_params`)."""
    m = cfg.model if isinstance(cfg, Config) else cfg
    P = parameter_counts(m)["total_with_mtp"]
    kv = kv_cache_bytes_per_token(m, dtype)
    cache = (kv["total"] + kv["mtp"]) * context * batch
    weights, joined = P * dtype_bytes(dtype), joined_input_params(m) * dtype_bytes(dtype)
    return {"weights": weights, "joined_inputs": joined, "kv_cache": cache, "total": weights + joined + cache}
