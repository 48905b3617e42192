"""Expert parallelism: each rank keeps E/ep of a MoE layer's routed experts; tokens travel to
their experts' ranks and back with `all_to_all_single` (docs/scaling.md, "Expert parallelism").

`ExpertParallel` takes the place of a layer's `Experts` module from outside the model. Its
`gate_up_proj` and `down_proj` are DTensors sharded on the expert dimension (Shard(0)) with the
global shapes and names of the single-device model, so a checkpoint written with any number of
ranks loads on any other. One forward pass on a rank:

1. send each token, with its local expert ids and gates for that rank (-1 and 0 for experts
   elsewhere), to the ranks holding its experts. Two dispatches (`train.ep_dispatch`):
   - `exact`: one row per (token, rank holding at least one of its k experts). The row counts
     go through one small all-to-all and are read back to the host, since `all_to_all_single`
     takes its split sizes as Python ints: the GPU waits there in every MoE layer. The default.
   - `padded`: one row per (token, rank), so every split is N rows and nothing is read back.
     At EP=2 with 8 of 64 experts only 0.24% of those rows carry no expert. Measured on two
     H200s (glm5-1b, session 14) it was 2.5% slower than `exact` and took 20 GB more per GPU.
     Since then its rank's expert work fell to the exact rank's (session 19: the row and SwiGLU
     kernels), and in a whole glm5-1b step on one H200 (all experts on one rank) exact cost 4.7%
     of the step and padded nothing; two GPUs are yet to be measured (docs/scaling.md, "Two
     H200s", sessions 14 and 19);
2. run its local experts on the rows received (`Experts` with empty slots: a row's experts
   elsewhere), summing each row's gated outputs. `exact` sizes the experts' buffers by the pair
   count read back with the splits; `padded` cannot, so its buffers hold every row's k slots: at
   EP=2 twice the pairs, saved for the backward pass too;
3. send those sums back the way the rows came and add them up per token.

The shared experts (`beside`, passed by the MoE layer) fill a wait. In the exact dispatch they are
queued behind the copy of the split sizes to the host, which the host waits for alone
(`_read_back`): the GPU computes them while the host waits (on two GPUs, also for the other rank's
counts) and then launches the dispatch. On one H200 it gained nothing over a plain read-back
(13.16 against 12.92 ms a layer, within the runs' spread: experiments/results/h200-session18/,
call 5); on two it is not yet measured. In the padded
dispatch, with nothing read back, they are computed between issuing the rows' all-to-all and
waiting for it, so they overlap the transfer (`_AllToAll` returns before the rows arrive).
In a compiled layer they now run eagerly with the rest of this module (`torch.compiler.disable`):
unfused, their SwiGLU rounds silu's output to bf16 where Inductor kept it in fp32.

The rows move through `expand` and `combine` (glmlab/model/row_map.py): each sum over rows (a row's
experts in step 2, a token's ranks in step 3, and the backward of the row copies) is one pass that
reads a token's rows in a fixed order, without atomics, so the sums come out the same every time.
On one H200 (benchmarks/bench_moe_dispatch.py, glm5-1b's layer, forward and backward) the moves
they replaced (a pack into [pairs, d], the experts' own copies, and sums over a [rows x slots, d]
buffer) had made one EP=2 rank's expert work 15.1 ms against one GPU's 10.3; now it is 6.3 against
6.5 (experiments/results/h200-session18/, calls 1 and 6).

The backward pass of the autograd-aware all-to-alls routes each output gradient to the rank that
produced it. An expert's weight gradient then sums the contributions of every rank's loss; FSDP
averages the other gradients over ranks, so the expert gradients are scaled by 1/ep to match (the
gradient of the loss averaged over the global batch, as on one device). The padded dispatch needs
the same number of tokens on every rank, as the trainer's equal micro-batches give.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DeviceMesh, Shard, distribute_tensor

from glmlab.config import ModelConfig
from glmlab.model.moe import Beside, Experts, MoE, Routing
from glmlab.model.row_map import RowMap, combine, expand

T = TypeVar("T")


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the gradient times `scale` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


class _AllToAll(torch.autograd.Function):
    """Rows to the ranks of `group` by split sizes (None: equal), through c10d's `all_to_all_single`;
    the backward sends the gradients back the reverse way. The forward returns before the rows arrive
    and appends the collective's work to `pending`: wait on it before reading the output. (The
    functional collectives do the same through a tensor subclass whose dispatch in Python cost the
    host more than the rest of the layer's launches: glm5-tiny on the CPU.)"""

    @staticmethod
    def forward(ctx, x, send: list[int] | None, recv: list[int] | None, group, pending: list):
        ctx.send, ctx.recv, ctx.group = send, recv, group
        out = x.new_empty(x.shape[0] if recv is None else sum(recv), *x.shape[1:])
        pending.append(dist.all_to_all_single(out, x.contiguous(), recv, send, group=group, async_op=True))
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        out = grad.new_empty(grad.shape[0] if ctx.send is None else sum(ctx.send), *grad.shape[1:])
        dist.all_to_all_single(out, grad.contiguous(), ctx.send, ctx.recv, group=ctx.group)
        return out, None, None, None, None


def _read_back(values: torch.Tensor, meanwhile: Callable[[], T]) -> tuple[list[int], T]:
    """The ints of `values` on the host, and `meanwhile()`. On CUDA the copy is queued first and the
    host waits for it alone: the kernels `meanwhile` queues behind it keep the GPU busy while the
    host waits and then launches what needs the values (a plain read-back waits for them too, and
    the GPU then idles until the host's launches catch up)."""
    if values.device.type != "cuda":
        return values.tolist(), meanwhile()
    host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
    host.copy_(values, non_blocking=True)
    copied = torch.cuda.Event()
    copied.record()
    out = meanwhile()
    copied.synchronize()
    return host.tolist(), out


class ExpertParallel(nn.Module):
    """A MoE layer's routed experts split over the ranks of `mesh` (1-D, every rank)."""

    def __init__(self, experts: Experts, cfg: ModelConfig, mesh: DeviceMesh, *, padded: bool) -> None:
        super().__init__()
        self.ep = mesh.size()
        self.group = mesh.get_group()
        self.rank = mesh.get_local_rank()
        self.padded = padded
        self.sent_bytes = 0  # all-to-all bytes this rank sent to others in training passes
        E = experts.gate_up_proj.shape[0]
        self.n_local = E // self.ep
        self.gate_up_proj = nn.Parameter(distribute_tensor(experts.gate_up_proj.detach(), mesh, [Shard(0)]))
        self.down_proj = nn.Parameter(distribute_tensor(experts.down_proj.detach(), mesh, [Shard(0)]))
        # The computation of `n_local` experts, its weights supplied per call (built on the meta
        # device: it holds no memory and is not a submodule, so it adds no parameters). Passing them
        # costs nothing, where torch.func.functional_call took 0.4 ms of the host's time a call.
        with torch.device("meta"):
            template = Experts(dataclasses.replace(cfg, n_routed_experts=self.n_local))
        object.__setattr__(self, "_compute", template)

    # Eager inside a compiled layer: the exact dispatch's split sizes are read back to the host and
    # change every step, and a compiled region with static shapes would recompile for each value.
    @torch.compiler.disable
    def forward(self, x: torch.Tensor, routing: Routing, *, beside: Beside = None) -> torch.Tensor:
        """x [N,d] -> sum over each token's k experts (anywhere in the group) of gate * expert(x), plus
        `beside(x)` (the shared experts), computed while the exact dispatch's split sizes come back
        (`_read_back`), or while the padded dispatch's rows travel."""
        N, k = routing.indices.shape
        ep, n_local = self.ep, self.n_local
        dest = routing.indices // n_local  # [N,k] the rank of each chosen expert
        if self.padded:  # every token to every rank, rank-major: N rows each way, nothing read back
            rank_of = torch.arange(ep, device=x.device).repeat_interleave(N)
            token_of = torch.arange(N, device=x.device).repeat(ep)
            send_splits = recv_splits = pairs = shared = None
            off_send = off_recv = (ep - 1) * N
        else:
            hit = torch.zeros(N, ep, dtype=torch.bool, device=x.device).scatter_(1, dest, True)
            # per destination: the token rows and the (token, expert) pairs; the sources' in return
            mine = torch.stack([hit.sum(0), routing.counts.view(ep, n_local).sum(1)], dim=1).to(torch.int64)
            theirs = torch.empty_like(mine)
            dist.all_to_all_single(theirs, mine, group=self.group)
            # the one read-back of the layer: the row splits both ways and the pairs received; the
            # shared experts run on the GPU meanwhile
            counts = torch.cat([mine[:, 0], theirs[:, 0], theirs[:, 1].sum()[None]])
            read, shared = _read_back(counts, lambda: None if beside is None else beside(x))
            send_splits, recv_splits, pairs = read[:ep], read[ep : 2 * ep], read[-1]
            # the rows, by destination rank then token: the first sum(send_splits) of the sorted keys
            # (rank r, token t) is r*N + t; a token without an expert on r sorts past every real row
            key = torch.arange(ep * N, device=x.device).view(ep, N)
            row = torch.where(hit.T, key, ep * N).reshape(-1).sort().values[: sum(send_splits)]
            rank_of, token_of = row // N, row % N
            off_send = sum(send_splits) - send_splits[self.rank]
            off_recv = sum(recv_splits) - recv_splits[self.rank]
        here = dest[token_of] == rank_of[:, None]  # [rows,k] which of the token's experts are there
        # one fp32 tensor for the gates and the local expert ids (-1: elsewhere; exact in fp32)
        ids = torch.where(here, routing.indices[token_of] % n_local, -1)
        meta = torch.cat([torch.where(here, routing.gates[token_of], 0.0), ids.float()], dim=1)
        row_bytes = x.shape[1] * x.element_size()
        if torch.is_grad_enabled():  # forward: rows out, sums back, meta out (again when recomputed)
            self.sent_bytes += (off_send + off_recv) * row_bytes + off_send * 8 * k
        sent = RowMap.of_owner(token_of * ep + rank_of, N, ep)  # each row's slot: (token, rank)
        pending = []
        recv = _AllToAll.apply(expand(x, sent), send_splits, recv_splits, self.group, pending)
        recv_meta = _AllToAll.apply(meta, send_splits, recv_splits, self.group, pending)
        if self.padded and beside is not None:
            shared = beside(x)  # the collectives above run meanwhile
        for work in pending:
            work.wait()
        y = self._local_experts(recv, recv_meta[:, k:].detach().long(), recv_meta[:, :k], pairs)
        back = _AllToAll.apply(y, recv_splits, send_splits, self.group, pending)
        pending[-1].wait()
        if back.requires_grad:  # backward: the same rows both ways and the meta's gradient
            self._count_backward(back, (off_send + off_recv) * row_bytes + off_recv * 8 * k)
        y = combine(back, sent, dtype=x.dtype)
        return y if shared is None else y + shared

    def _count_backward(self, back: torch.Tensor, nbytes: int) -> None:
        """Count `nbytes` when the backward pass reaches `back` (never, when no loss depends on it)."""

        def count(grad: torch.Tensor) -> None:
            self.sent_bytes += nbytes

        back.register_hook(count)

    def _local_experts(
        self, recv: torch.Tensor, ids: torch.Tensor, gates: torch.Tensor, pairs: int | None
    ) -> torch.Tensor:
        """Received rows [R,d] with their local expert ids [R,k] (-1: an expert elsewhere) and gates
        -> per row the gated sum of its experts here, [R,d]. With `pairs` (the exact dispatch has
        read it back) the experts' buffers hold only the real (row, expert) pairs; without it
        (padded) they hold all R*k slots, the empty ones skipped."""
        scale = 1.0 / self.ep
        params = (_ScaleGrad.apply(self.gate_up_proj.to_local(), scale),
                  _ScaleGrad.apply(self.down_proj.to_local(), scale))  # fmt: skip
        flat = ids.reshape(-1)
        expert = torch.where(flat >= 0, flat, self.n_local)  # empty slots counted apart
        counts = torch.zeros(self.n_local + 1, dtype=torch.int64, device=ids.device)
        counts = counts.scatter_add_(0, expert, torch.ones_like(expert))[:-1]
        routing = Routing(indices=ids, gates=gates, affinity=None, counts=counts)
        return self._compute(recv, routing, empty_slots=True, pairs=pairs, params=params)


def apply_expert_parallel(
    model: nn.Module, mesh: DeviceMesh, *, dispatch: str = "exact"
) -> list[nn.Parameter]:
    """Replace every MoE layer's `experts` with an `ExpertParallel` (`dispatch`: exact or padded,
    `train.ep_dispatch`); returns the new expert parameters (FSDP leaves them alone: each
    lives on one rank already)."""
    params = []
    for module in model.modules():
        if isinstance(module, MoE):
            module.experts = ExpertParallel(module.experts, module.cfg, mesh, padded=dispatch == "padded")
            params += [module.experts.gate_up_proj, module.experts.down_proj]
    return params
