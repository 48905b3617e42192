"""Triton kernels for DSA's lightning indexer: fused scores, streaming top-k, scores at picked keys and
the dense warm-up KL, with their backward passes. Twins: glmlab/kernels/indexer_ref.py. The maths is
docs/architecture.md, section "DSA: the lightning indexer and top-k"; the counting conventions are
docs/accounting.md.

Shapes are batch-first; the S queries are the last S of T positions: query s sits at position
T-S+s and sees the keys t <= T-S+s. q [B,S,H,D] (bf16 or fp32), w [B,S,H] (fp32, already scaled),
k [B,T,D]; k is cast to q's dtype, and every product accumulates in fp32. With bf16 inputs the
forward's head sum is a second bf16 product: the ReLU'd dots and the head weights are rounded to
bf16 (on random inputs the scores' largest error was 0.44% of the largest score; see
experiments/results/h200-kernels-indexer/README.md). fp32 inputs stay in fp32 throughout.

The kernels are `torch.library.custom_op`s in the `glmlab` namespace with fake implementations and
FLOP formulas, so FlopCounterMode counts them: scored causal (query, key) pairs x 2*H*(D+1) forward
(a multiply-add per head and dimension, plus the head weight), twice that backward.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch.utils.flop_counter import register_flop_formula

from glmlab.errors import GlmlabError
from glmlab.plan import causal_pairs, topk_scored_pairs


@dataclasses.dataclass(frozen=True)
class Tiles:
    """Tile sizes (powers of two). The defaults suit an H200; the tests use small ones.

    rows: queries per program of the scoring kernels (their (query, head) pairs are one side of the
    product, at least 16); keys: keys per tile; tiles: key tiles per scoring program; picks: picked
    keys per tile in `index_scores_at`; select: scores per segment of the top-k selection's
    candidate pass (one program each, the segment in registers) and per step of its whole-row
    fallback; sample: the selection's threshold is estimated from one score in `sample` of each row
    (sparser where that would exceed twice the candidate list's length); collect_warps: warps of each
    candidate-pass program; candidates: the cut aims at candidates*K/2 candidates a row, in a list of
    CAP = (candidates+1)*K/2 rounded up to a power of two (`select_cap`); select_warps: warps of the
    cut and select programs (0: by CAP).
    """

    rows: int = 4
    keys: int = 64
    # 64 ran faster alone at 32K (fp8 725 against 697 TFLOP/s, bf16 473 against 448) but not in
    # index_topk's chunks at 128K (192 against 186 ms; experiments/results/h200-session12/)
    tiles: int = 32
    picks: int = 64
    select: int = 1024
    warps: int = 4
    stages: int = 3
    # 16: at 1.5*K candidates in 2*K, one score in 32 (a sample of 96 above the cut) let one row in
    # 640 to 1,800 miss [K, CAP] and take the whole-row select (3 of 1,927 at 128K; session 14). The sample
    # stops growing at 2*CAP*16 keys (128K at K = 2048): past that it thins, untested.
    sample: int = 16
    # one warp: the candidate pass's scan and sums need no barrier across warps (16 in its SASS with
    # four warps, where it read the scores at 1.3 TB/s whatever the segment length; session 13)
    collect_warps: int = 1
    candidates: int = 3
    select_warps: int = 0


# index_topk's scoring of long prefills (4,096 queries and more): 8 queries a program read each key
# tile from L2 half as often as 4. At 128K keys, bf16 scoring 123 against 133 ms a layer, fp8 71
# against 75, the same picks (experiments/results/h200-session15/, probe/scores_rows_probe.py).
PREFILL_TOPK_TILES = {False: Tiles(rows=8, stages=2, tiles=16), True: Tiles(rows=8, stages=3)}
PREFILL_QUERIES = 4096
# A decoding step's few queries (fewer than a default program holds): one query a program and 8 key
# tiles each, 257 programs at 128K keys instead of 65 (Tiles()'s 4 rows and 32 tiles), so that every
# multiprocessor reads keys: index_topk(last=...) at 128K keys, batch 1, 31.3 against 45.1-45.4 us a layer
# (experiments/results/h200-session16/, calls 3 and 6, probe/decode_probe.py).
DECODE_TOPK_TILES = Tiles(rows=1, tiles=8)

# e4m3's largest finite value: quantize_rows maps each row's largest |x| to it.
FP8_MAX = 448.0

# ----------------------------------------------------------------------------------------------
# Kernels


@triton.jit
def _relu_to_bf16(x):
    """max(x, 0) rounded to bf16 (nearest even; NaN stays NaN), two fp32 values per
    `cvt.rn.relu.bf16x2.f32`, which writes its first source to the upper half: the pair's second
    element. On a GPU only: Triton's interpreter runs no PTX."""
    return tl.inline_asm_elementwise(
        "cvt.rn.relu.bf16x2.f32 $0, $2, $1;", "=r,r,r", [x], dtype=tl.bfloat16, is_pure=True, pack=2
    )


@triton.jit
def _scores_fwd_kernel(
    q_ptr,
    w_ptr,
    k_ptr,
    ks_ptr,
    out_ptr,
    stride_qb,
    stride_wb,
    stride_kb,
    stride_ksb,
    S,
    T,
    n_cols,
    stride_ob,
    stride_os,
    H: tl.constexpr,
    D: tl.constexpr,
    HP: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_T: tl.constexpr,
    TILES: tl.constexpr,
    FILL_MASKED: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_SP: tl.constexpr,
    FP8: tl.constexpr,
    PACKED_RELU: tl.constexpr,
):
    """One program: BLOCK_S queries with all their heads (the (query, head) pairs are one side of
    the product; BLOCK_SP >= 16 columns for the second) against TILES key tiles; tiles above the
    causal diagonal are skipped (written as -inf when FILL_MASKED). FP8: q and k are e4m3, the
    head sum is a bf16 product and each key's score is scaled by ks[t] (its quantisation scale)."""
    pid_s = tl.num_programs(0) - 1 - tl.program_id(0)  # the longest rows first
    pid_t = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    M: tl.constexpr = BLOCK_S * HP
    m = tl.arange(0, M)
    rows = pid_s * BLOCK_S + m // HP
    heads = m % HP
    d = tl.arange(0, BLOCK_D)
    row_ok = (rows < S) & (heads < H)
    q = tl.load(
        q_ptr + b * stride_qb + (rows * H + heads)[:, None] * D + d[None, :],
        mask=row_ok[:, None] & (d[None, :] < D),
        other=0.0,
    )
    w = tl.load(w_ptr + b * stride_wb + rows * H + heads, mask=row_ok, other=0.0)
    last = tl.minimum(T - S + pid_s * BLOCK_S + BLOCK_S - 1, T - 1)  # the block's last visible key
    t_lo = pid_t * TILES * BLOCK_T
    t_hi = tl.minimum(t_lo + TILES * BLOCK_T, n_cols)
    t_vis = tl.minimum(t_hi, last + 1)
    # Heads are summed by a second product, (keys x (query, head)) @ (head weights per query), whose
    # first operand stays in registers; a sum across the first product's rows was slower (timed in
    # experiments/README.md, "Timings moved from docstrings").
    j = tl.arange(0, BLOCK_SP)
    sum_dtype: tl.constexpr = tl.bfloat16 if FP8 else q.dtype
    wt = tl.where((m // HP)[:, None] == j[None, :], w[:, None], 0.0).to(sum_dtype)  # [M, BLOCK_SP]
    cols = pid_s * BLOCK_S + j
    col_ok = (j < BLOCK_S) & (cols < S)
    out_cols = out_ptr + b * stride_ob + cols.to(tl.int64)[None, :] * stride_os
    for t0 in range(t_lo, t_vis, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        kt = tl.load(
            k_ptr + b * stride_kb + t[:, None] * D + d[None, :],
            mask=(t[:, None] < T) & (d[None, :] < D),
            other=0.0,
        )
        zt = tl.dot(kt, tl.trans(q), input_precision=PRECISION)  # [BLOCK_T, M]
        if PACKED_RELU:  # the ReLU and the rounding to bf16 in one instruction per two scores
            tl.static_assert(sum_dtype == tl.bfloat16, "the packed ReLU rounds to bf16")
            relu = _relu_to_bf16(zt)
        else:
            relu = tl.maximum(zt, 0.0).to(sum_dtype)
        sc = tl.dot(relu, wt, input_precision=PRECISION)
        if FP8:
            sc *= tl.load(ks_ptr + b * stride_ksb + t, mask=t < T, other=0.0)[:, None]
        sc = tl.where(t[:, None] <= (T - S + cols)[None, :], sc, float("-inf"))
        tl.store(out_cols + t[:, None], sc, mask=col_ok[None, :] & (t[:, None] < n_cols))
    if FILL_MASKED:
        first = t_lo + tl.cdiv(tl.maximum(t_vis - t_lo, 0), BLOCK_T) * BLOCK_T
        for t0 in range(first, t_hi, BLOCK_T):
            t = t0 + tl.arange(0, BLOCK_T)
            fill = tl.full((BLOCK_T, BLOCK_SP), float("-inf"), tl.float32)
            tl.store(out_cols + t[:, None], fill, mask=col_ok[None, :] & (t[:, None] < n_cols))


@triton.jit
def _scores_bwd_dq_kernel(
    q_ptr,
    w_ptr,
    k_ptr,
    g_ptr,
    dq_ptr,
    dw_ptr,
    stride_qb,
    stride_wb,
    stride_kb,
    S,
    T,
    stride_gb,
    stride_gs,
    H: tl.constexpr,
    D: tl.constexpr,
    HP: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_T: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """dq and dw of BLOCK_S queries, recomputing their dots key tile by key tile."""
    pid_s = tl.num_programs(0) - 1 - tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    M: tl.constexpr = BLOCK_S * HP
    m = tl.arange(0, M)
    rows = pid_s * BLOCK_S + m // HP
    heads = m % HP
    d = tl.arange(0, BLOCK_D)
    row_ok = (rows < S) & (heads < H)
    qd_off = (rows * H + heads)[:, None] * D + d[None, :]
    qd_mask = row_ok[:, None] & (d[None, :] < D)
    q = tl.load(q_ptr + b * stride_qb + qd_off, mask=qd_mask, other=0.0)
    w = tl.load(w_ptr + b * stride_wb + rows * H + heads, mask=row_ok, other=0.0)
    g_rows = g_ptr + b * stride_gb + rows.to(tl.int64)[:, None] * stride_gs
    pos = T - S + rows
    last = tl.minimum(T - S + pid_s * BLOCK_S + BLOCK_S - 1, T - 1)
    dq = tl.zeros((M, BLOCK_D), tl.float32)
    dw = tl.zeros((M,), tl.float32)
    for t0 in range(0, last + 1, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        kt = tl.load(
            k_ptr + b * stride_kb + t[:, None] * D + d[None, :],
            mask=(t[:, None] < T) & (d[None, :] < D),
            other=0.0,
        )
        z = tl.dot(q, tl.trans(kt), input_precision=PRECISION)
        seen = row_ok[:, None] & (t[None, :] <= pos[:, None])
        g = tl.load(g_rows + t[None, :], mask=seen, other=0.0)
        dw += tl.sum(g * tl.maximum(z, 0.0), axis=1)
        dz = tl.where(z > 0.0, g * w[:, None], 0.0)
        dq += tl.dot(dz.to(kt.dtype), kt, input_precision=PRECISION)
    tl.store(dq_ptr + b * S * H * D + qd_off, dq, mask=qd_mask)
    tl.store(dw_ptr + b * S * H + rows * H + heads, dw, mask=row_ok)


@triton.jit
def _scores_bwd_dk_kernel(
    q_ptr,
    w_ptr,
    k_ptr,
    g_ptr,
    dk_ptr,
    stride_qb,
    stride_wb,
    stride_kb,
    S,
    T,
    stride_gb,
    stride_gs,
    H: tl.constexpr,
    D: tl.constexpr,
    HP: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_T: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """dk of one key tile, over the query blocks that see it (recomputing their dots)."""
    pid_t = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    M: tl.constexpr = BLOCK_S * HP
    m = tl.arange(0, M)
    d = tl.arange(0, BLOCK_D)
    t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    kd_off = t[:, None] * D + d[None, :]
    kd_mask = (t[:, None] < T) & (d[None, :] < D)
    kt = tl.load(k_ptr + b * stride_kb + kd_off, mask=kd_mask, other=0.0)
    dk = tl.zeros((BLOCK_T, BLOCK_D), tl.float32)
    first = tl.maximum(pid_t * BLOCK_T - (T - S), 0)  # the first query that sees the tile
    for s0 in range((first // BLOCK_S) * BLOCK_S, S, BLOCK_S):
        rows = s0 + m // HP
        heads = m % HP
        row_ok = (rows < S) & (heads < H)
        q = tl.load(
            q_ptr + b * stride_qb + (rows * H + heads)[:, None] * D + d[None, :],
            mask=row_ok[:, None] & (d[None, :] < D),
            other=0.0,
        )
        w = tl.load(w_ptr + b * stride_wb + rows * H + heads, mask=row_ok, other=0.0)
        seen = row_ok[:, None] & (t[None, :] <= (T - S + rows)[:, None]) & (t[None, :] < T)
        g = tl.load(
            g_ptr + b * stride_gb + rows.to(tl.int64)[:, None] * stride_gs + t[None, :], mask=seen, other=0.0
        )
        z = tl.dot(q, tl.trans(kt), input_precision=PRECISION)
        dz = tl.where(z > 0.0, g * w[:, None], 0.0)
        dk += tl.dot(tl.trans(dz).to(q.dtype), q, input_precision=PRECISION)
    tl.store(dk_ptr + b * T * D + kd_off, dk, mask=kd_mask)


@triton.jit
def _at_fwd_kernel(
    q_ptr,
    w_ptr,
    k_ptr,
    idx_ptr,
    out_ptr,
    S,
    T,
    K,
    H: tl.constexpr,
    D: tl.constexpr,
    HP: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One query's heads against BLOCK_K of its picked keys, loaded straight from k by index."""
    s = tl.program_id(0).to(tl.int64)
    j = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    b = tl.program_id(2).to(tl.int64)
    h = tl.arange(0, HP)
    d = tl.arange(0, BLOCK_D)
    q = tl.load(
        q_ptr + (b * S + s) * H * D + h[:, None] * D + d[None, :],
        mask=(h[:, None] < H) & (d[None, :] < D),
        other=0.0,
    )
    w = tl.load(w_ptr + (b * S + s) * H + h, mask=h < H, other=0.0)
    pick = tl.load(idx_ptr + (b * S + s) * K + j, mask=j < K, other=0)
    kp = tl.load(
        k_ptr + b * T * D + pick[:, None] * D + d[None, :],
        mask=(j[:, None] < K) & (d[None, :] < D),
        other=0.0,
    )
    z = tl.dot(q, tl.trans(kp), input_precision=PRECISION)
    out = tl.sum(tl.maximum(z, 0.0) * w[:, None], axis=0)
    tl.store(out_ptr + (b * S + s) * K + j, out, mask=j < K)


@triton.jit
def _at_bwd_kernel(
    q_ptr,
    w_ptr,
    k_ptr,
    idx_ptr,
    g_ptr,
    dq_ptr,
    dw_ptr,
    dk_ptr,
    S,
    T,
    K,
    H: tl.constexpr,
    D: tl.constexpr,
    HP: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """dq, dw of one query over all its picks; dk scattered into the picked rows with atomic adds,
    relaxed (the default acq_rel put a GPU-wide fence and an L1 invalidation around each of them)."""
    s = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1).to(tl.int64)
    h = tl.arange(0, HP)
    d = tl.arange(0, BLOCK_D)
    qd_off = (b * S + s) * H * D + h[:, None] * D + d[None, :]
    qd_mask = (h[:, None] < H) & (d[None, :] < D)
    q = tl.load(q_ptr + qd_off, mask=qd_mask, other=0.0)
    w = tl.load(w_ptr + (b * S + s) * H + h, mask=h < H, other=0.0)
    dq = tl.zeros((HP, BLOCK_D), tl.float32)
    dw = tl.zeros((HP,), tl.float32)
    for j0 in range(0, K, BLOCK_K):
        j = j0 + tl.arange(0, BLOCK_K)
        pick = tl.load(idx_ptr + (b * S + s) * K + j, mask=j < K, other=0)
        kd_off = b * T * D + pick[:, None] * D + d[None, :]
        kd_mask = (j[:, None] < K) & (d[None, :] < D)
        kp = tl.load(k_ptr + kd_off, mask=kd_mask, other=0.0)
        g = tl.load(g_ptr + (b * S + s) * K + j, mask=j < K, other=0.0)
        z = tl.dot(q, tl.trans(kp), input_precision=PRECISION)
        dw += tl.sum(g[None, :] * tl.maximum(z, 0.0), axis=1)
        dz = tl.where(z > 0.0, g[None, :] * w[:, None], 0.0)
        dq += tl.dot(dz.to(kp.dtype), kp, input_precision=PRECISION)
        dk = tl.dot(tl.trans(dz).to(q.dtype), q, input_precision=PRECISION)
        tl.atomic_add(dk_ptr + kd_off, dk, mask=kd_mask, sem="relaxed")
    tl.store(dq_ptr + qd_off, dq, mask=qd_mask)
    tl.store(dw_ptr + (b * S + s) * H + h, dw, mask=h < H)


@triton.jit
def _keys(src_ptr, t, n):
    """The keys of scores src[t] and which exist (t < n). Keys are int32 in the scores' order: the
    fp32 bits, the lower 31 flipped for negative scores; -0.0 takes +0.0's key (equal scores). The
    loads reach n rounded up to 4 (so they can be 16 bytes wide): rows are padded to 4 scores."""
    x = tl.load(src_ptr + t, mask=t < (n + 3) // 4 * 4, other=0.0)
    bits = x.to(tl.int32, bitcast=True)
    key = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return tl.where(key == -1, 0, key), t < n


@triton.jit
def _kth(key, ok, want):
    """The want-th largest of the keys where ok (1 <= want <= their count; keys above INT32_MIN, as
    every score's is) and how many are larger: a search between the smallest and the largest key
    that splits the interval in three per step, its two counts packed in one sum over the block (one
    reduction per step, at most 21 steps for 32-bit keys; a bisection took 32)."""
    PACK: tl.constexpr = tl.int32 if key.shape[0] < 1 << 15 else tl.int64
    BITS: tl.constexpr = 16 if key.shape[0] < 1 << 15 else 32
    lo = tl.min(tl.where(ok, key, 0x7FFFFFFF), 0).to(tl.int64)  # at least `want` keys >= lo
    key = tl.where(ok, key, -0x7FFFFFFF - 1)  # below every threshold: no `ok` in the loop
    hi = tl.max(key, 0).to(tl.int64) + 1  # fewer than `want` keys >= hi
    above = tl.full((), 0, tl.int32)  # keys >= hi
    while hi - lo > 1:
        m1 = lo + (hi - lo) // 3
        m2 = lo + 2 * (hi - lo) // 3
        packed = tl.where(key >= m1.to(tl.int32), 1, 0).to(PACK)
        packed = tl.where(key >= m2.to(tl.int32), (1 << BITS) + 1, packed)  # both counts
        total = tl.sum(packed, 0)
        c1 = (total & ((1 << BITS) - 1)).to(tl.int32)
        c2 = (total >> BITS).to(tl.int32)
        in2, in1 = c2 >= want, c1 >= want
        new_lo = tl.where(in2, m2, tl.where(in1, m1, lo))
        hi = tl.where(in2, hi, tl.where(in1, m2, m1))
        above = tl.where(in2, above, tl.where(in1, c2, c1))
        lo = new_lo
    return lo.to(tl.int32), above


@triton.jit
def _digit_pass(
    src_ptr, n, prefix, remaining, SHIFT: tl.constexpr, BITS: tl.constexpr, BLOCK: tl.constexpr
):  # fmt: skip
    """One radix pass over a whole row: among the keys whose bits above SHIFT+BITS equal `prefix`,
    the histogram of the next BITS bits; returns the digit holding the `remaining`-th largest and
    what remains to take inside it."""
    hist = tl.zeros((1 << BITS,), tl.int32)
    for i0 in range(0, n, BLOCK):
        key, ok = _keys(src_ptr, i0 + tl.arange(0, BLOCK), n)
        if SHIFT + BITS == 32:
            digit = (key >> SHIFT) + (1 << (BITS - 1))  # the sign bit flipped: unsigned order
            match = ok
        else:
            digit = (key >> SHIFT) & ((1 << BITS) - 1)
            match = ok & ((key >> (SHIFT + BITS)) == prefix)
        hist += tl.histogram(digit, 1 << BITS, mask=match)
    at_least = tl.sum(hist, 0) - tl.cumsum(hist, 0) + hist  # keys with a digit >= each digit
    digit = tl.sum((at_least >= remaining).to(tl.int32), 0) - 1
    above = tl.sum(tl.where(tl.arange(0, 1 << BITS) == digit, at_least - hist, 0), 0)
    if SHIFT + BITS == 32:
        digit = digit - (1 << (BITS - 1))
    return prefix * (1 << BITS) + digit, remaining - above


@triton.jit
def _row(scores_ptr, last_ptr, n_rows, first_pos, stride_sb, stride_ss, LAST: tl.constexpr):
    """This program's chunk row: its scores and how many keys it sees (with LAST, none past the
    row's last[b, r], last [B, n_rows])."""
    r = tl.program_id(0) % n_rows
    b = (tl.program_id(0) // n_rows).to(tl.int64)
    n = first_pos + r + 1
    if LAST:
        n = tl.minimum(n.to(tl.int64), tl.load(last_ptr + tl.program_id(0)).to(tl.int64) + 1).to(tl.int32)
    return scores_ptr + b * stride_sb + r.to(tl.int64) * stride_ss, n


@triton.jit
def _cut_kernel(
    scores_ptr, last_ptr, cut_ptr, total_ptr, n_rows, first_pos, K, stride_sb, stride_ss, CAP: tl.constexpr,
    STRIDE: tl.constexpr, CANDIDATES: tl.constexpr, SAMPLE: tl.constexpr, LAST: tl.constexpr,
):  # fmt: skip
    """A row longer than CAP: its threshold key, so that about CANDIDATES*K/2 of its keys are at or
    above it. From the row's sample (m <= SAMPLE scores in groups of 8 consecutive ones, one score in
    STRIDE or sparser on rows longer than SAMPLE*STRIDE), held in registers: the r-th largest,
    r = CANDIDATES*K*m/2n, to 16 bits (the cut is the lowest key of those 16 bits). Every row: its
    candidate total set to 0."""
    row_ptr, n = _row(scores_ptr, last_ptr, n_rows, first_pos, stride_sb, stride_ss, LAST)
    tl.store(total_ptr + tl.program_id(0), 0)
    if n > CAP:
        every = tl.maximum(STRIDE, tl.cdiv(n, SAMPLE))
        i = tl.arange(0, SAMPLE)
        key, ok = _keys(row_ptr, (i // 8) * (8 * every) + i % 8, n)
        m = tl.sum(ok.to(tl.int32), 0)
        rank = tl.minimum((CANDIDATES * K * m.to(tl.int64) + 2 * n - 1) // (2 * n), m).to(tl.int32)
        top, _ = _kth(key >> 16, ok, tl.maximum(rank, 1))
        tl.store(cut_ptr + tl.program_id(0), top * (1 << 16))


@triton.jit
def _collect_kernel(
    scores_ptr, last_ptr, cut_ptr, total_ptr, count_ptr, base_ptr, cand_ptr, pos_ptr, n_rows, first_pos,
    n_seg, stride_sb, stride_ss, SEG: tl.constexpr, CAP: tl.constexpr, LAST: tl.constexpr,
):  # fmt: skip
    """One segment of SEG scores of a row longer than CAP (program axis 1), held in registers: its
    keys at or above the row's cut, counted, are copied (keys and positions, in key order) to a run of
    the row's candidate list that an atomic add on the row's total reserves; the run's length and
    start go to count and base [rows, n_seg]. Runs lie in the list in any order (the select reads them
    in segment order); slots past CAP are not written (the row then has more than CAP candidates)."""
    row_ptr, n = _row(scores_ptr, last_ptr, n_rows, first_pos, stride_sb, stride_ss, LAST)
    lo = tl.program_id(1) * SEG
    count = tl.full((), 0, tl.int32)
    base = tl.full((), 0, tl.int32)
    if (n > CAP) & (lo < n):
        cut = tl.load(cut_ptr + tl.program_id(0))
        i = lo + tl.arange(0, SEG)
        key, ok = _keys(row_ptr, i, n)
        # kept as int32 and scanned first: a boolean mask cost a layout change through shared memory
        # and a scan of eight times as many shuffles (784 instructions against 464, sm_90a)
        keep = tl.where(ok & (key >= cut), 1, 0)
        rank = tl.cumsum(keep, 0)
        count = tl.sum(keep, 0)
        if count > 0:
            base = tl.atomic_add(total_ptr + tl.program_id(0), count, sem="relaxed")
            slot = base + rank - 1
            write = (keep > 0) & (slot < CAP)
            row = tl.program_id(0).to(tl.int64) * CAP
            tl.store(cand_ptr + row + slot, key, mask=write)
            tl.store(pos_ptr + row + slot, i, mask=write)
    tl.store(count_ptr + tl.program_id(0) * n_seg + tl.program_id(1), count)
    tl.store(base_ptr + tl.program_id(0) * n_seg + tl.program_id(1), base)


@triton.jit
def _list_slots(count_ptr, base_ptr, n_seg, i, SEG_P2: tl.constexpr):
    """The row's candidate total and, for the candidates i (in segment and key order), their slots in
    the list that `_collect_kernel` wrote: each one's segment by a binary search over the segments'
    cumulative counts, then its offset in that segment's run."""
    seg = tl.arange(0, SEG_P2)
    at = tl.program_id(0) * n_seg + seg
    counts = tl.load(count_ptr + at, mask=seg < n_seg, other=0)
    ends = tl.cumsum(counts, 0)  # candidates in the segments up to each one
    shift = tl.load(base_ptr + at, mask=seg < n_seg, other=0) - (ends - counts)
    owner = tl.zeros(i.shape, tl.int32)  # segments that end at or before i
    for j in tl.static_range(SEG_P2.bit_length() - 1):
        half = SEG_P2 >> (j + 1)
        owner = tl.where(tl.gather(ends, owner + (half - 1), 0) <= i, owner + half, owner)
    return tl.sum(counts, 0), i + tl.gather(shift, owner, 0)


@triton.jit
def _select_kernel(
    scores_ptr, last_ptr, idx_ptr, valid_ptr, cand_ptr, pos_ptr, count_ptr, base_ptr, n_rows, first_pos,
    row0, S, K, n_seg, stride_sb, stride_ss, BLOCK: tl.constexpr, CAP: tl.constexpr, SEG_P2: tl.constexpr,
    LAST: tl.constexpr,
):  # fmt: skip
    """Top-K of one row, exactly. A row of at most CAP keys, or its candidate list when that holds K
    to CAP keys, is held in registers: a search over the key values finds the K-th largest, one
    pass writes the keys above it (slots 0.., in key order) and the lowest-indexed ties (last slots).
    Any other row (rare: its cut missed) takes four histogram passes of 8 bits over the whole row,
    then one pass that writes the picks the same way."""
    row_ptr, n = _row(scores_ptr, last_ptr, n_rows, first_pos, stride_sb, stride_ss, LAST)
    out = (tl.program_id(0) // n_rows * S + row0 + tl.program_id(0) % n_rows).to(tl.int64) * K
    idx_ptr += out
    valid_ptr += out
    if n <= K:  # every visible key is picked; the rest are invalid
        for j0 in range(0, K, BLOCK):
            j = j0 + tl.arange(0, BLOCK)
            tl.store(idx_ptr + j, j.to(tl.int64), mask=j < K)
            tl.store(valid_ptr + j, (j < n).to(tl.int8), mask=j < K)
    else:
        e = tl.arange(0, CAP)  # entries held in registers
        total = tl.full((), CAP + 1, tl.int32)
        slot_of = e
        if n > CAP:
            total, slot_of = _list_slots(count_ptr, base_ptr, n_seg, e, SEG_P2)
        listed = (total >= K) & (total <= CAP)
        if listed | (n <= CAP):
            list_ptr = tl.program_id(0).to(tl.int64) * CAP + slot_of
            if listed:
                ok = e < total
                key = tl.load(cand_ptr + list_ptr, mask=ok, other=0)
            else:
                key, ok = _keys(row_ptr, e, n)
            kth, above = _kth(key, ok, K)
            gt = ok & (key > kth)
            eq = ok & (key == kth)
            # both ranks from one scan: the counts of gt and eq, packed BITS apart (BITS > log2(CAP))
            PACK: tl.constexpr = tl.int32 if CAP < 1 << 15 else tl.int64
            BITS: tl.constexpr = 16 if CAP < 1 << 15 else 32
            ranks = tl.cumsum(gt.to(PACK) + (eq.to(PACK) << BITS), 0)
            eq_rank = (ranks >> BITS).to(tl.int32) - 1
            take = gt | (eq & (eq_rank < K - above))
            slot = tl.where(gt, (ranks & ((1 << BITS) - 1)).to(tl.int32) - 1, above + eq_rank)
            t = e
            if listed:
                t = tl.load(pos_ptr + list_ptr, mask=take, other=0)
            tl.store(idx_ptr + slot, t.to(tl.int64), mask=take)
            tl.store(valid_ptr + slot, tl.full((CAP,), 1, tl.int8), mask=take)
        else:
            kth, ties = _digit_pass(row_ptr, n, 0, K, 24, 8, BLOCK)
            kth, ties = _digit_pass(row_ptr, n, kth, ties, 16, 8, BLOCK)
            kth, ties = _digit_pass(row_ptr, n, kth, ties, 8, 8, BLOCK)
            kth, ties = _digit_pass(row_ptr, n, kth, ties, 0, 8, BLOCK)
            above = tl.full((), 0, tl.int32)
            tied = tl.full((), 0, tl.int32)
            for i0 in range(0, n, BLOCK):
                i = i0 + tl.arange(0, BLOCK)
                key, ok = _keys(row_ptr, i, n)
                gt = (key > kth) & ok
                eq = (key == kth) & ok
                eq_rank = tied + tl.cumsum(eq.to(tl.int32), 0) - 1
                take = gt | (eq & (eq_rank < ties))
                slot = tl.where(gt, above + tl.cumsum(gt.to(tl.int32), 0) - 1, K - ties + eq_rank)
                tl.store(idx_ptr + slot, i.to(tl.int64), mask=take)
                tl.store(valid_ptr + slot, tl.full((BLOCK,), 1, tl.int8), mask=take)
                above += tl.sum(gt.to(tl.int32), 0)
                tied += tl.sum(eq.to(tl.int32), 0)


def _select_chunk(
    chunk: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor, first_pos: int, row0: int, tiles: Tiles,
    last: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """Top-K of every row of a scored chunk [B,rows,n'] (row r sees first_pos + r + 1 keys, and with
    `last` [B,rows] none past last[b,r]; the rows' stride a multiple of 4 scores, and the buffer
    reaching each row's length rounded up to 4) into rows row0.. of idx and valid [B,S,K]: the three
    launches of the radix select (each row's cut, the candidates of each segment of `select` scores
    counted and copied in one pass, the select), scratch CAP*8 bytes a row (`select_cap`). Returns
    the candidate counts
    [B*rows, segments]: a row longer than CAP whose total lies in [K, CAP] was selected from its
    candidates, any other longer row from the whole row."""
    B, rows, width = chunk.shape
    S, K = idx.shape[1], idx.shape[2]
    if chunk.stride(1) % 4 or chunk.stride(0) % 4:
        raise ValueError(f"chunk strides {chunk.stride()}: pad the rows to a multiple of 4 scores")
    if tiles.candidates < 3:  # a cut aimed at K or fewer would send most rows to the whole-row select
        raise ValueError(f"Tiles.candidates {tiles.candidates}: the cut must aim above K, give 3 or more")
    cap, seg = select_cap(K, tiles.candidates), tiles.select
    n_seg = triton.cdiv(width, seg)
    new = dict(device=chunk.device, dtype=torch.int32)
    cut, total = torch.empty(B * rows, **new), torch.empty(B * rows, **new)
    counts, bases = torch.empty(B * rows * n_seg, **new), torch.empty(B * rows * n_seg, **new)
    cand, pos = torch.empty(B * rows * cap, **new), torch.empty(B * rows * cap, **new)
    strides = chunk.stride()[:2]
    seen = cut if last is None else last.contiguous()  # read only with `last`
    # registers: the select holds 2*CAP/threads keys a thread
    warps = tiles.select_warps or max(4, min(16, cap // 512))
    _cut_kernel[(B * rows,)](chunk, seen, cut, total, rows, first_pos, K, *strides, CAP=cap,
                             STRIDE=tiles.sample, CANDIDATES=tiles.candidates, SAMPLE=2 * cap,
                             LAST=last is not None, num_warps=warps)  # fmt: skip
    _collect_kernel[(B * rows, n_seg)](
        chunk, seen, cut, total, counts, bases, cand, pos, rows, first_pos, n_seg, *strides, SEG=seg,
        CAP=cap, LAST=last is not None, num_warps=tiles.collect_warps,
    )  # fmt: skip
    _select_kernel[(B * rows,)](
        chunk, seen, idx, valid, cand, pos, counts, bases, rows, first_pos, row0, S, K, n_seg, *strides,
        BLOCK=tiles.select, CAP=cap, SEG_P2=max(2, triton.next_power_of_2(n_seg)),
        LAST=last is not None, num_warps=warps,
    )  # fmt: skip
    return counts.view(B * rows, n_seg)


@triton.jit
def _quantize_kernel(
    x_ptr, out_ptr, scale_ptr, n_rows, D: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
    FMAX: tl.constexpr,
):  # fmt: skip
    """BLOCK_R rows of x [n_rows, D] as e4m3 and their fp32 scales (see `quantize_rows`), read once:
    the scale and the division rounded as IEEE fp32 divisions, the cast to the nearest e4m3."""
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    d = tl.arange(0, BLOCK_D)
    at = r[:, None] * D + d[None, :]
    mask = (r[:, None] < n_rows) & (d[None, :] < D)
    x = tl.load(x_ptr + at, mask=mask, other=0.0).to(tl.float32)
    amax = tl.max(tl.abs(x), 1)
    scale = tl.where(amax > 0, tl.div_rn(amax, FMAX), 1.0)
    tl.store(out_ptr + at, tl.div_rn(x, scale[:, None]).to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(scale_ptr + r, scale, mask=r < n_rows)


def select_cap(k: int, candidates: int = Tiles.candidates) -> int:
    """The radix select's candidate list per row for K picks when the cut aims at candidates*K/2 of
    them: (candidates+1)*K/2 rounded up to a power of two (2*K at the default 1.5*K)."""
    return triton.next_power_of_2(max((candidates + 1) * k // 2, 16))


# ----------------------------------------------------------------------------------------------
# Launchers


def _pow2(n: int, least: int = 16) -> int:
    return max(least, triton.next_power_of_2(n))


def _precision(q: torch.Tensor) -> str:
    return "ieee" if q.dtype == torch.float32 else "tf32"


def _rows(tiles: Tiles, heads: int) -> int:
    """Queries per scoring program: at least 16 (query, head) rows for the product."""
    return max(tiles.rows, 16 // heads)


def _launch_scores(
    q: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    k_scale: torch.Tensor | None,
    out: torch.Tensor,
    T: int,
    tiles: Tiles,
    fill: bool,
) -> None:
    """Scores of the S queries of q (the last S of T positions) into out [B,S,n_cols], n_cols <= T;
    with k_scale [B,T'] (fp8 q and k), each key's scores are multiplied by its scale."""
    B, S, H, D = q.shape
    if S == 0:
        return
    HP, rows = _pow2(H, 1), _rows(tiles, _pow2(H, 1))
    grid = (triton.cdiv(S, rows), triton.cdiv(triton.cdiv(out.shape[2], tiles.keys), tiles.tiles), B)
    fp8 = k_scale is not None
    ks = k_scale if fp8 else w  # read only when fp8
    _scores_fwd_kernel[grid](
        q, w, k, ks, out, q.stride(0), w.stride(0), k.stride(0), ks.stride(0), S, T, out.shape[2],
        out.stride(0), out.stride(1), H=H, D=D, HP=HP, BLOCK_D=_pow2(D), BLOCK_S=rows, BLOCK_T=tiles.keys,
        TILES=tiles.tiles, FILL_MASKED=fill, PRECISION=_precision(q), BLOCK_SP=_pow2(rows), FP8=fp8,
        PACKED_RELU=(fp8 or q.dtype == torch.bfloat16) and not triton.knobs.runtime.interpret,
        num_warps=tiles.warps, num_stages=tiles.stages,
    )  # fmt: skip


def _pad(n: int) -> int:
    """n scores rounded up to 16 (64 bytes): the pitch of a chunk's rows."""
    return -(-n // 16) * 16


def topk_chunk_rows(
    B: int, S: int, T: int, K: int, buffer_bytes: int, *, radix: bool, candidates: int = Tiles.candidates
) -> int:
    """Query rows per scored chunk of `index_topk`: the buffer holds their padded fp32 score rows
    and, for the radix select, each row's candidate list (keys and positions)."""
    cap = select_cap(K, candidates) if radix else 0
    return max(1, min(S, buffer_bytes // (B * (4 * _pad(T) + 8 * cap))))


def _tiles(args: list[int]) -> Tiles:
    return Tiles(*args)


def _pair_flops(q_shape, k_shape, topk: int | None = None) -> int:
    """The scoring's FLOPs over every causal pair, or (`topk`) over those the top-k scores."""
    B, S, H, D = q_shape
    T = k_shape[1]
    pairs = causal_pairs(S, T) if topk is None else topk_scored_pairs(S, T, min(topk, T))
    return B * pairs * 2 * H * (D + 1)


# ----------------------------------------------------------------------------------------------
# Custom ops (tile sizes travel as a list of ints, the fields of Tiles)


@torch.library.custom_op("glmlab::index_scores", mutates_args=())
def _scores_op(
    q: torch.Tensor, w: torch.Tensor, k: torch.Tensor, k_scale: torch.Tensor | None, tiles: list[int]
) -> torch.Tensor:
    B, S, _, _ = q.shape
    out = torch.empty(B, S, k.shape[1], device=q.device, dtype=torch.float32)
    _launch_scores(q, w, k, k_scale, out, k.shape[1], _tiles(tiles), fill=True)
    return out


@_scores_op.register_fake
def _(q, w, k, k_scale, tiles):
    return q.new_empty(q.shape[0], q.shape[1], k.shape[1], dtype=torch.float32)


@torch.library.custom_op("glmlab::index_scores_backward", mutates_args=())
def _scores_bwd_op(
    g: torch.Tensor, q: torch.Tensor, w: torch.Tensor, k: torch.Tensor, tiles: list[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    B, S, H, D = q.shape
    T, t = k.shape[1], _tiles(tiles)
    HP = _pow2(H, 1)
    rows, prec = _rows(t, HP), _precision(q)
    dq = torch.empty(q.shape, device=q.device, dtype=torch.float32)
    dw = torch.empty(w.shape, device=q.device, dtype=torch.float32)
    dk = torch.empty(k.shape, device=q.device, dtype=torch.float32)
    common = dict(H=H, D=D, HP=HP, BLOCK_D=_pow2(D), BLOCK_S=rows, BLOCK_T=t.keys, PRECISION=prec)
    common |= dict(num_warps=t.warps, num_stages=t.stages)
    strides = (q.stride(0), w.stride(0), k.stride(0), S, T, g.stride(0), g.stride(1))
    if S:
        _scores_bwd_dq_kernel[(triton.cdiv(S, rows), B)](q, w, k, g, dq, dw, *strides, **common)
    _scores_bwd_dk_kernel[(triton.cdiv(T, t.keys), B)](q, w, k, g, dk, *strides, **common)
    return dq, dw, dk


@_scores_bwd_op.register_fake
def _(g, q, w, k, tiles):
    return tuple(torch.empty_like(x, dtype=torch.float32) for x in (q, w, k))


def _scores_setup(ctx, inputs, output) -> None:
    q, w, k, _, tiles = inputs
    ctx.save_for_backward(q, w, k)
    ctx.tiles = tiles


def _scores_backward(ctx, g):
    q, w, k = ctx.saved_tensors
    dq, dw, dk = torch.ops.glmlab.index_scores_backward(g.contiguous(), q, w, k, ctx.tiles)
    return dq.to(q.dtype), dw, dk.to(k.dtype), None, None


_scores_op.register_autograd(_scores_backward, setup_context=_scores_setup)


@torch.library.custom_op("glmlab::index_scores_at", mutates_args=())
def _at_op(
    q: torch.Tensor, w: torch.Tensor, k: torch.Tensor, idx: torch.Tensor, tiles: list[int]
) -> torch.Tensor:
    B, S, H, D = q.shape
    K, t = idx.shape[2], _tiles(tiles)
    out = torch.empty(B, S, K, device=q.device, dtype=torch.float32)
    if S * K:
        _at_fwd_kernel[(S, triton.cdiv(K, t.picks), B)](
            q, w, k, idx, out, S, k.shape[1], K, H=H, D=D, HP=_pow2(H), BLOCK_D=_pow2(D), BLOCK_K=t.picks,
            PRECISION=_precision(q), num_warps=4,
        )  # fmt: skip
    return out


@_at_op.register_fake
def _(q, w, k, idx, tiles):
    return q.new_empty(idx.shape, dtype=torch.float32)


@torch.library.custom_op("glmlab::index_scores_at_backward", mutates_args=())
def _at_bwd_op(
    g: torch.Tensor, q: torch.Tensor, w: torch.Tensor, k: torch.Tensor, idx: torch.Tensor, tiles: list[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    B, S, H, D = q.shape
    K, t = idx.shape[2], _tiles(tiles)
    dq = torch.zeros(q.shape, device=q.device, dtype=torch.float32)
    dw = torch.zeros(w.shape, device=q.device, dtype=torch.float32)
    dk = torch.zeros(k.shape, device=q.device, dtype=torch.float32)
    if S * K:
        _at_bwd_kernel[(S, B)](
            q, w, k, idx, g, dq, dw, dk, S, k.shape[1], K, H=H, D=D, HP=_pow2(H), BLOCK_D=_pow2(D),
            BLOCK_K=t.picks, PRECISION=_precision(q), num_warps=4,
        )  # fmt: skip
    return dq, dw, dk


@_at_bwd_op.register_fake
def _(g, q, w, k, idx, tiles):
    return tuple(torch.empty_like(x, dtype=torch.float32) for x in (q, w, k))


def _at_setup(ctx, inputs, output) -> None:
    q, w, k, idx, tiles = inputs
    ctx.save_for_backward(q, w, k, idx)
    ctx.tiles = tiles


def _at_backward(ctx, g):
    q, w, k, idx = ctx.saved_tensors
    dq, dw, dk = torch.ops.glmlab.index_scores_at_backward(g.contiguous(), q, w, k, idx, ctx.tiles)
    return dq.to(q.dtype), dw, dk.to(k.dtype), None, None


_at_op.register_autograd(_at_backward, setup_context=_at_setup)


@torch.library.custom_op("glmlab::index_topk", mutates_args=())
def _topk_op(
    q: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    k_scale: torch.Tensor | None,
    topk: int,
    buffer_bytes: int,
    tiles: list[int],
    torch_select: bool,
    last: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    B, S, _, _ = q.shape
    T, t = k.shape[1], _tiles(tiles)
    K = min(topk, T)
    idx = torch.empty(B, S, K, device=q.device, dtype=torch.int64)
    valid = torch.empty(B, S, K, device=q.device, dtype=torch.int8)
    # The first queries see at most K keys and pick them all, unscored: at S = T = 2K (glm5-1b's
    # 4,096 tokens) that is half the rows to select and a quarter of the pairs to score.
    first = min(S, max(0, K - (T - S)))
    slots = torch.arange(K, device=q.device)
    idx[:, :first] = slots
    valid[:, :first] = slots <= torch.arange(T - S, T - S + first, device=q.device)[:, None]
    if last is not None and first:
        valid[:, :first] &= slots <= last[:, :first, None]
    if first == S:
        return idx, valid.view(torch.bool)
    rows = topk_chunk_rows(B, S - first, T, K, buffer_bytes, radix=not torch_select, candidates=t.candidates)
    buffer = torch.empty(B * rows * _pad(T), device=q.device, dtype=torch.float32)
    for a in range(first, S, rows):
        b = min(a + rows, S)
        end = T - S + b  # the chunk's keys: up to its last query, each row padded to 16 scores
        chunk = buffer[: B * (b - a) * _pad(end)].view(B, b - a, _pad(end))[:, :, :end]
        _launch_scores(q[:, a:b], w[:, a:b], k[:, :end], k_scale, chunk, end, t, fill=torch_select)
        if torch_select:
            if last is not None:  # keys past a query's last one score -inf: invalid if picked
                chunk.masked_fill_(torch.arange(end, device=q.device) > last[:, a:b, None], float("-inf"))
            n = min(K, end)
            top = chunk.topk(n, dim=-1, sorted=False)
            idx[:, a:b, :n], valid[:, a:b, :n] = top.indices, torch.isfinite(top.values)
            idx[:, a:b, n:], valid[:, a:b, n:] = 0, 0
            continue
        _select_chunk(chunk, idx, valid, T - S + a, a, t, None if last is None else last[:, a:b])
    return idx, valid.view(torch.bool)


@_topk_op.register_fake
def _(q, w, k, k_scale, topk, buffer_bytes, tiles, torch_select, last):
    shape = (q.shape[0], q.shape[1], min(topk, k.shape[1]))
    return q.new_empty(shape, dtype=torch.int64), q.new_empty(shape, dtype=torch.bool)


@register_flop_formula(torch.ops.glmlab.index_scores)
def _scores_flops(q_shape, w_shape, k_shape, *args, **kwargs) -> int:
    return _pair_flops(q_shape, k_shape)


@register_flop_formula(torch.ops.glmlab.index_scores_backward)
def _scores_bwd_flops(g_shape, q_shape, w_shape, k_shape, *args, **kwargs) -> int:
    return 2 * _pair_flops(q_shape, k_shape)


@register_flop_formula(torch.ops.glmlab.index_topk)
def _topk_flops(q_shape, w_shape, k_shape, k_scale_shape, topk, *args, **kwargs) -> int:
    return _pair_flops(q_shape, k_shape, topk)


def _at_flops(q_shape, idx_shape) -> int:
    B, S, H, D = q_shape
    return B * S * idx_shape[2] * 2 * H * (D + 1)


@register_flop_formula(torch.ops.glmlab.index_scores_at)
def _at_fwd_flops(q_shape, w_shape, k_shape, idx_shape, *args, **kwargs) -> int:
    return _at_flops(q_shape, idx_shape)


@register_flop_formula(torch.ops.glmlab.index_scores_at_backward)
def _at_bwd_flops(g_shape, q_shape, w_shape, k_shape, idx_shape, *args, **kwargs) -> int:
    return 2 * _at_flops(q_shape, idx_shape)


# ----------------------------------------------------------------------------------------------
# Public functions


def _inputs(
    q: torch.Tensor, w: torch.Tensor, k: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Checked, contiguous q, fp32 w and k in q's dtype (the casts are differentiable)."""
    if q.dim() != 4 or w.shape != q.shape[:3] or k.dim() != 3 or k.shape[::2] != q.shape[::3]:
        raise GlmlabError(
            f"indexer inputs q {tuple(q.shape)}, w {tuple(w.shape)}, k {tuple(k.shape)} do not fit: "
            "pass q [B,S,H,D], w [B,S,H], k [B,T,D]"
        )
    if q.shape[1] > k.shape[1]:
        raise GlmlabError(
            f"{q.shape[1]} queries but {k.shape[1]} keys: the queries are the last S of T positions"
        )
    if q.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise GlmlabError(f"indexer queries in {q.dtype}: pass bf16, fp16 or fp32")
    return q.contiguous(), w.float().contiguous(), k.to(q.dtype).contiguous()


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., D] as fp8 e4m3 rows and their fp32 scales [...]: x ~ x8 * scale[..., None], each row's
    largest |x| mapped to 448 (e4m3's largest finite value); all-zero rows get scale 1. One kernel
    that reads x once (twin: indexer_ref.quantize_rows, equal bit for bit on a GPU).

    Memory: the outputs only, 1 byte per element and 4 per row."""
    x = x.detach().contiguous()
    out = torch.empty(x.shape, device=x.device, dtype=torch.float8_e4m3fn)
    scale = torch.empty(x.shape[:-1], device=x.device, dtype=torch.float32)
    D, n = x.shape[-1], scale.numel()
    rows = max(1, 4096 // _pow2(D))
    if n:
        _quantize_kernel[(triton.cdiv(n, rows),)](
            x, out, scale, n, D=D, BLOCK_R=rows, BLOCK_D=_pow2(D), FMAX=FP8_MAX, num_warps=4
        )
    return out, scale


def _fp8_inputs(q: torch.Tensor, w: torch.Tensor, k: torch.Tensor):
    """q [B,S,H,D] per (query, head) and k [B,T,D] per key in fp8; q's scales folded into the head
    weights (relu(a*z) = a*relu(z) for a > 0), k's returned [B,T] for the kernel to apply per key."""
    if q.device.type != "cuda":
        raise GlmlabError(f"fp8 index scoring runs on a CUDA GPU (Hopper or newer), not {q.device.type}")
    if torch.cuda.get_device_capability(q.device) < (8, 9):  # e4m3 products: Ada (8.9), Hopper and newer
        name = torch.cuda.get_device_name(q.device)
        raise GlmlabError(f"index_dtype fp8 needs fp8 matrix units (Ada, Hopper or newer), not a {name}: "
                          "use index_dtype=bf16")  # fmt: skip
    q8, q_scale = quantize_rows(q)
    k8, k_scale = quantize_rows(k)
    return q8, (w * q_scale).contiguous(), k8, k_scale


def index_scores(
    q: torch.Tensor, w: torch.Tensor, k: torch.Tensor, *, tiles: Tiles | None = None, fp8: bool = False
) -> torch.Tensor:
    """I[b,s,t] = sum_h w[b,s,h] * relu(q[b,s,h] . k[b,t]), fp32 [B,S,T], -inf where t is not visible.

    Fused: each program takes a block of queries with all their heads as one product against key
    tiles, never forming [S,H,T], and skips tiles above the causal diagonal. Differentiable in q, w, k.

    `fp8=True` (CUDA, Hopper or newer; no gradient): q per (query, head) row and k per key quantised
    to e4m3 (`quantize_rows`), their dots in fp8 with fp32 accumulation, q's scales folded into w,
    k's applied to each key's score after the head sum (a bf16 product).

    Memory: the output, 4 bytes per (query, key) pair (all S x T); nothing is kept for backward but
    the inputs. Backward allocates fp32 gradients (4*H*D + 4*H bytes per query, 4*D per key) and their
    casts to the inputs' dtypes; it recomputes the dots instead of storing them.
    """
    q, w, k = _inputs(q, w, k)
    if not fp8:
        return torch.ops.glmlab.index_scores(q, w, k, None, list(_astuple(tiles)))
    if torch.is_grad_enabled() and (q.requires_grad or w.requires_grad or k.requires_grad):
        raise GlmlabError("fp8 index scores have no gradient: detach the inputs or score in bf16")
    return torch.ops.glmlab.index_scores(*_fp8_inputs(q, w, k), list(_astuple(tiles)))


def index_topk(
    q: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    *,
    topk: int,
    buffer_bytes: int = 1 << 28,
    tiles: Tiles | None = None,
    select: str = "radix",
    fp8: bool = False,
    last: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The K = min(topk, T) best visible keys per query: indices int64 [B,S,K], valid bool [B,S,K].

    Query s of S sees the keys up to position T - S + s, and with `last` (int [B,S], a decoding
    step's positions over a fixed-size cache) only those up to last[b,s] as well: the keys past it
    score -inf and any pick among them is invalid.

    `select="torch"` selects each scored chunk with `torch.topk` instead of the radix kernel
    (same sets; ties as torch.topk breaks them, so not necessarily the lower index).

    Queries are scored in chunks into a buffer of at most `buffer_bytes` (never a full [S,T] at long
    context), and each chunk row is selected exactly (`_select_chunk`): a threshold from a sample of
    the row keeps about 1.5*K candidates (counted and copied in one pass over the row's segments in
    parallel; their count lies in [K, CAP], CAP = 2*K rounded up to a power of two, except in rare
    rows); the candidates (or a row of at most CAP keys) are held in registers, where a search over
    the fp32 bits (the interval split in three per step) finds the K-th largest and one pass writes the
    picks. A row whose threshold keeps fewer than K or more than CAP runs a radix select (histogram
    passes) over the whole row. Ties go to the lower key index; the output is deterministic. Rows
    seeing at most K keys pick them all without being scored, key j in slot j, and mark the remaining
    slots invalid (their indices are in range but meaningless). No gradient.

    `fp8=True` scores in fp8 (e4m3) as `index_scores(..., fp8=True)` does, and selects from those
    scores (so the picks may differ from bf16's where scores are close). Without `tiles`, a prefill
    of PREFILL_QUERIES queries or more scores with PREFILL_TOPK_TILES, fewer queries than Tiles().rows
    (decoding) with DECODE_TOPK_TILES, anything else with Tiles().

    Memory: the outputs, 9 bytes per (query, pick), and the buffer: min(buffer_bytes, B*S'*(4*T' + 8*CAP))
    rounded up to one row of B*(4*T' + 8*CAP) bytes, S' the rows scored (those seeing more than K
    keys), T' = T rounded up to 16 (its scores and, for the radix select, its CAP candidates' keys and
    positions, 32 KB a row at K = 2048; `select="torch"` needs no candidates). With fp8, the quantised
    inputs (1 byte per element, 4 per scale, one pass over q and one over k) and the head weights
    with q's scales folded in.
    """
    if topk < 1:
        raise GlmlabError(f"topk {topk}: pass at least 1")
    q, w, k = _inputs(q.detach(), w.detach(), k.detach())
    if select not in ("radix", "torch"):
        raise GlmlabError(f"select {select!r}: pass radix or torch")
    if tiles is None and q.shape[1] >= PREFILL_QUERIES:
        tiles = PREFILL_TOPK_TILES[fp8]
    elif tiles is None and q.shape[1] < Tiles.rows:
        tiles = DECODE_TOPK_TILES
    if last is not None and last.shape != q.shape[:2]:
        raise GlmlabError(f"last {tuple(last.shape)} for queries {tuple(q.shape[:2])}: pass last [B,S]")
    q, w, k, k_scale = _fp8_inputs(q, w, k) if fp8 else (q, w, k, None)
    return torch.ops.glmlab.index_topk(
        q, w, k, k_scale, topk, buffer_bytes, list(_astuple(tiles)), select == "torch", last
    )


def index_scores_at(
    q: torch.Tensor, w: torch.Tensor, k: torch.Tensor, idx: torch.Tensor, *, tiles: Tiles | None = None
) -> torch.Tensor:
    """Scores fp32 [B,S,K] at the keys idx [B,S,K] (int64 in [0,T)); no causal mask, the caller
    masks invalid picks. Picked keys are loaded by index, never gathered into [B,S,K,D].
    Differentiable in q, w, k.

    Memory: the output, 4 bytes per (query, pick); backward keeps the inputs (idx: 8 bytes per pick)
    and allocates fp32 gradients (4*H*D + 4*H bytes per query, 4*D per key, the keys' summed with
    atomic adds, so their low bits may vary between runs).
    """
    q, w, k = _inputs(q, w, k)
    if idx.shape[:2] != q.shape[:2] or idx.dim() != 3:
        raise GlmlabError(f"picks {tuple(idx.shape)} for queries {tuple(q.shape[:2])}: pass idx [B,S,K]")
    return torch.ops.glmlab.index_scores_at(q, w, k, idx.long().contiguous(), list(_astuple(tiles)))


def _astuple(tiles: Tiles | None) -> tuple[int, ...]:
    t = tiles or Tiles()
    return dataclasses.astuple(t)


class _DenseIndexKL(torch.autograd.Function):
    """The stage-1 KL chunk by chunk; its gradient is computed in the forward pass (it is
    (softmax(I) - p) / N once a chunk's p and I exist), so p is computed once and backward scales."""

    @staticmethod
    def forward(ctx, q, w, k, q_lat, kv, scale: float, buffer_bytes: int, tiles: list[int], want_grad: bool):
        B, S = q.shape[:2]
        T, Ha = k.shape[1], q_lat.shape[2]
        if want_grad:
            dq, dw, dk = (torch.zeros(x.shape, device=x.device, dtype=torch.float32) for x in (q, w, k))
        total = q.new_zeros((), dtype=torch.float32)
        rows = max(1, min(S, buffer_bytes // (6 * B * Ha * T)))  # bf16 scores + fp32 probabilities
        for a in range(0, S, rows):
            b = min(a + rows, S)
            end = T - S + b
            p = _attention_target(q_lat[:, a:b], kv[:, :end], scale)
            index = torch.ops.glmlab.index_scores(q[:, a:b], w[:, a:b], k[:, :end], None, tiles)
            log_q = F.log_softmax(index, dim=-1)
            total += torch.where(p > 0, p * (p.clamp_min(1e-30).log() - log_q), 0.0).sum()
            if want_grad:
                grad = (log_q.exp_() - p).div_(B * S)
                gq, gw, gk = torch.ops.glmlab.index_scores_backward(
                    grad, q[:, a:b], w[:, a:b], k[:, :end], tiles
                )
                dq[:, a:b], dw[:, a:b] = gq, gw
                dk[:, :end] += gk
        if want_grad:
            ctx.save_for_backward(dq.to(q.dtype), dw, dk.to(k.dtype))
        return total / (B * S)

    @staticmethod
    def backward(ctx, g):
        dq, dw, dk = ctx.saved_tensors
        return dq * g, dw * g, dk * g, None, None, None, None, None, None


def _attention_target(q_lat: torch.Tensor, kv: torch.Tensor, scale: float) -> torch.Tensor:
    """p [B,C,T'] for the C queries of q_lat [B,C,H,R], the last C of kv's T' positions: softmax over
    keys per head (matrix product in the inputs' dtype, softmax in fp32), summed over heads, renormalised."""
    B, C, H, _ = q_lat.shape
    T = kv.shape[1]
    scores = torch.bmm(q_lat.reshape(B, C * H, -1), kv.transpose(1, 2)).view(B, C, H, T)
    hidden = torch.arange(T, device=kv.device)[None, :] > torch.arange(T - C, T, device=kv.device)[:, None]
    scores.masked_fill_(hidden[:, None], float("-inf"))
    p = torch.softmax(scores.mul_(scale), dim=-1, dtype=torch.float32).sum(2)
    return p.div_(p.sum(-1, keepdim=True))


def dense_index_kl(
    q: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    q_lat: torch.Tensor,
    kv: torch.Tensor,
    *,
    scale: float,
    buffer_bytes: int = 1 << 28,
    tiles: Tiles | None = None,
) -> torch.Tensor:
    """DSA stage 1's loss at long context: mean over queries of KL(p || softmax(I)) over visible keys.

    I = index_scores(q, w, k); p is the main attention's probability summed over heads and
    renormalised (detached), from the absorbed MLA query q_lat [B,S,Ha,R] and latents kv [B,T,R]:
    scores = q_lat . kv * scale, causal softmax per head. Both are computed for chunks of query rows,
    so neither [S,T] nor [S,Ha,T] is ever held. The gradient reaches q, w and k only.

    Memory: per chunk of C rows about 6*B*C*Ha*T bytes (bf16 scores, fp32 probabilities; C is chosen
    to fit `buffer_bytes`) plus a few [B,C,T] fp32 tensors; kept for backward: the gradients of q, w
    and k (the size of the inputs, plus fp32 accumulators while the forward runs). With 64 attention
    heads and 128K keys, the default 256 MB holds 5 query rows per chunk (about 26,000 chunks of a
    dozen launches each; not yet timed): pass a larger `buffer_bytes` where memory allows.
    """
    q, w, k = _inputs(q, w, k)
    q_lat, kv = q_lat.detach(), kv.detach().to(q_lat.dtype)
    if q_lat.shape[:2] != q.shape[:2] or kv.shape[:2] != k.shape[:2] or q_lat.shape[3] != kv.shape[2]:
        raise GlmlabError(
            f"attention inputs q_lat {tuple(q_lat.shape)}, kv {tuple(kv.shape)} do not fit the indexer's "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}: pass q_lat [B,S,H,R], kv [B,T,R]"
        )
    want_grad = torch.is_grad_enabled() and (q.requires_grad or w.requires_grad or k.requires_grad)
    return _DenseIndexKL.apply(q, w, k, q_lat, kv, scale, buffer_bytes, list(_astuple(tiles)), want_grad)
