"""Where the compiled batch-1 decoding step spends its time at 128K (issue 16, decode 3x), on an H200.

1. The compiled, graphed step of benchmarks/bench_dsa_long_context.py (`--compile-decode`), DSA
   and dense: one replay under the profiler, every kernel with its duration and the gap before it.
2. The input projections that read a layer's normed input (MLA's q_a and kv_a, the indexer's wk and
   weights_proj at GLM-5's shapes), one token: each alone, the four in turn, and one product with
   their weights concatenated, 20 calls in one CUDA graph.

    PYTHONPATH=$PWD python experiments/results/h200-session17/probe/decode_compiled_probe.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "h200-session16" / "probe"))
import bench_dsa_long_context as bench  # noqa: E402
from decode_probe import graphed_us, kernel_list  # noqa: E402

from glmlab.device import autocast  # noqa: E402


def projections(device: torch.device) -> None:
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn(1, 6144, device=device, generator=g).bfloat16()
    shapes = {"q_a": 2048, "kv_a": 576, "wk": 128, "weights_proj": 32}
    ws = {n: torch.randn(r, 6144, device=device, generator=g).bfloat16() / 80 for n, r in shapes.items()}
    cat = torch.cat(list(ws.values()))
    res = {f"{n} [{w.shape[0]}x6144]": graphed_us(lambda w=w: F.linear(x, w)) for n, w in ws.items()}
    res["the four in turn"] = graphed_us(lambda: [F.linear(x, w) for w in ws.values()])
    res[f"concatenated [{cat.shape[0]}x6144]"] = graphed_us(lambda: F.linear(x, cat))
    res["concatenated, then split"] = graphed_us(lambda: F.linear(x, cat).split(list(shapes.values()), -1))
    big = torch.randn(16384, 6144, device=device, generator=g).bfloat16() / 80
    res["[16384x6144] (o_proj's size)"] = graphed_us(lambda: F.linear(x, big))
    print("\n== input projections, one token (us a call, 20 calls a graph)")
    for name, us in res.items():
        print(f"{us:9.1f}  {name}")


def main() -> None:
    device = torch.device("cuda")
    S = 131072
    projections(device)
    dsa_cfg, dense_cfg = bench.configs(bench.SLICE, 2, "auto", S + 1, [])
    dsa, dense = bench.build_pair(dsa_cfg, dense_cfg, device, torch.bfloat16)
    cast = lambda: autocast(device, "bf16")  # noqa: E731
    for name, model in (("DSA", dsa), ("dense", dense)):
        step = bench.decode_step(model, S, 1, device, torch.bfloat16, cast, compiled=True)
        kernel_list(step, f"{name} compiled graphed decode step, cache {S}, batch 1")
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(30):
            start.record()
            step()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        print(f"{name}: median {sorted(times)[15] * 1e3:.1f} us a step")


if __name__ == "__main__":
    main()
