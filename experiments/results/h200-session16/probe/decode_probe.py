"""Where DSA's batch-1 decoding step spends its time at 128K (issue 16, decode 3x), on an H200.

1. The graphed step of benchmarks/bench_dsa_long_context.py (DSA and dense), one replay under the
   profiler: every kernel in launch order with its duration and the gap before it.
2. The DSA-only parts alone, 20 calls captured in one CUDA graph (launch gaps as in the step):
   the indexer's scores, torch.topk against the radix select of `index_topk` (and its tile shapes
   with `last`, as the step calls it), and the sparse attention of one query (Gluon, Triton, and
   the Triton split forward).

    PYTHONPATH=$PWD python experiments/results/h200-session16/probe/decode_probe.py [--context 131072]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "benchmarks"))
import bench_dsa_long_context as bench  # noqa: E402

from glmlab.device import autocast  # noqa: E402
from glmlab.kernels import indexer as ix  # noqa: E402
from glmlab.kernels.sparse_mla import sparse_mla  # noqa: E402
from glmlab.model.dsa import select_topk  # noqa: E402


def graphed_us(fn, calls: int = 20, replays: int = 10) -> float:
    """Microseconds per call of fn, `calls` of it captured back to back in one CUDA graph."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / (calls * replays)


def kernel_list(step, label: str) -> None:
    """One profiled replay of `step`: each kernel in order, its duration and the gap before it."""
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    events = sorted(
        (e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA),
        key=lambda e: e.time_range.start,
    )
    busy = sum(e.time_range.elapsed_us() for e in events)
    span = events[-1].time_range.end - events[0].time_range.start
    print(f"\n== {label}: {len(events)} kernels, {busy:.1f} us busy, {span:.1f} us first to last")
    last = events[0].time_range.start
    for e in events:
        gap = e.time_range.start - last
        print(f"{e.time_range.elapsed_us():8.1f} {gap:6.1f}  {e.name[:110]}")
        last = e.time_range.end


def parts(S: int, B: int, device: torch.device) -> None:
    """The DSA-only parts of one layer's step at a cache of S keys, B rows."""
    g = torch.Generator(device).manual_seed(0)
    q = torch.randn(B, 1, 32, 128, device=device, generator=g).bfloat16()
    w = torch.randn(B, 1, 32, device=device, generator=g) / 64
    keys = torch.randn(B, S, 128, device=device, generator=g).bfloat16()
    visible = torch.ones(B, 1, S, dtype=torch.bool, device=device)
    scores = ix.index_scores(q, w, keys).masked_fill_(~visible, float("-inf"))
    K = 2048
    idx = torch.empty(B, 1, K, dtype=torch.int64, device=device)
    valid = torch.empty(B, 1, K, dtype=torch.int8, device=device)
    padded = torch.empty(B, 1, ix._pad(S), device=device)
    padded[..., :S] = scores
    chunk = padded[..., :S]
    t = ix.Tiles()
    res = {
        "index_scores": graphed_us(lambda: ix.index_scores(q, w, keys)),
        "masked_fill": graphed_us(lambda: scores.masked_fill(~visible, float("-inf"))),
        "torch.topk (select_topk)": graphed_us(lambda: select_topk(scores, K)),
        "radix select (_select_chunk)": graphed_us(lambda: ix._select_chunk(chunk, idx, valid, S - 1, 0, t)),
        "index_topk (scores + radix)": graphed_us(lambda: ix.index_topk(q, w, keys, topk=K)),
        "index_topk fp8": graphed_us(lambda: ix.index_topk(q, w, keys, topk=K, fp8=True)),
    }
    last = torch.full((B, 1), S - 1, device=device)
    for rows, tiles in ((4, 32), (1, 32), (1, 16), (1, 8), (1, 4), (4, 8)):
        t = ix.Tiles(rows=rows, tiles=tiles)
        res[f"index_topk last=pos rows={rows} tiles={tiles}"] = graphed_us(
            lambda t=t: ix.index_topk(q, w, keys, topk=K, last=last, tiles=t)
        )
    top = select_topk(scores, K)
    mine = ix.index_topk(q, w, keys, topk=K)
    same = all(set(top.indices[b, 0].tolist()) == set(mine[0][b, 0].tolist()) for b in range(B))
    ix._select_chunk(chunk, idx, valid, S - 1, 0, t)
    same_sel = all(set(top.indices[b, 0].tolist()) == set(idx[b, 0].tolist()) for b in range(B))
    qa = torch.randn(B, 64, 576, device=device, generator=g).bfloat16()
    kv = torch.randn(B * S, 576, device=device, generator=g).bfloat16()
    rows = (top.indices.view(B, K) + torch.arange(B, device=device)[:, None] * S).contiguous()
    ok = top.valid.view(B, K)
    for hopper, split in ((True, False), (False, False), (False, True)):
        res[f"sparse_mla hopper={hopper} split={split}"] = graphed_us(
            lambda h=hopper, sp=split: sparse_mla(
                qa, kv, rows, ok, scale=0.1, r=512, mass=False, hopper=h, split=sp
            )
        )
    from glmlab.kernels import sparse_mla as sm

    for keys in (64, 128, 256):
        res[f"split forward, {keys} keys a program"] = graphed_us(
            lambda n=keys: sm._split_forward(qa, kv, rows, ok, 0.1, 512, sm.FORWARD_TILES, n)
        )
    print(
        f"\n== parts, one layer, cache {S}, batch {B} (us a call; same picks torch/index_topk: {same}, "
        f"torch/_select_chunk: {same_sel})"
    )
    for name, us in res.items():
        print(f"{us:9.1f}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--context", type=int, default=131072)
    args = parser.parse_args()
    device = torch.device("cuda")
    S = args.context
    dsa_cfg, dense_cfg = bench.configs(bench.SLICE, 2, "auto", S + 1, [])
    dsa, dense = bench.build_pair(dsa_cfg, dense_cfg, device, torch.bfloat16)
    cast = lambda: autocast(device, "bf16")  # noqa: E731
    for name, model in (("DSA", dsa), ("dense", dense)):
        step = bench.decode_step(model, S, 1, device, torch.bfloat16, cast)
        kernel_list(step, f"{name} graphed decode step, cache {S}, batch 1")
    del dsa, dense
    torch.cuda.empty_cache()
    for B in (1, 8):
        parts(S, B, device)


if __name__ == "__main__":
    main()
