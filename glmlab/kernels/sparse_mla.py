"""Sparse MLA attention in Triton: each query's heads attend to its own K selected latent rows.

DeepSeek Sparse Attention in the absorbed MLA form (`docs/architecture.md`, DeepSeek Sparse
Attention): a query n has H heads q[n] [H,R] in latent space and reads the K rows kv[idx[n]] of
the latents [c_kv ; k_pe] (R = r + rope columns); scores are over all R columns, values are the
first r columns of the same rows. All heads share one gathered tile of rows, as in FlashMLA: the
heads are the M dimension of each matrix product and the keys its N dimension, so a tile of rows
read once feeds an [H,BLOCK_K] product. Softmax is online (running maximum and sum), inputs stay
in their dtype (bf16 on a GPU) with fp32 accumulation, and the log-sum-exp per (query, head) is
kept for the backward pass; the [N,H,K] probabilities only with `keep_probs` (below).

Two things decide the speed on Hopper (experiments/results/h200-kernels-sparse-mla-3/README.md):
- The gathered tile should be in flight while the previous ones are multiplied. The rows of the
  next key tile are read one iteration ahead (`_rows`), so the gather depends only on a
  loop-carried value; with 3 or more stages Triton's pipeliner then waits only for the oldest
  gather (a gather whose rows are read in the same iteration is issued too late for any overlap,
  and with 2 stages every gather is waited for at the top of the next iteration, so 64-key tiles,
  which leave room for only 2 beside the queries, overlap little).
- The score tile [64 heads, BLOCK_K] must be split between the two warpgroups, not computed by
  both. Triton gives a product whose result feeds another product in the same iteration all its
  warps along M; with 64 rows and 8 warps that duplicates the product in each warpgroup. The
  masking of the scores sits inside an `if` on a runtime value that always holds (`_masked`):
  Triton does not follow values out of an `if`, so the score product keeps the default split.

The backward runs in chunks of queries through three kernels, each with no loop-carried state but
its own accumulator: the probabilities (`_probs_kernel`, scores recomputed), then dQ with dS
(`_dq_kernel`, writing dS), then dKV from dS and P (`_dkv_kernel`, fp32 atomic adds into the
selected rows, the backward's largest cost). P and dS of a chunk live in a buffer of at most
SPARSE_BACKWARD_BYTES. With `keep_probs` the forward writes every query's P [N,H,K] instead, from
the pass that also sums the key mass, and the backward skips `_probs_kernel`: each pass over the
gathered rows reads N x K x R values (155 GB a layer at 64K queries on GLM-5's shape), and
writing P once costs a fraction of that pass: 3.5 against 55 ms a layer there on an H200 (P is
17 GB; glmlab/plan.py decides, experiments/results/h200-session11/).

The plain torch twin is glmlab/kernels/sparse_mla_ref.py. On a machine without CUDA the kernels
run through Triton's interpreter (TRITON_INTERPRET=1, set before triton is imported), which is
how the tests check them on a CPU.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch.utils.flop_counter import register_flop_formula

from glmlab.device import multiprocessors

try:  # Gluon comes with Triton 3.4 and later; with an older Triton every call takes the Triton kernel
    from glmlab.kernels.sparse_mla_hopper import hopper_forward, hopper_forward_applies
except ImportError:

    def hopper_forward_applies(
        q: torch.Tensor, kv: torch.Tensor, r: int, *, mass: bool, keep_probs: bool
    ) -> bool:
        return False


from glmlab.plan import SPARSE_BACKWARD_BYTES

LOG2E = math.log2(math.e)


class Tiles(NamedTuple):
    """One kernel's launch shape: heads per program, keys per tile, warps, pipeline stages."""

    block_h: int
    block_k: int
    num_warps: int
    num_stages: int


class BackwardTiles(NamedTuple):
    """The backward's three kernels: probabilities, dQ (with dS), dKV."""

    probs: Tiles
    dq: Tiles
    dkv: Tiles


# Measured on an H200 at GLM-5's shape (benchmarks/bench_sparse_mla.py; experiments/results/
# h200-kernels-sparse-mla-3/ and -4/). 64-key tiles leave shared memory for two gathered tiles beside
# the 64 x 576 queries, so the gather overlaps little; 32-key tiles keep 2-3 gathers in flight but
# halve each product's N and double the per-tile softmax, and ran slower in the forward (8.4 against
# 10.7-11.2 ms at 8K queries, in two calls). The probabilities kernel, which has no accumulator, runs
# one warpgroup over 64-key tiles (64 x 64 products, the queries read once per tile, not once per
# warpgroup): 6.0 against 8.1 ms at 8K queries, the backward 35.0 against 37.2 ms. dQ holds dO
# beside the gathered tile, so 64-key tiles do not fit there (237,568 B); dKV with 16-key tiles or 4
# stages was slower (39.4-39.9 and 37.0-37.3 ms for the backward).
FORWARD_TILES = Tiles(block_h=64, block_k=64, num_warps=8, num_stages=2)
BACKWARD_TILES = BackwardTiles(probs=Tiles(64, 64, 4, 2), dq=Tiles(64, 32, 8, 3), dkv=Tiles(64, 32, 8, 3))
# The alternatives the benchmark's sweep times and the GPU test checks (each fits in an H200's
# shared memory when compiled for sm_90a: experiments/results/h200-kernels-sparse-mla-3/compile_report.py).
FORWARD_CANDIDATES = (FORWARD_TILES, Tiles(64, 32, 8, 3))
BACKWARD_CANDIDATES = (
    BACKWARD_TILES,
    BackwardTiles(probs=Tiles(64, 64, 8, 2), dq=Tiles(64, 32, 8, 3), dkv=Tiles(64, 32, 8, 3)),
    BackwardTiles(probs=Tiles(64, 32, 8, 3), dq=Tiles(64, 32, 8, 3), dkv=Tiles(64, 32, 8, 3)),
)


def candidate_pairs() -> list[tuple[Tiles, BackwardTiles]]:
    """Every candidate once: each forward with the default backward, then the default forward with
    each other backward."""
    pairs = [(tiles, BACKWARD_TILES) for tiles in FORWARD_CANDIDATES]
    return pairs + [(FORWARD_TILES, tiles) for tiles in BACKWARD_CANDIDATES[1:]]


MASS_KEYS = 256  # keys per step of the forward's key-mass pass over its scratch
COMBINE_COLUMNS = 128  # value columns per program of the split forward's join
# at most this many of the parts' values a join program (64 fp32 a thread at 4 warps): a 128K cache's
# 129 Gluon runs at one query take 32 columns a program, not 128, which would hold 256 values of the
# parts a thread (untimed)
COMBINE_VALUES = 8192
# The split forward through the Gluon kernel's runs (`_hopper_split_forward`): each run costs about
# 13 us to start and 0.030 us a key, Triton's split program about 9 and 0.070 (one H200, GLM-5's
# shapes, experiments/results/h200-session17/, call 4, probe/split_probe.py). So the Gluon runs take
# the calls where Triton's split would give a program HOPPER_SPLIT_FROM keys or more, in runs of at
# least HOPPER_RUN_MIN keys, a multiple of HOPPER_RUN_KEYS (its warpgroups take a 64-key tile each):
# over a 128K cache (dense decoding) 74.6 against 111.3 us at 1 query, 1,541 against 2,763 at 32;
# DSA's 2,048 keys at 32 queries 67.7 against 82.1; at 1 and 8 queries Triton's 14.3 and 28.1 stay
# (Gluon 17.6 and 39.0 at best).
HOPPER_RUN_KEYS = 128
HOPPER_SPLIT_FROM = 512
HOPPER_RUN_MIN = 1024


@triton.jit
def _rows(idx_ptr, valid_ptr, n, K, k0, BLOCK_K: tl.constexpr):
    """Rows of kv that query n reads at keys k0 .. k0 + BLOCK_K, -1 where invalid or past K."""
    offs = k0 + tl.arange(0, BLOCK_K)
    inside = offs < K
    keep = tl.load(valid_ptr + n * K + offs, mask=inside, other=0) != 0
    rows = tl.load(idx_ptr + n * K + offs, mask=inside, other=0)
    return tl.where(keep, rows, -1)


@triton.jit
def _gather(kv_ptr, rows, R, r, offs_v, offs_p, col_v, col_p):
    """The value columns [BK,BLOCK_V] and rope columns [BK,BLOCK_P] of kv's rows (0 where rows < 0)."""
    keep = rows >= 0
    kv_row = kv_ptr + rows[:, None] * R
    kvn = tl.load(kv_row + offs_v[None, :], mask=keep[:, None] & col_v[None, :], other=0.0)
    kvp = tl.load(kv_row + r + offs_p[None, :], mask=keep[:, None] & col_p[None, :], other=0.0)
    return kvn, kvp


@triton.jit
def _query(q_ptr, n, H, heads, R, r, offs_v, offs_p, row_h, col_v, col_p):
    """Query n's heads in latent space: value columns [BH,BLOCK_V] and rope columns [BH,BLOCK_P]."""
    q_row = q_ptr + (n * H + heads[:, None]) * R
    qn = tl.load(q_row + offs_v[None, :], mask=row_h[:, None] & col_v[None, :], other=0.0)
    qp = tl.load(q_row + r + offs_p[None, :], mask=row_h[:, None] & col_p[None, :], other=0.0)
    return qn, qp


@triton.jit
def _masked(x, keep, K, fill: tl.constexpr):
    """x [BH,BK] with `fill` at the keys not kept. The `if` holds whenever a kernel runs (K >= 1);
    it stands between x's product and the product that reads its result, so that Triton splits x's
    product between the warpgroups instead of computing it in each (see the module docstring)."""
    if K > 0:
        x = tl.where(keep[None, :], x, fill)
    return x


@triton.jit
def _attend_tile(qn, qp, kvn, kvp, keep, m, total, acc, K, scale_log2, PRECISION: tl.constexpr):
    """One gathered key tile into the online softmax of the heads [BH]: running maximum m (log2
    units), sum `total` and output `acc` [BH,BLOCK_V]. Returns the new maximum, the one the tile's
    probabilities p [BH,BK] are under (0 while no key is valid), p, total and acc."""
    # the value columns' product accumulates onto the rope columns' (scaled once, in exp2); each
    # product's result passes a `_masked`, so that both keep the warpgroup split
    s = _masked(tl.dot(qp, tl.trans(kvp), input_precision=PRECISION), keep, K, float("-inf"))
    s = _masked(tl.dot(qn, tl.trans(kvn), s, input_precision=PRECISION), keep, K, float("-inf"))
    m_new = tl.maximum(m, tl.max(s, 1) * scale_log2)  # the scale is positive
    m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # a tile with no valid key so far
    p = tl.exp2(s * scale_log2 - m_use[:, None])
    alpha = tl.exp2(m - m_use)
    total = total * alpha + tl.sum(p, 1)
    acc = tl.dot(p.to(kvn.dtype), kvn, acc * alpha[:, None], input_precision=PRECISION)
    return m_new, m_use, p, total, acc


@triton.jit
def _forward_kernel(
    q_ptr, kv_ptr, idx_ptr, valid_ptr, out_ptr, lse_ptr, mass_ptr, probs_ptr, maxes_ptr, kept_ptr,
    N, H, K, R, r, scale_log2,
    BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_P: tl.constexpr,
    MASS: tl.constexpr, KEEP: tl.constexpr, MASS_TILES: tl.constexpr, ONE_HEAD_BLOCK: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """Programs (p, head block) take queries p, p + P, ... With MASS or KEEP each keeps, in its own
    slot of the scratch, every tile's probabilities under that tile's running maximum (probs
    [BH,K]) and the maximum itself (maxes [tiles,BH]); once the log-sum-exp is known, those
    probabilities rescaled by exp2(max - lse) are P, without gathering the rows again: summed over
    heads they are the key mass (MASS), and KEEP writes them to kept [N,H,K] for the backward."""
    heads_local = tl.arange(0, BLOCK_H)
    heads = tl.program_id(1) * BLOCK_H + heads_local
    offs_v, offs_p = tl.arange(0, BLOCK_V), tl.arange(0, BLOCK_P)
    row_h, col_v, col_p = heads < H, offs_v < r, offs_p < R - r
    slot = (tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)).to(tl.int64)
    probs_slot = probs_ptr + slot * BLOCK_H * K + heads_local[:, None] * K
    maxes_slot = maxes_ptr + slot * tl.cdiv(K, BLOCK_K) * BLOCK_H + heads_local
    for n in range(tl.program_id(0), N, tl.num_programs(0)):
        n = tl.cast(n, tl.int64)
        qn, qp = _query(q_ptr, n, H, heads, R, r, offs_v, offs_p, row_h, col_v, col_p)

        m = tl.full([BLOCK_H], float("-inf"), tl.float32)  # running maximum (log2 units)
        total = tl.zeros([BLOCK_H], tl.float32)  # running sum of exp2(s - m)
        acc = tl.zeros([BLOCK_H, BLOCK_V], tl.float32)
        rows = _rows(idx_ptr, valid_ptr, n, K, 0, BLOCK_K)
        for k0 in range(0, K, BLOCK_K):
            rows_next = _rows(idx_ptr, valid_ptr, n, K, k0 + BLOCK_K, BLOCK_K)
            kvn, kvp = _gather(kv_ptr, rows, R, r, offs_v, offs_p, col_v, col_p)
            m_new, m_use, p, total, acc = _attend_tile(qn, qp, kvn, kvp, rows >= 0, m, total, acc, K,
                                                       scale_log2, PRECISION)  # fmt: skip
            m = m_new
            if MASS or KEEP:
                offs_k = k0 + tl.arange(0, BLOCK_K)
                p_keep = p.to(probs_ptr.dtype.element_ty)
                tl.store(probs_slot + offs_k[None, :], p_keep, mask=offs_k[None, :] < K)
                tl.store(maxes_slot + (k0 // BLOCK_K) * BLOCK_H, m_use)
            rows = rows_next
        lse = m + tl.log2(total)
        out_row = out_ptr + (n * H + heads[:, None]) * r
        tl.store(out_row + offs_v[None, :], (acc / total[:, None]).to(out_ptr.dtype.element_ty),
                 mask=row_h[:, None] & col_v[None, :])  # fmt: skip
        tl.store(lse_ptr + n * H + heads, lse, mask=row_h)

        if MASS or KEEP:
            tl.debug_barrier()  # the slot's probabilities, written by other threads of this program
            lse = tl.where(row_h, lse, float("inf"))  # padded heads weigh nothing
            tiles = tl.arange(0, MASS_TILES)  # MASS_TILES key tiles per step: fewer, longer steps
            for t0 in range(0, tl.cdiv(K, BLOCK_K), MASS_TILES):
                keys = (t0 + tiles)[:, None] * BLOCK_K + tl.arange(0, BLOCK_K)[None, :]  # [T,BK]
                p = tl.load(probs_slot[:, :, None] + keys[None, :, :], mask=keys[None, :, :] < K, other=0.0)
                maxes = tl.load(maxes_slot[:, None] + (t0 + tiles)[None, :] * BLOCK_H,
                                mask=(t0 + tiles)[None, :] * BLOCK_K < K, other=0.0)  # fmt: skip
                weight = tl.exp2(maxes - lse[:, None])  # [BH,T]
                p = p.to(tl.float32) * weight[:, :, None]  # [BH,T,BK]: P
                if KEEP:
                    kept = kept_ptr + (n * H + heads)[:, None, None] * K + keys[None, :, :]
                    in_keys = row_h[:, None, None] & (keys < K)[None, :, :]
                    tl.store(kept, p.to(kept_ptr.dtype.element_ty), mask=in_keys)
                if MASS:
                    mass = tl.sum(p, 0)
                    if ONE_HEAD_BLOCK:
                        tl.store(mass_ptr + n * K + keys, mass, mask=keys < K)
                    else:
                        tl.atomic_add(mass_ptr + n * K + keys, mass, mask=keys < K)
            tl.debug_barrier()  # read before the next query overwrites the slot


@triton.jit
def _split_kernel(
    q_ptr, kv_ptr, idx_ptr, valid_ptr, part_ptr, stats_ptr, H, K, R, r, scale_log2, KEYS,
    BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_P: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """Program (query n, split j, head block): the online softmax over keys j*KEYS .. (j+1)*KEYS
    (KEYS a multiple of BLOCK_K) of query n (a few queries over many keys: decoding), left
    unnormalised in part [N,splits,H,r] (fp32) with its maximum and sum in stats [N,splits,2,H];
    `_combine_kernel` joins the splits."""
    n, j = tl.program_id(0).to(tl.int64), tl.program_id(1)
    heads = tl.program_id(2) * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_v, offs_p = tl.arange(0, BLOCK_V), tl.arange(0, BLOCK_P)
    row_h, col_v, col_p = heads < H, offs_v < r, offs_p < R - r
    qn, qp = _query(q_ptr, n, H, heads, R, r, offs_v, offs_p, row_h, col_v, col_p)
    m = tl.full([BLOCK_H], float("-inf"), tl.float32)
    total = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_V], tl.float32)
    end = tl.minimum(j * KEYS + KEYS, K)
    for k0 in range(j * KEYS, end, BLOCK_K):
        rows = _rows(idx_ptr, valid_ptr, n, K, k0, BLOCK_K)  # KEYS is a multiple of BLOCK_K
        kvn, kvp = _gather(kv_ptr, rows, R, r, offs_v, offs_p, col_v, col_p)
        keep = rows >= 0
        m, _, _, total, acc = _attend_tile(qn, qp, kvn, kvp, keep, m, total, acc, K, scale_log2, PRECISION)
    slot = n * tl.num_programs(1) + j
    tl.store(part_ptr + (slot * H + heads[:, None]) * r + offs_v[None, :], acc,
             mask=row_h[:, None] & col_v[None, :])  # fmt: skip
    tl.store(stats_ptr + slot * 2 * H + heads, m, mask=row_h)
    tl.store(stats_ptr + (slot * 2 + 1) * H + heads, total, mask=row_h)


@triton.jit
def _combine_kernel(
    part_ptr, stats_ptr, out_ptr, lse_ptr, H, r, SPLITS, BLOCK_S: tl.constexpr, BLOCK_V: tl.constexpr
):  # fmt: skip
    """Program (query n, head h, column block c): its SPLITS partial softmaxes rescaled to their
    common maximum and summed, columns c*BLOCK_V.. of out [N,H,r] in out's dtype, and (c = 0) the
    log-sum-exp [N,H] (log2 units). A split without a valid key has maximum -inf and weighs nothing
    (its part, 0 from `_split_kernel`, NaN from the Gluon forward's 0/0, is not read)."""
    n, h = tl.program_id(0).to(tl.int64), tl.program_id(1)
    j = tl.arange(0, BLOCK_S)
    offs_v = tl.program_id(2) * BLOCK_V + tl.arange(0, BLOCK_V)
    slot = n * SPLITS + j
    m = tl.load(stats_ptr + slot * 2 * H + h, mask=j < SPLITS, other=float("-inf"))
    total = tl.load(stats_ptr + (slot * 2 + 1) * H + h, mask=j < SPLITS, other=0.0)
    top = tl.max(m, 0)
    top = tl.where(top == float("-inf"), 0.0, top)  # no valid key at all: weights 0, lse -inf as unsplit
    weight = tl.exp2(m - top)  # 0 for the empty splits
    total = tl.sum(total * weight, 0)
    part = tl.load(part_ptr + (slot[:, None] * H + h) * r + offs_v[None, :],
                   mask=(j < SPLITS)[:, None] & (offs_v < r)[None, :], other=0.0)  # fmt: skip
    out = tl.sum(tl.where((weight > 0)[:, None], part * weight[:, None], 0.0), 0) / total
    tl.store(out_ptr + (n * H + h) * r + offs_v, out.to(out_ptr.dtype.element_ty), mask=offs_v < r)
    if tl.program_id(2) == 0:
        tl.store(lse_ptr + n * H + h, top + tl.log2(total))


@triton.jit
def _probs_kernel(
    q_ptr, kv_ptr, idx_ptr, valid_ptr, lse_ptr, p_ptr, n0, H, K, R, r, scale_log2,
    BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_P: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """Program (query n0 + c, head block): P[c] = exp2(q . kv * scale_log2 - lse), 0 off the keys."""
    c = tl.program_id(0).to(tl.int64)
    n = n0 + c
    heads = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_v, offs_p = tl.arange(0, BLOCK_V), tl.arange(0, BLOCK_P)
    row_h, col_v, col_p = heads < H, offs_v < r, offs_p < R - r
    qn, qp = _query(q_ptr, n, H, heads, R, r, offs_v, offs_p, row_h, col_v, col_p)
    lse = tl.load(lse_ptr + n * H + heads, mask=row_h, other=float("inf"))
    p_row = p_ptr + (c * H + heads[:, None]) * K
    rows = _rows(idx_ptr, valid_ptr, n, K, 0, BLOCK_K)
    for k0 in range(0, K, BLOCK_K):
        rows_next = _rows(idx_ptr, valid_ptr, n, K, k0 + BLOCK_K, BLOCK_K)
        kvn, kvp = _gather(kv_ptr, rows, R, r, offs_v, offs_p, col_v, col_p)
        s = tl.dot(qn, tl.trans(kvn), input_precision=PRECISION) * scale_log2
        s += tl.dot(qp, tl.trans(kvp), input_precision=PRECISION) * scale_log2
        p = tl.exp2(tl.where((rows >= 0)[None, :], s, float("-inf")) - lse[:, None])
        offs_k = k0 + tl.arange(0, BLOCK_K)
        tl.store(
            p_row + offs_k[None, :], p.to(p_ptr.dtype.element_ty), mask=row_h[:, None] & (offs_k < K)[None, :]
        )
        rows = rows_next


@triton.jit
def _dq_kernel(
    kv_ptr, idx_ptr, valid_ptr, out_ptr, dout_ptr, p_ptr, ds_ptr, dq_ptr, n0, H, K, R, r, scale,
    BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_P: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """Program (query n0 + c, head block): dP = dO . v, dS = P (dP - delta) * scale (written to
    the chunk's buffer for `_dkv_kernel`), dQ = dS . kv; delta = rowsum(dO * out)."""
    c = tl.program_id(0).to(tl.int64)
    n = n0 + c
    heads = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_v, offs_p = tl.arange(0, BLOCK_V), tl.arange(0, BLOCK_P)
    row_h, col_v, col_p = heads < H, offs_v < r, offs_p < R - r
    o_row = (n * H + heads[:, None]) * r + offs_v[None, :]
    do = tl.load(dout_ptr + o_row, mask=row_h[:, None] & col_v[None, :], other=0.0)
    out = tl.load(out_ptr + o_row, mask=row_h[:, None] & col_v[None, :], other=0.0)
    delta = tl.sum(do.to(tl.float32) * out.to(tl.float32), 1)
    p_row = (c * H + heads[:, None]) * K
    dqn = tl.zeros([BLOCK_H, BLOCK_V], tl.float32)
    dqp = tl.zeros([BLOCK_H, BLOCK_P], tl.float32)
    rows = _rows(idx_ptr, valid_ptr, n, K, 0, BLOCK_K)
    for k0 in range(0, K, BLOCK_K):
        rows_next = _rows(idx_ptr, valid_ptr, n, K, k0 + BLOCK_K, BLOCK_K)
        kvn, kvp = _gather(kv_ptr, rows, R, r, offs_v, offs_p, col_v, col_p)
        offs_k = k0 + tl.arange(0, BLOCK_K)
        in_k = row_h[:, None] & (offs_k < K)[None, :]
        p = tl.load(p_ptr + p_row + offs_k[None, :], mask=in_k, other=0.0).to(tl.float32)
        dp = _masked(tl.dot(do, tl.trans(kvn), input_precision=PRECISION), rows >= 0, K, 0.0)
        ds = (p * (dp - delta[:, None]) * scale).to(kvn.dtype)  # P is 0 off the keys
        tl.store(ds_ptr + p_row + offs_k[None, :], ds, mask=in_k)
        dqn = tl.dot(ds, kvn, dqn, input_precision=PRECISION)
        dqp = tl.dot(ds, kvp, dqp, input_precision=PRECISION)
        rows = rows_next
    dq_row = dq_ptr + (n * H + heads[:, None]) * R
    dq_type = dq_ptr.dtype.element_ty
    tl.store(dq_row + offs_v[None, :], dqn.to(dq_type), mask=row_h[:, None] & col_v[None, :])
    tl.store(dq_row + r + offs_p[None, :], dqp.to(dq_type), mask=row_h[:, None] & col_p[None, :])


@triton.jit
def _dkv_kernel(
    q_ptr, dout_ptr, idx_ptr, valid_ptr, p_ptr, ds_ptr, dkv_ptr, n0, H, K, R, r,
    BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_P: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """Program (query n0 + c, head block): dKV of its selected rows, [columns, keys] per tile so
    that the columns are the products' M side (a multiple of 64, as Hopper's warpgroup products
    want): dS^T q over all columns plus P^T dO over the value columns, added with fp32 atomics."""
    c = tl.program_id(0).to(tl.int64)
    n = n0 + c
    heads = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_v, offs_p = tl.arange(0, BLOCK_V), tl.arange(0, BLOCK_P)
    row_h, col_v, col_p = heads < H, offs_v < r, offs_p < R - r
    qn, qp = _query(q_ptr, n, H, heads, R, r, offs_v, offs_p, row_h, col_v, col_p)
    do = tl.load(dout_ptr + (n * H + heads[:, None]) * r + offs_v[None, :],
                 mask=row_h[:, None] & col_v[None, :], other=0.0)  # fmt: skip
    p_row = (c * H + heads[:, None]) * K
    rows = _rows(idx_ptr, valid_ptr, n, K, 0, BLOCK_K)
    for k0 in range(0, K, BLOCK_K):
        rows_next = _rows(idx_ptr, valid_ptr, n, K, k0 + BLOCK_K, BLOCK_K)
        offs_k = k0 + tl.arange(0, BLOCK_K)
        in_k = row_h[:, None] & (offs_k < K)[None, :]
        p = tl.load(p_ptr + p_row + offs_k[None, :], mask=in_k, other=0.0)
        ds = tl.load(ds_ptr + p_row + offs_k[None, :], mask=in_k, other=0.0)
        dkvn = tl.dot(tl.trans(qn), ds, input_precision=PRECISION)
        dkvn = tl.dot(tl.trans(do), p, dkvn, input_precision=PRECISION)
        dkvp = tl.dot(tl.trans(qp), ds, input_precision=PRECISION)
        keep = rows >= 0
        dkv_col = dkv_ptr + rows[None, :] * R
        tl.atomic_add(dkv_col + offs_v[:, None], dkvn, mask=keep[None, :] & col_v[:, None], sem="relaxed")
        tl.atomic_add(dkv_col + r + offs_p[:, None], dkvp, mask=keep[None, :] & col_p[:, None], sem="relaxed")
        rows = rows_next


def _block_h(H: int, tiles: Tiles) -> int:
    """Heads per program: the tile's, fewer for fewer heads (tl.dot wants at least 16 rows)."""
    return min(tiles.block_h, max(16, triton.next_power_of_2(H)))


def _launch_shape(H: int, R: int, r: int, tiles: Tiles) -> tuple[int, dict]:
    """Heads per program and the kernel's compile-time sizes (tl.dot wants at least 16 rows)."""
    block_h = _block_h(H, tiles)
    sizes = dict(BLOCK_H=block_h, BLOCK_K=tiles.block_k, BLOCK_V=max(16, triton.next_power_of_2(r)))
    sizes["BLOCK_P"] = max(16, triton.next_power_of_2(R - r))
    return block_h, sizes


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"  # fp32 inputs stay exact; bf16 ignores it


@torch.library.custom_op("glmlab::sparse_mla_fwd", mutates_args=())
def _forward(
    q: torch.Tensor, kv: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor, scale: float, r: int,
    mass: bool, keep_probs: bool, tiles: list[int], hopper: bool, split: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """out [N,H,r], log-sum-exp [N,H] (fp32, log2 units), key mass [N,K] (or [N,0] without
    `mass`), P [N,H,K] in q's dtype (or [0,H,K] without `keep_probs`). `tiles` is the forward's
    Tiles followed by the backward's three; `hopper`: the Gluon kernel where it applies; `split`:
    the keys of few queries split between programs (`_split_forward`) where that fills more
    multiprocessors."""
    (N, H, R), K = q.shape, idx.shape[1]
    fwd = Tiles(*tiles[:4])
    programs = multiprocessors(q.device)
    keys = split_keys(N, H, K, fwd, programs) if split and not (mass or keep_probs) else K
    gluon = hopper and K and hopper_forward_applies(q, kv, r, mass=mass, keep_probs=keep_probs)
    if keys < K and not (gluon and keys >= HOPPER_SPLIT_FROM):
        out, lse = _split_forward(q.contiguous(), kv, idx, valid, scale, r, fwd, keys)
        return out, lse, lse.new_zeros(N, 0), q.new_empty(0, H, K)
    if gluon:
        runs = (
            K
            if keys == K
            else max(HOPPER_RUN_MIN, split_keys(N, H, K, fwd._replace(block_k=HOPPER_RUN_KEYS), programs))
        )
        if runs < K:
            out, lse = _hopper_split_forward(q, kv, idx, valid, scale, r, runs)
        else:
            out, lse = hopper_forward(q, kv, idx, valid, scale * LOG2E, r)
        return out, lse, lse.new_zeros(N, 0), q.new_empty(0, H, K)
    q = q.contiguous()  # the Gluon kernel reads q's strides; the Triton kernels want [N,H,R] rows
    block_h, sizes = _launch_shape(H, R, r, fwd)
    heads_blocks = triton.cdiv(H, block_h)
    out = q.new_empty(N, H, r)
    lse = torch.empty(N, H, device=q.device, dtype=torch.float32)
    key_mass = torch.zeros(N, K if mass else 0, device=q.device, dtype=torch.float32)
    kept = q.new_empty(N if keep_probs else 0, H, K)
    # without the mass or kept P: one program per query, no scratch
    programs, probs, maxes = N, key_mass, key_mass
    if mass or keep_probs:
        # one program a multiprocessor (its tiles fill one's shared memory), each with a scratch slot
        programs = min(N, multiprocessors(q.device))
        slots = programs * heads_blocks
        probs_dtype = torch.float32 if q.dtype == torch.float32 else torch.float16
        probs = torch.empty(slots, block_h, K, device=q.device, dtype=probs_dtype)
        maxes = torch.empty(slots, triton.cdiv(K, fwd.block_k), block_h, device=q.device, dtype=torch.float32)
    _forward_kernel[(programs, heads_blocks)](
        q, kv, idx, valid, out, lse, key_mass, probs, maxes, kept, N, H, K, R, r, scale * LOG2E, **sizes,
        MASS=mass, KEEP=keep_probs, MASS_TILES=max(1, MASS_KEYS // fwd.block_k),
        ONE_HEAD_BLOCK=heads_blocks == 1, PRECISION=_precision(q.dtype),
        num_warps=fwd.num_warps, num_stages=fwd.num_stages,
    )  # fmt: skip
    return out, lse, key_mass, kept


def split_keys(N: int, H: int, K: int, tiles: Tiles, programs: int) -> int:
    """Keys per program when the forward splits each query's K keys (a multiple of the key tile): as
    few as fill `programs` with N queries' head blocks, K (no split) where they already do."""
    head_blocks = triton.cdiv(H, _block_h(H, tiles))
    key_tiles = triton.cdiv(K, tiles.block_k)
    splits = min(key_tiles, programs // max(1, N * head_blocks))
    return K if splits < 2 or N == 0 else triton.cdiv(key_tiles, splits) * tiles.block_k


def _split_forward(
    q: torch.Tensor, kv: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor, scale: float, r: int,
    tiles: Tiles, keys: int,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """out and log-sum-exp of few queries (decoding): each query's keys in runs of `keys`, one
    program each (`_split_kernel`), their partial softmaxes joined by `_combine_kernel` (flash
    decoding). Scratch: 4r + 8 bytes per (query, split, head)."""
    if keys % tiles.block_k:
        raise ValueError(f"{keys} keys a split: pass a multiple of the {tiles.block_k}-key tile")
    (N, H, R), K = q.shape, idx.shape[1]
    splits = triton.cdiv(K, keys)
    block_h, sizes = _launch_shape(H, R, r, tiles)
    part = torch.empty(N, splits, H, r, device=q.device, dtype=torch.float32)
    stats = torch.empty(N, splits, 2, H, device=q.device, dtype=torch.float32)
    _split_kernel[(N, splits, triton.cdiv(H, block_h))](
        q, kv, idx, valid, part, stats, H, K, R, r, scale * LOG2E, keys, **sizes,
        PRECISION=_precision(q.dtype), num_warps=tiles.num_warps, num_stages=tiles.num_stages,
    )  # fmt: skip
    return _combine(part, stats, q, r, splits)


def _combine(
    part: torch.Tensor, stats: torch.Tensor, q: torch.Tensor, r: int, splits: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """out [N,H,r] in q's dtype and the log-sum-exp [N,H] joined from each query's `splits` parts
    [N,splits,H,r] and stats [N,splits,2,H] (`_combine_kernel`), N*H*r/columns programs (256 for one
    GLM-5 query): COMBINE_COLUMNS value columns a program, fewer where the splits would hold more
    than COMBINE_VALUES of the parts in a program's registers."""
    N, H = q.shape[:2]
    out = q.new_empty(N, H, r)
    lse = torch.empty(N, H, device=q.device, dtype=torch.float32)
    block_s = max(2, triton.next_power_of_2(splits))
    columns = min(COMBINE_COLUMNS, triton.next_power_of_2(r), max(16, COMBINE_VALUES // block_s))
    _combine_kernel[(N, H, triton.cdiv(r, columns))](
        part, stats, out, lse, H, r, splits, BLOCK_S=block_s, BLOCK_V=columns, num_warps=4
    )
    return out, lse


def _hopper_split_forward(
    q: torch.Tensor, kv: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor, scale: float, r: int, keys: int
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """`_split_forward` through the Gluon forward: each query's keys in runs of `keys`, each run a
    query of its own (at one query its runs read the same q row, by a stride of 0; more queries copy
    q once per run), their normalised outputs joined by `_combine_kernel`, each weighed by its
    log-sum-exp. Scratch: 2r + 12 bytes per (query, run, head), 2R per (query, run, head) for the
    copied q of several queries, and idx and valid padded to whole runs."""
    (N, H, R), K = q.shape, idx.shape[1]
    splits = triton.cdiv(K, keys)
    pad = splits * keys - K
    if pad:
        idx, valid = F.pad(idx, (0, pad)), F.pad(valid, (0, pad))  # padded keys are not valid
    runs_q = q[:, None].expand(N, splits, H, R).reshape(N * splits, H, R)  # a view when N = 1
    part, lse_runs = hopper_forward(
        runs_q, kv, idx.view(N * splits, keys), valid.view(N * splits, keys), scale * LOG2E, r
    )
    stats = torch.stack([lse_runs, torch.ones_like(lse_runs)], dim=1)  # a run's max is its lse, its sum 1
    return _combine(part, stats, q, r, splits)


@_forward.register_fake
def _forward_fake(q, kv, idx, valid, scale, r, mass, keep_probs, tiles, hopper, split):
    (N, H, _), K = q.shape, idx.shape[1]
    lse = q.new_empty(N, H, dtype=torch.float32)
    kept = q.new_empty(N if keep_probs else 0, H, K)
    return q.new_empty(N, H, r), lse, q.new_empty(N, K if mass else 0, dtype=torch.float32), kept


def backward_chunk(H: int, K: int, dtype: torch.dtype, *, recompute: bool = True) -> int:
    """Queries per chunk of the backward: dS of a chunk, and P when it is recomputed ([chunk,H,K]
    each in q's dtype), fit in SPARSE_BACKWARD_BYTES."""
    return max(1, SPARSE_BACKWARD_BYTES // ((2 if recompute else 1) * H * K * dtype.itemsize))


@torch.library.custom_op("glmlab::sparse_mla_bwd", mutates_args=())
def _backward(
    q: torch.Tensor, kv: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor, out: torch.Tensor,
    lse: torch.Tensor, kept: torch.Tensor, d_out: torch.Tensor, scale: float, r: int, tiles: list[int],
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """dq [N,H,R] and dkv [M,R] (accumulated in fp32 with atomic adds, returned in kv's dtype); P
    from the forward's `kept` [N,H,K] when it has N rows, else recomputed chunk by chunk."""
    (N, H, R), K = q.shape, idx.shape[1]
    kernels = BackwardTiles(*(Tiles(*tiles[i : i + 4]) for i in (0, 4, 8)))
    recompute = kept.shape[0] != N
    chunk = min(N, backward_chunk(H, K, q.dtype, recompute=recompute))
    ds = torch.empty(chunk, H, K, device=q.device, dtype=q.dtype)
    p = torch.empty_like(ds) if recompute else None
    dq = torch.empty_like(q)
    dkv = torch.zeros(kv.shape, device=kv.device, dtype=torch.float32)
    precision = _precision(q.dtype)
    for n0 in range(0, N, chunk):
        rows = min(chunk, N - n0)
        if not recompute:
            p = kept[n0 : n0 + rows]  # contiguous: the chunk's queries are consecutive rows
        launches = [
            (_dq_kernel, kernels.dq, (kv, idx, valid, out, d_out, p, ds, dq, n0, H, K, R, r, scale)),
            (_dkv_kernel, kernels.dkv, (q, d_out, idx, valid, p, ds, dkv, n0, H, K, R, r)),
        ]
        if recompute:
            probs_args = (q, kv, idx, valid, lse, p, n0, H, K, R, r, scale * LOG2E)
            launches.insert(0, (_probs_kernel, kernels.probs, probs_args))
        for kernel, t, args in launches:
            block_h, sizes = _launch_shape(H, R, r, t)
            kernel[(rows, triton.cdiv(H, block_h))](
                *args, **sizes, PRECISION=precision, num_warps=t.num_warps, num_stages=t.num_stages
            )
    return dq, dkv.to(kv.dtype)


@_backward.register_fake
def _backward_fake(q, kv, idx, valid, out, lse, kept, d_out, scale, r, tiles):
    return torch.empty_like(q), torch.empty_like(kv)


def _setup_context(ctx, inputs, output) -> None:
    q, kv, idx, valid, scale, r, _mass, _keep, tiles, _hopper, _split = inputs
    out, lse, key_mass, kept = output
    ctx.mark_non_differentiable(lse, key_mass, kept)
    ctx.set_materialize_grads(False)  # else autograd fills zeros for those three: 17 GB of P at 64K
    ctx.save_for_backward(q, kv, idx, valid, out, lse, kept)
    ctx.scale, ctx.r, ctx.tiles = scale, r, tiles[4:]


def _differentiate(ctx, d_out, _d_lse, _d_mass, _d_kept):
    if d_out is None:  # only the side outputs reached a loss: they take no gradient
        return (None,) * 11
    q, kv, idx, valid, out, lse, kept = ctx.saved_tensors
    q = q.contiguous()  # the forward's input may be strided (the Gluon kernel reads it so)
    d_out = d_out.to(q.dtype).contiguous()  # under autocast the gradient may arrive in fp32
    dq, dkv = _backward(q, kv, idx, valid, out, lse, kept, d_out, ctx.scale, ctx.r, ctx.tiles)
    return dq, dkv, None, None, None, None, None, None, None, None, None


torch.library.register_autograd("glmlab::sparse_mla_fwd", _differentiate, setup_context=_setup_context)


def forward_flops(N: int, K: int, H: int, R: int, r: int) -> int:
    """Useful forward work: per (query, selected key) pair, 2H(R) for q . k and 2H(r) for p . v,
    i.e. 2H(2r + rope). The key-mass pass recomputes q . k (another 2HR per pair) and is not
    counted: it is not part of the attention, and the calculator's absorbed form omits it."""
    return N * K * 2 * H * (R + r)


def backward_flops(N: int, K: int, H: int, R: int, r: int, *, recompute: bool = True) -> int:
    """The backward's multiply-adds per pair: recompute q . k (R, unless the forward kept P),
    dP = dO . v (r), dQ = dS . k (R), dKV = dS^T q (R) + P^T dO (r): 2H(3R + 2r) = 2H(5r + 3 rope)
    with the recomputation."""
    return N * K * 2 * H * ((3 if recompute else 2) * R + 2 * r)


@register_flop_formula(torch.ops.glmlab.sparse_mla_fwd)
def _forward_flop_formula(q_shape, kv_shape, idx_shape, *args, r: int | None = None, **kwargs) -> int:
    r = args[2] if r is None else r  # (valid, scale, r, ...) when r is positional
    (N, H, R), K = q_shape, idx_shape[1]
    return forward_flops(N, K, H, R, r)


@register_flop_formula(torch.ops.glmlab.sparse_mla_bwd)
def _backward_flop_formula(q_shape, kv_shape, idx_shape, *args, r: int | None = None, **kwargs) -> int:
    kept_shape = args[3]  # (valid, out, lse, kept, d_out, scale, r, ...)
    r = args[6] if r is None else r
    (N, H, R), K = q_shape, idx_shape[1]
    return backward_flops(N, K, H, R, r, recompute=kept_shape[0] != N)


def sparse_mla(
    q: torch.Tensor,
    kv: torch.Tensor,
    idx: torch.Tensor,
    valid: torch.Tensor,
    *,
    scale: float,
    r: int,
    mass: bool = True,
    keep_probs: bool = False,
    forward_tiles: Tiles = FORWARD_TILES,
    backward_tiles: BackwardTiles = BACKWARD_TILES,
    hopper: bool = True,
    split: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sparse attention over selected latent rows, differentiable in q and kv.

    q [N,H,R] queries in latent space (bf16 or fp32); kv [M,R] the latents [c_kv ; k_pe] of all
    sequences, batch folded into rows (cast to q's dtype, as under autocast); idx [N,K] int64
    rows of kv per query; valid [N,K] bool marks real keys (at least one per row). Returns
    out [N,H,r] in q's dtype, the softmax over valid keys of (q . kv[idx]) * scale applied to the
    first r columns of kv[idx], and key_mass [N,K] fp32, the probabilities summed over heads
    (0 at invalid keys, no gradient; None with `mass=False`, which skips the mass's scratch and
    its pass over it). With the mass the forward holds a scratch of one slot per multiprocessor,
    H x K probabilities in fp16 (fp32 for fp32 inputs) and one fp32 maximum per head and key
    tile: 35.7 MB on an H200 (132 slots) at H=64, K=2048 and 64-key tiles; `keep_probs` takes
    the same scratch, writes P [N,H,K] in q's dtype from its pass and keeps it for the backward,
    which then does not recompute it (pass it under a gradient only). `hopper` (default) runs the
    forward without mass or kept P through glmlab/kernels/sparse_mla_hopper.py on a Hopper GPU where
    its shapes allow; False keeps the Triton kernel (the benchmark times both). `split` (default)
    lets a forward without mass or kept P whose queries' head blocks fill fewer than half of the
    multiprocessors (decoding) split each query's keys between programs and join their softmaxes
    (`split_keys`, `_split_forward`), so that every multiprocessor reads rows.

    Kept for backward: q, kv, idx and valid (the caller's tensors), out (the returned tensor) and
    the log-sum-exp, that is 2R + 2r + 4 bytes per (query, head) in bf16 (2180 at R=576, r=512), of
    which only the log-sum-exp's 4 bytes are not otherwise alive; with `keep_probs` also P, 2K
    bytes per (query, head) in bf16. The backward allocates dkv in fp32 (4R bytes per latent row)
    for its atomic adds, and dS of one chunk of queries in q's dtype, with P of the chunk when it
    recomputes it (`backward_chunk`; at most SPARSE_BACKWARD_BYTES, 1 GiB, together). FLOPs are
    registered for FlopCounterMode: `forward_flops` and `backward_flops` (useful work; without
    `keep_probs` the backward recomputes the scores once, which the count includes).
    """
    if q.dim() != 3 or kv.dim() != 2 or q.shape[2] != kv.shape[1] or not 0 < r < kv.shape[1]:
        raise ValueError(
            f"sparse_mla: q {tuple(q.shape)} kv {tuple(kv.shape)}, r {r}: want [N,H,R], [M,R], 0 < r < R"
        )
    if idx.shape != valid.shape or idx.shape[0] != q.shape[0]:
        raise ValueError(f"sparse_mla: idx {tuple(idx.shape)} and valid {tuple(valid.shape)} must be [N,K]")
    kv = kv.to(q.dtype)
    out, _, key_mass, _ = _forward(
        q, kv.contiguous(), idx.contiguous(), valid.contiguous(), scale, r, mass, keep_probs,
        [*forward_tiles, *(x for t in backward_tiles for x in t)], hopper, split,
    )  # fmt: skip
    return out, key_mass if mass else None
