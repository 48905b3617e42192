"""Session 20 probe: the SwiGLU kernel as one kernel with a constexpr BACKWARD flag (glmlab's, since
037c96f) against the two kernels it replaced (54e5ace, copied below), forward + backward at glm5-1b's
one-GPU rows, timed in alternating rounds in one process so that the chip's state is shared.
Session 19 call 5 timed the two-kernel form at 0.415 ms, session 20 call 1 the one-kernel form at
0.575 (different calls: this asks whether the merge or the machine moved).

    python probe/swiglu_forms_probe.py
"""

import statistics

import torch
import triton
import triton.language as tl

from glmlab.kernels.swiglu import BLOCK_C, BLOCK_R, WARPS, swiglu


@triton.jit
def _forward_kernel(x_ptr, out_ptr, rows_ptr, W: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    first = tl.program_id(0).to(tl.int64) * BLOCK_R
    rows = tl.load(rows_ptr).to(tl.int64)
    if first < rows:
        r = first + tl.arange(0, BLOCK_R)
        inside_r = r < rows
        for c in tl.static_range(0, W, BLOCK_C):
            cols = c + tl.arange(0, BLOCK_C)
            mask = inside_r[:, None] & (cols[None, :] < W)
            at = r[:, None] * (2 * W) + cols[None, :]
            gate = tl.load(x_ptr + at, mask=mask, other=0.0).to(tl.float32)
            up = tl.load(x_ptr + at + W, mask=mask, other=0.0).to(tl.float32)
            h = gate * tl.sigmoid(gate) * up
            tl.store(out_ptr + r[:, None] * W + cols[None, :], h.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _backward_kernel(
    x_ptr, grad_ptr, out_ptr, rows_ptr, W: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr
):
    first = tl.program_id(0).to(tl.int64) * BLOCK_R
    rows = tl.load(rows_ptr).to(tl.int64)
    if first < rows:
        r = first + tl.arange(0, BLOCK_R)
        inside_r = r < rows
        for c in tl.static_range(0, W, BLOCK_C):
            cols = c + tl.arange(0, BLOCK_C)
            mask = inside_r[:, None] & (cols[None, :] < W)
            at = r[:, None] * (2 * W) + cols[None, :]
            gate = tl.load(x_ptr + at, mask=mask, other=0.0).to(tl.float32)
            up = tl.load(x_ptr + at + W, mask=mask, other=0.0).to(tl.float32)
            g = tl.load(grad_ptr + r[:, None] * W + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            s = tl.sigmoid(gate)
            d_gate = g * up * s * (1 + gate * (1 - s))
            tl.store(out_ptr + at, d_gate.to(out_ptr.dtype.element_ty), mask=mask)
            tl.store(out_ptr + at + W, (g * gate * s).to(out_ptr.dtype.element_ty), mask=mask)


class TwoKernels(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate_up, rows):
        M, W = gate_up.shape[0], gate_up.shape[1] // 2
        ctx.save_for_backward(gate_up, rows)
        out = gate_up.new_empty(M, W)
        _forward_kernel[(triton.cdiv(M, BLOCK_R),)](
            gate_up, out, rows, W=W, BLOCK_R=BLOCK_R, BLOCK_C=min(BLOCK_C, W), num_warps=WARPS
        )
        return out

    @staticmethod
    def backward(ctx, grad):
        gate_up, rows = ctx.saved_tensors
        M, W = grad.shape
        out = torch.empty_like(gate_up)
        _backward_kernel[(triton.cdiv(M, BLOCK_R),)](
            gate_up,
            grad.contiguous(),
            out,
            rows,
            W=W,
            BLOCK_R=BLOCK_R,
            BLOCK_C=min(BLOCK_C, W),
            num_warps=WARPS,
        )
        return out, None


def timed(fn, x, g, repeats: int = 30) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(repeats + 3):
        x.grad = None
        start.record()
        fn(x).backward(g)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times[3:])


rows, inter = 131072 + 64 * 7, 512
x = torch.randn(rows, 2 * inter, device="cuda", dtype=torch.bfloat16, requires_grad=True)
g = torch.randn(rows, inter, device="cuda", dtype=torch.bfloat16)
bound = torch.tensor([rows], device="cuda")
forms = {
    "one kernel (BACKWARD flag)": lambda t: swiglu(t, bound),
    "two kernels": lambda t: TwoKernels.apply(t, bound),
}
a, b = (fn(x) for fn in forms.values())
assert torch.equal(a, b), "the forms differ"
results = {name: [] for name in forms}
for _ in range(5):
    for name, fn in forms.items():
        results[name].append(timed(fn, x, g))
for name, ms in results.items():
    print(f"{name:28s} median {statistics.median(ms):.3f} ms  rounds {' '.join(f'{m:.3f}' for m in ms)}")
