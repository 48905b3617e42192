"""Probe (session 15): where the Gluon sparse forward's time goes. A copy of
glmlab/kernels/sparse_mla_hopper.py's `_forward_kernel` with switches that drop one part each (the
gathers, the softmax, the score product, the value product) or move the score product of tile i
ahead of the gather of tile i+1 (REORDER), timed on GLM-5's shape (64 heads, R 576, r 512, K 2048)
over 32K latents, with random (sorted) top-k rows and with a contiguous window of rows.

    PYTHONPATH=$PWD python experiments/results/h200-session15/probe/sparse_fwd_probe.py

It ran in session 15's call 2 at commit e52cb53 (the kernel it copies, and its `_gather`, were replaced
later that session); its log is ../call2/probe.log.
"""

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

from glmlab.kernels.sparse_mla_hopper import _gather, _rows, hopper_forward


@gluon.jit
def _probe_kernel(
    q_ptr, kv_ptr, idx_ptr, valid_ptr, out_ptr, lse_ptr, stride_qn, stride_qh, H, K, R, scale_log2,
    r: gl.constexpr, P: gl.constexpr, BH: gl.constexpr, BK: gl.constexpr,
    GATHER: gl.constexpr, SOFTMAX: gl.constexpr, QK: gl.constexpr, PV: gl.constexpr, REORDER: gl.constexpr,
):  # fmt: skip
    n = gl.program_id(0).to(gl.int64)
    h0 = gl.program_id(1) * BH
    mma_s: gl.constexpr = gl.NVMMADistributedLayout([3, 0], [4, 2], [16, BK // 2, 16])
    mma_o: gl.constexpr = gl.NVMMADistributedLayout([3, 0], [4, 2], [16, r // 2, 16])
    shared: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)
    ld: gl.constexpr = gl.BlockedLayout([1, 8], [8, 4], [8, 1], [1, 0])
    rows_layout: gl.constexpr = gl.SliceLayout(1, ld)
    keys_layout: gl.constexpr = gl.SliceLayout(0, mma_s)
    heads_s: gl.constexpr = gl.SliceLayout(1, mma_s)
    heads_o: gl.constexpr = gl.SliceLayout(1, mma_o)

    heads = h0 + gl.arange(0, BH, layout=rows_layout)
    q_row = q_ptr + n * stride_qn + gl.expand_dims(heads.to(gl.int64) * stride_qh, 1)
    cv = gl.expand_dims(gl.arange(0, r, layout=gl.SliceLayout(0, ld)), 0)
    qn_s = gl.allocate_shared_memory(gl.bfloat16, [BH, r], shared, gl.load(q_row + cv))
    cp = gl.expand_dims(gl.arange(0, P, layout=gl.SliceLayout(0, ld)), 0)
    qp_s = gl.allocate_shared_memory(gl.bfloat16, [BH, P], shared, gl.load(q_row + r + cp))
    kvn_s = gl.allocate_shared_memory(gl.bfloat16, [2, BK, r], shared)
    kvp_s = gl.allocate_shared_memory(gl.bfloat16, [2, BK, P], shared)
    p_s = gl.allocate_shared_memory(gl.bfloat16, [BH, BK], shared)

    _gather(kvn_s.index(0), kvp_s.index(0), kv_ptr, _rows(idx_ptr, valid_ptr, n, K, 0, BK, rows_layout),
            R, r, P, ld)  # fmt: skip
    rows = _rows(idx_ptr, valid_ptr, n, K, BK, BK, rows_layout)
    kept = _rows(idx_ptr, valid_ptr, n, K, 0, BK, keys_layout) >= 0

    m = gl.full([BH], float("-inf"), gl.float32, heads_s)
    total = gl.zeros([BH], gl.float32, heads_s)
    acc = warpgroup_mma_init(gl.zeros([BH, r], gl.float32, mma_o))
    zeros_s = gl.zeros([BH, BK], gl.float32, mma_s)
    for i in range(gl.cdiv(K, BK)):
        buf = i % 2
        kvn = kvn_s.index(buf)
        if REORDER:
            async_copy.wait_group(0)
            gl.thread_barrier()
            fence_async_shared()
            s = warpgroup_mma(qp_s, kvp_s.index(buf).permute((1, 0)), zeros_s, use_acc=False, is_async=True)
            s = warpgroup_mma(qn_s, kvn.permute((1, 0)), s, is_async=True)
            s, acc = warpgroup_mma_wait(0, deps=[s, acc])  # PV(i-1) was issued before QK(i)
            gl.thread_barrier()
            if GATHER:
                _gather(kvn_s.index(1 - buf), kvp_s.index(1 - buf), kv_ptr, rows, R, r, P, ld)
            rows = _rows(idx_ptr, valid_ptr, n, K, (i + 2) * BK, BK, rows_layout)
            kept_next = _rows(idx_ptr, valid_ptr, n, K, (i + 1) * BK, BK, keys_layout) >= 0
        else:
            async_copy.wait_group(0)
            acc = warpgroup_mma_wait(0, deps=[acc])
            gl.thread_barrier()
            if GATHER:
                _gather(kvn_s.index(1 - buf), kvp_s.index(1 - buf), kv_ptr, rows, R, r, P, ld)
            rows = _rows(idx_ptr, valid_ptr, n, K, (i + 2) * BK, BK, rows_layout)
            kept_next = _rows(idx_ptr, valid_ptr, n, K, (i + 1) * BK, BK, keys_layout) >= 0
            fence_async_shared()
            if QK:
                s = warpgroup_mma(
                    qp_s, kvp_s.index(buf).permute((1, 0)), zeros_s, use_acc=False, is_async=True
                )
                s = warpgroup_mma(qn_s, kvn.permute((1, 0)), s, is_async=True)
                s = warpgroup_mma_wait(0, deps=[s])
            else:
                s = zeros_s + i
        if SOFTMAX:
            s = gl.where(gl.expand_dims(kept, 0), s, float("-inf"))
            m_new = gl.maximum(m, gl.max(s, 1) * scale_log2)
            m_use = gl.where(m_new == float("-inf"), 0.0, m_new)
            p = gl.exp2(s * scale_log2 - gl.expand_dims(m_use, 1))
            alpha = gl.exp2(m - m_use)
            total = total * alpha + gl.sum(p, 1)
            acc = acc * gl.expand_dims(gl.convert_layout(alpha, heads_o), 1)
            m = m_new
        else:
            p = s
        p_s.store(p.to(gl.bfloat16))
        gl.thread_barrier()
        fence_async_shared()
        if PV:
            acc = warpgroup_mma(p_s, kvn, acc, is_async=True)
        else:
            acc = warpgroup_mma_init(acc)
        kept = kept_next
    acc = warpgroup_mma_wait(0, deps=[acc])
    async_copy.wait_group(0)

    ho = h0 + gl.arange(0, BH, layout=heads_o)
    co = gl.arange(0, r, layout=gl.SliceLayout(0, mma_o))
    out = acc / gl.expand_dims(gl.convert_layout(total, heads_o), 1)
    gl.store(out_ptr + gl.expand_dims((n * H + ho) * r, 1) + gl.expand_dims(co, 0), out.to(gl.bfloat16))
    hs = h0 + gl.arange(0, BH, layout=heads_s)
    gl.store(lse_ptr + n * H + hs, m + gl.log2(total))


VARIANTS = {
    "current": dict(GATHER=1, SOFTMAX=1, QK=1, PV=1, REORDER=0),
    "reorder": dict(GATHER=1, SOFTMAX=1, QK=1, PV=1, REORDER=1),
    "no gathers": dict(GATHER=0, SOFTMAX=1, QK=1, PV=1, REORDER=0),
    "no softmax": dict(GATHER=1, SOFTMAX=0, QK=1, PV=1, REORDER=0),
    "no score product": dict(GATHER=1, SOFTMAX=1, QK=0, PV=1, REORDER=0),
    "no value product": dict(GATHER=1, SOFTMAX=1, QK=1, PV=0, REORDER=0),
    "products only": dict(GATHER=0, SOFTMAX=0, QK=1, PV=1, REORDER=0),
}


def run(q, kv, idx, valid, flags):
    N, H, R = q.shape
    out = q.new_empty(N, H, 512)
    lse = torch.empty(N, H, device=q.device, dtype=torch.float32)
    _probe_kernel[(N, H // 64)](q, kv, idx, valid, out, lse, q.stride(0), q.stride(1), H, idx.shape[1], R,
                                0.06, r=512, P=R - 512, BH=64, BK=64, num_warps=8, **flags)  # fmt: skip
    return out, lse


def ms(fn, reps: int = 10) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[reps // 2]


def main() -> None:
    torch.manual_seed(0)
    N, T, H, R, K = 32768, 32768, 64, 576, 2048
    q = torch.randn(N, H, R, device="cuda", dtype=torch.bfloat16)
    kv = torch.randn(T, R, device="cuda", dtype=torch.bfloat16)
    valid = torch.ones(N, K, device="cuda", dtype=torch.bool)
    inputs = {
        "random rows": torch.randint(0, T, (N, K), device="cuda").sort(-1).values,
        "window rows": (torch.arange(N, device="cuda")[:, None] // 16 + torch.arange(K, device="cuda")) % T,
    }
    flops = 2 * N * H * K * (R + 512)
    ref = hopper_forward(q, kv, inputs["random rows"], valid, 0.06, 512)
    got = run(q, kv, inputs["random rows"], valid, VARIANTS["reorder"])
    print(f"reorder vs kernel: max |out diff| {(ref[0].float() - got[0].float()).abs().max().item():.3g}, "
          f"max |lse diff| {(ref[1] - got[1]).abs().max().item():.3g}")  # fmt: skip
    for kind, idx in inputs.items():
        for name, flags in VARIANTS.items():
            t = ms(lambda idx=idx, flags=flags: run(q, kv, idx, valid, flags))
            print(f"{kind:12s} {name:18s} {t:8.2f} ms {flops / t / 1e9:6.0f} TFLOP/s", flush=True)


if __name__ == "__main__":
    main()
