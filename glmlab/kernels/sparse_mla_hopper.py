"""Sparse MLA's prefill forward for Hopper in Gluon (Triton's lower-level language): the same
attention as `_forward_kernel` in glmlab/kernels/sparse_mla.py, with the gathers scheduled by hand.

Why a second kernel: Triton's pipeliner, with the 64 x 576 queries and two 64-key gathered tiles
filling shared memory, issues the gather of key tile i+1 at the end of iteration i, after the
score product and the softmax of tile i, so only the value product overlaps it (read off its TTGIR
compiled for sm_90a; experiments/results/h200-session13/README.md). Here iteration i waits for
tile i and for the value product of tile i-1, and at once starts gathering tile i+1 into the
buffer that product has released: the gather runs under all of tile i's work. Everything else is
the Triton kernel's: the heads are the M dimension of each product (64 per program, the score
tile split between the two warpgroups by keys, the value product by columns), online softmax in
exp2 units, fp32 accumulation, rows < 0 (invalid keys) read nothing and score -inf.

Only bf16 inputs, 64-head blocks, r = 512 value columns and a power-of-two rope width up to 64, and
no key mass or kept probabilities (prefill and decoding): `hopper_forward_applies` says when; the
Triton kernel does the rest. Gluon has no interpreter, so this kernel runs only on a Hopper GPU, where
tests/test_kernels_sparse_mla.py compares it with the Triton kernel and the torch twin.
"""

from __future__ import annotations

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    warpgroup_mma,
    warpgroup_mma_init,
    warpgroup_mma_wait,
)

BLOCK_H = 64  # heads per program: one warpgroup's M
BLOCK_K = 64  # keys per gathered tile
NUM_WARPS = 8


def hopper_forward_applies(q: torch.Tensor, r: int, *, mass: bool, keep_probs: bool) -> bool:
    """Whether `hopper_forward` takes this call: a Hopper GPU (compute capability 9), bf16 with a
    unit stride on R, whole 64-head blocks, 512 value columns and a power-of-two rope width of 16 to
    64 (at 64, GLM-5's, the queries and two key tiles take 229,888 of a block's 232,448 bytes of
    shared memory; 128 would need 254,464)."""
    if q.device.type != "cuda" or mass or keep_probs or q.dtype != torch.bfloat16 or q.stride(2) != 1:
        return False
    rope = q.shape[2] - r
    shape_ok = q.shape[1] % BLOCK_H == 0 and r == 512 and 16 <= rope <= 64 and rope & (rope - 1) == 0
    return shape_ok and torch.cuda.get_device_capability(q.device)[0] == 9


@gluon.jit
def _rows(idx_ptr, valid_ptr, n, K, k0, BK: gl.constexpr, layout: gl.constexpr):
    """Rows of kv that query n reads at keys k0 .. k0 + BK in `layout`, -1 where invalid or past K."""
    offs = k0 + gl.arange(0, BK, layout=layout)
    inside = offs < K
    keep = gl.load(valid_ptr + n * K + offs, mask=inside, other=0) != 0
    rows = gl.load(idx_ptr + n * K + offs, mask=inside, other=0).to(gl.int32)  # < 2^31 rows
    return gl.where(keep, rows, -1)


@gluon.jit
def _gather(kvn_buf, kvp_buf, kv_ptr, rows, R, r: gl.constexpr, P: gl.constexpr, ld: gl.constexpr):
    """Start copying kv's rows (value columns to kvn_buf, rope columns to kvp_buf; zeros for rows
    < 0) as one group of asynchronous copies."""
    row = gl.expand_dims(rows.to(gl.int64) * R, 1)
    keep = gl.expand_dims(rows >= 0, 1)
    cv = gl.expand_dims(gl.arange(0, r, layout=gl.SliceLayout(0, ld)), 0)
    async_copy.async_copy_global_to_shared(kvn_buf, kv_ptr + row + cv, mask=keep & (cv < r))
    cp = gl.expand_dims(gl.arange(0, P, layout=gl.SliceLayout(0, ld)), 0)
    async_copy.async_copy_global_to_shared(kvp_buf, kv_ptr + row + r + cp, mask=keep & (cp < P))
    async_copy.commit_group()


@gluon.jit
def _forward_kernel(
    q_ptr, kv_ptr, idx_ptr, valid_ptr, out_ptr, lse_ptr, stride_qn, stride_qh, H, K, R, scale_log2,
    r: gl.constexpr, P: gl.constexpr, BH: gl.constexpr, BK: gl.constexpr,
):  # fmt: skip
    """Program (query n, head block): out [BH, r] and the log-sum-exp (log2 units) of its heads."""
    n = gl.program_id(0).to(gl.int64)
    h0 = gl.program_id(1) * BH
    # the score tile split by keys between the two warpgroups, the output by columns
    mma_s: gl.constexpr = gl.NVMMADistributedLayout([3, 0], [4, 2], [16, BK // 2, 16])
    mma_o: gl.constexpr = gl.NVMMADistributedLayout([3, 0], [4, 2], [16, r // 2, 16])
    shared: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)
    # loads of [64 rows, columns]: 16 bytes a thread and copy, one row a thread (its index in a
    # register or two: the prefetched rows cost few of the registers the accumulator leaves)
    ld: gl.constexpr = gl.BlockedLayout([1, 8], [8, 4], [8, 1], [1, 0])
    rows_layout: gl.constexpr = gl.SliceLayout(1, ld)
    keys_layout: gl.constexpr = gl.SliceLayout(0, mma_s)
    heads_s: gl.constexpr = gl.SliceLayout(1, mma_s)
    heads_o: gl.constexpr = gl.SliceLayout(1, mma_o)

    # the program's queries, to shared memory once
    heads = h0 + gl.arange(0, BH, layout=rows_layout)
    q_row = q_ptr + n * stride_qn + gl.expand_dims(heads.to(gl.int64) * stride_qh, 1)
    cv = gl.expand_dims(gl.arange(0, r, layout=gl.SliceLayout(0, ld)), 0)
    qn_s = gl.allocate_shared_memory(gl.bfloat16, [BH, r], shared, gl.load(q_row + cv))
    cp = gl.expand_dims(gl.arange(0, P, layout=gl.SliceLayout(0, ld)), 0)
    qp_s = gl.allocate_shared_memory(gl.bfloat16, [BH, P], shared, gl.load(q_row + r + cp))
    kvn_s = gl.allocate_shared_memory(gl.bfloat16, [2, BK, r], shared)
    kvp_s = gl.allocate_shared_memory(gl.bfloat16, [2, BK, P], shared)
    # the probabilities pass from the score layout (each warpgroup half the keys) to the value
    # product's first operand through shared memory, read there by the product itself
    p_s = gl.allocate_shared_memory(gl.bfloat16, [BH, BK], shared)

    _gather(kvn_s.index(0), kvp_s.index(0), kv_ptr, _rows(idx_ptr, valid_ptr, n, K, 0, BK, rows_layout),
            R, r, P, ld)  # fmt: skip
    # read one tile ahead of their use: the rows of the next gather, the keys kept in this tile
    rows = _rows(idx_ptr, valid_ptr, n, K, BK, BK, rows_layout)
    kept = _rows(idx_ptr, valid_ptr, n, K, 0, BK, keys_layout) >= 0

    m = gl.full([BH], float("-inf"), gl.float32, heads_s)  # running maximum (log2 units)
    total = gl.zeros([BH], gl.float32, heads_s)  # running sum of exp2(s - m)
    acc = warpgroup_mma_init(gl.zeros([BH, r], gl.float32, mma_o))
    zeros_s = gl.zeros([BH, BK], gl.float32, mma_s)
    for i in range(gl.cdiv(K, BK)):
        buf = i % 2
        async_copy.wait_group(0)  # this thread's copies of tile i
        acc = warpgroup_mma_wait(0, deps=[acc])  # this warpgroup's value product of tile i-1
        gl.thread_barrier()  # every thread's: tile i is in, the other buffer is free
        # tile i+1 into the other buffer (rows past K are -1: the last one only fills zeros)
        _gather(kvn_s.index(1 - buf), kvp_s.index(1 - buf), kv_ptr, rows, R, r, P, ld)
        rows = _rows(idx_ptr, valid_ptr, n, K, (i + 2) * BK, BK, rows_layout)
        kept_next = _rows(idx_ptr, valid_ptr, n, K, (i + 1) * BK, BK, keys_layout) >= 0
        fence_async_shared()
        kvn = kvn_s.index(buf)
        s = warpgroup_mma(qp_s, kvp_s.index(buf).permute((1, 0)), zeros_s, use_acc=False, is_async=True)
        s = warpgroup_mma(qn_s, kvn.permute((1, 0)), s, is_async=True)
        s = warpgroup_mma_wait(0, deps=[s])
        s = gl.where(gl.expand_dims(kept, 0), s, float("-inf"))
        m_new = gl.maximum(m, gl.max(s, 1) * scale_log2)  # the scale is positive
        m_use = gl.where(m_new == float("-inf"), 0.0, m_new)  # no valid key so far
        p = gl.exp2(s * scale_log2 - gl.expand_dims(m_use, 1))
        alpha = gl.exp2(m - m_use)
        total = total * alpha + gl.sum(p, 1)
        acc = acc * gl.expand_dims(gl.convert_layout(alpha, heads_o), 1)
        p_s.store(p.to(gl.bfloat16))
        gl.thread_barrier()  # both warpgroups' halves
        fence_async_shared()
        acc = warpgroup_mma(p_s, kvn, acc, is_async=True)
        m = m_new
        kept = kept_next
    acc = warpgroup_mma_wait(0, deps=[acc])
    async_copy.wait_group(0)

    ho = h0 + gl.arange(0, BH, layout=heads_o)
    co = gl.arange(0, r, layout=gl.SliceLayout(0, mma_o))
    out = acc / gl.expand_dims(gl.convert_layout(total, heads_o), 1)
    gl.store(out_ptr + gl.expand_dims((n * H + ho) * r, 1) + gl.expand_dims(co, 0), out.to(gl.bfloat16))
    hs = h0 + gl.arange(0, BH, layout=heads_s)
    gl.store(lse_ptr + n * H + hs, m + gl.log2(total))


def hopper_forward(
    q: torch.Tensor, kv: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor, scale_log2: float, r: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """out [N,H,r] in q's dtype and the log-sum-exp [N,H] (fp32, log2 units) of the sparse
    attention of q [N,H,R] (any strides but a unit one on R) over kv [M,R] at idx [N,K] where valid
    [N,K] (see the module docstring for when it applies)."""
    (N, H, R), K = q.shape, idx.shape[1]
    out = q.new_empty(N, H, r)
    lse = torch.empty(N, H, device=q.device, dtype=torch.float32)
    if N:
        _forward_kernel[(N, H // BLOCK_H)](
            q, kv, idx, valid, out, lse, q.stride(0), q.stride(1), H, K, R, scale_log2, r=r, P=R - r,
            BH=BLOCK_H, BK=BLOCK_K,
            num_warps=NUM_WARPS,
        )  # fmt: skip
    return out, lse
