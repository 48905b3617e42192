"""Session 18 probe: where the host's time goes in glm5-1b's MoE layer with the whole EP dispatch
(1-rank NCCL group, exact dispatch, shared experts) against one GPU's, forward and backward, at 256
tokens (the GPU has little to do): cProfile of 30 steps each, by own time and by cumulative time."""

import cProfile
import os
import pstats
import time

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

from glmlab.config import load_config
from glmlab.model.moe import MoE
from glmlab.parallel.expert_parallel import ExpertParallel

os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
os.environ.setdefault("MASTER_PORT", "29535")
dist.init_process_group("nccl", rank=0, world_size=1)
torch.cuda.set_device(0)
mesh = init_device_mesh("cuda", (1,))
cfg = load_config("glm5-1b").model
torch.manual_seed(0)
moe = MoE(cfg).cuda()
with torch.no_grad():
    for p in moe.parameters():
        p.normal_(0.0, 0.02)
whole = ExpertParallel(moe.experts, cfg, mesh, padded=False)
x = torch.randn(256, cfg.hidden_size, device="cuda", requires_grad=True)
grad = torch.randn(256, cfg.hidden_size, device="cuda")


def step(experts) -> None:
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = experts(x, moe.gate(x), beside=moe.shared_experts)
    y.backward(grad)


for name, experts in (("one GPU", moe.experts), ("EP=1 whole", whole)):
    for _ in range(5):
        step(experts)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(30):
        step(experts)
    host = time.perf_counter()
    torch.cuda.synchronize()
    end = time.perf_counter()
    host_ms, wall_ms = 1e3 * (host - start) / 30, 1e3 * (end - start) / 30
    print(f"{name}: {host_ms:.3f} ms of host time a step, {wall_ms:.3f} ms wall")
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(30):
        step(experts)
    torch.cuda.synchronize()
    prof.disable()
    stats = pstats.Stats(prof)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)
dist.destroy_process_group()
