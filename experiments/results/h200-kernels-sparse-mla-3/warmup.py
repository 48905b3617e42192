"""Compile every candidate of glmlab/kernels/sparse_mla.py on the GPU machine at once, one process per
candidate (Triton compiles at the first launch and caches on disk; serially the candidates' compiles
would take most of a one-call budget). Each process runs one forward (with and without the key
mass) and one backward at GLM-5's shape on 16 queries, which specialise like the benchmark's and
the tests' (every count divisible by 16).

    python experiments/results/h200-kernels-sparse-mla-3/warmup.py
"""

from __future__ import annotations

import subprocess
import sys
import time

from glmlab.kernels import sparse_mla as kernels

ONE = """
import torch
from glmlab.kernels.sparse_mla import BackwardTiles, Tiles, sparse_mla
fwd, bwd = Tiles(*{fwd}), BackwardTiles(*(Tiles(*t) for t in {bwd}))
q = torch.randn(16, 64, 576, device="cuda", dtype=torch.bfloat16, requires_grad=True)
kv = torch.randn(64, 576, device="cuda", dtype=torch.bfloat16, requires_grad=True)
idx = torch.randint(0, 64, (16, 2048), device="cuda")
valid = torch.ones(16, 2048, dtype=torch.bool, device="cuda")
sparse_mla(q.detach(), kv.detach(), idx, valid, scale=0.06, r=512, mass=False, forward_tiles=fwd)
out, _ = sparse_mla(q, kv, idx, valid, scale=0.06, r=512, forward_tiles=fwd, backward_tiles=bwd)
out.sum().backward()
torch.cuda.synchronize()
"""

if __name__ == "__main__":
    start = time.time()
    pairs = kernels.candidate_pairs()
    jobs = []
    for fwd, bwd in pairs:
        code = ONE.format(fwd=tuple(fwd), bwd=[tuple(t) for t in bwd])
        jobs.append((fwd, subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)))
    for fwd, job in jobs:
        error = job.communicate()[1]
        print(f"{tuple(fwd)}: exit {job.returncode}" + (f"\n{error[-2000:]}" if job.returncode else ""))
    print(f"compiled in {time.time() - start:.1f} s")
