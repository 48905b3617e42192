"""The Triton indexer kernels (glmlab/kernels/indexer.py) at GLM-5's indexer shape on one GPU: batch 1,
H = 32 heads of D = 128, bf16 q and k, S = T queries, K = 2048. Times are medians of
triton.testing.do_bench; TFLOP/s count useful work (causal pairs x 2*H*(D+1) forward, backward twice
that). Per context length, the parts asked for (`--parts`, default all):

- scores: index_scores' forward in bf16 and in fp8 (`fp8=True`), time and TFLOP/s;
- backward: index_scores' forward+backward (up to 32K);
- topk: index_topk (K = 2048) with the radix select at each buffer of `--buffers` (default 256 and
  32 MB), and with `select="torch"` (torch.topk per scored chunk, 256 MB), time and peak memory; the
  radix call's device time per kernel (torch.profiler: the scoring and the select's three kernels);
  the share of torch.topk's picks that the radix select picks too (the two are exact: below 1 only
  where scores tie); for the last (longest) rows, how many the select took from their candidate
  list (the others, whose cut kept fewer than K or more than CAP, run the histogram passes over the
  whole row), on gaussian and projected inputs; up to `--torch-topk-up-to`, also index_scores +
  torch.topk over full rows;
- fp8: the quantisation of q and k (`quantize_rows`, one kernel, against its torch twin, the earlier
  implementation); index_topk in fp8 (radix select), its device time per kernel, and how much of
  bf16's top-k it picks (the share of bf16's valid picks that fp8 picks too, over rows that see
  more than K keys) on two kinds of input: `gaussian` (q, k standard normal, w normal times
  (H*D)^-0.5) and `projected` (q, k and w as the model makes them from hidden states: random hidden
  states [T, 1024] with a shared component, random projections, k layer-normed);
- at: index_scores_at's forward and forward+backward at K picks per query.

    python benchmarks/bench_indexer_kernels.py [--lengths 8192 32768] [--parts scores,topk,fp8] [--sweep]
        [--buffers 256 32]

--sweep first times index_scores' forward (bf16 and fp8) at the first length for a few tile shapes,
and uses the fastest of each for everything after; without it, the default Tiles.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
import torch.nn.functional as F
from triton.errors import TritonError
from triton.testing import do_bench

from glmlab.kernels import indexer, indexer_ref

H, D, K = 32, 128, 2048
PARTS = ("scores", "backward", "topk", "fp8", "at")
SWEEP = [
    indexer.Tiles(rows=4, keys=64, tiles=16, warps=4, stages=3),
    indexer.Tiles(rows=4, keys=64, tiles=32, warps=4, stages=3),
    indexer.Tiles(rows=4, keys=64, tiles=32, warps=4, stages=4),
    indexer.Tiles(rows=4, keys=64, tiles=64, warps=4, stages=3),
    indexer.Tiles(rows=2, keys=64, tiles=32, warps=4, stages=3),
    indexer.Tiles(rows=4, keys=64, tiles=32, warps=8, stages=3),
    indexer.Tiles(rows=8, keys=64, tiles=32, warps=8, stages=3),
    indexer.Tiles(rows=4, keys=128, tiles=16, warps=8, stages=3),
    indexer.Tiles(rows=8, keys=128, tiles=16, warps=8, stages=2),
    indexer.Tiles(rows=4, keys=128, tiles=16, warps=4, stages=3),
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


def kernel_ms(fn) -> dict[str, float]:
    """Device milliseconds per Triton kernel (names starting with _) of one call of fn."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return {
        e.key: e.device_time_total / 1e3 for e in prof.key_averages() if e.key.startswith("_") and e.count
    }


def candidate_rows(q: torch.Tensor, w: torch.Tensor, k: torch.Tensor, tiles: indexer.Tiles) -> str:
    """How the select took the last rows (those of one 256 MB chunk): from their candidate list,
    or from the whole row; and the candidate counts' spread."""
    T = k.shape[1]
    cap = indexer.select_cap(K)
    rows = indexer.topk_chunk_rows(1, T, T, K, 1 << 28, radix=True)
    padded = torch.empty(1, rows, indexer._pad(T), device="cuda")[:, :, :T]
    indexer._launch_scores(q[:, T - rows :], w[:, T - rows :], k, None, padded, T, tiles, fill=False)
    idx = torch.empty(1, rows, K, device="cuda", dtype=torch.int64)  # the chunk's picks only
    valid = torch.empty(1, rows, K, device="cuda", dtype=torch.int8)
    totals = indexer._select_chunk(padded, idx, valid, T - rows, 0, tiles).sum(1).float()
    listed = ((totals >= K) & (totals <= cap)).sum().item()
    return (
        f"{listed} of {rows} rows from their candidates (CAP {cap}; candidates min {totals.min():.0f}, "
        f"median {totals.median():.0f}, max {totals.max():.0f})"
    )


def sweep(q: torch.Tensor, w: torch.Tensor, k: torch.Tensor, flops: int, *, fp8: bool) -> indexer.Tiles:
    """index_scores' forward for each tile shape of SWEEP; returns the fastest."""
    times = {}
    for tiles in SWEEP:
        try:
            times[tiles] = median_ms(lambda t=tiles: indexer.index_scores(q, w, k, tiles=t, fp8=fp8))
        except TritonError as error:  # too much shared memory, or a failed compile
            name = type(error).__name__
            print(f"  sweep fp8={fp8} {dataclasses.astuple(tiles)}: {name} {str(error)[:200]}")
            continue
        ms = times[tiles]
        print(f"  sweep fp8={fp8} {dataclasses.astuple(tiles)}: {ms:.2f} ms, {flops / ms / 1e9:.0f} TFLOP/s")
    best = min(times, key=times.get)
    print(f"  fastest fp8={fp8}: {best}", flush=True)
    return best


def gaussian(T: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q = torch.randn(1, T, H, D, device="cuda", generator=g).bfloat16()
    k = torch.randn(1, T, D, device="cuda", generator=g).bfloat16()
    w = torch.randn(1, T, H, device="cuda", generator=g) * (H**-0.5 * D**-0.5)
    return q, w, k


def projected(
    T: int, g: torch.Generator, hidden: int = 1024
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, w, k as the indexer makes them (without RoPE) from random hidden states that share a
    component (tokens of one text are not independent): q = x Wq, k = LayerNorm(x Wk), w = x Ww."""
    shared = torch.randn(hidden, device="cuda", generator=g)
    x = (torch.randn(T, hidden, device="cuda", generator=g) + 0.5 * shared).bfloat16()
    wq, wk, ww = (
        torch.randn(hidden, n, device="cuda", generator=g).bfloat16() * hidden**-0.5 for n in (H * D, D, H)
    )
    q = (x @ wq).view(1, T, H, D)
    k = F.layer_norm((x @ wk).float(), (D,)).bfloat16()[None]
    w = (x @ ww).float()[None] * (H**-0.5 * D**-0.5)
    return q, w, k


def agreement(
    ref: tuple[torch.Tensor, torch.Tensor], got: tuple[torch.Tensor, torch.Tensor], T: int
) -> float:
    """The share of ref's valid picks that got picks too, over rows seeing more than K keys."""
    (idx, valid), (idx2, valid2) = ref, got
    hits = total = 0
    for a in range(K, idx.shape[1], 4096):  # row s sees s + 1 keys
        b = min(a + 4096, idx.shape[1])
        picked = torch.zeros(b - a, T + 1, dtype=torch.bool, device=idx.device)  # column T: invalid picks
        picked.scatter_(1, idx2[0, a:b].masked_fill(~valid2[0, a:b], T), True)
        hits += (picked[:, :T].gather(1, idx[0, a:b]) & valid[0, a:b]).sum().item()
        total += valid[0, a:b].sum().item()
    return hits / max(total, 1)


def bench_length(
    T: int, tiles: tuple, *, tune: bool, parts: list[str], torch_topk: bool, buffers: list[int]
) -> tuple[indexer.Tiles, indexer.Tiles]:
    """Every asked-for figure at one context length T = S; with `tune`, first the sweeps, whose
    fastest tiles (bf16, fp8) are used from then on (returned)."""
    g = torch.Generator(device="cuda").manual_seed(0)
    q, w, k = gaussian(T, g)
    flops = T * (T + 1) // 2 * 2 * H * (D + 1)
    if tune:
        tiles = sweep(q, w, k, flops, fp8=False), sweep(q, w, k, flops, fp8=True)
    bf16_tiles, fp8_tiles = tiles or (indexer.Tiles(), indexer.Tiles())
    if "scores" in parts:
        for fp8, t in ((False, bf16_tiles), (True, fp8_tiles)):
            ms = median_ms(lambda f=fp8, t=t: indexer.index_scores(q, w, k, tiles=t, fp8=f))
            name = "fp8" if fp8 else "bf16"
            print(f"T={T} index_scores fwd {name} {ms:.2f} ms, {flops / ms / 1e9:.0f} TFLOP/s", flush=True)
    qg, wg, kg = (x.detach().requires_grad_() for x in (q, w, k))
    if "backward" in parts and T <= 32768:
        ms = median_ms(lambda: indexer.index_scores(qg, wg, kg, tiles=bf16_tiles).sum().backward())
        print(f"T={T} index_scores fwd+bwd {ms:.2f} ms, {3 * flops / ms / 1e9:.0f} TFLOP/s", flush=True)
    if "topk" in parts:
        for select, budget in [("radix", mb << 20) for mb in buffers] + [("torch", 1 << 28)]:
            ms, gb = peak(
                lambda s=select, b=budget: indexer.index_topk(
                    q, w, k, topk=K, buffer_bytes=b, tiles=bf16_tiles, select=s
                )
            )
            label = f"index_topk(K={K}, {select}, buffer {budget >> 20} MB)"
            print(f"T={T} {label} {ms:.2f} ms, peak {gb:.2f} GB", flush=True)
        radix, by_torch = (
            indexer.index_topk(q, w, k, topk=K, tiles=bf16_tiles, select=s) for s in ("radix", "torch")
        )
        share = agreement(by_torch, radix, T)
        print(
            f"T={T} radix picks / torch.topk picks: {share:.6f} (below 1 only where scores tie)", flush=True
        )
        del radix, by_torch
        parts_ms = kernel_ms(lambda: indexer.index_topk(q, w, k, topk=K, tiles=bf16_tiles))
        print(f"T={T} index_topk(radix, 256 MB) per kernel: "
              + ", ".join(f"{name} {ms:.2f} ms" for name, ms in parts_ms.items()), flush=True)  # fmt: skip
        if T > indexer.select_cap(K):
            print(f"T={T} gaussian inputs: {candidate_rows(q, w, k, bf16_tiles)}", flush=True)
            inputs = projected(T, torch.Generator(device="cuda").manual_seed(1))
            print(f"T={T} projected inputs: {candidate_rows(*inputs, bf16_tiles)}", flush=True)
            del inputs
    if "topk" in parts and torch_topk:
        scores = indexer.index_scores(q, w, k, tiles=bf16_tiles)
        ms = median_ms(lambda: scores.topk(K, dim=-1, sorted=False))
        print(f"T={T} torch.topk alone over full rows {ms:.2f} ms", flush=True)
        del scores
        try:
            ms, gb = peak(
                lambda: indexer.index_scores(q, w, k, tiles=bf16_tiles).topk(K, dim=-1, sorted=False)
            )
            print(f"T={T} index_scores + torch.topk {ms:.2f} ms, peak {gb:.2f} GB", flush=True)
        except torch.OutOfMemoryError:
            print(f"T={T} index_scores + torch.topk: out of memory", flush=True)
        torch.cuda.empty_cache()
    if "fp8" in parts:
        for name, x in (("q", q), ("k", k)):
            ms = median_ms(lambda x=x: indexer.quantize_rows(x))
            ms_torch, gb_torch = peak(lambda x=x: indexer_ref.quantize_rows(x))
            print(f"T={T} quantize_rows({name}): kernel {ms:.2f} ms, torch twin {ms_torch:.2f} ms "
                  f"(its temporaries {gb_torch:.2f} GB)", flush=True)  # fmt: skip
        ms, gb = peak(lambda: indexer.index_topk(q, w, k, topk=K, tiles=fp8_tiles, fp8=True))
        print(f"T={T} index_topk(K={K}, radix, buffer 256 MB) fp8 {ms:.2f} ms, peak {gb:.2f} GB", flush=True)
        parts_ms = kernel_ms(lambda: indexer.index_topk(q, w, k, topk=K, tiles=fp8_tiles, fp8=True))
        print(f"T={T} index_topk(radix, 256 MB) fp8 per kernel: "
              + ", ".join(f"{name} {ms:.2f} ms" for name, ms in parts_ms.items()), flush=True)  # fmt: skip
        for kind, make in (("gaussian", gaussian), ("projected", projected)):
            inputs = make(T, torch.Generator(device="cuda").manual_seed(1))
            bf16 = indexer.index_topk(*inputs, topk=K, tiles=bf16_tiles)
            fp8 = indexer.index_topk(*inputs, topk=K, tiles=fp8_tiles, fp8=True)
            share = agreement(bf16, fp8, T)
            print(f"T={T} fp8 picks / bf16 picks ({kind} inputs): {share:.4f}", flush=True)
            del inputs, bf16, fp8
        torch.cuda.empty_cache()
    if "at" in parts:
        idx = torch.randint(0, T, (1, T, K), device="cuda", generator=g)
        at_flops = T * K * 2 * H * (D + 1)
        ms = median_ms(lambda: indexer.index_scores_at(q, w, k, idx, tiles=bf16_tiles))
        print(f"T={T} index_scores_at fwd {ms:.2f} ms, {at_flops / ms / 1e9:.0f} TFLOP/s", flush=True)
        ms = median_ms(lambda: indexer.index_scores_at(qg, wg, kg, idx, tiles=bf16_tiles).sum().backward())
        print(f"T={T} index_scores_at fwd+bwd {ms:.2f} ms, {3 * at_flops / ms / 1e9:.0f} TFLOP/s", flush=True)
        parts_ms = kernel_ms(
            lambda: indexer.index_scores_at(qg, wg, kg, idx, tiles=bf16_tiles).sum().backward()
        )
        print(f"T={T} index_scores_at fwd+bwd per kernel: "
              + ", ".join(f"{name} {ms:.2f} ms" for name, ms in parts_ms.items()), flush=True)  # fmt: skip
    return bf16_tiles, fp8_tiles


def parts_list(text: str) -> list[str]:
    parts = text.split(",")
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown parts {sorted(unknown)}: pick from {','.join(PARTS)}")
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[8192, 16384, 32768, 65536, 131072])
    parser.add_argument("--parts", type=parts_list, default=list(PARTS), help=f"subset of {','.join(PARTS)}")
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--torch-topk-up-to", type=int, default=131072, help="full-row baseline up to")
    parser.add_argument("--buffers", type=int, nargs="+", default=[256, 32], help="radix buffers, MB")
    args = parser.parse_args()
    print(torch.cuda.get_device_name(), "torch", torch.__version__, flush=True)
    tiles = None
    for T in args.lengths:
        tune = args.sweep and T == args.lengths[0]
        torch_topk = T <= args.torch_topk_up_to
        tiles = bench_length(
            T, tiles, tune=tune, parts=args.parts, torch_topk=torch_topk, buffers=args.buffers
        )
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
