"""Probe (session 14): the top-k's candidate list at 1.5*K candidates in a list of 4,096
(`Tiles.candidates = 3`, the new default) against 2.5*K in 8,192 (`candidates = 5`, the old one), and
the select's warps, on the fp8 indexer at GLM-5's indexer shape, 1 GB buffer: device time of each
kernel, the share of rows selected from their candidates (the rest take the whole-row fallback) on
the projected inputs, and whether the picks agree.

    PYTHONPATH=$PWD python experiments/results/h200-session14/probe/select_probe.py
"""

import importlib.util
import pathlib

import torch

from glmlab.kernels import indexer

spec = importlib.util.spec_from_file_location(
    "bench", pathlib.Path(__file__).resolve().parents[4] / "benchmarks" / "bench_indexer_kernels.py"
)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
K = bench.K
CONFIGS = {
    "2.5K in 8192 (old)": indexer.Tiles(candidates=5, sample=32),  # the old cut up to 256K keys
    "1.5K in 4096": indexer.Tiles(),
    "1.5K in 4096, 4 warps": indexer.Tiles(select_warps=4),
    "1.5K in 4096, 16 warps": indexer.Tiles(select_warps=16),
}


def listed(q, w, k, tiles: indexer.Tiles) -> str:
    """Rows of the last 1 GB chunk selected from their candidates, and the candidate totals."""
    T = k.shape[1]
    cap = indexer.select_cap(K, tiles.candidates)
    rows = indexer.topk_chunk_rows(1, T, T, K, 1 << 30, radix=True, candidates=tiles.candidates)
    chunk = torch.empty(1, rows, indexer._pad(T), device="cuda")[:, :, :T]
    q8, w8, k8, k_scale = indexer._fp8_inputs(q[:, T - rows :], w[:, T - rows :], k)
    indexer._launch_scores(q8, w8, k8, k_scale, chunk, T, tiles, fill=False)
    idx = torch.empty(1, rows, K, device="cuda", dtype=torch.int64)
    valid = torch.empty(1, rows, K, device="cuda", dtype=torch.int8)
    totals = indexer._select_chunk(chunk, idx, valid, T - rows, 0, tiles).sum(1).float()
    n = ((totals >= K) & (totals <= cap)).sum().item()
    spread = f"min {totals.min():.0f}, median {totals.median():.0f}, max {totals.max():.0f}"
    return f"{n} of {rows} rows listed ({spread})"


def compare(T: int, kind: str, q: torch.Tensor, w: torch.Tensor, k: torch.Tensor) -> None:
    """Every configuration's time per kernel and picks on one set of inputs."""
    picks = {}
    for name, tiles in CONFIGS.items():

        def run(t: indexer.Tiles = tiles):
            return indexer.index_topk(q, w, k, topk=K, buffer_bytes=1 << 30, tiles=t, fp8=True)

        ms = bench.median_ms(run)
        parts = bench.kernel_ms(run)
        picks[name] = run()
        shown = ", ".join(f"{p} {v:.2f}" for p, v in parts.items() if p != "_scores_fwd_kernel")
        print(f"T={T} {kind} {name}: {ms:.2f} ms ({shown})", flush=True)
    base = picks["2.5K in 8192 (old)"]
    for name, got in picks.items():
        same = torch.equal(base[0].sort(-1).values, got[0].sort(-1).values) and torch.equal(base[1], got[1])
        print(f"T={T} {kind} {name}: same picks as the old list {same}", flush=True)
    if kind == "projected":
        for name in ("2.5K in 8192 (old)", "1.5K in 4096"):
            print(f"T={T} {kind} {name}: {listed(q, w, k, CONFIGS[name])}", flush=True)


def main() -> None:
    for T in (32768, 65536, 131072):
        for kind, make in (("gaussian", bench.gaussian), ("projected", bench.projected)):
            compare(T, kind, *make(T, torch.Generator(device="cuda").manual_seed(1)))
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
