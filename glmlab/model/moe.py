"""Mixture of Experts: sigmoid router with selection-only bias and groups, routed dispatch,
shared experts, balance statistics (spec 2.3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from glmlab.config import ModelConfig
from glmlab.model.layers import SwiGLU


@dataclass
class Routing:
    indices: torch.Tensor  # [N,k] chosen experts
    gates: torch.Tensor  # [N,k] fp32 gate weights (unbiased, normalised, scaled)
    affinity: torch.Tensor  # [N,E] fp32 sigmoid scores (no bias), for the balance loss
    counts: torch.Tensor  # [E] tokens routed to each expert (dispatch sizes, balance statistics)


class Router(nn.Module):
    """Sigmoid affinities; `e_score_correction_bias` only chooses, never weighs."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.empty(cfg.n_routed_experts, cfg.hidden_size))
        # Moved by the trainer after each step from the observed loads; no gradient.
        self.register_buffer("e_score_correction_bias", torch.zeros(cfg.n_routed_experts))

    def forward(self, x: torch.Tensor) -> Routing:
        cfg = self.cfg
        affinity = F.linear(x.float(), self.weight.float()).sigmoid()  # [N,E]
        choice = affinity.detach() + self.e_score_correction_bias.float()
        if cfg.n_group > 1:
            N, E = choice.shape
            grouped = choice.view(N, cfg.n_group, E // cfg.n_group)
            group_score = grouped.topk(2, dim=-1).values.sum(-1)  # [N,G]
            keep = group_score.topk(cfg.topk_group, dim=-1).indices
            group_mask = torch.zeros_like(group_score, dtype=torch.bool).scatter_(1, keep, True)
            choice = grouped.masked_fill(~group_mask[..., None], float("-inf")).view(N, E)
        indices = choice.topk(cfg.num_experts_per_tok, dim=-1).indices
        gates = affinity.gather(1, indices)
        if cfg.norm_topk_prob:
            gates = gates / (gates.sum(-1, keepdim=True) + 1e-20)
        flat = indices.reshape(-1)  # a scatter, not bincount: its size is fixed (no compile break)
        counts = torch.zeros(cfg.n_routed_experts, dtype=torch.long, device=x.device).scatter_add_(
            0, flat, torch.ones_like(flat)
        )
        return Routing(indices, gates * cfg.routed_scaling_factor, affinity, counts)


class Experts(nn.Module):
    """E SwiGLU experts stored stacked: gate_up_proj [E, 2I, d] (gate rows first), down_proj [E, d, I]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        E, d, inter = cfg.n_routed_experts, cfg.hidden_size, cfg.moe_intermediate_size
        self.gate_up_proj = nn.Parameter(torch.empty(E, 2 * inter, d))
        self.down_proj = nn.Parameter(torch.empty(E, d, inter))

    @staticmethod
    def _swiglu(x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
        gate, up = F.linear(x, gate_up).chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, down)

    def run(self, e: int, x: torch.Tensor) -> torch.Tensor:
        return self._swiglu(x, self.gate_up_proj[e], self.down_proj[e])

    @torch.compiler.disable  # data-dependent split sizes: torch.compile leaves this eager
    def forward(self, x: torch.Tensor, routing: Routing) -> torch.Tensor:
        """Dispatch: sort the (token, expert) pairs by expert and run each expert only on its
        tokens; combine with the gates by a scatter-add.

        The stacked weights are unbound and the sorted tokens split once, so the backward
        pass stacks / concatenates the pieces once instead of zero-filling a full-size
        gradient per expert."""
        N, k = routing.indices.shape
        flat = routing.indices.reshape(-1)
        order = flat.argsort(stable=True)
        token_of = order // k
        pieces = x.index_select(0, token_of).split(routing.counts.tolist())
        weights = zip(self.gate_up_proj.unbind(0), self.down_proj.unbind(0), strict=True)
        outputs = [self._swiglu(p, gu, dn) for p, (gu, dn) in zip(pieces, weights, strict=True) if len(p)]
        y = torch.cat(outputs) * routing.gates.reshape(-1)[order, None].to(x.dtype)
        return torch.zeros_like(x).index_add_(0, token_of, y)

    def forward_every_expert(self, x: torch.Tensor, routing: Routing) -> torch.Tensor:
        """Reference: run every expert on every token, then weight (tests only)."""
        E = self.gate_up_proj.shape[0]
        dense_gates = torch.zeros(x.shape[0], E, dtype=routing.gates.dtype, device=x.device)
        dense_gates.scatter_(1, routing.indices, routing.gates)
        return sum(self.run(e, x) * dense_gates[:, e : e + 1].to(x.dtype) for e in range(E))


@dataclass
class MoEOutput:
    out: torch.Tensor
    counts: torch.Tensor  # [E] tokens routed to each expert
    balance_loss: torch.Tensor | None  # sequence-wise balance loss, before alpha (when asked)


class MoE(nn.Module):
    """Routed experts plus always-on shared expert(s)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.gate = Router(cfg)
        self.experts = Experts(cfg)
        n_shared = cfg.n_shared_experts * cfg.moe_intermediate_size
        self.shared_experts = SwiGLU(cfg.hidden_size, n_shared) if n_shared else None

    def forward(self, x: torch.Tensor, balance: bool = True) -> MoEOutput:
        """x [B,S,d]; `balance=False` skips the balance loss (decoding has no use for it)."""
        B, S, d = x.shape
        flat = x.reshape(-1, d)
        routing = self.gate(flat)
        y = self.experts(flat, routing)
        if self.shared_experts is not None:
            y = y + self.shared_experts(flat)
        loss = self.balance_loss(routing, B, S) if balance else None
        return MoEOutput(y.view(B, S, d), routing.counts, loss)

    def balance_loss(self, routing: Routing, B: int, S: int) -> torch.Tensor:
        """DeepSeek-V3's sequence-wise loss: sum_i f_i * P_i per sequence, averaged.

        f_i = E / (k*S) * tokens of the sequence routed to i; P_i = mean over the sequence of
        the affinity of i normalised over experts.
        """
        E, k = self.cfg.n_routed_experts, self.cfg.num_experts_per_tok
        one_hot = torch.zeros(B * S, E, device=routing.indices.device).scatter_(1, routing.indices, 1.0)
        f = one_hot.view(B, S, E).sum(1) * (E / (k * S))
        share = routing.affinity / routing.affinity.sum(-1, keepdim=True)
        P = share.view(B, S, E).mean(1)
        return (f * P).sum(-1).mean()
