"""Probe (session 15): does the scoring read its keys at the L2's limit? Each scoring program takes
`Tiles.rows` queries (with their 32 heads) against every visible key tile, so the keys are read from
L2 once per `rows` queries: at 128K, about 550 GB a layer in bf16 at rows = 4, near the L2's
throughput for the 136 ms it takes. This times `index_topk` (1 GB buffer, the model's) at 64K and 128K
keys for the default tiles and for 8 queries a program (half the key traffic), bf16 and fp8, with
each configuration's scoring kernel time, and checks that the picks agree with the default's.

    PYTHONPATH=$PWD python experiments/results/h200-session15/probe/scores_rows_probe.py
"""

import functools
import importlib.util
import pathlib

import torch

from glmlab.kernels import indexer

spec = importlib.util.spec_from_file_location(
    "bench", pathlib.Path(__file__).resolve().parents[4] / "benchmarks" / "bench_indexer_kernels.py"
)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
CONFIGS = {
    "default (4 queries, 3 stages)": indexer.Tiles(),
    "8 queries, 2 stages": indexer.Tiles(rows=8, stages=2),
    "8 queries, 3 stages": indexer.Tiles(rows=8, stages=3),
    "8 queries, 2 stages, 16 tiles": indexer.Tiles(rows=8, stages=2, tiles=16),
}


def main() -> None:
    g = torch.Generator(device="cuda").manual_seed(0)
    for T in (65536, 131072):
        q, w, k = bench.projected(T, g)
        for fp8 in (False, True):
            base = None
            for name, tiles in CONFIGS.items():
                options = dict(topk=bench.K, buffer_bytes=1 << 30, tiles=tiles, fp8=fp8)
                run = functools.partial(indexer.index_topk, q, w, k, **options)
                ms = bench.median_ms(run)
                scores = bench.kernel_ms(run).get("_scores_fwd_kernel", float("nan"))
                idx, valid = run()
                if base is None:
                    base = (idx, valid)
                same = (torch.sort(idx, -1).values == torch.sort(base[0], -1).values).float().mean().item()
                print(f"T={T} fp8={fp8} {name}: index_topk {ms:.2f} ms, scoring {scores:.2f} ms, "
                      f"picks equal to the default's {same:.5f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
