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
    mbarrier,
    warpgroup_mma,
    warpgroup_mma_init,
    warpgroup_mma_wait,
)

BLOCK_H = 64  # heads per program: one warpgroup's M
BLOCK_K = 64  # keys per gathered tile
PINGPONG_BLOCK_K = 32  # keys per tile of `_pingpong_kernel`
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
def _kept(valid_ptr, n, K, k0, BK: gl.constexpr, layout: gl.constexpr):
    """Which of keys k0 .. k0 + BK query n attends to, in `layout` (its valid flags alone: fewer
    registers than `_rows`' indices)."""
    offs = k0 + gl.arange(0, BK, layout=layout)
    return gl.load(valid_ptr + n * K + offs, mask=offs < K, other=0) != 0


@gluon.jit
def _gather(
    kvn_buf, kvp_buf, kv_ptr, rows, R, r: gl.constexpr, P: gl.constexpr, ld: gl.constexpr, COLS: gl.constexpr
):
    """Start copying kv's rows (value columns to kvn_buf, rope columns to kvp_buf; zeros for rows
    < 0) as one group of asynchronous copies."""
    row = gl.expand_dims(rows.to(gl.int64) * R, 1)
    keep = gl.expand_dims(rows >= 0, 1)
    cv = gl.expand_dims(gl.arange(0, COLS, layout=gl.SliceLayout(0, ld)), 0)
    for c in gl.static_range(r // COLS):  # column chunks: fewer addresses live at once
        async_copy.async_copy_global_to_shared(
            kvn_buf.slice(c * COLS, COLS, dim=1), kv_ptr + row + c * COLS + cv, mask=keep & (cv < COLS)
        )
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
            R, r, P, ld, r)  # fmt: skip
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
        _gather(kvn_s.index(1 - buf), kvp_s.index(1 - buf), kv_ptr, rows, R, r, P, ld, r)
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


@gluon.jit
def _handover(
    kvn_s, kvp_s, free, kv_ptr, idx_ptr, valid_ptr, n, K, R, j, t, u, n_tiles, W: gl.constexpr,
    ld: gl.constexpr, COLS: gl.constexpr,
):  # fmt: skip
    """Step j of `_pingpong_half`, once the warpgroup's products so far are done: release the other's
    tile j-1 (before waiting on the other, which releases mine at the same point of its step), wait
    until the other has read my tile j-1 and its probabilities, and gather my tile j+1 into its slot."""
    if j >= 1:
        if u - 2 < n_tiles:
            gl.thread_barrier()
            mbarrier.arrive(free.index(2 * (1 - W) + ((j - 1) & 1)))
        if t - 2 < n_tiles:
            mbarrier.wait(free.index(2 * W + ((j - 1) & 1)), ((j - 1) >> 1) & 1)
        if t + 2 < n_tiles:
            slot = 2 * W + ((j + 1) & 1)
            rows = _rows(idx_ptr, valid_ptr, n, K, (t + 2) * kvn_s.shape[1], kvn_s.shape[1], gl.SliceLayout(1, ld))
            _gather(kvn_s.index(slot), kvp_s.index(slot), kv_ptr, rows, R, kvn_s.shape[2], kvp_s.shape[2], ld, COLS)


@gluon.jit
def _pingpong_half(
    qn_s, qp_s, kvn_s, kvp_s, probs_s, maxes_s, ready, free, kv_ptr, idx_ptr, valid_ptr, out_ptr, lse_ptr, n, h0, H,
    K, R, scale_log2, W: gl.constexpr,
):  # fmt: skip
    """One warpgroup of `_pingpong_kernel`: warpgroup W owns key tiles W, W + 2, ... (gathered by itself
    into buffer W) and value columns W*r/2 .. (W+1)*r/2 of every tile. For its own tile it computes the
    scores and their probabilities against its own running maximum, hands them on (bf16, in the tile's
    rope columns, which the score product no longer needs, with that maximum) and adds its columns;
    for the other warpgroup's tile it rescales the probabilities it is handed to its own maximum. Each
    warpgroup keeps its own maximum and sum, so neither waits on the other's softmax, only on its
    probabilities: one's softmax runs while the other's products keep the tensor cores busy."""
    BH: gl.constexpr = qn_s.shape[0]
    BK: gl.constexpr = kvn_s.shape[1]
    r: gl.constexpr = kvn_s.shape[2]
    P: gl.constexpr = kvp_s.shape[2]
    HALF: gl.constexpr = r // 2
    GATHER_COLS: gl.constexpr = 128
    mma_s: gl.constexpr = gl.NVMMADistributedLayout([3, 0], [4, 1], [16, BK, 16])
    mma_o: gl.constexpr = gl.NVMMADistributedLayout([3, 0], [4, 1], [16, HALF, 16])
    p_op: gl.constexpr = gl.DotOperandLayout(0, mma_o, 2)
    ld: gl.constexpr = gl.BlockedLayout([1, 8], [8, 4], [4, 1], [1, 0])
    rows_layout: gl.constexpr = gl.SliceLayout(1, ld)
    keys_layout: gl.constexpr = gl.SliceLayout(0, mma_s)
    heads_s: gl.constexpr = gl.SliceLayout(1, mma_s)
    heads_o: gl.constexpr = gl.SliceLayout(1, mma_o)
    n_tiles = gl.cdiv(K, BK)
    for a in gl.static_range(2):  # my first two tiles, into my two slots
        if W + 2 * a < n_tiles:
            _gather(kvn_s.index(2 * W + a), kvp_s.index(2 * W + a), kv_ptr,
                    _rows(idx_ptr, valid_ptr, n, K, (W + 2 * a) * BK, BK, rows_layout), R, r, P, ld,
                    GATHER_COLS)  # fmt: skip

    m = gl.full([BH], float("-inf"), gl.float32, heads_s)  # running maximum (log2 units)
    total = gl.zeros([BH], gl.float32, heads_s)  # running sum of exp2(s - m)
    acc = warpgroup_mma_init(gl.zeros([BH, HALF], gl.float32, mma_o))
    for j in range(gl.cdiv(n_tiles, 2)):
        t = 2 * j + W  # my j-th tile, in slot 2W + j % 2
        u = 2 * j + 1 - W  # the other's j-th tile, in slot 2(1-W) + j % 2
        mine = 2 * W + (j & 1)
        theirs = 2 * (1 - W) + (j & 1)
        if t < n_tiles:  # my tile: scores, softmax, hand the probabilities on, my columns
            kept = _kept(valid_ptr, n, K, t * BK, BK, keys_layout)
            if j == 0 and t + 2 < n_tiles:  # this thread's copies of tile t (the next one's may wait)
                async_copy.wait_group(1)
            else:
                async_copy.wait_group(0)
            gl.thread_barrier()  # this warpgroup's
            fence_async_shared()
            zeros_s = gl.zeros([BH, BK], gl.float32, mma_s)
            s = warpgroup_mma(qp_s, kvp_s.index(mine).permute((1, 0)), zeros_s, use_acc=False, is_async=True)
            s = warpgroup_mma(qn_s, kvn_s.index(mine).permute((1, 0)), s, is_async=True)
            s, acc = warpgroup_mma_wait(0, deps=[s, acc])
            _handover(kvn_s, kvp_s, free, kv_ptr, idx_ptr, valid_ptr, n, K, R, j, t, u, n_tiles, W, ld, GATHER_COLS)
            s = gl.where(gl.expand_dims(kept, 0), s, float("-inf"))
            m_new = gl.maximum(m, gl.max(s, 1) * scale_log2)  # the scale is positive
            m_use = gl.where(m_new == float("-inf"), 0.0, m_new)  # no valid key so far
            p32 = gl.exp2(s * scale_log2 - gl.expand_dims(m_use, 1))
            row_sum = gl.sum(p32, 1)
            p = p32.to(gl.bfloat16)
            probs_s.index(W).store(p)
            maxes_s.index(W).store(m_use)
            gl.thread_barrier()
            mbarrier.arrive(ready.index(mine))
            alpha = gl.exp2(m - m_use)
            total = total * alpha + row_sum
            acc = acc * gl.expand_dims(gl.convert_layout(alpha, heads_o), 1)
            m = m_new
            v_own = kvn_s.index(mine).slice(W * HALF, HALF, dim=1)  # my columns of my tile's values
            acc = warpgroup_mma(gl.convert_layout(p, p_op), v_own, acc, is_async=True)
        else:
            acc = warpgroup_mma_init(warpgroup_mma_wait(0, deps=[acc]))
            _handover(kvn_s, kvp_s, free, kv_ptr, idx_ptr, valid_ptr, n, K, R, j, t, u, n_tiles, W, ld, GATHER_COLS)
        if u < n_tiles:  # the other's tile: its probabilities rescaled to my maximum, my columns
            mbarrier.wait(ready.index(theirs), (j >> 1) & 1)
            p = probs_s.index(1 - W).load(mma_s).to(gl.float32)
            m_other = maxes_s.index(1 - W).load(heads_s)
            m_new = gl.maximum(m, m_other)
            m_use = gl.where(m_new == float("-inf"), 0.0, m_new)
            p = (p * gl.expand_dims(gl.exp2(m_other - m_use), 1)).to(gl.bfloat16)
            alpha = gl.exp2(m - m_use)
            total = total * alpha + gl.sum(p.to(gl.float32), 1)
            acc = warpgroup_mma_wait(0, deps=[acc])
            acc = acc * gl.expand_dims(gl.convert_layout(alpha, heads_o), 1)
            m = m_new
            v_other = kvn_s.index(theirs).slice(W * HALF, HALF, dim=1)
            acc = warpgroup_mma(gl.convert_layout(p, p_op), v_other, acc, is_async=True)
    acc = warpgroup_mma_wait(0, deps=[acc])

    ho = h0 + gl.arange(0, BH, layout=heads_o)
    co = W * HALF + gl.arange(0, HALF, layout=gl.SliceLayout(0, mma_o))
    out = acc / gl.expand_dims(gl.convert_layout(total, heads_o), 1)
    gl.store(out_ptr + gl.expand_dims((n * H + ho) * r, 1) + gl.expand_dims(co, 0), out.to(gl.bfloat16))
    if W == 0:
        hs = h0 + gl.arange(0, BH, layout=heads_s)
        gl.store(lse_ptr + n * H + hs, m + gl.log2(total))


@gluon.jit
def _pingpong_kernel(
    q_ptr, kv_ptr, idx_ptr, valid_ptr, out_ptr, lse_ptr, stride_qn, stride_qh, H, K, R, scale_log2,
    r: gl.constexpr, P: gl.constexpr, BH: gl.constexpr, BK: gl.constexpr,
):  # fmt: skip
    """Program (query n, head block): the queries to shared memory, then two warpgroups of
    `_pingpong_half`, one per half of the value columns and of the key tiles."""
    n = gl.program_id(0).to(gl.int64)
    h0 = gl.program_id(1) * BH
    shared: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)
    ld: gl.constexpr = gl.BlockedLayout([1, 8], [8, 4], [4, 1], [1, 0])
    heads = h0 + gl.arange(0, BH, layout=gl.SliceLayout(1, ld))
    q_row = q_ptr + n * stride_qn + gl.expand_dims(heads.to(gl.int64) * stride_qh, 1)
    cv = gl.expand_dims(gl.arange(0, r, layout=gl.SliceLayout(0, ld)), 0)
    qn_s = gl.allocate_shared_memory(gl.bfloat16, [BH, r], shared, gl.load(q_row + cv))
    cp = gl.expand_dims(gl.arange(0, P, layout=gl.SliceLayout(0, ld)), 0)
    qp_s = gl.allocate_shared_memory(gl.bfloat16, [BH, P], shared, gl.load(q_row + r + cp))
    kvn_s = gl.allocate_shared_memory(gl.bfloat16, [4, BK, r], shared)
    kvp_s = gl.allocate_shared_memory(gl.bfloat16, [4, BK, P], shared)
    probs_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BH, BK], gl.bfloat16)
    probs_s = gl.allocate_shared_memory(gl.bfloat16, [2, BH, BK], probs_layout)
    maxes_s = gl.allocate_shared_memory(gl.float32, [2, BH], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    ready = gl.allocate_shared_memory(gl.int64, [4, 1], mbarrier.MBarrierLayout())
    free = gl.allocate_shared_memory(gl.int64, [4, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(4):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(free.index(i), count=1)
    fence_async_shared()
    gl.thread_barrier()
    args = (qn_s, qp_s, kvn_s, kvp_s, probs_s, maxes_s, ready, free, kv_ptr, idx_ptr, valid_ptr, out_ptr, lse_ptr, n, h0,
            H, K, R, scale_log2)  # fmt: skip
    gl.warp_specialize([(_pingpong_first, args), (_pingpong_second, args)], [4], [256])


@gluon.jit
def _pingpong_first(qn_s, qp_s, kvn_s, kvp_s, probs_s, maxes_s, ready, free, kv_ptr, idx_ptr, valid_ptr, out_ptr, lse_ptr,
                    n, h0, H, K, R, scale_log2):  # fmt: skip
    _pingpong_half(qn_s, qp_s, kvn_s, kvp_s, probs_s, maxes_s, ready, free, kv_ptr, idx_ptr, valid_ptr, out_ptr, lse_ptr,
                   n, h0, H, K, R, scale_log2, 0)  # fmt: skip


@gluon.jit
def _pingpong_second(qn_s, qp_s, kvn_s, kvp_s, probs_s, maxes_s, ready, free, kv_ptr, idx_ptr, valid_ptr, out_ptr, lse_ptr,
                     n, h0, H, K, R, scale_log2):  # fmt: skip
    _pingpong_half(qn_s, qp_s, kvn_s, kvp_s, probs_s, maxes_s, ready, free, kv_ptr, idx_ptr, valid_ptr, out_ptr, lse_ptr,
                   n, h0, H, K, R, scale_log2, 1)  # fmt: skip


def hopper_forward(
    q: torch.Tensor,
    kv: torch.Tensor,
    idx: torch.Tensor,
    valid: torch.Tensor,
    scale_log2: float,
    r: int,
    *,
    pingpong: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """out [N,H,r] in q's dtype and the log-sum-exp [N,H] (fp32, log2 units) of the sparse
    attention of q [N,H,R] (any strides but a unit one on R) over kv [M,R] at idx [N,K] where valid
    [N,K] (see the module docstring for when it applies)."""
    (N, H, R), K = q.shape, idx.shape[1]
    out = q.new_empty(N, H, r)
    lse = torch.empty(N, H, device=q.device, dtype=torch.float32)
    if N and pingpong:
        _pingpong_kernel[(N, H // BLOCK_H)](
            q, kv, idx, valid, out, lse, q.stride(0), q.stride(1), H, K, R, scale_log2, r=r, P=R - r,
            BH=BLOCK_H, BK=PINGPONG_BLOCK_K, num_warps=4,
        )  # fmt: skip
    elif N:
        _forward_kernel[(N, H // BLOCK_H)](
            q, kv, idx, valid, out, lse, q.stride(0), q.stride(1), H, K, R, scale_log2, r=r, P=R - r,
            BH=BLOCK_H, BK=BLOCK_K,
            num_warps=NUM_WARPS,
        )  # fmt: skip
    return out, lse
