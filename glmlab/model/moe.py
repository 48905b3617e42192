"""Mixture of Experts: sigmoid router with selection-only bias and groups, routed experts as
grouped matrix products (or a loop over experts on the CPU), shared experts, the balance loss
(docs/architecture.md, "Mixture of Experts")."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from glmlab.config import ModelConfig
from glmlab.kernels.swiglu import swiglu
from glmlab.model.layers import SwiGLU, compute_dtype
from glmlab.model.row_map import RowMap, combine, expand

# Each expert's rows in the grouped layout start at a multiple of this: bf16 rows 16 bytes apart,
# which the grouped kernels' backward needs (it splits the contraction dimension at these rows).
GROUP_ALIGN = 8
# Widths (hidden size, expert width) the grouped kernels take are multiples of this: they read rows
# of 16 bytes, 8 bf16 values (narrower experts are zero-padded; other hidden sizes run looped).
WIDTH_ALIGN = 8


# what the routed experts may compute beside their own work and add to it: the shared experts
Beside = Callable[[torch.Tensor], torch.Tensor] | None
# parameters that replace an Experts module's own for one call: (gate_up_proj, down_proj)
Params = tuple[torch.Tensor, torch.Tensor] | None


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
        # fp32 scores under bf16 autocast too (DeepSeek's gate): bf16 would reorder near-equal experts
        with torch.autocast(x.device.type, enabled=False):
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


def grouped_form(device_type: str, dtype: torch.dtype, hidden: int) -> bool:
    """Whether the experts run as grouped products (no host sync): on CUDA, in bf16, with a hidden
    size of 16-byte rows; elsewhere one product per expert."""
    return device_type == "cuda" and dtype == torch.bfloat16 and hidden % WIDTH_ALIGN == 0


class Experts(nn.Module):
    """E SwiGLU experts stored stacked: gate_up_proj [E, 2I, d] (gate rows first), down_proj [E, d, I].

    Two implementations of the same function: `grouped` (CUDA in bf16, 16-byte rows: two grouped matrix
    products over all experts, every size computed on the device, no host synchronisation) and
    `looped` (elsewhere: one product per expert, sized on the host, the fastest form on a CPU).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        E, d, inter = cfg.n_routed_experts, cfg.hidden_size, cfg.moe_intermediate_size
        self.gate_up_proj = nn.Parameter(torch.empty(E, 2 * inter, d))
        self.down_proj = nn.Parameter(torch.empty(E, d, inter))

    def forward(
        self, x: torch.Tensor, routing: Routing, *, empty_slots: bool = False, pairs: int | None = None,
        beside: Beside = None, params: Params = None,
    ) -> torch.Tensor:  # fmt: skip
        """x [N,d] -> sum over each token's k experts of gate * expert(x), [N,d], plus `beside(x)`
        when given (the shared experts: expert parallelism computes them while it waits for its
        split sizes or its rows). With `empty_slots`, an index of -1 is a slot with no expert (expert
        parallelism's rows: experts on other ranks) and adds nothing; `routing.counts` counts the
        other slots, and `pairs`, when known, their total (it sizes the grouped buffers).
        `params` (gate_up, down) replace this module's own (expert parallelism's local shards)."""
        if grouped_form(x.device.type, compute_dtype(x), x.shape[-1]):
            y = self.grouped(x, routing, empty_slots=empty_slots, pairs=pairs, params=params)
        else:
            y = self.looped(x, routing, params=params)
        return y if beside is None else y + beside(x)

    def grouped(
        self, x: torch.Tensor, routing: Routing, *, empty_slots: bool = False, pairs: int | None = None,
        params: Params = None,
    ) -> torch.Tensor:  # fmt: skip
        """Grouped matrix products (`torch._grouped_mm`) over a padded expert-sorted layout.

        The (token, expert) pairs are sorted by expert into a buffer of a fixed number of rows,
        N*k + E*(GROUP_ALIGN-1), where each expert's rows start at a multiple of GROUP_ALIGN; the
        padding rows are zeros (their outputs are never read) and the last expert's group runs
        to the end of the buffer. Where nothing here needs a gradient (decoding, evaluation, the
        DSA warm-up's frozen experts) no backward splits the contraction at the group starts: the
        pairs are packed back to back in N*k rows (a decoding step of 4 tokens had computed 480
        rows for its 32 pairs). Offsets are int32 cumulative row counts. The tokens reach their
        rows and the outputs return, weighed by the gates, through `expand` and `combine`
        (glmlab/model/row_map.py: one pass each way, no atomics).

        Empty slots (`empty_slots`) have no row. The products compute nothing past the last group
        and leave those rows (and the backward pass's input gradient rows) uninitialised; no slot
        reads them. The SwiGLU between the products (glmlab/kernels/swiglu.py) stops at the last
        group's end too, read on the device. `pairs`, the number of slots that are not empty when
        the caller knows it (expert parallelism reads it back with its split sizes), sizes the
        buffer to them alone."""
        N, d = x.shape
        k = routing.indices.shape[1]
        gate_up_proj, down_proj = params or (self.gate_up_proj, self.down_proj)
        E = gate_up_proj.shape[0]
        dtype = compute_dtype(x)
        weights_learn = gate_up_proj.requires_grad or down_proj.requires_grad
        align = GROUP_ALIGN if torch.is_grad_enabled() and (x.requires_grad or weights_learn) else 1
        rows = (N * k if pairs is None else pairs) + E * (align - 1)
        flat = routing.indices.reshape(-1)  # pair p: token p // k, its (p % k)-th expert
        expert_of = torch.where(flat >= 0, flat, E) if empty_slots else flat  # empty: a group E, last
        order = expert_of.argsort(stable=True)
        counts = routing.counts
        padded = (counts + align - 1) // align * align
        group_end = padded.cumsum(0)
        # each group's first row and first pair; the empty slots' group E has no row (`rows`)
        start = F.pad(group_end - padded, (0, 1), value=rows)
        first_pair = F.pad(counts.cumsum(0) - counts, (0, 1), value=0)
        # the j-th pair in expert order: its rank inside its expert, moved to its group's start
        expert = expert_of[order]
        rank = torch.arange(N * k, device=x.device) - first_pair[expert]
        row = torch.where(expert < E, rank + start[expert], rows)
        where = RowMap.of_slots(torch.empty_like(order).scatter_(0, order, row).view(N, k), rows)
        # no host value reaches the device; without empty slots the last group runs to the end
        offs = (group_end if empty_slots else F.pad(group_end[:-1], (0, 1), value=rows)).to(torch.int32)
        sorted_x = expand(x, where, dtype)
        gate_up_w, down_w = _aligned_weights(gate_up_proj.to(dtype), down_proj.to(dtype))
        gate_up = torch._grouped_mm(sorted_x, gate_up_w.mT, offs=offs)
        out = torch._grouped_mm(swiglu(gate_up, offs[-1:]), down_w.mT, offs=offs)
        return combine(out, where, routing.gates, x.dtype)

    @torch.compiler.disable  # split sizes read on the host: torch.compile leaves this eager
    def looped(self, x: torch.Tensor, routing: Routing, *, params: Params = None) -> torch.Tensor:
        """Sort the (token, expert) pairs by expert and run each expert only on its tokens;
        combine with the gates by a scatter-add.

        The stacked weights are unbound and the sorted tokens split once, so the backward
        pass stacks / concatenates the pieces once instead of zero-filling a full-size
        gradient per expert. Empty slots (index -1, `forward`'s `empty_slots`) sort first and
        are dropped."""
        N, k = routing.indices.shape
        sizes = routing.counts.tolist()
        order = routing.indices.reshape(-1).argsort(stable=True)[N * k - sum(sizes) :]
        token_of = order // k
        pieces = x.index_select(0, token_of).split(sizes)
        gate_up_proj, down_proj = params or (self.gate_up_proj, self.down_proj)
        per_expert = zip(gate_up_proj.unbind(0), down_proj.unbind(0), strict=True)
        outputs = [_swiglu(p, gu, dn) for p, (gu, dn) in zip(pieces, per_expert, strict=True) if len(p)]
        if not outputs:  # every slot empty: nothing here; the weights and gates stay in the graph (zero
            # gradient), so that expert parallelism's backward all-to-alls run on every rank
            kept = gate_up_proj.sum() + down_proj.sum() + routing.gates.sum()
            return x * 0 + 0 * kept.to(x.dtype)
        y = torch.cat(outputs) * routing.gates.reshape(-1)[order, None].to(x.dtype)
        return torch.zeros_like(x).index_add_(0, token_of, y)


def _aligned_weights(gate_up: torch.Tensor, down: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The experts' weights with the intermediate width zero-padded to a multiple of WIDTH_ALIGN,
    the row alignment `torch._grouped_mm` requires (moe_granularity's 64 experts of width 12):
    the padded channels compute silu(0) * 0 = 0 and meet zero columns of the down projection.
    The padded weights are copies made per call, a cost only such widths pay."""
    inter = down.shape[-1]
    pad = -inter % WIDTH_ALIGN
    if not pad:
        return gate_up, down
    E, _, d = gate_up.shape
    gate_up = F.pad(gate_up.view(E, 2, inter, d), (0, 0, 0, pad)).view(E, 2 * (inter + pad), d)
    return gate_up, F.pad(down, (0, pad))


def _swiglu(x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    gate, up = F.linear(x, gate_up).chunk(2, dim=-1)
    return F.linear(F.silu(gate) * up, down)


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

    def forward(self, x: torch.Tensor, *, balance: bool = True) -> MoEOutput:
        """x [B,S,d]; `balance=False` skips the balance loss (decoding has no use for it)."""
        B, S, d = x.shape
        flat = x.reshape(-1, d)
        routing = self.gate(flat)
        y = self.experts(flat, routing, beside=self.shared_experts)
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
