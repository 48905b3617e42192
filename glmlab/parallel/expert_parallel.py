"""Expert parallelism: each rank keeps E/ep of a MoE layer's routed experts; tokens travel to
their experts' ranks and back with `all_to_all_single` (docs/scaling.md, "Expert parallelism").

`ExpertParallel` takes the place of a layer's `Experts` module from outside the model. Its
`gate_up_proj` and `down_proj` are DTensors sharded on the expert dimension (Shard(0)) with the
global shapes and names of the single-device model, so a checkpoint written with any number of
ranks loads on any other. One forward pass on a rank:

1. list, for each token, the ranks that hold at least one of its k experts;
2. exchange the per-expert pair counts and the row counts (one small all-to-all), then one row per
   (token, destination rank) with the token's local expert ids and gates for that rank;
3. run its local experts on the (row, expert) pairs it received, through the model's own `Experts`
   computation, and sum each row's gated outputs;
4. send those sums back the way the rows came and add them up per token.

The backward pass of the two autograd-aware all-to-alls routes each output gradient to the
rank that produced it. An expert's weight gradient then sums the contributions of every rank's
loss; FSDP averages the other gradients over ranks, so the expert gradients are scaled by 1/ep
to match (the gradient of the loss averaged over the global batch, as on one device).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._functional_collectives import all_to_all_single_autograd
from torch.distributed.tensor import DeviceMesh, Shard, distribute_tensor
from torch.func import functional_call

from glmlab.config import ModelConfig
from glmlab.model.moe import Experts, MoE, Routing


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the gradient times `scale` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


class ExpertParallel(nn.Module):
    """A MoE layer's routed experts split over the ranks of `mesh` (1-D, every rank)."""

    def __init__(self, experts: Experts, cfg: ModelConfig, mesh: DeviceMesh) -> None:
        super().__init__()
        self.ep = mesh.size()
        self.group = mesh.get_group()
        self.rank = mesh.get_local_rank()
        self.sent_bytes = 0  # all-to-all bytes this rank sent to others in training passes
        E = experts.gate_up_proj.shape[0]
        self.n_local = E // self.ep
        self.gate_up_proj = nn.Parameter(distribute_tensor(experts.gate_up_proj.detach(), mesh, [Shard(0)]))
        self.down_proj = nn.Parameter(distribute_tensor(experts.down_proj.detach(), mesh, [Shard(0)]))
        # The computation of `n_local` experts, its weights supplied per call (built on the meta
        # device: it holds no memory and is not a submodule, so it adds no parameters).
        with torch.device("meta"):
            template = Experts(dataclasses.replace(cfg, n_routed_experts=self.n_local))
        object.__setattr__(self, "_compute", template)

    # Eager inside a compiled layer: the split sizes are read back to the host and change every
    # step, and a compiled region with static shapes would recompile for each new value.
    @torch.compiler.disable
    def forward(self, x: torch.Tensor, routing: Routing) -> torch.Tensor:
        """x [N,d] -> sum over each token's k experts (anywhere in the group) of gate * expert(x).

        A token travels once to each rank that holds at least one of its experts, with its local
        expert ids and gates beside it; that rank sums its experts' gated outputs into one row and
        sends that back. At EP=2 with 8 of 64 experts a token has about 4 experts on the other rank
        and nearly always at least one, so this moves about a quarter of the rows that one row per
        (token, expert) pair would (glm5-small: 2,415 MB a step per GPU in session 6)."""
        N, k = routing.indices.shape
        ep, n_local = self.ep, self.n_local
        dest = routing.indices // n_local  # [N,k] the rank of each chosen expert
        hit = torch.zeros(N, ep, dtype=torch.bool, device=x.device).scatter_(1, dest, True)
        # per destination: the pairs per local expert and the token rows; the sources' in return
        mine = torch.cat([routing.counts.view(ep, n_local), hit.sum(0)[:, None]], dim=1).to(torch.int64)
        theirs = torch.empty_like(mine)
        dist.all_to_all_single(theirs, mine, group=self.group)
        # the one read-back of the layer: the row splits both ways and the pairs received
        read = torch.cat([mine[:, -1], theirs[:, -1], theirs[:, :-1].sum()[None]]).tolist()
        send_splits, recv_splits, pairs = read[:ep], read[ep : 2 * ep], read[-1]
        # the rows, by destination rank then token: the first sum(send_splits) of the sorted keys
        # (rank r, token t) is r*N + t; a token without an expert on r sorts past every real row
        key = torch.arange(ep * N, device=x.device).view(ep, N)
        row = torch.where(hit.T, key, ep * N).reshape(-1).sort().values[: sum(send_splits)]
        rank_of, token_of = row // N, row % N
        here = dest[token_of] == rank_of[:, None]  # [rows,k] which of the token's experts are there
        # one fp32 tensor for the gates and the local expert ids (-1: elsewhere; exact in fp32)
        ids = torch.where(here, routing.indices[token_of] % n_local, -1)
        meta = torch.cat([torch.where(here, routing.gates[token_of], 0.0), ids.float()], dim=1)
        off_send = sum(send_splits) - send_splits[self.rank]
        off_recv = sum(recv_splits) - recv_splits[self.rank]
        row_bytes = x.shape[1] * x.element_size()
        if torch.is_grad_enabled():  # forward: rows out, sums back, meta out (again when recomputed)
            self.sent_bytes += (off_send + off_recv) * row_bytes + off_send * 8 * k
        recv = all_to_all_single_autograd(x.index_select(0, token_of), recv_splits, send_splits, self.group)
        recv_meta = all_to_all_single_autograd(meta, recv_splits, send_splits, self.group)
        recv_ids = recv_meta[:, k:].detach().long()
        y = self._local_experts(recv, recv_ids, recv_meta[:, :k], theirs[:, :-1].sum(0), pairs)
        back = all_to_all_single_autograd(y, send_splits, recv_splits, self.group)
        if back.requires_grad:  # backward: the same rows both ways and the meta's gradient
            self._count_backward(back, (off_send + off_recv) * row_bytes + off_recv * 8 * k)
        return torch.zeros_like(x).index_add_(0, token_of, back.to(x.dtype))

    def _count_backward(self, back: torch.Tensor, nbytes: int) -> None:
        """Count `nbytes` when the backward pass reaches `back` (never, when no loss depends on it)."""

        def count(grad: torch.Tensor) -> None:
            self.sent_bytes += nbytes

        back.register_hook(count)

    def _local_experts(
        self, recv: torch.Tensor, ids: torch.Tensor, gates: torch.Tensor, counts: torch.Tensor, pairs: int
    ) -> torch.Tensor:
        """Received rows [R,d] with their local expert ids [R,k] (-1: an expert elsewhere) and gates
        -> per row the gated sum of its experts here, [R,d]."""
        scale = 1.0 / self.ep
        weights = {
            "gate_up_proj": _ScaleGrad.apply(self.gate_up_proj.to_local(), scale),
            "down_proj": _ScaleGrad.apply(self.down_proj.to_local(), scale),
        }
        if pairs == 0:  # nothing routed here: keep the weights in the graph (zero gradient)
            return recv + 0 * sum(w.sum() for w in weights.values()) + 0 * gates.sum()
        flat = ids.reshape(-1)
        R, k = ids.shape
        # the `pairs` real (row, expert) slots first: a missing expert sorts past every real one
        slot = torch.where(flat >= 0, torch.arange(R * k, device=recv.device), R * k).sort().values[:pairs]
        routing = Routing(
            indices=flat[slot].long()[:, None],
            gates=torch.ones(pairs, 1, device=recv.device),
            affinity=None,
            counts=counts.to(recv.device),
        )
        out = functional_call(self._compute, weights, (recv.index_select(0, slot // k), routing))
        gated = out.float() * gates.reshape(-1)[slot, None]  # summed in fp32, sent in the rows' dtype
        return torch.zeros(R, recv.shape[1], device=recv.device).index_add_(0, slot // k, gated).to(out.dtype)


def apply_expert_parallel(model: nn.Module, mesh: DeviceMesh) -> list[nn.Parameter]:
    """Replace every MoE layer's `experts` with an `ExpertParallel`; returns the new expert
    parameters (FSDP leaves them alone: each lives on one rank already)."""
    params = []
    for module in model.modules():
        if isinstance(module, MoE):
            module.experts = ExpertParallel(module.experts, module.cfg, mesh)
            params += [module.experts.gate_up_proj, module.experts.down_proj]
    return params
