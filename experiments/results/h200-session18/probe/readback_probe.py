"""Session 18 probe: the exact dispatch's read-back with the shared experts queued behind the copy
(`_read_back`) against a plain read-back followed by the shared experts, on one H200: glm5-1b's MoE
layer (routed + shared experts, forward and backward) through a 1-rank ExpertParallel, 16,384
tokens, against the same layer on one GPU. Alternating rounds, medians."""

import os
import statistics
import time

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

from glmlab.config import load_config
from glmlab.model.moe import MoE
from glmlab.parallel import expert_parallel
from glmlab.parallel.expert_parallel import ExpertParallel

os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
os.environ.setdefault("MASTER_PORT", "29534")
dist.init_process_group("nccl", rank=0, world_size=1)
torch.cuda.set_device(0)
mesh = init_device_mesh("cuda", (1,))
cfg = load_config("glm5-1b").model
torch.manual_seed(0)
moe = MoE(cfg).cuda()
with torch.no_grad():
    for p in moe.parameters():
        p.normal_(0.0, 0.02)
one_gpu = moe.experts
whole = ExpertParallel(moe.experts, cfg, mesh, padded=False)
x = torch.randn(16384, cfg.hidden_size, device="cuda", requires_grad=True)
grad = torch.randn(16384, cfg.hidden_size, device="cuda")
queued = expert_parallel._read_back


def plain(values, meanwhile):
    return values.tolist(), meanwhile()


def step(experts) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = experts(x, moe.gate(x), beside=moe.shared_experts)
    y.backward(grad)
    torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - start)


times = {"one GPU": [], "EP=1 exact, queued read-back": [], "EP=1 exact, plain read-back": []}
for round_ in range(25):
    for name in times:
        expert_parallel._read_back = plain if "plain" in name else queued
        ms = step(one_gpu if name == "one GPU" else whole)
        if round_ >= 3:
            times[name].append(ms)
for name, values in times.items():
    print(
        f"{name:32s} {statistics.median(values):7.3f} ms  (IQR {statistics.quantiles(values, n=4)[0]:.3f}-"
        f"{statistics.quantiles(values, n=4)[2]:.3f})"
    )
dist.destroy_process_group()
