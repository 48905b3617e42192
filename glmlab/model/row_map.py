"""Where a MoE layer's tokens sit among the rows its experts (or other ranks) read, and the two
differentiable moves between them: `expand` (tokens to rows) and `combine` (rows back to tokens,
weighed by the gates). Each is the other's backward, so neither pass adds with atomics
(glmlab/kernels/rows.py: Triton on CUDA, the torch twins on the CPU).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from glmlab.kernels.rows import gather_sum, spread


@dataclass(frozen=True)
class RowMap:
    """N tokens of k slots each among M rows, each row holding at most one slot."""

    slots: torch.Tensor  # [N,k] int64: each slot's row, M for none
    owner: torch.Tensor  # [M] int64: each row's slot t*k + j, N*k for none

    @property
    def rows(self) -> int:
        return self.owner.shape[0]

    @classmethod
    def of_slots(cls, slots: torch.Tensor, rows: int) -> RowMap:
        """From each slot's row (`rows` for none)."""
        N, k = slots.shape
        flat = slots.reshape(-1)
        owner = torch.full((rows + 1,), N * k, dtype=torch.int64, device=slots.device)
        owner.scatter_(0, flat, torch.arange(N * k, device=slots.device))
        return cls(slots, owner[:rows])

    @classmethod
    def of_owner(cls, owner: torch.Tensor, tokens: int, k: int) -> RowMap:
        """From each row's slot (every row holds one)."""
        M = owner.shape[0]
        slots = torch.full((tokens * k,), M, dtype=torch.int64, device=owner.device)
        slots.scatter_(0, owner, torch.arange(M, device=owner.device))
        return cls(slots.view(tokens, k), owner)


class _Expand(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, slots: torch.Tensor, owner: torch.Tensor, dtype: torch.dtype):
        ctx.save_for_backward(slots)
        ctx.x_dtype = x.dtype
        return spread(x, owner, slots.shape[1], None, None, dtype)[0]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        (slots,) = ctx.saved_tensors
        return gather_sum(grad, slots, None, ctx.x_dtype), None, None, None


class _Combine(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rows, slots, owner, weights, dtype):
        # the rows only for the weights' gradient (expert parallelism's sums over ranks have none)
        ctx.want_w = weights is not None and weights.requires_grad
        ctx.save_for_backward(rows if ctx.want_w else None, slots, owner, weights)
        ctx.rows_dtype = rows.dtype
        return gather_sum(rows, slots, weights, dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        rows, slots, owner, weights = ctx.saved_tensors
        flat = weights.reshape(-1) if weights is not None else None
        grad_rows, dots = spread(grad, owner, slots.shape[1], flat, rows, ctx.rows_dtype)
        grad_w = F.pad(dots, (0, 1))[slots] if ctx.want_w else None  # a slot of no row (M): 0
        return grad_rows, None, None, grad_w, None


def expand(x: torch.Tensor, where: RowMap, dtype: torch.dtype | None = None) -> torch.Tensor:
    """[M,d]: each row the token of its slot (zero for none), in `dtype` (default x's)."""
    return _Expand.apply(x, where.slots, where.owner, dtype or x.dtype)


def combine(
    rows: torch.Tensor, where: RowMap, weights: torch.Tensor | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """[N,d]: each token the sum of its slots' rows times `weights` [N,k] (fp32 sums), in `dtype`
    (default the rows')."""
    return _Combine.apply(rows, where.slots, where.owner, weights, dtype or rows.dtype)
