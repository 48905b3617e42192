"""The execution plan: what each decoder layer is and which attention path it runs for a given
call. The model dispatches on it and the calculator (glmlab/accounting) counts it, so the two
cannot disagree. Torch-free. See docs/architecture.md, "The execution plan".

How `index_topk` travels: config.py declares it; `attention_plan` decides whether a call selects
(`sparse`: the context is longer than k and DSA is past its dense warm-up) and with which kernel;
model/mla.py selects the keys (`select_topk` or the Triton top-k) and the calculator counts
`selected_keys` pairs (accounting/flops.py).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache

from glmlab.config import ModelConfig

# ---- chunking -------------------------------------------------------------------------------
# On a CPU a chunk's intermediate values should stay in a core's cache; a GPU wants few, large
# launches, or the Python loop over chunks dominates. Budgets in elements, (CPU, other devices):
# the indexer's ReLU'd dots for one sequence (256 KB in fp32 on a CPU; 2 MB at batch 8)
INDEX_DOTS_PER_SEQUENCE = (1 << 16, 1 << 24)
# gathered latents of all sequences (512 KB in fp32 on a CPU; 64 MB in bf16 on a GPU)
GATHERED_LATENTS = (1 << 17, 1 << 25)
# The indexer keeps at least this many query rows per chunk, however long the context.
MIN_INDEX_ROWS = 16
# The Triton dense warm-up KL computes its target (bf16 scores and fp32 probabilities of every
# head) for chunks of query rows within this many bytes per sequence.
KL_TARGET_BYTES = 1 << 28
# The Triton sparse attention's backward holds P and dS of a chunk of queries within this many bytes.
SPARSE_BACKWARD_BYTES = 1 << 30


def rows_per_chunk(device_type: str, row_elements: int, budget: tuple[int, int], minimum: int = 1) -> int:
    """Rows per chunk when one row holds `row_elements` intermediate values."""
    cpu, other = budget
    return max(minimum, (cpu if device_type == "cpu" else other) // row_elements)


def score_chunks(n: int, T: int, heads: int, device_type: str) -> list[tuple[int, int, int]]:
    """The torch indexer's chunks over n queries, the last n of T positions: (first query, end
    query, keys scored). A chunk scores the keys up to its last query's position. The chunks
    depend on neither the batch nor the data."""
    rows = rows_per_chunk(device_type, heads * T, INDEX_DOTS_PER_SEQUENCE, MIN_INDEX_ROWS)
    return [(a, min(a + rows, n), T - n + min(a + rows, n)) for a in range(0, n, rows)]


def kl_target_chunks(n: int, T: int, heads: int) -> list[tuple[int, int, int]]:
    """The Triton warm-up KL's chunks over n queries (the last n of T): (first, end, keys)."""
    rows = max(1, min(n, KL_TARGET_BYTES // (6 * heads * T)))
    return [(a, min(a + rows, n), T - n + min(a + rows, n)) for a in range(0, n, rows)]


def causal_pairs(n: int, T: int) -> int:
    """(query, key) pairs with key <= query, for n queries that are the last n of T positions."""
    return n * (T - n) + n * (n + 1) // 2


def topk_scored_pairs(n: int, T: int, K: int) -> int:
    """Causal pairs the Triton top-k scores: those of the queries (the last n of T positions) that
    see more than K keys; the others pick every key they see, unscored."""
    return causal_pairs(n - min(n, max(0, K - (T - n))), T)


# ---- layer kinds ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerKind:
    """What one decoder layer is built from."""

    moe: bool  # routed experts (else a dense SwiGLU MLP)
    indexer: bool  # its own lightning indexer (a `full` DSA layer)
    dsa: bool  # DSA on: a layer without an indexer reuses the previous layer's top-k
    attention: str = "mla"  # `attention_type`: mla, gqa or mha

    @property
    def label(self) -> str:
        attention = self.attention.upper()
        if self.dsa:
            attention += " + indexer" if self.indexer else " (shared top-k)"
        return f"{attention}, {'MoE' if self.moe else 'dense'}"


def layer_kinds(m: ModelConfig) -> list[LayerKind]:
    """The main layers, in order: `mlp_layer_types` and (under DSA) `indexer_types`."""
    mlp, index = m.mlp_layer_types, m.resolved_indexer_types
    return [
        LayerKind(mlp[i] == "sparse", m.use_dsa and index[i] == "full", m.use_dsa, m.attention_type)
        for i in range(m.num_hidden_layers)
    ]


def mtp_layer_kind(m: ModelConfig) -> LayerKind:
    """The decoder layer inside each MTP module (always its own indexer under DSA)."""
    return LayerKind(m.mtp_uses_moe, m.use_dsa, m.use_dsa, m.attention_type)


# ---- the attention path of one call ----------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One application of a layer: `queries` new tokens, the last of `context` positions."""

    queries: int
    context: int
    cache: bool  # decoding or chunked prefill over a latent cache
    labels: bool  # training: the indexer's KL and the balance loss are computed
    dsa_dense: bool  # DSA stage 1: attention stays dense while the indexer learns
    device: str  # device type: cpu, cuda, ...


@dataclass(frozen=True)
class AttentionPlan:
    """Which attention path runs and what the indexer does, for one layer and one call.

    Paths: `dense` (causal SDPA, or explicit probabilities when the indexer's loss needs them),
    `masked` (expanded attention under a top-k mask: the reference for the sparse kernels, and
    with `flex` FlexAttention's kernel over the causal key blocks only),
    `sparse` (absorbed attention over each query's gathered top-k latents) and `cached`
    (absorbed attention over a latent cache, all keys or the top-k).
    """

    path: str
    sparse: bool  # attention reads only the top-k keys
    selected_keys: int  # keys each query attends to when sparse (min(k, context))
    score: bool  # this layer's indexer scores (its keys are always computed)
    index_loss: bool  # the indexer's KL is computed on this layer
    probs: bool  # attention materialises explicit probabilities (for the KL target)
    fused_sdpa: bool  # dense SDPA runs a fused causal kernel (else the math path: full square)
    flex: bool  # the masked path runs FlexAttention over the causal key blocks (CUDA; dsa_impl flex)
    kernel: str  # "torch" or "triton": who scores and selects, and attends on sparse and cached paths
    index_fp8: bool  # the Triton top-k scores in fp8 e4m3 (`index_dtype: fp8`); its KL stays in bf16
    keep_probs: bool  # the Triton sparse kernel keeps its forward probabilities for the backward
    score_chunks: tuple[tuple[int, int, int], ...]  # the torch indexer's chunks (empty if none)
    kl_chunks: tuple[tuple[int, int, int], ...]  # KL target chunks: Triton warm-up, Flex key mass (or empty)

    @property
    def key_mass(self) -> bool:
        """Attention returns its probabilities summed over heads (the indexer KL's target): the torch
        paths, and the sparse Triton kernel; the Triton warm-up KL builds its own target."""
        return self.index_loss and (self.kernel == "torch" or self.sparse)

    @property
    def full_square(self) -> bool:
        """Dense attention over every pair of the n x T square (a mask, explicit probabilities or
        SDPA's math fallback), not a fused causal kernel."""
        return (self.path == "masked" and not self.flex) or self.probs or not self.fused_sdpa

    @property
    def visible_mask(self) -> bool:
        """The call needs its [S,T] causal mask as a tensor: the torch indexer's scores, a top-k
        mask, or dense attention over a cache. The Triton kernels and causal SDPA do not (at 128K
        the mask alone would be 17 GB)."""
        return (
            (self.score and self.kernel == "torch")
            or self.path == "masked"
            or (self.path == "cached" and not self.sparse)
        )

    @property
    def recall(self) -> bool:
        """Dense torch attention with the indexer's loss also reports the top-k's recall."""
        return self.path == "dense" and self.index_loss and self.kernel == "torch"


# looked up once, at import: torch.compile cannot trace importlib's find_spec (a graph break in every
# compiled decoding step, experiments/results/h200-session16/, call 4)
_TRITON = importlib.util.find_spec("triton") is not None


def triton_available() -> bool:
    return _TRITON


# On CUDA, `auto` chooses among three ways to attend in DSA's sparse stage, from measurements on
# one H200 (experiments/results/h200-session4/ and h200-session5/; each pair timed in one call):
# - Flex (FlexAttention over the causal blocks under the top-k mask) where the sparse kernels save
#   nothing and run slowly: the top-k keeps at least half the keys (about all a causal query sees)
#   and the heads are fewer than 64, so the sparse kernels' products are too short for Hopper's
#   warpgroup instructions. glm5-1b's compiled 4 x 4,096 step (16 heads, k = 2048): with the KL
#   0.560-0.599 s against Triton's 1.334 s; without it 0.367-0.444 s against the masked path's 0.528 s.
# - Triton's sparse kernels where a layer trains its indexer otherwise (the KL needs the key mass,
#   which the masked path computes as explicit probabilities): the GLM-5 attention slice (64 heads)
#   at 4K 0.076 s against Flex's 0.080 and the masked path's 0.132; glm5-small 16 x 1,024 (k = 256)
#   0.173 s against Flex's 0.224 (0.187 against the masked path's 0.208 in session 4).
# - Without the KL, the masked path up to AUTO_MASKED_UP_TO keys and Triton beyond: glm5-small
#   masked 0.109 s against Flex's 0.131 (session 4); on the slice's 4K forward Triton led (0.019 s,
#   Flex 0.021, masked 0.026), a case this rule leaves on the masked path.
AUTO_MASKED_UP_TO = 4096
SPARSE_MIN_HEADS = 64  # the rows of a warpgroup product; the sparse kernels' heads are its rows


def sparse_kernels_pay(topk: int, heads: int, context: int) -> bool:
    """The sparse kernels beat attention over the causal blocks: they read fewer keys than a causal
    query sees on average (k < context / 2), or the heads fill Hopper's warpgroup products."""
    return 2 * topk < context or heads >= SPARSE_MIN_HEADS


def resolve_dsa_impl(
    impl: str, device: str, context: int, *, indexer_loss: bool = False, sparse_pays: bool = True
) -> str:
    """`auto` on CUDA: Flex where the sparse kernels do not pay (`sparse_kernels_pay`), else the
    Triton kernels (when Triton is installed) beyond AUTO_MASKED_UP_TO keys or where the call trains
    the indexer in the sparse stage (`indexer_loss`), the masked reference otherwise; elsewhere the
    torch gather path. `flex` runs on CUDA only (FlexAttention has no CPU backward): elsewhere the
    masked reference it equals."""
    if impl == "flex" and device != "cuda":
        return "mask"
    if impl != "auto":
        return impl
    if device != "cuda":
        return "gather"
    if not sparse_pays and triton_available():  # on CUDA, torch.compile (Flex) needs Triton too
        return "flex"
    if context <= AUTO_MASKED_UP_TO and not (indexer_loss and triton_available()):
        return "mask"
    return "triton" if triton_available() else "gather"


def indexer_kernel(impl: str) -> str:
    """Who scores and selects for a resolved `dsa_impl`: the Triton kernels for `triton`, and for
    `flex` where Triton is installed (Flex attends under the mask they select); torch otherwise."""
    return "triton" if impl == "triton" or (impl == "flex" and triton_available()) else "torch"


def attention_plan(m: ModelConfig, kind: LayerKind, call: Call) -> AttentionPlan:
    """The path one layer takes for one call (`dsa_impl` resolved for its device and context)."""
    sparse = call.context > m.index_topk and not (call.cache or call.dsa_dense)
    sparse_kl = kind.indexer and call.labels and sparse  # this layer trains its indexer in the sparse stage
    # Flex only replaces full-length attention: within k keys nothing is selected (the choice would
    # only move the KL), and a cached call (decoding, chunked prefill) keeps the rule
    # glmlab/generate/step.py follows too
    pays = (
        call.cache
        or call.context <= m.index_topk
        or sparse_kernels_pay(m.index_topk, m.num_attention_heads, call.context)
    )
    impl = resolve_dsa_impl(m.dsa_impl, call.device, call.context, indexer_loss=sparse_kl, sparse_pays=pays)
    widths = m.attention_type != "mla" or m.qk_head_dim >= m.v_head_dim  # GQA: one width for q, k, v
    fp8 = m.index_dtype == "fp8"
    attending = m.num_hidden_layers + m.num_nextn_predict_layers  # each keeps its own probabilities
    return _attention_plan(
        m.index_topk, m.index_n_heads, m.num_attention_heads, widths, kind, call, impl, fp8,
        m.sparse_keep_probs_gib / attending,
    )  # fmt: skip


@lru_cache(maxsize=4096)
def _attention_plan(
    index_topk: int,
    index_heads: int,
    heads: int,
    equal_widths: bool,
    kind: LayerKind,
    call: Call,
    impl: str,
    fp8: bool,
    keep_probs_gib: float,  # this layer's share of the budget
) -> AttentionPlan:
    n, T = call.queries, call.context
    sparse = kind.dsa and not call.dsa_dense and T > index_topk
    index_loss = kind.indexer and call.labels and not call.cache
    score = kind.indexer and (sparse or index_loss)
    kernel = indexer_kernel(impl)  # also who attends on the sparse and cached paths
    if call.cache:
        path = "cached"
    elif sparse:
        path = "masked" if impl in ("mask", "flex") else "sparse"
    else:
        path = "dense"
    # The torch paths need the KL target as explicit probabilities; the Triton path gets it from
    # its kernels (key mass of the sparse kernel, chunked dense mass in the warm-up).
    flex = impl == "flex" and path == "masked"
    probs = index_loss and kernel == "torch" and not flex
    # SDPA pads v up to d_qk; a CPU runs its fused kernel only when no padding is needed the
    # other way round (v wider than q and k).
    fused = call.device != "cpu" or equal_widths
    chunks = tuple(score_chunks(n, T, index_heads, call.device)) if score and kernel == "torch" else ()
    dense_kl = index_loss and not sparse and kernel == "triton"
    # the Triton warm-up KL's target, or Flex's key mass, chunk by chunk of queries
    kl_chunks = tuple(kl_target_chunks(n, T, heads)) if dense_kl or (flex and index_loss) else ()
    # a training call's probabilities (labels: the trainer's calls; a forward without labels under
    # a gradient recomputes them), one sequence's in bf16, within the layer's share of the budget: the
    # backward reads them instead of gathering every selected row once more to recompute them. Under
    # train.recompute the first forward writes them too, and they are dropped with the layer's other
    # activations
    keep = path == "sparse" and kernel == "triton" and call.labels
    keep = keep and n * heads * min(index_topk, T) * 2 <= keep_probs_gib * 2**30
    return AttentionPlan(
        path=path,
        sparse=sparse,
        selected_keys=min(index_topk, T),
        score=score,
        index_loss=index_loss,
        probs=probs,
        fused_sdpa=fused,
        flex=flex,
        kernel=kernel,
        index_fp8=fp8 and kernel == "triton" and sparse and score,
        score_chunks=chunks,
        kl_chunks=kl_chunks,
        keep_probs=keep,
    )


def keeps_sparse_probs(m: ModelConfig, seq_len: int, device: str) -> bool:
    """Whether a training call over `seq_len` tokens on `device` (a type) keeps the Triton sparse
    attention's probabilities for the backward on any layer (`AttentionPlan.keep_probs`)."""
    call = Call(seq_len, seq_len, cache=False, labels=True, dsa_dense=False, device=device)
    return any(attention_plan(m, kind, call).keep_probs for kind in layer_kinds(m))


def scored_pairs(plan: AttentionPlan, n: int, T: int) -> int:
    """(query, key) pairs the indexer scores in one call: each torch chunk against the keys up
    to its last query; the Triton kernel skips exactly the keys above each query and, when it
    selects, the queries that see at most k keys (`topk_scored_pairs`). Selecting is
    free of scoring when the top-k's scores come from a kernel."""
    if not plan.score:
        return 0
    if plan.kernel == "torch":
        return sum((b - a) * end for a, b, end in plan.score_chunks)
    return topk_scored_pairs(n, T, plan.selected_keys) if plan.sparse else causal_pairs(n, T)
