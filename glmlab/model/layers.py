"""Building blocks: RMSNorm, rotary embedding (interleaved / half-split, YaRN), SwiGLU
(docs/architecture.md, "RMSNorm, rotary embedding, YaRN")."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from glmlab.config import ModelConfig


class _RMSNormFP32(torch.autograd.Function):
    """`w * x * rsqrt(mean(x^2) + eps)` with a hand-written backward for training on a CPU,
    where torch's own backward for rms_norm is a chain of about ten element-wise ops; this one
    is five element-wise ops and two reductions."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        rstd = torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)
        normed = x * rstd
        ctx.save_for_backward(normed, weight, rstd)
        return normed * weight

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        normed, weight, rstd = ctx.saved_tensors
        grad_normed = grad * weight
        # d/dx of x * rstd: rstd * (g - normed * mean(g * normed))
        dot = (grad_normed * normed).mean(-1, keepdim=True)
        grad_x = torch.addcmul(grad_normed, normed, dot, value=-1).mul_(rstd)
        grad_weight = (grad * normed).reshape(-1, normed.shape[-1]).sum(0)
        return grad_x, grad_weight, None


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in fp32, weight initialised to ones, no bias."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:  # same result, fewer passes
            training = torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
            if training and x.device.type == "cpu":
                return _RMSNormFP32.apply(x, self.weight, self.eps)
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)  # fused (on GPUs, its backward too)
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)  # x * rsqrt(mean(x^2) + eps)
        return self.weight * normed.to(x.dtype)


class SwiGLU(nn.Module):
    """`down(silu(gate(x)) * up(x))`: dense layers, shared experts."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def _yarn_inv_freq(cfg: ModelConfig, dim: int) -> tuple[torch.Tensor, float]:
    """YaRN frequencies and cos/sin scale, as DeepSeek-V3 defines them (docs/architecture.md, YaRN)."""
    y = cfg.yarn
    base, factor = cfg.rope_theta, float(y["factor"])
    original = y["original_max_position_embeddings"]
    beta_fast, beta_slow = y.get("beta_fast") or 32, y.get("beta_slow") or 1

    def correction_dim(rotations: float) -> float:
        return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(correction_dim(beta_fast)), 0)
    high = min(math.ceil(correction_dim(beta_slow)), dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    extrapolation = 1.0 - ramp
    inv_freq = (1.0 / (factor * pos_freqs)) * ramp + (1.0 / pos_freqs) * extrapolation

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    m, m_all = y.get("mscale"), y.get("mscale_all_dim")
    attention_factor = mscale(factor, m) / mscale(factor, m_all) if m and m_all else mscale(factor)
    return inv_freq, attention_factor


class RotaryEmbedding(nn.Module):
    """cos/sin tables for the rotary dims (`qk_rope_head_dim`), shared by MLA and the indexer."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        dim = cfg.qk_rope_head_dim
        if cfg.yarn:
            inv_freq, self.attention_factor = _yarn_inv_freq(cfg, dim)
        else:
            inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
            self.attention_factor = 1.0
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [S] -> cos, sin [S, dim/2] in fp32."""
        angles = positions.float()[:, None] * self.inv_freq.float()[None, :]
        return angles.cos() * self.attention_factor, angles.sin() * self.attention_factor


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleave: bool) -> torch.Tensor:
    """Rotate the last dim of x [..., S, (heads,) dim] by the pair angles in cos/sin [S, dim/2].

    Interleaved rotates pairs (x0,x1),(x2,x3)...; half-split rotates (x_i, x_{i+dim/2}). The
    result is written half-split in both cases: q and k always share the layout, so every
    dot product (the only thing attention reads) is unchanged.
    """
    if interleave:
        x1, x2 = x[..., 0::2], x[..., 1::2]
    else:
        x1, x2 = x.chunk(2, dim=-1)
    if x.dim() == cos.dim() + 2:  # [B, S, H, dim]: broadcast over heads
        cos, sin = cos[:, None, :], sin[:, None, :]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype matrix products run in: autocast's on this device when it is on, else x's."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
