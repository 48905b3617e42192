"""Plain torch twins of glmlab/kernels/rows.py: the two row moves of a MoE layer's dispatch, written
for clarity (they hold [N,k,d] tensors). They also serve the CPU, where the Triton kernels do not run.

Tokens t < N have k slots each; rows r < M hold at most one slot. `slots` [N,k] gives each slot's
row (M: none) and `owner` [M] each row's slot t*k + j (N*k: none).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gather_sum_ref(
    src: torch.Tensor, slots: torch.Tensor, weights: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor:
    """[N,d]: out[t] = sum over j of weights[t,j] * src[slots[t,j]] (slots of no row add nothing),
    summed in fp32 (fp64 for fp64 inputs), in `dtype`."""
    wide = torch.promote_types(src.dtype, torch.float32)
    rows = F.pad(src.to(wide), (0, 0, 0, 1))[slots.clamp(max=src.shape[0])]  # [N,k,d], row M zero
    if weights is not None:
        rows = rows * weights.to(wide)[..., None]
    return rows.sum(1).to(dtype)


def spread_ref(
    src: torch.Tensor,
    owner: torch.Tensor,
    k: int,
    weights: torch.Tensor | None,
    dot_with: torch.Tensor | None,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """out [M,d] in `dtype`: out[r] = weights[owner[r]] * src[owner[r] // k], zero for a row of no
    slot; and dots [M] fp32, sum over c of src[owner[r] // k, c] * dot_with[r, c] (0 for a row of no
    slot; an empty tensor without `dot_with`), fp64 for fp64 inputs."""
    N = src.shape[0]
    held = owner < N * k
    token = torch.where(held, owner // k, N)
    wide = torch.promote_types(src.dtype, torch.float32)
    rows = F.pad(src.to(wide), (0, 0, 0, 1))[token]  # [M,d], row N zero
    dots = rows.new_empty(0)
    if dot_with is not None:  # rows of no slot: 0, whatever they hold
        dots = (rows * torch.where(held[:, None], dot_with.to(wide), 0.0)).sum(-1)
    if weights is not None:
        rows = rows * F.pad(weights.to(wide), (0, 1))[owner.clamp(max=N * k)][:, None]
    return rows.to(dtype), dots
