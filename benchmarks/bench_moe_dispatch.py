"""The routed experts of one MoE layer on one GPU, against one rank's share of the same layer under
expert parallelism (EP=2), forward and backward: what the dispatch's permutations cost beyond the
experts' own products (docs/scaling.md, "Two H200s").

- One GPU: `Experts.forward` over N tokens and all E experts, k chosen per token.
- One EP=2 rank: what one rank of two computes between its all-to-alls
  (`ExpertParallel._local_experts`): 2N rows received (each rank's N tokens reach both ranks), E/2
  experts, each row's k expert slots holding the ids of its experts on this rank or -1, about N*k
  real (row, expert) pairs in all: the same products as one GPU. The padded dispatch's rank has no
  pair count (its buffers hold all 2N*k slots: its peak memory shows what that costs).
- The whole dispatch with the shared experts, its all-to-alls within one rank (a 1-rank process
  group), against one GPU's routed and shared experts: the sender's side and, in the exact dispatch,
  the read-back of the split sizes, after which the GPU waits for the host's launches; the padded
  dispatch reads nothing back.

The routing is uniformly random, so both ranks hold half the pairs. Times are medians; a ratio over
one GPU is what the dispatch costs (1.00: nothing). On CUDA each form also prints its peak memory
above what was allocated before it ran. `--profile` adds each side's top kernels.

    python benchmarks/bench_moe_dispatch.py [--preset glm5-1b] [--tokens 16384] [--repeats 20] [--profile]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

from glmlab.config import load_config
from glmlab.model.layers import SwiGLU
from glmlab.model.moe import Experts, Routing
from glmlab.parallel.expert_parallel import ExpertParallel


def random_routing(tokens: int, experts: int, k: int, device: torch.device) -> Routing:
    """k distinct experts per token, uniformly; gates positive, summing to 1 per token."""
    indices = torch.rand(tokens, experts, device=device).topk(k, dim=1).indices
    gates = torch.rand(tokens, k, device=device) + 0.5
    gates = (gates / gates.sum(1, keepdim=True)).requires_grad_()
    flat = indices.reshape(-1)
    counts = torch.zeros(experts, dtype=torch.long, device=device).scatter_add_(
        0, flat, torch.ones_like(flat)
    )
    return Routing(indices, gates, None, counts)


def median_ms_and_peak(step, repeats: int, device: torch.device) -> tuple[float, float | None]:
    """The median time of `step` in ms, and on CUDA its peak memory in MiB above what was allocated."""
    for _ in range(3):
        step()
    peak = None
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times), peak


def kernels(step, device: torch.device, top: int = 14) -> str:
    """The top ops of one step by device time."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        step()
        if cuda:
            torch.cuda.synchronize()
    by = "cuda_time_total" if cuda else "cpu_time_total"
    return prof.key_averages().table(sort_by=by, row_limit=top, max_name_column_width=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="glm5-1b")
    parser.add_argument("--tokens", type=int, default=16384, help="tokens per rank (glm5-1b: 4 x 4,096)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    cuda = torch.cuda.is_available()  # the CPU runs it too (gloo, the looped experts): a smoke test
    dist.init_process_group("nccl" if cuda else "gloo", rank=0, world_size=1)
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    mesh = init_device_mesh(device.type, (1,))
    dtype = torch.bfloat16 if cuda else torch.float32
    cfg = load_config(args.preset).model
    E, k, d, N = cfg.n_routed_experts, cfg.num_experts_per_tok, cfg.hidden_size, args.tokens
    torch.manual_seed(0)

    def experts(n: int) -> Experts:
        module = Experts(dataclasses.replace(cfg, n_routed_experts=n)).to(device)
        with torch.no_grad():
            for p in module.parameters():
                p.normal_(0.0, 0.02)
        return module

    one_gpu = experts(E)
    shared = SwiGLU(d, cfg.n_shared_experts * cfg.moe_intermediate_size).to(device)
    x = torch.randn(N, d, device=device, dtype=dtype, requires_grad=True)
    routing = random_routing(N, E, k, device)

    # one rank of two: 2N rows (every token of both ranks), its E/2 experts' ids or -1
    rank = ExpertParallel(
        experts(E // 2), dataclasses.replace(cfg, n_routed_experts=E // 2), mesh, padded=False
    )
    # the whole dispatch on one rank (its all-to-alls copy to itself): the sender's side as well
    whole = ExpertParallel(one_gpu, cfg, mesh, padded=False)
    whole_padded = ExpertParallel(one_gpu, cfg, mesh, padded=True)
    recv = torch.randn(2 * N, d, device=device, dtype=dtype, requires_grad=True)
    both = random_routing(2 * N, E, k, device)
    ids = torch.where(both.indices < E // 2, both.indices, -1)
    pairs = int((ids >= 0).sum())
    grad_y = torch.randn(N, d, device=device, dtype=dtype)
    grad_recv = torch.randn(2 * N, d, device=device, dtype=dtype)

    def one_gpu_step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            y = one_gpu(x, routing)
        y.backward(grad_y)

    def ep_step(counted: int | None = pairs) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            y = rank._local_experts(recv, ids, both.gates, counted)
        y.backward(grad_recv)

    def whole_step(module: ExpertParallel = whole) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            y = module(x, routing, beside=shared)
        y.backward(grad_y)

    def one_gpu_layer_step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            y = one_gpu(x, routing, beside=shared)
        y.backward(grad_y)

    print(f"{args.preset}: {N} tokens a rank, d={d}, {E} experts of width {cfg.moe_intermediate_size}, "
          f"k={k}; EP=2 rank: {2 * N} rows, {pairs} pairs over {E // 2} experts")  # fmt: skip
    one = median_ms_and_peak(one_gpu_step, args.repeats, device)
    ep = median_ms_and_peak(ep_step, args.repeats, device)
    ep_padded = median_ms_and_peak(lambda: ep_step(None), args.repeats, device)
    layer = median_ms_and_peak(one_gpu_layer_step, args.repeats, device)
    ep1 = median_ms_and_peak(whole_step, args.repeats, device)
    ep1_padded = median_ms_and_peak(lambda: whole_step(whole_padded), args.repeats, device)
    rows = (
        ("one GPU, all experts", one),
        ("EP=2, one rank's experts", ep),
        ("EP=2, same, padded", ep_padded),
        ("one GPU, routed + shared", layer),
        ("EP=1, whole dispatch + shared", ep1),
        ("EP=1, same, padded", ep1_padded),
    )
    for name, (ms, peak) in rows:
        print(f"{name:30s} {ms:8.3f} ms" + ("" if peak is None else f" {peak:9.1f} MiB peak"))
    whole_ratio, padded_ratio = ep1[0] / layer[0], ep1_padded[0] / layer[0]
    print(f"EP=2 rank / one GPU: {ep[0] / one[0]:.2f} (padded {ep_padded[0] / one[0]:.2f})   "
          f"EP=1 whole dispatch / one GPU: {whole_ratio:.2f} (padded {padded_ratio:.2f})")  # fmt: skip
    if args.profile:
        print(
            "\none GPU:\n"
            + kernels(one_gpu_step, device)
            + "\nEP rank:\n"
            + kernels(ep_step, device)
            + "\nEP=1 whole dispatch:\n"
            + kernels(whole_step, device)
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
