"""The Triton indexer kernels (glmlab/kernels/indexer.py) at GLM-5's indexer shape on one GPU: batch 1,
H = 32 heads of D = 128, bf16 q and k, S = T queries. Prints, per context length, index_scores'
forward time and TFLOP/s of useful work (causal pairs x 2*H*(D+1) / time), index_topk (K = 2048)
against index_scores + torch.topk over full rows (time and peak memory), index_scores' forward+backward
up to 32K (the backward counted as twice the forward), and index_scores_at's
forward and forward+backward at K picks per query. Times are medians of triton.testing.do_bench.

    python benchmarks/bench_indexer_kernels.py [--lengths 8192 32768] [--sweep]

--sweep first times index_scores' forward at the first length for a few tile shapes, and uses the
fastest for everything after; without it, the default Tiles.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
from triton.runtime.errors import OutOfResources
from triton.testing import do_bench

from glmlab.kernels import indexer

H, D, K = 32, 128, 2048
SWEEP = [
    indexer.Tiles(rows=4, keys=64, tiles=16, warps=4, stages=3),
    indexer.Tiles(rows=4, keys=128, tiles=16, warps=8, stages=3),
    indexer.Tiles(rows=4, keys=64, tiles=32, warps=4, stages=4),
    indexer.Tiles(rows=8, keys=128, tiles=8, warps=8, stages=2),
]


def median_ms(fn) -> float:
    return do_bench(fn, return_mode="median")


def peak(fn) -> tuple[float, float]:
    """(milliseconds, peak GB allocated above what was allocated before)."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    gb = (torch.cuda.max_memory_allocated() - base) / 1e9
    return median_ms(fn), gb


def sweep(q: torch.Tensor, w: torch.Tensor, k: torch.Tensor, flops: int) -> indexer.Tiles:
    """index_scores' forward for each tile shape of SWEEP; returns the fastest."""
    times = {}
    for tiles in SWEEP:
        try:
            times[tiles] = median_ms(lambda t=tiles: indexer.index_scores(q, w, k, tiles=t))
        except OutOfResources as error:
            print(f"  sweep {dataclasses.astuple(tiles)}: {error}")
            continue
        ms = times[tiles]
        print(f"  sweep {dataclasses.astuple(tiles)}: {ms:.2f} ms, {flops / ms / 1e9:.0f} TFLOP/s")
    best = min(times, key=times.get)
    print(f"  fastest: {best}", flush=True)
    return best


def bench_length(T: int, tiles: indexer.Tiles | None, *, tune: bool, torch_topk: bool) -> indexer.Tiles:
    """Every figure at one context length T = S; with `tune`, first the sweep, whose fastest tiles
    are used from then on (returned)."""
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(1, T, H, D, device="cuda", generator=g).bfloat16()
    k = torch.randn(1, T, D, device="cuda", generator=g).bfloat16()
    w = torch.randn(1, T, H, device="cuda", generator=g) * (H**-0.5 * D**-0.5)
    flops = T * (T + 1) // 2 * 2 * H * (D + 1)
    tiles = sweep(q, w, k, flops) if tune else tiles or indexer.Tiles()
    ms = median_ms(lambda: indexer.index_scores(q, w, k, tiles=tiles))
    print(f"T={T} index_scores fwd {ms:.2f} ms, {flops / ms / 1e9:.0f} TFLOP/s", flush=True)
    qg, wg, kg = (x.detach().requires_grad_() for x in (q, w, k))
    if T <= 32768:
        ms = median_ms(lambda: indexer.index_scores(qg, wg, kg, tiles=tiles).sum().backward())
        print(f"T={T} index_scores fwd+bwd {ms:.2f} ms, {3 * flops / ms / 1e9:.0f} TFLOP/s", flush=True)
    for budget in (1 << 25, 1 << 28):
        ms, gb = peak(lambda b=budget: indexer.index_topk(q, w, k, topk=K, buffer_bytes=b, tiles=tiles))
        print(f"T={T} index_topk(K={K}, buffer {budget >> 20} MB) {ms:.2f} ms, peak {gb:.2f} GB", flush=True)
    if torch_topk:
        scores = indexer.index_scores(q, w, k, tiles=tiles)
        ms = median_ms(lambda: scores.topk(K, dim=-1, sorted=False))
        print(f"T={T} torch.topk alone over full rows {ms:.2f} ms", flush=True)
        del scores
        try:
            ms, gb = peak(lambda: indexer.index_scores(q, w, k, tiles=tiles).topk(K, dim=-1, sorted=False))
            print(f"T={T} index_scores + torch.topk {ms:.2f} ms, peak {gb:.2f} GB", flush=True)
        except torch.OutOfMemoryError:
            print(f"T={T} index_scores + torch.topk: out of memory", flush=True)
        torch.cuda.empty_cache()
    idx = torch.randint(0, T, (1, T, K), device="cuda", generator=g)
    at_flops = T * K * 2 * H * (D + 1)
    ms = median_ms(lambda: indexer.index_scores_at(q, w, k, idx, tiles=tiles))
    print(f"T={T} index_scores_at fwd {ms:.2f} ms, {at_flops / ms / 1e9:.0f} TFLOP/s", flush=True)
    ms = median_ms(lambda: indexer.index_scores_at(qg, wg, kg, idx, tiles=tiles).sum().backward())
    print(f"T={T} index_scores_at fwd+bwd {ms:.2f} ms, {3 * at_flops / ms / 1e9:.0f} TFLOP/s", flush=True)
    return tiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768, 65536, 131072])
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--torch-topk-up-to", type=int, default=131072, help="baseline up to")
    args = parser.parse_args()
    print(torch.cuda.get_device_name(), "torch", torch.__version__, flush=True)
    tiles = None
    for T in args.lengths:
        tune = args.sweep and T == args.lengths[0]
        tiles = bench_length(T, tiles, tune=tune, torch_topk=T <= args.torch_topk_up_to)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
