"""Triton kernels for the routed experts' SwiGLU, h = silu(gate) * up over the [M, 2W] output of their
gate/up product (glmlab/model/moe.py), forward and backward, each one pass over the rows in fp32.
Twin: glmlab/kernels/swiglu_ref.py.

Torch runs it as separate kernels forward (silu through a strided half of the buffer, then the
product) and backward, and keeps silu's output for the backward pass; here the backward pass keeps
only the gate/up product. On one H200 at glm5-1b's shapes, forward and backward: 0.42 ms against
eager torch's 1.03 and torch.compile's 0.72 (experiments/results/h200-session19/, call 5).

`rows`, a one-element int tensor on the device, bounds the rows computed: the padded
expert-parallel dispatch's buffers hold a slot for every received row's k experts, about half of them
empty at EP=2, and the products leave the rows past the last group unwritten (their outputs here are left
unwritten too; nothing reads them). The bound is read on the device, so nothing waits for the host.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from glmlab.kernels.swiglu_ref import swiglu_backward_ref, swiglu_ref

BLOCK_R = 8  # rows a program
BLOCK_C = 512  # columns of the output at a time
WARPS = 4


@triton.jit
def _swiglu_kernel(
    x_ptr, grad_ptr, out_ptr, rows_ptr,
    W: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, BACKWARD: tl.constexpr,
):  # fmt: skip
    """Forward: out [M, W] = silu(gate) * up. Backward: out [M, 2W] = (d gate, d up) for grad [M, W]."""
    first = tl.program_id(0).to(tl.int64) * BLOCK_R
    rows = tl.load(rows_ptr).to(tl.int64)
    if first < rows:
        r = first + tl.arange(0, BLOCK_R)
        inside_r = r < rows
        for c in tl.static_range(0, W, BLOCK_C):
            cols = c + tl.arange(0, BLOCK_C)
            mask = inside_r[:, None] & (cols[None, :] < W)
            at = r[:, None] * (2 * W) + cols[None, :]  # gate at `at`, up W columns on
            narrow = r[:, None] * W + cols[None, :]
            gate = tl.load(x_ptr + at, mask=mask, other=0.0).to(tl.float32)
            up = tl.load(x_ptr + at + W, mask=mask, other=0.0).to(tl.float32)
            s = tl.sigmoid(gate)
            if BACKWARD:
                g = tl.load(grad_ptr + narrow, mask=mask, other=0.0).to(tl.float32)
                d_gate = g * up * s * (1 + gate * (1 - s))
                tl.store(out_ptr + at, d_gate.to(out_ptr.dtype.element_ty), mask=mask)
                tl.store(out_ptr + at + W, (g * gate * s).to(out_ptr.dtype.element_ty), mask=mask)
            else:
                tl.store(out_ptr + narrow, (gate * s * up).to(out_ptr.dtype.element_ty), mask=mask)


def _launch(
    gate_up: torch.Tensor, grad: torch.Tensor | None, out: torch.Tensor, rows: torch.Tensor
) -> torch.Tensor:
    """The kernel into `out`: forward without `grad`, backward with it."""
    M, W = gate_up.shape[0], gate_up.shape[1] // 2
    if M and W:
        _swiglu_kernel[(triton.cdiv(M, BLOCK_R),)](
            gate_up, gate_up if grad is None else grad, out, rows, W=W, BLOCK_R=BLOCK_R,
            BLOCK_C=min(BLOCK_C, triton.next_power_of_2(W)), BACKWARD=grad is not None, num_warps=WARPS,
        )  # fmt: skip
    return out


def launch_swiglu_forward(gate_up: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """[M, 2W] -> [M, W], the rows from `rows` [1] on unwritten (also on the CPU, through Triton's
    interpreter)."""
    gate_up = gate_up.contiguous()
    out = gate_up.new_empty(gate_up.shape[0], gate_up.shape[1] // 2)
    return _launch(gate_up, None, out, rows)


def launch_swiglu_backward(gate_up: torch.Tensor, grad: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The gradient [M, 2W] of the forward at `gate_up` for `grad` [M, W], rows from `rows` on unwritten."""
    gate_up = gate_up.contiguous()
    return _launch(gate_up, grad.contiguous(), torch.empty_like(gate_up), rows)


class _SwiGLU(torch.autograd.Function):
    """The kernels on CUDA, the twins elsewhere: either way the backward pass keeps `gate_up` alone."""

    @staticmethod
    def forward(ctx, gate_up: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        gate_up = gate_up.contiguous()
        ctx.save_for_backward(gate_up, rows)
        return launch_swiglu_forward(gate_up, rows) if gate_up.is_cuda else swiglu_ref(gate_up)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        gate_up, rows = ctx.saved_tensors
        if gate_up.is_cuda:
            return launch_swiglu_backward(gate_up, grad, rows), None
        return swiglu_backward_ref(gate_up, grad), None


def swiglu(gate_up: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for `gate_up` [M, 2W] (gate columns first), [M, W]. `rows` (an int tensor of
    one element, on the device) bounds the rows the kernels compute on CUDA; they leave the others
    unwritten. Where torch.compile traces, the twin computes every row (Inductor fuses its passes)."""
    if torch.compiler.is_compiling():
        return swiglu_ref(gate_up)
    return _SwiGLU.apply(gate_up, rows)
