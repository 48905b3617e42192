"""Expert parallelism: each rank keeps E/ep of a MoE layer's routed experts; tokens travel to
their experts' ranks and back with `all_to_all_single` (docs/scaling.md, "Expert parallelism").

`ExpertParallel` takes the place of a layer's `Experts` module from outside the model. Its
`gate_up_proj` and `down_proj` are DTensors sharded on the expert dimension (Shard(0)) with the
global shapes and names of the single-device model, so a checkpoint written with any number of
ranks loads on any other. One forward pass on a rank:

1. sort its (token, expert) pairs by expert, which also groups them by destination rank;
2. exchange the per-expert pair counts (one small all-to-all), then the token rows;
3. run its local experts on what it received, through the model's own `Experts` computation;
4. send the outputs back the way they came and combine them with the gates.

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

    def forward(self, x: torch.Tensor, routing: Routing) -> torch.Tensor:
        """x [N,d] -> sum over each token's k experts (anywhere in the group) of gate * expert(x)."""
        N, k = routing.indices.shape
        ep, n_local = self.ep, self.n_local
        flat = routing.indices.reshape(-1)
        order = flat.argsort(stable=True)
        token_of = order // k
        send = x.index_select(0, token_of)  # [N*k, d] by expert, so by destination rank
        counts = routing.counts.to(torch.int64)  # [E] pairs this rank sends to each expert
        received = torch.empty_like(counts)  # [ep * n_local]: from each source rank, per local expert
        dist.all_to_all_single(received, counts, group=self.group)
        # the one read-back of the layer: both split lists in one transfer
        splits = torch.stack([counts.view(ep, n_local).sum(1), received.view(ep, n_local).sum(1)]).tolist()
        send_splits, recv_splits = splits
        if torch.is_grad_enabled():  # rows for other ranks: dispatched, combined, both again backward
            off_rank = sum(send_splits) - send_splits[self.rank] + sum(recv_splits) - recv_splits[self.rank]
            self.sent_bytes += 2 * off_rank * x.shape[1] * x.element_size()
        recv = all_to_all_single_autograd(send, recv_splits, send_splits, self.group)
        y = self._local_experts(recv, received.view(ep, n_local))
        back = all_to_all_single_autograd(y, send_splits, recv_splits, self.group)
        back = back * routing.gates.reshape(-1)[order, None].to(back.dtype)
        return torch.zeros_like(x).index_add_(0, token_of, back.to(x.dtype))

    def _local_experts(self, recv: torch.Tensor, received: torch.Tensor) -> torch.Tensor:
        """Rows grouped by (source rank, local expert) -> each row through its expert, gate 1."""
        scale = 1.0 / self.ep
        weights = {
            "gate_up_proj": _ScaleGrad.apply(self.gate_up_proj.to_local(), scale),
            "down_proj": _ScaleGrad.apply(self.down_proj.to_local(), scale),
        }
        if recv.shape[0] == 0:  # nothing routed here: keep the weights in the graph (zero gradient)
            return recv + 0 * sum(w.sum() for w in weights.values())
        expert = torch.arange(self.n_local, device=recv.device).repeat(self.ep)
        # output_size given: repeat_interleave would otherwise read the total back from the device
        local_ids = expert.repeat_interleave(received.reshape(-1).to(recv.device), output_size=recv.shape[0])
        routing = Routing(
            indices=local_ids[:, None],
            gates=torch.ones(recv.shape[0], 1, device=recv.device),
            affinity=None,
            counts=received.sum(0).to(recv.device),
        )
        return functional_call(self._compute, weights, (recv, routing))


def apply_expert_parallel(model: nn.Module, mesh: DeviceMesh) -> list[nn.Parameter]:
    """Replace every MoE layer's `experts` with an `ExpertParallel`; returns the new expert
    parameters (FSDP leaves them alone: each lives on one rank already)."""
    params = []
    for module in model.modules():
        if isinstance(module, MoE):
            module.experts = ExpertParallel(module.experts, module.cfg, mesh)
            params += [module.experts.gate_up_proj, module.experts.down_proj]
    return params
