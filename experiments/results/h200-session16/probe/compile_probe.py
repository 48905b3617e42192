"""Does torch.compile take the 128K decoding step of the DSA slice on an H200 (issue 16)? Dynamo's
counters and graph breaks after compiling the step, and the kernels one replay launches.

    PYTHONPATH=$PWD TORCH_LOGS=graph_breaks,recompiles \
        python experiments/results/h200-session16/probe/compile_probe.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch._dynamo.utils import counters
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "benchmarks"))
import bench_dsa_long_context as bench  # noqa: E402

from glmlab.device import autocast  # noqa: E402

S = 131072
device = torch.device("cuda")
print("suppress_errors", torch._dynamo.config.suppress_errors)
dsa_cfg, dense_cfg = bench.configs(bench.SLICE, 2, "auto", S + 1, [])
dsa, _ = bench.build_pair(dsa_cfg, dense_cfg, device, torch.bfloat16)
step = bench.decode_step(dsa, S, 1, device, torch.bfloat16, lambda: autocast(device, "bf16"), compiled=True)
for _ in range(3):
    step()
torch.cuda.synchronize()
print("stats", dict(counters["stats"]), "breaks", dict(counters["graph_break"]))
print("inductor", dict(counters["inductor"]))
with profile(activities=[ProfilerActivity.CUDA]) as prof:
    step()
    torch.cuda.synchronize()
names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
print(len(names), "kernels; first 40:")
for name in names[:40]:
    print("  ", name[:100])
