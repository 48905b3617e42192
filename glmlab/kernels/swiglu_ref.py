"""Plain torch twin of glmlab/kernels/swiglu.py: the experts' SwiGLU over their gate/up product,
forward and backward, written for clarity. It also serves the CPU and torch.compile."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def swiglu_ref(gate_up: torch.Tensor) -> torch.Tensor:
    """[M, 2W] (gate columns first, then up) -> silu(gate) * up, [M, W], computed in fp32 (fp64 for
    fp64 inputs) and rounded once to the input's dtype."""
    gate, up = gate_up.to(torch.promote_types(gate_up.dtype, torch.float32)).chunk(2, dim=-1)
    return (F.silu(gate) * up).to(gate_up.dtype)


def swiglu_backward_ref(gate_up: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """The gradient of `swiglu_ref` at `gate_up` for the output gradient `grad` [M, W], computed as
    the forward: d gate = grad * up * s * (1 + gate * (1 - s)) with s = sigmoid(gate), d up = grad *
    silu(gate)."""
    wide = torch.promote_types(gate_up.dtype, torch.float32)
    gate, up = gate_up.to(wide).chunk(2, dim=-1)
    g, s = grad.to(wide), torch.sigmoid(gate)
    return torch.cat([g * up * s * (1 + gate * (1 - s)), g * gate * s], dim=-1).to(gate_up.dtype)
