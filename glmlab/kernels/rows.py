"""Triton kernels for the two row moves of a MoE layer's dispatch (docs/architecture.md, "Mixture of
Experts"): spreading tokens into the rows their experts read, and summing rows back per token.
Twins: glmlab/kernels/rows_ref.py, which also runs them on the CPU.

Tokens t < N have k slots each (a token's experts, or under expert parallelism the ranks it is sent
to); rows r < M hold at most one slot. `slots` [N,k] int64 gives each slot's row (M: none), `owner`
[M] int64 each row's slot t*k + j (N*k: none).

- `gather_sum`: out[t] = sum over j of weights[t,j] * src[slots[t,j]]. One program per token reads
  its k rows once and sums them in fp32 in slot order: the same sums every run, with no atomics and
  no [N,k,d] intermediate (torch would gather the k rows, weigh them and sum them in three passes).
- `spread`: out[r] = weights[owner[r]] * src[owner[r] // k], zero for a row of no slot, and, when
  asked, dots[r] = <src[owner[r] // k], dot_with[r]> in fp32: the combine's backward (the gradient of
  each expert output row and of its gate) in one pass over the rows.

Both are `torch.library.custom_op`s (Triton on CUDA, the twins on the CPU), which torch.compile
traces; eager on CUDA they launch their kernels directly.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from glmlab.kernels.rows_ref import gather_sum_ref, spread_ref

# Tiles, from a sweep at glm5-1b's shapes on an H200 (experiments/results/h200-session18/call3): a
# gather_sum program reads a whole row of up to GATHER_BLOCK_D columns at once (3.9 TB/s at d = 1536;
# 1.8 TB/s in blocks of 512, whose loads a program waits for in turn); spread reaches 2.6 TB/s with 2
# to 8 rows a program, 512 to 2048 columns at a time.
GATHER_BLOCK_D = 2048
SPREAD_BLOCK_D = 512
SPREAD_ROWS = 4
WARPS = 4


@triton.jit
def _gather_sum_kernel(
    src_ptr, slots_ptr, w_ptr, out_ptr, M,
    D: tl.constexpr, K: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, WEIGHTED: tl.constexpr,
):  # fmt: skip
    t = tl.program_id(0).to(tl.int64)
    j = tl.arange(0, BLOCK_K)
    slot = tl.load(slots_ptr + t * K + j, mask=j < K, other=M)
    held = slot < M
    if WEIGHTED:
        w = tl.load(w_ptr + t * K + j, mask=held, other=0.0).to(tl.float32)
    base = slot * D
    for c in tl.static_range(0, D, BLOCK_D):
        cols = c + tl.arange(0, BLOCK_D)
        inside = cols < D
        rows = tl.load(
            src_ptr + base[:, None] + cols[None, :], mask=held[:, None] & inside[None, :], other=0.0
        )
        rows = rows.to(tl.float32)
        if WEIGHTED:
            rows = rows * w[:, None]
        tl.store(out_ptr + t * D + cols, tl.sum(rows, axis=0).to(out_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _spread_kernel(
    src_ptr, owner_ptr, w_ptr, with_ptr, out_ptr, dots_ptr, M, NK,
    D: tl.constexpr, K: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
    WEIGHTED: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    inside_r = r < M
    owner = tl.load(owner_ptr + r, mask=inside_r, other=NK)
    held = owner < NK
    token = owner // K
    if WEIGHTED:
        w = tl.load(w_ptr + owner, mask=held, other=0.0).to(tl.float32)
    dot = tl.zeros([BLOCK_R], dtype=tl.float32)
    for c in tl.static_range(0, D, BLOCK_D):
        cols = c + tl.arange(0, BLOCK_D)
        inside = cols[None, :] < D
        vals = tl.load(src_ptr + token[:, None] * D + cols[None, :], mask=held[:, None] & inside, other=0.0)
        vals = vals.to(tl.float32)
        if DOT:
            mask = held[:, None] & inside  # rows of no slot: 0, unread (they may hold NaN)
            other = tl.load(with_ptr + r[:, None] * D + cols[None, :], mask=mask, other=0.0)
            dot += tl.sum(vals * other.to(tl.float32), axis=1)
        if WEIGHTED:
            vals = vals * w[:, None]
        out = out_ptr + r[:, None] * D + cols[None, :]
        tl.store(out, vals.to(out_ptr.dtype.element_ty), mask=inside_r[:, None] & inside)
    if DOT:
        tl.store(dots_ptr + r, dot, mask=inside_r)


def launch_gather_sum(
    src: torch.Tensor, slots: torch.Tensor, weights: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor:
    """The Triton `gather_sum` (also on the CPU, through Triton's interpreter)."""
    (M, D), (N, K) = src.shape, slots.shape
    src, slots = src.contiguous(), slots.contiguous()
    out = torch.empty(N, D, dtype=dtype, device=src.device)
    w = weights.contiguous() if weights is not None else src
    block_k = max(2, triton.next_power_of_2(K))
    # at most 16K values of a tile in registers (k = 8 keeps whole rows of 2,048 columns; EP=16's
    # sums over ranks take 1,024 at a time)
    block_d = min(GATHER_BLOCK_D, triton.next_power_of_2(D), max(64, 16384 // block_k))
    if N and D:
        _gather_sum_kernel[(N,)](
            src, slots, w, out, M, D=D, K=K, BLOCK_K=block_k, BLOCK_D=block_d,
            WEIGHTED=weights is not None, num_warps=WARPS,
        )  # fmt: skip
    return out


def launch_spread(
    src: torch.Tensor,
    owner: torch.Tensor,
    k: int,
    weights: torch.Tensor | None,
    dot_with: torch.Tensor | None,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Triton `spread` (also on the CPU, through Triton's interpreter)."""
    (N, D), M = src.shape, owner.shape[0]
    src, owner = src.contiguous(), owner.contiguous()
    out = torch.empty(M, D, dtype=dtype, device=src.device)
    dots = torch.empty(M if dot_with is not None else 0, dtype=torch.float32, device=src.device)
    w = weights.contiguous() if weights is not None else src
    other = dot_with.contiguous() if dot_with is not None else src
    if M and D:
        _spread_kernel[(triton.cdiv(M, SPREAD_ROWS),)](
            src, owner, w, other, out, dots, M, N * k, D=D, K=k, BLOCK_R=SPREAD_ROWS,
            BLOCK_D=min(SPREAD_BLOCK_D, triton.next_power_of_2(D)), WEIGHTED=weights is not None,
            DOT=dot_with is not None, num_warps=WARPS,
        )  # fmt: skip
    return out, dots


def gather_sum(
    src: torch.Tensor, slots: torch.Tensor, weights: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor:
    """[N,d] in `dtype`: out[t] = sum over j of weights[t,j] * src[slots[t,j]] (without weights, 1),
    slots of no row (M) adding nothing; fp32 sums in slot order. Eager on CUDA the kernel is launched
    directly: the custom op's dispatch cost the host 130-180 us a call (probe/host_probe.py in
    experiments/results/h200-session18/, call 7), more than the kernel takes at a few thousand
    tokens."""
    if src.is_cuda and not torch.compiler.is_compiling():
        return launch_gather_sum(src, slots, weights, dtype)
    return _gather_sum_op(src, slots, weights, dtype)


def spread(
    src: torch.Tensor,
    owner: torch.Tensor,
    k: int,
    weights: torch.Tensor | None,
    dot_with: torch.Tensor | None,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """out [M,d] in `dtype`: out[r] = weights[owner[r]] * src[owner[r] // k] (without weights, 1),
    zero for a row of no slot; dots [M] fp32, <src[owner[r] // k], dot_with[r]> (empty without
    `dot_with`). Launched directly when eager on CUDA, as `gather_sum`."""
    if src.is_cuda and not torch.compiler.is_compiling():
        return launch_spread(src, owner, k, weights, dot_with, dtype)
    return _spread_op(src, owner, k, weights, dot_with, dtype)


# The custom ops: what torch.compile traces (with their fake implementations), and the CPU's twins.
@torch.library.custom_op("glmlab::gather_sum", mutates_args=(), device_types="cuda")
def _gather_sum_op(
    src: torch.Tensor, slots: torch.Tensor, weights: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor:
    return launch_gather_sum(src, slots, weights, dtype)


_gather_sum_op.register_kernel("cpu")(gather_sum_ref)


@_gather_sum_op.register_fake
def _(src, slots, weights, dtype):
    return src.new_empty(slots.shape[0], src.shape[1], dtype=dtype)


@torch.library.custom_op("glmlab::spread", mutates_args=(), device_types="cuda")
def _spread_op(
    src: torch.Tensor,
    owner: torch.Tensor,
    k: int,
    weights: torch.Tensor | None,
    dot_with: torch.Tensor | None,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    return launch_spread(src, owner, k, weights, dot_with, dtype)


_spread_op.register_kernel("cpu")(spread_ref)


@_spread_op.register_fake
def _(src, owner, k, weights, dot_with, dtype):
    M = owner.shape[0]
    # the Triton kernel's dots are fp32; the CPU's twin keeps fp64 inputs in fp64
    wide = torch.float32 if src.is_cuda else torch.promote_types(src.dtype, torch.float32)
    dots = src.new_empty(M if dot_with is not None else 0, dtype=wide)
    return src.new_empty(M, src.shape[1], dtype=dtype), dots
