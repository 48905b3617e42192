"""Sparse MLA's prefill forward for Hopper in Gluon (Triton's lower-level language): the same
attention as `_forward_kernel` in glmlab/kernels/sparse_mla.py, laid out across warpgroups by hand.

Why a second kernel: with 64 heads (one warpgroup's M) and 64-key gathered tiles, the Triton kernel
splits each score product between its two warpgroups, 32 keys each. A 64 x 32 x 576 product reads
its queries from shared memory for every 32 keys, so it is bound by shared-memory reads, and a probe
found the two products alone, without gathers or softmax, at 488 TFLOP/s
(experiments/results/h200-session15/). Here, as in DeepSeek's FlashMLA, the two warpgroups take
alternate key tiles, each a full 64-key score product; each keeps half of the value columns and
adds both tiles of a pair to them: its own probabilities from registers, the other's from shared
memory. The pair shares one running maximum: warpgroup 0 proposes its own, warpgroup 1 publishes
the larger, warpgroup 0 rescales to it. Each warpgroup gathers the parts of the tiles it reads
last, as soon as it has (`_warpgroup`), signalled to the reader by the copies themselves.
Everything else is the Triton kernel's: online softmax in exp2 units, fp32 accumulation, rows < 0
(invalid keys) read nothing and score -inf.

Only bf16 inputs, 64-head blocks, r = 512 value columns and a rope width of 64 (a tile's rope
columns hold its 64 x 64 probabilities), and no key mass or kept probabilities (prefill and
decoding): `hopper_forward_applies` says when; the Triton kernel does the rest. Gluon has no
interpreter, so this kernel runs only on a Hopper GPU, where tests/test_kernels_sparse_mla.py
compares it with the Triton kernel and the torch twin.
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
    warpgroup_mma_wait,
)

BLOCK_H = 64  # heads per program: one warpgroup's M
BLOCK_K = 64  # keys per gathered tile, one warpgroup's score product
REGISTERS = 248  # a thread of the second warpgroup (the first is raised to 256): no spills
# the asynchronous copies of [rows, columns] blocks: 16 bytes a thread and copy, two rows a thread
COPY_LAYOUT = gl.constexpr(gl.BlockedLayout([1, 8], [8, 4], [4, 1], [1, 0]))


def hopper_forward_applies(
    q: torch.Tensor, kv: torch.Tensor, r: int, *, mass: bool, keep_probs: bool
) -> bool:
    """Whether `hopper_forward` takes this call: a Hopper GPU (compute capability 9), q and kv in
    bf16, q with a unit stride on R and 16-element strides and alignment otherwise, kv's rows 16-byte
    aligned (both arrive by 16-byte asynchronous copies), whole 64-head blocks, 512 value columns and
    GLM-5's rope width, 64 (the queries and two key tiles take 221,184 of a block's 232,448 bytes of
    shared memory; the kernel allocates 222,508 in all)."""
    if q.device.type != "cuda" or mass or keep_probs or q.dtype != torch.bfloat16 or kv.dtype != q.dtype:
        return False
    aligned = q.stride(2) == 1 and q.stride(0) % 16 == 0 and q.stride(1) % 16 == 0
    aligned = aligned and q.data_ptr() % 16 == 0 and kv.data_ptr() % 16 == 0
    shape_ok = q.shape[1] % BLOCK_H == 0 and r == 512 and q.shape[2] - r == BLOCK_K
    return aligned and shape_ok and torch.cuda.get_device_capability(q.device)[0] == 9


@gluon.jit
def _rows(idx_ptr, valid_ptr, n, K, k0, BK: gl.constexpr, layout: gl.constexpr):
    """Rows of kv that query n reads at keys k0 .. k0 + BK in `layout`, -1 where invalid or past K."""
    offs = k0 + gl.arange(0, BK, layout=layout)
    rows = gl.load(idx_ptr + n * K + offs, mask=offs < K, other=0).to(gl.int32)  # < 2^31 rows
    return gl.where(_kept(valid_ptr, n, K, k0, BK, layout), rows, -1)


@gluon.jit
def _kept(valid_ptr, n, K, k0, BK: gl.constexpr, layout: gl.constexpr):
    """Which of keys k0 .. k0 + BK query n attends to, in `layout` (False past K)."""
    offs = k0 + gl.arange(0, BK, layout=layout)
    return gl.load(valid_ptr + n * K + offs, mask=offs < K, other=0) != 0


@gluon.jit
def _copy_block(buf, ptr, starts, keep):
    """Start copying buf [rows, width] from the rows that begin at element offsets `starts` of ptr
    (zeros where not `keep`; None: every row), 128 columns at a time (fewer addresses live at once)."""
    WIDTH: gl.constexpr = buf.shape[1]
    CHUNK: gl.constexpr = 128 if 128 < WIDTH else WIDTH
    row = gl.expand_dims(starts, 1)
    cols = gl.expand_dims(gl.arange(0, CHUNK, layout=gl.SliceLayout(0, COPY_LAYOUT)), 0)
    for c in gl.static_range(WIDTH // CHUNK):
        mask = None if keep is None else gl.expand_dims(keep, 1) & (cols < CHUNK)
        src = ptr + row + c * CHUNK + cols
        async_copy.async_copy_global_to_shared(buf.slice(c * CHUNK, CHUNK, dim=1), src, mask=mask)


@gluon.jit
def _fill(kvn_s, kvp_s, ready, kv_ptr, idx_ptr, valid_ptr, n, K, R, t, B: gl.constexpr,
          LATE: gl.constexpr):  # fmt: skip
    """Start copying key tile t into part LATE of buffer B (the early part: value half B; the late
    part: the other value half and the rope columns), its arrival signalled on ready[2B + LATE] by
    the copies of this warpgroup's 128 threads."""
    BK: gl.constexpr = kvn_s.shape[1]
    HALF: gl.constexpr = kvn_s.shape[2] // 2
    half: gl.constexpr = (B + LATE) % 2
    rows = _rows(idx_ptr, valid_ptr, n, K, t * BK, BK, gl.SliceLayout(1, COPY_LAYOUT))
    starts = rows.to(gl.int64) * R
    _copy_block(kvn_s.index(B).slice(half * HALF, HALF, dim=1), kv_ptr + half * HALF, starts, rows >= 0)
    if LATE:
        _copy_block(kvp_s.index(B), kv_ptr + 2 * HALF, starts, rows >= 0)
    async_copy.mbarrier_arrive(ready.index(2 * B + LATE), increment_count=False)


@gluon.jit
def _warpgroup(
    qn_s, qp_s, kvn_s, kvp_s, maxes_s, sums_s, ready, handoff, sums_bar, kv_ptr, idx_ptr, valid_ptr,
    out_ptr, lse_ptr, n, h0, H, K, R, scale_log2, W: gl.constexpr,
):  # fmt: skip
    """Warpgroup W of `_forward_kernel`: the scores of key tiles W, W + 2, ... (buffer W, a full 64-key
    score product), their probabilities against the pair's shared maximum, and value columns
    W*r/2 .. (W+1)*r/2 of both tiles of each pair (its own probabilities from registers, the other
    warpgroup's from the rope columns of the other's buffer, where the other stores them once its
    score product is done). Warpgroup 0 proposes the pair's maximum from its tile, warpgroup 1 takes
    the larger of that and its own and publishes it; warpgroup 0 rescales to it.

    Each buffer is filled in two parts, each by the warpgroup that reads it last, as soon as it has:
    the early part of buffer W (value half W, read by warpgroup W's products alone) by warpgroup W
    after its own value product, the late part (the other value half and the rope columns, which
    hold W's probabilities) by the other warpgroup after its value product over them."""
    BH: gl.constexpr = qn_s.shape[1]
    BK: gl.constexpr = kvn_s.shape[1]
    HALF: gl.constexpr = kvn_s.shape[2] // 2
    mma_s: gl.constexpr = gl.NVMMADistributedLayout([3, 0], [4, 1], [16, BK, 16])
    mma_o: gl.constexpr = gl.NVMMADistributedLayout([3, 0], [4, 1], [16, HALF, 16])
    p_op: gl.constexpr = gl.DotOperandLayout(0, mma_o, 2)
    keys_layout: gl.constexpr = gl.SliceLayout(0, mma_s)
    flags_layout: gl.constexpr = gl.BlockedLayout([1], [32], [4], [0])
    heads_s: gl.constexpr = gl.SliceLayout(1, mma_s)
    heads_o: gl.constexpr = gl.SliceLayout(1, mma_o)
    m_ready = handoff.index(0)  # warpgroup 0's proposed maximum is in maxes_s[0]
    f_ready = handoff.index(1)  # the pair's maximum is in maxes_s[1]
    # handoff[2 + w]: warpgroup w's probabilities are in the rope columns of its buffer
    n_pairs = gl.cdiv(K, 2 * BK)

    # pair 0: my early part, the other's late part
    _fill(kvn_s, kvp_s, ready, kv_ptr, idx_ptr, valid_ptr, n, K, R, W, B=W, LATE=False)
    _fill(kvn_s, kvp_s, ready, kv_ptr, idx_ptr, valid_ptr, n, K, R, 1 - W, B=1 - W, LATE=True)
    m = gl.full([BH], float("-inf"), gl.float32, heads_s)  # running maximum (log2 units)
    total = gl.zeros([BH], gl.float32, heads_s)  # this warpgroup's share of the running sum
    acc = gl.zeros([BH, HALF], gl.float32, mma_o)
    for j in range(n_pairs):
        phase = j & 1
        # the operands' shared-memory addresses from an opaque zero: computed in the loop, a few
        # adds each, instead of 72 loop-invariant descriptors that spill
        z = gl.inline_asm_elementwise("mov.b32 $0, 0;", "=r,r", [j], dtype=gl.int32, is_pure=False, pack=1)
        mine = kvn_s.index(W + z)
        my_v = mine.slice(W * HALF, HALF, dim=1)  # my early part
        my_late = mine.slice((1 - W) * HALF, HALF, dim=1)
        their_v = kvn_s.index(1 - W + z).slice(W * HALF, HALF, dim=1)  # in the other's late part
        my_p = kvp_s.index(W + z)  # my tile's rope columns, then (score product done) my probabilities
        their_p = kvp_s.index(1 - W + z)
        q_early = qn_s.index(z).slice(W * HALF, HALF, dim=1)
        q_late = qn_s.index(z).slice((1 - W) * HALF, HALF, dim=1)
        q_rope = qp_s.index(z)
        # one flag a thread, moved to the score layout (loaded there, each thread's 16 addresses
        # stay live across the loop)
        kept = gl.convert_layout(_kept(valid_ptr, n, K, (2 * j + W) * BK, BK, flags_layout), keys_layout)
        mbarrier.wait(ready.index(2 * W), phase)
        fence_async_shared()
        zeros_s = gl.zeros([BH, BK], gl.float32, mma_s)
        s = warpgroup_mma(q_early, my_v.permute((1, 0)), zeros_s, use_acc=False, is_async=True)
        mbarrier.wait(ready.index(2 * W + 1), phase)
        fence_async_shared()
        s = warpgroup_mma(q_late, my_late.permute((1, 0)), s, is_async=True)
        s = warpgroup_mma(q_rope, my_p.permute((1, 0)), s, is_async=True)
        s = warpgroup_mma_wait(0, deps=[s])
        s = gl.where(gl.expand_dims(kept, 0), s * scale_log2, float("-inf"))
        # the barriers below also order every warp's score product before my probabilities take
        # my rope columns
        if W == 0:
            m_mine = gl.maximum(m, gl.max(s, 1))
            maxes_s.index(0).store(m_mine)
            gl.thread_barrier()
            mbarrier.arrive(m_ready)
        else:
            mbarrier.wait(m_ready, phase)
            m_mine = gl.maximum(maxes_s.index(0).load(heads_s), gl.max(s, 1))
            maxes_s.index(1).store(m_mine)
            gl.thread_barrier()
            mbarrier.arrive(f_ready)
        m_use = gl.where(m_mine == float("-inf"), 0.0, m_mine)  # no valid key so far
        p = gl.exp2(s - gl.expand_dims(m_use, 1))
        alpha = gl.exp2(m - m_use)
        total = total * alpha + gl.sum(p, 1)
        acc = acc * gl.expand_dims(gl.convert_layout(alpha, heads_o), 1)
        if W == 1:  # the pair's maximum is mine: hand my probabilities on as they are
            my_p.store(p.to(gl.bfloat16))
            fence_async_shared()
            gl.thread_barrier()
            mbarrier.arrive(handoff.index(3))
        acc = warpgroup_mma(gl.convert_layout(p.to(gl.bfloat16), p_op), my_v, acc, is_async=True)
        if W == 0:  # rescale to the pair's maximum, hand on
            mbarrier.wait(f_ready, phase)
            m_pair = maxes_s.index(1).load(heads_s)
            pair_use = gl.where(m_pair == float("-inf"), 0.0, m_pair)
            # nothing of mine to rescale while my maximum is -inf (and exp2(0 - pair) may overflow)
            rescale = gl.where(m_mine == float("-inf"), 1.0, gl.exp2(m_use - pair_use))
            my_p.store((p * gl.expand_dims(rescale, 1)).to(gl.bfloat16))
            fence_async_shared()
            gl.thread_barrier()
            mbarrier.arrive(handoff.index(2))
        acc = warpgroup_mma_wait(0, deps=[acc])
        more = j + 1 < n_pairs
        if more:  # my early part is read: the next pair's into it
            gl.thread_barrier()
            _fill(kvn_s, kvp_s, ready, kv_ptr, idx_ptr, valid_ptr, n, K, R, 2 * j + 2 + W, B=W, LATE=False)
        if W == 0:
            acc = acc * gl.expand_dims(gl.convert_layout(rescale, heads_o), 1)
            total = total * rescale
            m = m_pair
        else:
            m = m_mine
        mbarrier.wait(handoff.index(3 - W), phase)
        acc = warpgroup_mma(their_p, their_v, acc, is_async=True)
        acc = warpgroup_mma_wait(0, deps=[acc])
        if more:  # the other's late part is read: the next pair's into it
            gl.thread_barrier()
            _fill(kvn_s, kvp_s, ready, kv_ptr, idx_ptr, valid_ptr, n, K, R, 2 * j + 3 - W, B=1 - W, LATE=True)

    # the row sums: each warpgroup holds the sum over its own tiles
    sums_s.index(W).store(total)
    gl.thread_barrier()
    mbarrier.arrive(sums_bar)
    mbarrier.wait(sums_bar, 0)
    total = total + sums_s.index(1 - W).load(heads_s)
    ho = h0 + gl.arange(0, BH, layout=heads_o)
    co = W * HALF + gl.arange(0, HALF, layout=gl.SliceLayout(0, mma_o))
    out = acc / gl.expand_dims(gl.convert_layout(total, heads_o), 1)
    gl.store(
        out_ptr + gl.expand_dims((n * H + ho) * (2 * HALF), 1) + gl.expand_dims(co, 0), out.to(gl.bfloat16)
    )
    if W == 0:
        hs = h0 + gl.arange(0, BH, layout=heads_s)
        gl.store(lse_ptr + n * H + hs, m + gl.log2(total))


# Gluon passes a partition only IR values: W, a constexpr, reaches `_warpgroup` through these two.
@gluon.jit
def _first_warpgroup(
    qn_s, qp_s, kvn_s, kvp_s, maxes_s, sums_s, ready, handoff, sums_bar, kv_ptr, idx_ptr, valid_ptr,
    out_ptr, lse_ptr, n, h0, H, K, R, scale_log2,
):  # fmt: skip
    _warpgroup(qn_s, qp_s, kvn_s, kvp_s, maxes_s, sums_s, ready, handoff, sums_bar, kv_ptr, idx_ptr,
               valid_ptr, out_ptr, lse_ptr, n, h0, H, K, R, scale_log2, 0)  # fmt: skip


@gluon.jit
def _second_warpgroup(
    qn_s, qp_s, kvn_s, kvp_s, maxes_s, sums_s, ready, handoff, sums_bar, kv_ptr, idx_ptr, valid_ptr,
    out_ptr, lse_ptr, n, h0, H, K, R, scale_log2,
):  # fmt: skip
    _warpgroup(qn_s, qp_s, kvn_s, kvp_s, maxes_s, sums_s, ready, handoff, sums_bar, kv_ptr, idx_ptr,
               valid_ptr, out_ptr, lse_ptr, n, h0, H, K, R, scale_log2, 1)  # fmt: skip


@gluon.jit
def _forward_kernel(
    q_ptr, kv_ptr, idx_ptr, valid_ptr, out_ptr, lse_ptr, stride_qn, stride_qh, H, K, R, scale_log2,
    r: gl.constexpr, P: gl.constexpr, BH: gl.constexpr, BK: gl.constexpr, REGS: gl.constexpr,
):  # fmt: skip
    """Program (query n, head block): the queries to shared memory, then the two `_warpgroup`s, each
    with REGS registers a thread."""
    n = gl.program_id(0).to(gl.int64)
    h0 = gl.program_id(1) * BH
    gl.static_assert(P == BK and BH == BK, "a tile's rope columns hold its [BH, BK] probabilities")
    shared: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)
    qn_s = gl.allocate_shared_memory(gl.bfloat16, [1, BH, r], shared)
    qp_s = gl.allocate_shared_memory(gl.bfloat16, [1, BH, P], shared)
    heads = h0 + gl.arange(0, BH, layout=gl.SliceLayout(1, COPY_LAYOUT))
    starts = n * stride_qn + heads.to(gl.int64) * stride_qh
    _copy_block(qn_s.index(0), q_ptr, starts, None)
    _copy_block(qp_s.index(0), q_ptr + r, starts, None)
    async_copy.commit_group()
    kvn_s = gl.allocate_shared_memory(gl.bfloat16, [2, BK, r], shared)
    kvp_s = gl.allocate_shared_memory(gl.bfloat16, [2, BK, P], shared)
    rows_shared: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [0])
    maxes_s = gl.allocate_shared_memory(gl.float32, [2, BH], rows_shared)
    sums_s = gl.allocate_shared_memory(gl.float32, [2, BH], rows_shared)
    ready = gl.allocate_shared_memory(
        gl.int64, [4, 1], mbarrier.MBarrierLayout()
    )  # buffer B's parts: 2B, 2B + 1
    handoff = gl.allocate_shared_memory(gl.int64, [4, 1], mbarrier.MBarrierLayout())
    sums_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    for i in gl.static_range(4):
        mbarrier.init(ready.index(i), count=4 * 32)  # one arrival from each filling thread's copies
        mbarrier.init(handoff.index(i), count=1)  # maxima, then probabilities: see `_warpgroup`
    mbarrier.init(sums_bar, count=2)
    async_copy.wait_group(0)
    fence_async_shared()
    gl.thread_barrier()
    args = (qn_s, qp_s, kvn_s, kvp_s, maxes_s, sums_s, ready, handoff, sums_bar, kv_ptr, idx_ptr, valid_ptr,
            out_ptr, lse_ptr, n, h0, H, K, R, scale_log2)  # fmt: skip
    gl.warp_specialize([(_first_warpgroup, args), (_second_warpgroup, args)], [4], [REGS])


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
            BH=BLOCK_H, BK=BLOCK_K, REGS=REGISTERS, num_warps=4,
        )  # fmt: skip
    return out, lse
